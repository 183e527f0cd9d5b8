package b24oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
)

// Page sizes of ListV3.
const (
	// DefaultV3PageSize is the items ListV3 asks for per request unless WithPageSize says otherwise.
	DefaultV3PageSize = 1000
	// MaxV3PageSize is the largest pagination.limit a v3 list method accepts.
	MaxV3PageSize = 1000
)

// WithPageSize sets how many items ListV3 asks for per request (pagination.limit), 1 to
// MaxV3PageSize; DefaultV3PageSize by default. List (v2) ignores it: v2 pages have 50 rows.
func WithPageSize(n int) ListOption {
	return func(o *listOptions) { o.pageSize = n }
}

// ListV3 returns every item of a REST v3 list method (result.items), in order, each exactly
// once, fetching pages of DefaultV3PageSize items (WithPageSize) as the loop asks for them.
//
// It pages by key, not by page number (whose base the portal does not document) nor offset
// (which skips or repeats items when others are added or deleted): each request sends order
// {id: "ASC"}, the caller's filter with ["id", ">", <last id seen>] appended, and pagination
// {limit}; a page shorter than the limit ends the list. A page the portal rejected is asked
// again with the same bound (Call's retries), so a retry neither repeats nor skips an item. The
// field is "id" unless WithCursorKey says otherwise (its filterKey names it in filter and
// order, its rowKey in the items).
//
// params is what CallV3 accepts, encoding to a JSON object. Its filter, when set, is a list of
// conditions ([field, op, value] or {"logic": ...}), all kept. Its order may only name the
// cursor field: {id: "DESC"} lists downwards (by "<"). A select list without the cursor field
// gets it added. Its pagination is replaced.
//
// Errors and breaking out of the loop behave as in List.
func (b *B24OAuth) ListV3(ctx context.Context, method string, params any, opts ...ListOption) iter.Seq2[json.RawMessage, error] {
	o := withListOptions(listOptions{filterKey: "id", rowKey: "id", pageSize: DefaultV3PageSize}, opts)
	req, filter, desc, err := listV3Params(method, params, o)
	return func(yield func(json.RawMessage, error) bool) {
		if err != nil {
			yield(nil, err)
			return
		}
		op := ">"
		if desc {
			op = "<"
		}
		req := maps.Clone(req)
		readOnly := isReadOnly(method)
		var last int64
		for page := 0; ; page++ {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			f := filter
			if page > 0 {
				f = append(append(make([]any, 0, len(filter)+1), filter...), []any{o.filterKey, op, last})
			}
			if len(f) > 0 {
				req["filter"] = f
			}
			payload, err := json.Marshal(req)
			if err != nil {
				yield(nil, fmt.Errorf("b24oauth: %s: encoding params: %w", method, err))
				return
			}
			resp, err := b.send(ctx, APIVersionV3, method, payload, readOnly, 1)
			if err != nil {
				yield(nil, err)
				return
			}
			rows, _, err := listRows(resp.Result, "items")
			if err != nil {
				yield(nil, fmt.Errorf("b24oauth: %s: %w", method, err))
				return
			}
			full := len(rows) >= o.pageSize
			if full {
				next, _, err := rowCursor(rows[len(rows)-1], o.rowKey)
				if err != nil {
					yield(nil, fmt.Errorf("b24oauth: %s: %w", method, err))
					return
				}
				if page > 0 && (next <= last && !desc || next >= last && desc) {
					yield(nil, fmt.Errorf("b24oauth: %s: the cursor did not advance (%s %d after %d): the method ignores the %s filter or order",
						method, o.rowKey, next, last, o.filterKey))
					return
				}
				last = next
			}
			if !yieldRows(rows, yield) {
				return
			}
			if !full {
				return
			}
		}
	}
}

// listV3Params decodes params for ListV3: the request without filter, the caller's filter (a
// list of conditions), and whether the order is descending.
func listV3Params(method string, params any, o listOptions) (req map[string]any, filter []any, desc bool, err error) {
	if o.pageSize < 1 || o.pageSize > MaxV3PageSize {
		return nil, nil, false, fmt.Errorf("b24oauth: WithPageSize(%d): want 1 to %d", o.pageSize, MaxV3PageSize)
	}
	req, desc, err = listRequest(method, params, o, "ListV3")
	if err != nil {
		return nil, nil, false, err
	}
	switch f := req["filter"].(type) {
	case nil:
	case []any:
		filter = f
	default:
		return nil, nil, false, fmt.Errorf("b24oauth: %s: a v3 filter must be a list of conditions", method)
	}
	req["pagination"] = map[string]any{"limit": o.pageSize}
	delete(req, "filter")
	return req, filter, desc, nil
}
