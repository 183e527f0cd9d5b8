package b24oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jarcoal/httpmock"

	"github.com/b24go/b24oauth"
)

// listPortal serves a list method over rows with integer IDs under rowKey, paging by
// filter[>filterKey] / filter[<filterKey] and order[filterKey] as the portal does with start=-1,
// 50 rows a page. It records every request body.
type listPortal struct {
	rows      []map[string]any // sorted by ID ascending
	rowKey    string
	filterKey string
	itemsKey  string // rows under result.<itemsKey> when set
	ignore    bool   // ignore the filter (a method without keyset support)

	mu     sync.Mutex
	bodies []map[string]any
}

func newListPortal(ids []int, rowKey string) *listPortal {
	lp := &listPortal{rowKey: rowKey, filterKey: "ID"}
	for _, id := range ids {
		lp.rows = append(lp.rows, map[string]any{rowKey: strconv.Itoa(id), "TITLE": "row " + strconv.Itoa(id)})
	}
	return lp
}

func (lp *listPortal) requests() []map[string]any {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return lp.bodies
}

func (lp *listPortal) respond(r *http.Request) (*http.Response, error) {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return httpmock.NewStringResponse(400, `{"error":"bad json"}`), nil
	}
	lp.mu.Lock()
	lp.bodies = append(lp.bodies, body)
	lp.mu.Unlock()
	filter, _ := body["filter"].(map[string]any)
	order, _ := body["order"].(map[string]any)
	desc := order[lp.filterKey] == "DESC"
	var page []map[string]any
	for i := range lp.rows {
		row := lp.rows[i]
		if desc {
			row = lp.rows[len(lp.rows)-1-i]
		}
		id, _ := strconv.Atoi(row[lp.rowKey].(string))
		if gt, ok := filter[">"+lp.filterKey].(float64); ok && !lp.ignore && float64(id) <= gt {
			continue
		}
		if lt, ok := filter["<"+lp.filterKey].(float64); ok && !lp.ignore && float64(id) >= lt {
			continue
		}
		page = append(page, row)
		if len(page) == 50 {
			break
		}
	}
	var result any = page
	if page == nil {
		result = []any{}
	}
	if lp.itemsKey != "" {
		result = map[string]any{lp.itemsKey: result}
	}
	return httpmock.NewJsonResponse(200, map[string]any{"result": result, "total": 0, "time": map[string]any{"start": 1}})
}

func seqIDs(from, n, step int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = from + i*step
	}
	return ids
}

// collectIDs ranges over seq and returns the rows' IDs and the errors seen.
func collectIDs(t *testing.T, seq func(func(json.RawMessage, error) bool), key string) (ids []int, errs []error) {
	t.Helper()
	for row, err := range seq {
		if err != nil {
			if row != nil {
				t.Errorf("error %v yielded with a row", err)
			}
			errs = append(errs, err)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(row, &m); err != nil {
			t.Fatalf("row is not an object: %s", row)
		}
		id, _ := strconv.Atoi(m[key].(string))
		ids = append(ids, id)
	}
	return ids, errs
}

const dealListURL = "https://acme.bitrix24.com/rest/crm.deal.list"

func TestListPagesByID(t *testing.T) {
	c, mt := newMocked(t, testParams())
	ids := seqIDs(7, 120, 3) // 7, 10, ..., 364: not dense, so the cursor must come from the rows
	lp := newListPortal(ids, "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)

	params := map[string]any{
		"filter": map[string]any{"STAGE_ID": "NEW", "<ID": 10000},
		"select": []string{"TITLE"},
	}
	got, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", params, b24oauth.WithSinglePages()), "ID")
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("IDs (-want +got):\n%s", diff)
	}
	wantBodies := []map[string]any{
		{"auth": testAccess, "start": -1.0, "order": map[string]any{"ID": "ASC"}, "select": []any{"TITLE", "ID"},
			"filter": map[string]any{"STAGE_ID": "NEW", "<ID": 10000.0}},
		{"auth": testAccess, "start": -1.0, "order": map[string]any{"ID": "ASC"}, "select": []any{"TITLE", "ID"},
			"filter": map[string]any{"STAGE_ID": "NEW", "<ID": 10000.0, ">ID": float64(ids[49])}},
		{"auth": testAccess, "start": -1.0, "order": map[string]any{"ID": "ASC"}, "select": []any{"TITLE", "ID"},
			"filter": map[string]any{"STAGE_ID": "NEW", "<ID": 10000.0, ">ID": float64(ids[99])}},
	}
	if diff := cmp.Diff(wantBodies, lp.requests()); diff != "" {
		t.Errorf("request bodies (-want +got):\n%s", diff)
	}
	if _, ok := params["filter"].(map[string]any)[">ID"]; ok {
		t.Error("List changed the caller's filter map")
	}

	// The sequence can be ranged again, from the start.
	again, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", params, b24oauth.WithSinglePages()), "ID")
	if len(errs) != 0 || len(again) != len(ids) || len(lp.requests()) != 6 {
		t.Errorf("second run: %d rows, %v, %d requests in all", len(again), errs, len(lp.requests()))
	}
}

func TestListExactMultipleAndEmpty(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 100, 1), "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)
	seq := c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages())
	got, errs := collectIDs(t, seq, "ID")
	if len(errs) != 0 || len(got) != 100 {
		t.Fatalf("%d rows, errors %v", len(got), errs)
	}
	// Two full pages, then an empty one ends the list.
	if n := len(lp.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if f := lp.requests()[2]["filter"].(map[string]any); f[">ID"] != 100.0 {
		t.Errorf("third page filter = %v", f)
	}

	empty := newListPortal(nil, "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, empty.respond)
	got, errs = collectIDs(t, c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages()), "ID")
	if len(got) != 0 || len(errs) != 0 || len(empty.requests()) != 1 {
		t.Errorf("empty list: %v, %v, %d requests", got, errs, len(empty.requests()))
	}
}

