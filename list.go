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

// ListOption configures one List call.
type ListOption func(*listOptions)

type listOptions struct {
	filterKey string // the field filtered and ordered by
	rowKey    string // the same field's key in a row
	itemsKey  string // rows are under result.<itemsKey>; "" for result itself
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
// It pages by key, the fast way the portal recommends for large lists: each request sends
// order {ID: ASC}, filter {">ID": <last ID seen>} merged into the caller's filter, and start -1
// (no row count), and a page of fewer than 50 rows ends the list. So it costs one request per 50
// rows (one more when the count is a multiple of 50), never counts, and neither skips nor repeats
// a row when rows are added or deleted meanwhile. The field is "ID" unless WithCursorKey says
// otherwise.
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
	o := listOptions{filterKey: "ID", rowKey: "ID"}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
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

// lister is one run of a List sequence.
type lister struct {
	b      *B24OAuth
	method string
	opts   listOptions
	desc   bool
	req    map[string]any // the request's params; req["filter"] is filter
	filter map[string]any
}

func (l *lister) run(ctx context.Context, yield func(json.RawMessage, error) bool) {
	bound := ">" + l.opts.filterKey
	if l.desc {
		bound = "<" + l.opts.filterKey
	}
	readOnly := isReadOnly(l.method)
	var last int64
	for page := 0; ; page++ {
		if err := ctx.Err(); err != nil {
			yield(nil, err)
			return
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
		rows, err := listRows(resp.Result, l.opts.itemsKey)
		if err != nil {
			yield(nil, fmt.Errorf("b24oauth: %s: %w", l.method, err))
			return
		}
		full := len(rows) >= listPageSize
		if full {
			// Find the next cursor before handing out the page, so a reply that cannot be paged
			// further is reported without a partial page.
			next, err := rowCursor(rows[len(rows)-1], l.opts.rowKey)
			if err != nil {
				yield(nil, fmt.Errorf("b24oauth: %s: %w", l.method, err))
				return
			}
			advanced := next > last
			if l.desc {
				advanced = next < last
			}
			if page > 0 && !advanced {
				yield(nil, fmt.Errorf("b24oauth: %s: the cursor did not advance (%s %d after %d): the method ignores filter[%s] or order[%s]",
					l.method, l.opts.rowKey, next, last, bound, l.opts.filterKey))
				return
			}
			last = next
		}
		for _, row := range rows {
			if !yield(row, nil) {
				return
			}
		}
		if !full {
			return
		}
	}
}

// listParams decodes params and merges the paging parameters into it. It returns the request
// params, its filter (to be stored at "filter" of a copy), and whether the order is descending.
func listParams(method string, params any, o listOptions) (req, filter map[string]any, desc bool, err error) {
	if err := checkMethod(method); err != nil {
		return nil, nil, false, err
	}
	if o.filterKey == "" || o.rowKey == "" {
		return nil, nil, false, errors.New("b24oauth: WithCursorKey: empty key")
	}
	req, err = paramsMap(params)
	if err != nil {
		return nil, nil, false, fmt.Errorf("b24oauth: %s: %w", method, err)
	}
	if req == nil {
		req = map[string]any{}
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
	dir := "ASC"
	switch ord := req["order"].(type) {
	case nil:
	case []any:
		if len(ord) > 0 {
			return nil, nil, false, fmt.Errorf("b24oauth: %s: order must be an object", method)
		}
	case map[string]any:
		for k, v := range ord {
			s, _ := v.(string)
			s = strings.ToUpper(strings.TrimSpace(s))
			if !strings.EqualFold(k, o.filterKey) || len(ord) > 1 || (s != "ASC" && s != "DESC") {
				return nil, nil, false, fmt.Errorf("b24oauth: %s: List pages by %s, so order may only be {%q: \"ASC\"} or {%q: \"DESC\"}",
					method, o.filterKey, o.filterKey, o.filterKey)
			}
			dir = s
		}
	default:
		return nil, nil, false, fmt.Errorf("b24oauth: %s: order must be an object", method)
	}
	if sel, ok := req["select"].([]any); ok && len(sel) > 0 && !selects(sel, o.filterKey) {
		req["select"] = append(sel, o.filterKey)
	}
	req["order"] = map[string]any{o.filterKey: dir}
	req["start"] = -1
	delete(req, "filter")
	return req, filter, dir == "DESC", nil
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

// listRows extracts a page's rows from a result: the result itself or its itemsKey member.
func listRows(result json.RawMessage, itemsKey string) ([]json.RawMessage, error) {
	result = bytes.TrimSpace(result)
	if len(result) == 0 || bytes.Equal(result, []byte("null")) {
		return nil, nil
	}
	if result[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(result, &obj); err != nil {
			return nil, fmt.Errorf("decoding result: %w", err)
		}
		if itemsKey != "" {
			items, ok := obj[itemsKey]
			if !ok {
				return nil, fmt.Errorf("the result has no %q member", itemsKey)
			}
			result = bytes.TrimSpace(items)
		} else {
			var lists []json.RawMessage
			for _, v := range obj {
				if v = bytes.TrimSpace(v); len(v) > 0 && v[0] == '[' {
					lists = append(lists, v)
				}
			}
			if len(lists) != 1 {
				return nil, errors.New("the result is an object, not a list of rows: name its member with WithItemsKey")
			}
			result = lists[0]
		}
		if len(result) == 0 || bytes.Equal(result, []byte("null")) {
			return nil, nil
		}
	}
	if result[0] != '[' {
		return nil, errors.New("the result is not a list of rows")
	}
	if jsonCount(result, maxPageRows) > maxPageRows {
		// A real page has 50 rows (v2) or up to 1000 (v3); decoding each tiny row of a forged
		// one would cost many times its bytes.
		return nil, fmt.Errorf("%w: a page of more than %d rows", ErrResponseTooLarge, maxPageRows)
	}
	var rows []json.RawMessage
	if err := json.Unmarshal(result, &rows); err != nil {
		return nil, fmt.Errorf("decoding rows: %w", err)
	}
	return rows, nil
}

// rowCursor reads the integer cursor field of a row: a JSON number or a numeric string.
func rowCursor(row json.RawMessage, key string) (int64, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(row, &fields); err != nil {
		return 0, fmt.Errorf("a row is not an object: %w", err)
	}
	v, ok := fields[key]
	if !ok {
		for k, fv := range fields {
			if strings.EqualFold(k, key) {
				v, ok = fv, true
				break
			}
		}
	}
	if !ok {
		return 0, fmt.Errorf("a row has no %q field to page by (see WithCursorKey)", key)
	}
	s := string(bytes.TrimSpace(v))
	if len(s) > 0 && s[0] == '"' {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, err
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("a row's %q is not an integer: %s", key, v)
	}
	return n, nil
}
