package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"strconv"
	"strings"
)

// listPageSize is the portal's fixed page size for list methods: a shorter page is the last.
const listPageSize = 50

// withListOptions returns o with opts applied in order.
func withListOptions(o listOptions, opts []ListOption) listOptions {
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// listMinChainPages is the smallest chained batch List sends when the rate limiter's bucket is
// low.
const listMinChainPages = 10

// ListOption configures one List call.
type ListOption func(*listOptions)

type listOptions struct {
	filterKey string // the field filtered and ordered by
	rowKey    string // the same field's key in a row
	itemsKey  string // rows are under result.<itemsKey>; "" for result itself
	single    bool   // one page per request, never chained in a batch
	pageSize  int    // ListV3's pagination.limit
}

// WithSinglePages makes List fetch one page per request instead of chaining up to 50 pages in
// a batch: for a method that may not be called inside a batch, or to spend one request of the
// portal's rate limit per page rather than a batch's 50 at once.
func WithSinglePages() ListOption {
	return func(o *listOptions) { o.single = true }
}

// WithCursorKey names the field List pages by: filterKey is its name in filter and order,
// rowKey its key in the rows of the reply. tasks.task.list, for instance, filters by "ID" and
// returns rows with "id": WithCursorKey("ID", "id"). The default is "ID", "ID"; a row without
// rowKey is searched for it ignoring case.
func WithCursorKey(filterKey, rowKey string) ListOption {
	return func(o *listOptions) { o.filterKey, o.rowKey = filterKey, rowKey }
}

// WithItemsKey says the rows are the list under result.<key> rather than result itself:
// tasks.task.list replies {"result":{"tasks":[...]}}, so WithItemsKey("tasks"). Without it, a
// result that is an object with exactly one list member has its rows taken from that member.
func WithItemsKey(key string) ListOption {
	return func(o *listOptions) { o.itemsKey = key }
}

// List returns every row of a REST v2 list method (crm.deal.list, tasks.task.list, ...), in
// order, each exactly once, fetching pages as the loop asks for them:
//
//	for row, err := range client.List(ctx, "crm.deal.list", map[string]any{
//		"filter": map[string]any{"STAGE_ID": "WON"},
//		"select": []string{"ID", "TITLE"},
//	}) {
//		if err != nil {
//			return err
//		}
//		// use row (json.RawMessage)
//	}
//
// It pages by key, the fast way the portal recommends for large lists: each page is asked with
// order {ID: ASC}, filter {">ID": <last ID seen>} merged into the caller's filter, and start -1
// (no row count), and a page of fewer than 50 rows ends the list. It never counts, and neither
// skips nor repeats a row when rows are added or deleted meanwhile. The field is "ID" unless
// WithCursorKey says otherwise.
//
// The first page is one request. After a full one, List fetches up to 50 pages per request: a
// batch whose page k filters on page k-1's last row ({">ID": "$result[p<k-1>][49][ID]"}), so
// N rows take at most N/2500 + 2 requests. What follows a short page in a batch is discarded,
// whatever the portal made of its reference into a row that does not exist. A batch counts one
// request per page against the client's rate limiter (the portal counts each nested call), so
// chained pages never overrun the portal's bucket; the pages per batch are capped at the
// limiter's burst. Where chaining does not work (a command of the batch fails, a chained page
// does not continue the list, the batch reply is too large), List goes on from the last row it
// handed out with single pages, so each row still comes exactly once. WithSinglePages turns
// chaining off.
//
// params is what Call accepts (a map, a struct or json.RawMessage encoding to a JSON object, or
// nil). Its filter keeps all its conditions; a ">ID" (or, descending, "<ID") bound of the
// caller's applies to the first page and is then replaced by the cursor. Its order may only name
// the cursor field: {ID: "DESC"} lists downwards (pages by "<ID"); any other order is an error,
// as paging by key needs rows sorted by that key. A select list without the cursor field (or
// "*") gets it added. Its start is replaced by -1.
//
// An error (a failed request, a reply without the cursor field) is yielded once as (nil, err)
// and ends the iteration. Breaking out of the loop stops it at once: no further request is sent.
// The returned sequence can be ranged over more than once, each time from the start.
func (b *B24OAuth) List(ctx context.Context, method string, params any, opts ...ListOption) iter.Seq2[json.RawMessage, error] {
	o := withListOptions(listOptions{filterKey: "ID", rowKey: "ID"}, opts)
	base, filter, desc, err := listParams(method, params, o)
	return func(yield func(json.RawMessage, error) bool) {
		if err != nil {
			yield(nil, err)
			return
		}
		l := lister{b: b, method: method, opts: o, desc: desc, req: maps.Clone(base), filter: maps.Clone(filter)}
		l.req["filter"] = l.filter
		l.run(ctx, yield)
	}
}

// listChainPages is the most pages List fetches in one request: a batch of that many commands,
// each filtering on the previous one's last ID.
const listChainPages = MaxBatchCommands

// lister is one run of a List sequence.
type lister struct {
	b      *B24OAuth
	method string
	opts   listOptions
	desc   bool
	req    map[string]any // the request's params; req["filter"] is filter
	filter map[string]any

	chain    bool   // pages may still be fetched chained in batches
	itemsKey string // the result's member holding the rows, as seen ("" for the result itself)
	rowKey   string // the cursor's key exactly as the rows spell it, once seen
}

func (l *lister) run(ctx context.Context, yield func(json.RawMessage, error) bool) {
	bound := ">" + l.opts.filterKey
	if l.desc {
		bound = "<" + l.opts.filterKey
	}
	readOnly := isReadOnly(l.method)
	l.chain = readOnly && !l.opts.single
	var last int64
	for page := 0; ; page++ {
		if err := ctx.Err(); err != nil {
			yield(nil, err)
			return
		}
		if page > 0 && l.chain {
			done, ok := l.runChained(ctx, bound, &last, yield)
			if done {
				return
			}
			if ok {
				continue
			}
			l.chain = false // from here on, single pages from last
		}
		if page > 0 {
			l.filter[bound] = last
		}
		payload, err := json.Marshal(l.req)
		if err != nil {
			yield(nil, fmt.Errorf("b24oauth: %s: encoding params: %w", l.method, err))
			return
		}
		resp, err := l.b.send(ctx, APIVersionV2, l.method, payload, readOnly, 1)
		if err != nil {
			yield(nil, err)
			return
		}
		rows, key, err := listRows(resp.Result, l.opts.itemsKey)
		if err != nil {
			yield(nil, fmt.Errorf("b24oauth: %s: %w", l.method, err))
			return
		}
		l.itemsKey = key
		full, next, err := l.checkPage(rows, page > 0, false, last, bound)
		if err != nil {
			yield(nil, err)
			return
		}
		last = next
		if !yieldRows(rows, yield) {
			return
		}
		if !full {
			return
		}
	}
}

// checkPage checks that a page continues the list after last (when after is set) and returns
// whether it is full and the cursor to go on from. Before handing out a page the next cursor is
// found, so a reply that cannot be paged further is reported without a partial page. A chained
// page has its first row checked as well: a portal that did not resolve the reference may have
// answered rows from anywhere.
func (l *lister) checkPage(rows []json.RawMessage, after, chained bool, last int64, bound string) (full bool, next int64, err error) {
	advanced := func(id int64) bool {
		if l.desc {
			return id < last
		}
		return id > last
	}
	if chained && len(rows) > 0 {
		first, _, err := rowCursor(rows[0], l.opts.rowKey)
		if err != nil || !advanced(first) {
			return false, 0, errListChainBroken
		}
	}
	if len(rows) < listPageSize {
		return false, last, nil
	}
	next, key, err := rowCursor(rows[len(rows)-1], l.opts.rowKey)
	if err != nil {
		return false, 0, fmt.Errorf("b24oauth: %s: %w", l.method, err)
	}
	if after && !advanced(next) {
		return false, 0, fmt.Errorf("b24oauth: %s: the cursor did not advance (%s %d after %d): the method ignores filter[%s] or order[%s]",
			l.method, l.opts.rowKey, next, last, bound, l.opts.filterKey)
	}
	l.rowKey = key
	return true, next, nil
}

// yieldRows yields each row, and reports whether the loop wants more.
func yieldRows(rows []json.RawMessage, yield func(json.RawMessage, error) bool) bool {
	for _, row := range rows {
		if !yield(row, nil) {
			return false
		}
	}
	return true
}

// errListChainBroken reports a chained page that does not continue the list.
var errListChainBroken = errors.New("b24oauth: a chained page does not continue the list")

// runChained fetches the pages after *last in one batch: page 0 filters on *last, page k on
// page k-1's last row ($result[p<k-1>][49][ID]). It yields the rows of the pages that continue
// the list, up to and including the first short one, and discards what follows it (whatever the
// portal did with a reference into a row that does not exist). done is true when the iteration
// is over (the list ended, the loop stopped, or an error was yielded). ok is false when the
// chain could not be used (a command failed, a page did not continue the list): the pages that
// did are yielded and *last is after them, and the caller goes on from there with single pages.
func (l *lister) runChained(ctx context.Context, bound string, last *int64, yield func(json.RawMessage, error) bool) (done, ok bool) {
	n := listChainPages
	if p := l.b.limiter.params(); !p.rateOff() {
		// A batch takes one token per page, and the pages after the list's last are paid for
		// but discarded: chain as many pages as the bucket holds now (at least
		// listMinChainPages, so a drained bucket still saves round trips), not a full batch
		// that would wait for tokens only to throw pages away at the end.
		n = min(n, p.burst(), max(l.b.limiter.available(), listMinChainPages))
	}
	if n < 2 || l.rowKey == "" || strings.ContainsAny(l.rowKey+l.itemsKey, "[]$") {
		return false, false
	}
	path := ""
	if l.itemsKey != "" {
		path = "[" + l.itemsKey + "]"
	}
	cmds := make([]BatchCommand, n)
	for k := range cmds {
		filter := maps.Clone(l.filter)
		if k == 0 {
			filter[bound] = *last
		} else {
			filter[bound] = fmt.Sprintf("$result[p%d]%s[%d][%s]", k-1, path, listPageSize-1, l.rowKey)
		}
		req := maps.Clone(l.req)
		req["filter"] = filter
		cmds[k] = BatchCommand{Key: "p" + strconv.Itoa(k), Method: l.method, Params: req}
	}
	resp, err := l.b.Batch(ctx, cmds, WithHalt(true))
	if err != nil {
		if errors.Is(err, ErrResponseTooLarge) && ctx.Err() == nil {
			return false, false // smaller replies, one page at a time
		}
		yield(nil, err)
		return true, false
	}
	for k := range cmds {
		r, ok := resp.Get(cmds[k].Key)
		if !ok || r.Error != nil {
			// A command the portal failed: single pages from here report or avoid it.
			return false, false
		}
		rows, _, err := listRows(r.Result, l.itemsKey)
		if err != nil {
			return false, false
		}
		full, next, err := l.checkPage(rows, true, k > 0, *last, bound)
		if err != nil {
			return false, false
		}
		*last = next
		if !yieldRows(rows, yield) || !full {
			return true, true
		}
	}
	return false, true
}

// listParams decodes params and merges the paging parameters into it. It returns the request
// params, its filter (to be stored at "filter" of a copy), and whether the order is descending.
func listParams(method string, params any, o listOptions) (req, filter map[string]any, desc bool, err error) {
	req, desc, err = listRequest(method, params, o, "List")
	if err != nil {
		return nil, nil, false, err
	}
	switch f := req["filter"].(type) {
	case nil:
		filter = map[string]any{}
	case map[string]any:
		filter = f
	case []any:
		if len(f) > 0 {
			return nil, nil, false, fmt.Errorf("b24oauth: %s: filter must be an object, not a list", method)
		}
		filter = map[string]any{} // PHP's empty array
	default:
		return nil, nil, false, fmt.Errorf("b24oauth: %s: filter must be an object", method)
	}
	req["start"] = -1
	delete(req, "filter")
	return req, filter, desc, nil
}

// listRequest decodes params for List or ListV3 (fn): the order may only name the cursor field,
// and is set to it; a select list gets the cursor field. It reports whether the order is
// descending.
func listRequest(method string, params any, o listOptions, fn string) (req map[string]any, desc bool, err error) {
	if err := checkMethod(method); err != nil {
		return nil, false, err
	}
	if o.filterKey == "" || o.rowKey == "" {
		return nil, false, errors.New("b24oauth: WithCursorKey: empty key")
	}
	req, err = paramsMap(params)
	if err != nil {
		return nil, false, fmt.Errorf("b24oauth: %s: %w", method, err)
	}
	if req == nil {
		req = map[string]any{}
	}
	dir := "ASC"
	switch ord := req["order"].(type) {
	case nil:
	case []any:
		if len(ord) > 0 {
			return nil, false, fmt.Errorf("b24oauth: %s: order must be an object", method)
		}
	case map[string]any:
		for k, v := range ord {
			s, _ := v.(string)
			s = strings.ToUpper(strings.TrimSpace(s))
			if !strings.EqualFold(k, o.filterKey) || len(ord) > 1 || (s != "ASC" && s != "DESC") {
				return nil, false, fmt.Errorf("b24oauth: %s: %s pages by %s, so order may only be {%q: \"ASC\"} or {%q: \"DESC\"}",
					method, fn, o.filterKey, o.filterKey, o.filterKey)
			}
			dir = s
		}
	default:
		return nil, false, fmt.Errorf("b24oauth: %s: order must be an object", method)
	}
	if sel, ok := req["select"].([]any); ok && len(sel) > 0 && !selects(sel, o.filterKey) {
		req["select"] = append(sel, o.filterKey)
	}
	req["order"] = map[string]any{o.filterKey: dir}
	return req, dir == "DESC", nil
}

// selects reports whether a select list names field or "*".
func selects(sel []any, field string) bool {
	for _, v := range sel {
		if s, ok := v.(string); ok && (s == "*" || strings.EqualFold(s, field)) {
			return true
		}
	}
	return false
}

// listRows extracts a page's rows from a result: the result itself or its itemsKey member (or,
// without itemsKey, its only list member). key is the member the rows were under ("" for the
// result itself).
func listRows(result json.RawMessage, itemsKey string) (rows []json.RawMessage, key string, err error) {
	result = bytes.TrimSpace(result)
	if len(result) == 0 || bytes.Equal(result, []byte("null")) {
		return nil, itemsKey, nil
	}
	if result[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(result, &obj); err != nil {
			return nil, "", fmt.Errorf("decoding result: %w", err)
		}
		if itemsKey != "" {
			items, ok := obj[itemsKey]
			if !ok {
				return nil, "", fmt.Errorf("the result has no %q member", itemsKey)
			}
			result, key = bytes.TrimSpace(items), itemsKey
		} else {
			n := 0
			for k, v := range obj {
				if v = bytes.TrimSpace(v); len(v) > 0 && v[0] == '[' {
					result, key = v, k
					n++
				}
			}
			if n != 1 {
				return nil, "", errors.New("the result is an object, not a list of rows: name its member with WithItemsKey")
			}
		}
		if len(result) == 0 || bytes.Equal(result, []byte("null")) {
			return nil, key, nil
		}
	}
	if result[0] != '[' {
		return nil, "", errors.New("the result is not a list of rows")
	}
	if jsonCount(result, maxPageRows) > maxPageRows {
		// A real page has 50 rows (v2) or up to 1000 (v3); decoding each tiny row of a forged
		// one would cost many times its bytes.
		return nil, "", fmt.Errorf("%w: a page of more than %d rows", ErrResponseTooLarge, maxPageRows)
	}
	if err := json.Unmarshal(result, &rows); err != nil {
		return nil, "", fmt.Errorf("decoding rows: %w", err)
	}
	return rows, key, nil
}

// rowCursor reads the integer cursor field of a row: a JSON number or a numeric string. found
// is the field's name as the row spells it (key, or key in another case).
func rowCursor(row json.RawMessage, key string) (id int64, found string, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil {
		return 0, "", fmt.Errorf("a row is not an object: %w", err)
	}
	v, ok := fields[key]
	found = key
	if !ok {
		for k, fv := range fields {
			if strings.EqualFold(k, key) {
				v, ok, found = fv, true, k
				break
			}
		}
	}
	if !ok {
		return 0, "", fmt.Errorf("a row has no %q field to page by (see WithCursorKey)", key)
	}
	s := string(bytes.TrimSpace(v))
	if len(s) > 0 && s[0] == '"' {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, "", err
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("a row's %q is not an integer: %s", key, v)
	}
	return n, found, nil
}