func TestListBreakStopsRequests(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 500, 1), "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)
	for _, stopAfter := range []int{1, 50, 51} {
		before := len(lp.requests())
		n := 0
		for _, err := range c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages()) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if n == stopAfter {
				break
			}
		}
		want := (stopAfter + 49) / 50
		if got := len(lp.requests()) - before; got != want {
			t.Errorf("break after %d rows: %d requests, want %d", stopAfter, got, want)
		}
	}
}

func TestListErrorYieldedOnce(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 120, 1), "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, httpmock.Responder(lp.respond).Once().
		Then(httpmock.NewStringResponder(400, `{"error":"ERROR_CORE","error_description":"boom"}`)))
	got, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages()), "ID")
	if len(got) != 50 {
		t.Errorf("%d rows before the error, want 50", len(got))
	}
	if len(errs) != 1 {
		t.Fatalf("errors = %v, want exactly one", errs)
	}
	var apiErr *b24oauth.APIError
	if !errors.As(errs[0], &apiErr) || apiErr.Code != "ERROR_CORE" || apiErr.Method != "crm.deal.list" {
		t.Errorf("error = %v, want the portal's *APIError", errs[0])
	}
	if n := mt.GetTotalCallCount(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestListTasksCursorKey(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 75, 1), "id")
	lp.itemsKey = "tasks"
	mt.RegisterResponder(http.MethodPost, "https://acme.bitrix24.com/rest/tasks.task.list", lp.respond)
	got, errs := collectIDs(t, c.List(context.Background(), "tasks.task.list", map[string]any{"select": []string{"ID", "TITLE"}},
		b24oauth.WithCursorKey("ID", "id"), b24oauth.WithItemsKey("tasks"), b24oauth.WithSinglePages()), "id")
	if len(errs) != 0 || !cmp.Equal(got, seqIDs(1, 75, 1)) {
		t.Fatalf("rows %v, errors %v", got, errs)
	}
	reqs := lp.requests()
	if len(reqs) != 2 || reqs[1]["filter"].(map[string]any)[">ID"] != 50.0 || !cmp.Equal(reqs[1]["select"], []any{"ID", "TITLE"}) {
		t.Errorf("requests = %v", reqs)
	}

	// Without options: the single list member of result is found, "id" matches "ID" ignoring case.
	got, errs = collectIDs(t, c.List(context.Background(), "tasks.task.list", nil, b24oauth.WithSinglePages()), "id")
	if len(errs) != 0 || len(got) != 75 {
		t.Errorf("defaults: %d rows, errors %v", len(got), errs)
	}

	// A wrong items key is reported.
	_, errs = collectIDs(t, c.List(context.Background(), "tasks.task.list", nil, b24oauth.WithItemsKey("items"), b24oauth.WithSinglePages()), "id")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `"items"`) {
		t.Errorf("wrong items key: errors %v", errs)
	}
}

func TestListDescending(t *testing.T) {
	c, mt := newMocked(t, testParams())
	ids := seqIDs(1, 60, 1)
	lp := newListPortal(ids, "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)
	got, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", map[string]any{"order": map[string]any{"id": "desc"}}, b24oauth.WithSinglePages()), "ID")
	if len(errs) != 0 || len(got) != 60 || got[0] != 60 || got[59] != 1 {
		t.Fatalf("rows %v, errors %v", got, errs)
	}
	reqs := lp.requests()
	if len(reqs) != 2 || !cmp.Equal(reqs[1]["order"], map[string]any{"ID": "DESC"}) || reqs[1]["filter"].(map[string]any)["<ID"] != 11.0 {
		t.Errorf("requests = %v", reqs)
	}
}

func TestListRejectsBadParamsWithoutRequest(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 10, 1), "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)
	cases := map[string]struct {
		method string
		params any
		opts   []b24oauth.ListOption
	}{
		"order by another field": {"crm.deal.list", map[string]any{"order": map[string]any{"TITLE": "ASC"}}, nil},
		"two order fields":       {"crm.deal.list", map[string]any{"order": map[string]any{"ID": "ASC", "TITLE": "ASC"}}, nil},
		"bad direction":          {"crm.deal.list", map[string]any{"order": map[string]any{"ID": "UP"}}, nil},
		"filter list":            {"crm.deal.list", map[string]any{"filter": []int{1}}, nil},
		"params not an object":   {"crm.deal.list", []int{1}, nil},
		"invalid method":         {"../crm.deal.list", nil, nil},
		"empty cursor key":       {"crm.deal.list", nil, []b24oauth.ListOption{b24oauth.WithCursorKey("", "")}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, errs := collectIDs(t, c.List(context.Background(), tc.method, tc.params, tc.opts...), "ID")
			if len(errs) != 1 {
				t.Errorf("errors = %v, want one", errs)
			}
		})
	}
	if n := mt.GetTotalCallCount(); n != 0 {
		t.Errorf("%d requests sent, want 0", n)
	}
	// A struct works as params, and a caller's {ID: ASC} and start are accepted.
	type listParams struct {
		Order map[string]string `json:"order"`
		Start int               `json:"start"`
	}
	got, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", listParams{Order: map[string]string{"ID": "ASC"}, Start: 50}, b24oauth.WithSinglePages()), "ID")
	if len(errs) != 0 || len(got) != 10 || lp.requests()[0]["start"] != -1.0 {
		t.Errorf("struct params: %v, %v, %v", got, errs, lp.requests())
	}
}

func TestListCursorProblems(t *testing.T) {
	c, mt := newMocked(t, testParams())

	// Full page whose rows lack the cursor field: the error comes before any row of the page.
	noID := newListPortal(seqIDs(1, 60, 1), "OTHER")
	mt.RegisterResponder(http.MethodPost, dealListURL, noID.respond)
	n := 0
	var errs []error
	for row, err := range c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages()) {
		if err != nil {
			errs = append(errs, err)
		} else if row != nil {
			n++
		}
	}
	if n != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), `"ID"`) {
		t.Errorf("rows without ID: %d rows, errors %v", n, errs)
	}

	// A method that ignores the filter would repeat its first page forever: stopped.
	ignoring := newListPortal(seqIDs(1, 60, 1), "ID")
	ignoring.ignore = true
	mt.RegisterResponder(http.MethodPost, dealListURL, ignoring.respond)
	got, errs := collectIDs(t, c.List(context.Background(), "crm.deal.list", nil, b24oauth.WithSinglePages()), "ID")
	if len(got) != 50 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "did not advance") || len(ignoring.requests()) != 2 {
		t.Errorf("filter ignored: %d rows, errors %v, %d requests", len(got), errs, len(ignoring.requests()))
	}
}

func TestListContextCancelled(t *testing.T) {
	c, mt := newMocked(t, testParams())
	lp := newListPortal(seqIDs(1, 200, 1), "ID")
	mt.RegisterResponder(http.MethodPost, dealListURL, lp.respond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	var errs []error
	for _, err := range c.List(ctx, "crm.deal.list", nil, b24oauth.WithSinglePages()) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		if n == 10 {
			cancel()
		}
	}
	if n != 50 || len(errs) != 1 || !errors.Is(errs[0], context.Canceled) || len(lp.requests()) != 1 {
		t.Errorf("%d rows, errors %v, %d requests; want the first page, then context.Canceled", n, errs, len(lp.requests()))
	}
}
