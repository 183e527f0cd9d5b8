package b24oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jarcoal/httpmock"

	"github.com/b24go/b24oauth"
)

const batchURL = "https://acme.bitrix24.com/rest/batch"

// batchWire is a batch request body as the portal reads it, cmd keys in their wire order.
type batchWire struct {
	Auth    string
	Keys    []string // cmd's keys in order ("0", "1", ... when cmd is a list)
	List    bool     // cmd was a JSON list
	Methods map[string]string
	Queries map[string]url.Values // each command's query, decoded (escaping-independent)
	Halt    json.RawMessage
}

// readBatchWire decodes a batch body, keeping the order of cmd's keys.
func readBatchWire(t *testing.T, body []byte) batchWire {
	t.Helper()
	var top struct {
		Auth string          `json:"auth"`
		Cmd  json.RawMessage `json:"cmd"`
		Halt json.RawMessage `json:"halt"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("batch body is not JSON: %s", body)
	}
	w := batchWire{Auth: top.Auth, Halt: top.Halt, Methods: map[string]string{}, Queries: map[string]url.Values{}}
	dec := json.NewDecoder(bytes.NewReader(top.Cmd))
	open, err := dec.Token()
	if err != nil {
		t.Fatalf("cmd: %v in %s", err, body)
	}
	w.List = open == json.Delim('[')
	for i := 0; dec.More(); i++ {
		key := ""
		if w.List {
			key = strconv.Itoa(i)
		} else {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			key = tok.(string)
		}
		var cmd string
		if err := dec.Decode(&cmd); err != nil {
			t.Fatalf("cmd %q is not a string: %v", key, err)
		}
		method, query, _ := strings.Cut(cmd, "?")
		q, err := url.ParseQuery(query)
		if err != nil {
			t.Fatalf("cmd %q: bad query %q: %v", key, query, err)
		}
		w.Keys = append(w.Keys, key)
		w.Methods[key] = method
		w.Queries[key] = q
	}
	return w
}

// recordBatch registers a batch responder replying reply (raw JSON "result" member) and
// returns a function giving the bodies received.
func recordBatch(mt *httpmock.MockTransport, reply string) func() [][]byte {
	var mu sync.Mutex
	var bodies [][]byte
	mt.RegisterResponder(http.MethodPost, batchURL, func(r *http.Request) (*http.Response, error) {
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, raw)
		mu.Unlock()
		return httpmock.NewStringResponse(200, `{"result":`+reply+`,"time":{"start":1767225600,"finish":1767225601.5,"duration":1.5,"processing":1.4,"date_start":"2026-01-01T00:00:00+00:00","date_finish":"2026-01-01T00:00:01+00:00"}}`), nil
	})
	return func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return bodies
	}
}

const emptyBatchReply = `{"result":[],"result_error":[],"result_total":[],"result_next":[],"result_time":[]}`

func TestBatchWireFormat(t *testing.T) {
	c, mt := newMocked(t, testParams())
	bodies := recordBatch(mt, emptyBatchReply)
	type dealFields struct {
		Title string `json:"TITLE"`
		Sum   int    `json:"OPPORTUNITY"`
	}
	cmds := []b24oauth.BatchCommand{
		{Key: "z_first", Method: "crm.deal.add", Params: map[string]any{"fields": dealFields{Title: "A & B", Sum: 100}}},
		{Key: "a_second", Method: "crm.deal.get", Params: map[string]any{"id": "$result[z_first]"}},
		{Key: "m_third", Method: "crm.deal.list", Params: map[string]any{
			"filter": map[string]any{">ID": 5, "CLOSED": false, "STAGE_ID": []string{"NEW", "WON"}},
			"select": []string{"ID", "TITLE"},
		}},
		{Key: "no_params", Method: "profile"},
	}
	if _, err := c.Batch(context.Background(), cmds); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if _, err := c.Batch(context.Background(), cmds[3:], b24oauth.WithHalt(true)); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	got := bodies()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	w := readBatchWire(t, got[0])
	want := batchWire{
		Auth: testAccess,
		Keys: []string{"z_first", "a_second", "m_third", "no_params"},
		Methods: map[string]string{
			"z_first": "crm.deal.add", "a_second": "crm.deal.get", "m_third": "crm.deal.list", "no_params": "profile",
		},
		Queries: map[string]url.Values{
			"z_first":  {"fields[TITLE]": {"A & B"}, "fields[OPPORTUNITY]": {"100"}},
			"a_second": {"id": {"$result[z_first]"}},
			"m_third": {
				"filter[>ID]": {"5"}, "filter[CLOSED]": {"0"}, "filter[STAGE_ID][0]": {"NEW"}, "filter[STAGE_ID][1]": {"WON"},
				"select[0]": {"ID"}, "select[1]": {"TITLE"},
			},
			"no_params": {},
		},
		Halt: json.RawMessage("0"),
	}
	if diff := cmp.Diff(want, w); diff != "" {
		t.Errorf("batch body (-want +got):\n%s\nraw: %s", diff, got[0])
	}
	if !bytes.Contains(got[0], []byte(`"no_params":"profile"`)) {
		t.Errorf("a command without params is not the bare method name: %s", got[0])
	}
	if w2 := readBatchWire(t, got[1]); string(w2.Halt) != "1" {
		t.Errorf("WithHalt(true): halt = %s, want 1", w2.Halt)
	}
}

func TestBatchReplyPerKey(t *testing.T) {
	c, mt := newMocked(t, testParams())
	recordBatch(mt, `{
		"result": {"list": [{"ID":"1"},{"ID":"2"}], "add": 42},
		"result_error": {"bad": {"error": "", "error_description": "Not found"}, "denied": {"error": "ACCESS_DENIED", "error_description": "Access denied!"}},
		"result_total": {"list": 137},
		"result_next": {"list": "50"},
		"result_time": {"list": {"start": 1767225600.25, "finish": 1767225600.5, "duration": 0.25, "processing": 0.2, "date_start": "2026-01-01T00:00:00+00:00", "date_finish": "2026-01-01T00:00:00+00:00"}, "add": []}
	}`)
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{
		{Key: "list", Method: "crm.deal.list"},
		{Key: "bad", Method: "crm.deal.get", Params: map[string]any{"id": 999}},
		{Key: "add", Method: "crm.deal.add", Params: map[string]any{"fields": map[string]any{"TITLE": "x"}}},
		{Key: "denied", Method: "crm.deal.delete", Params: map[string]any{"id": 1}},
		{Key: "halted", Method: "crm.deal.get", Params: map[string]any{"id": 1}},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	d := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	want := &b24oauth.BatchResponse{
		Keys: []string{"list", "bad", "add", "denied", "halted"},
		Results: map[string]b24oauth.BatchResult{
			"list": {Result: json.RawMessage(`[{"ID":"1"},{"ID":"2"}]`), Total: 137, Next: 50,
				Time: b24oauth.ResponseTime{Start: 1767225600.25, Finish: 1767225600.5, Duration: 0.25, Processing: 0.2, DateStart: d, DateFinish: d}},
			"bad":    {Error: &b24oauth.APIError{Description: "Not found", Method: "crm.deal.get", Version: b24oauth.APIVersionV2}},
			"add":    {Result: json.RawMessage(`42`)},
			"denied": {Error: &b24oauth.APIError{Code: "ACCESS_DENIED", Description: "Access denied!", Method: "crm.deal.delete", Version: b24oauth.APIVersionV2}},
		},
		Time: b24oauth.ResponseTime{Start: 1767225600, Finish: 1767225601.5, Duration: 1.5, Processing: 1.4, DateStart: d, DateFinish: d.Add(time.Second)},
	}
	timeEq := cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })
	if diff := cmp.Diff(want, resp, timeEq); diff != "" {
		t.Errorf("BatchResponse (-want +got):\n%s", diff)
	}

	var ids []struct{ ID string }
	if err := resp.Decode("list", &ids); err != nil || len(ids) != 2 || ids[1].ID != "2" {
		t.Errorf("Decode(list) = %v, %v", ids, err)
	}
	var apiErr *b24oauth.APIError
	if err := resp.Decode("denied", &ids); !errors.As(err, &apiErr) || apiErr.Code != "ACCESS_DENIED" || apiErr.Status != 0 {
		t.Errorf("Decode(denied) = %v, want the command's *APIError", err)
	}
	if err := resp.Decode("halted", &ids); !errors.Is(err, b24oauth.ErrBatchCommandNotRun) {
		t.Errorf("Decode(halted) = %v, want ErrBatchCommandNotRun", err)
	}
	if _, ok := resp.Get("halted"); ok {
		t.Error("Get(halted) found an outcome for a command that was not run")
	}
	if r, ok := resp.Get("add"); !ok || string(r.Result) != "42" {
		t.Errorf("Get(add) = %+v, %v", r, ok)
	}

	err = resp.Err()
	if !errors.Is(err, &b24oauth.APIError{Code: "ACCESS_DENIED"}) {
		t.Errorf("Err() = %v, want it to hold ACCESS_DENIED", err)
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 2 {
		t.Fatalf("Err() = %v, want the two command errors joined", err)
	}
	if first := joined.Unwrap()[0].(*b24oauth.APIError); first.Method != "crm.deal.get" {
		t.Errorf("Err()'s first error is %v, want the one of command bad (command order)", first)
	}

	var order []string
	for k, r := range resp.All() {
		order = append(order, k)
		if k == "bad" && r.Error == nil {
			t.Error("All: bad has no error")
		}
	}
	if diff := cmp.Diff([]string{"list", "bad", "add", "denied"}, order); diff != "" {
		t.Errorf("All order (-want +got):\n%s", diff)
	}
	for k := range resp.All() {
		if k != "list" {
			t.Errorf("All went on after break: %q", k)
		}
		break
	}
}

func TestBatchPositional(t *testing.T) {
	c, mt := newMocked(t, testParams())
	// Commands 0 and 2 succeed, 1 fails: PHP writes result and result_time as objects (keys 0
	// and 2 are not a list) and the empty members as [].
	bodies := recordBatch(mt, `{
		"result": {"0": {"ID":"1"}, "2": true},
		"result_error": {"1": {"error": "ERROR_CORE", "error_description": "Wrong task ID"}},
		"result_total": [],
		"result_next": [],
		"result_time": {"0": {"start": 1}, "2": {"start": 3}}
	}`)
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{
		{Method: "crm.deal.get", Params: map[string]any{"id": 1}},
		{Method: "tasks.task.get", Params: map[string]any{"taskId": 0}},
		{Method: "crm.deal.update", Params: map[string]any{"id": 1, "fields": map[string]any{"TITLE": "$result[0][TITLE]"}}},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	w := readBatchWire(t, bodies()[0])
	if !w.List || !cmp.Equal(w.Keys, []string{"0", "1", "2"}) || w.Methods["2"] != "crm.deal.update" ||
		w.Queries["2"].Get("fields[TITLE]") != "$result[0][TITLE]" {
		t.Errorf("positional cmd not sent as a list: %+v", w)
	}
	if diff := cmp.Diff([]string{"0", "1", "2"}, resp.Keys); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
	if r, _ := resp.Get("0"); string(r.Result) != `{"ID":"1"}` || r.Time.Start != 1 {
		t.Errorf(`Get("0") = %+v`, r)
	}
	if r, _ := resp.Get("1"); r.Error == nil || r.Error.Code != "ERROR_CORE" || r.Error.Method != "tasks.task.get" {
		t.Errorf(`Get("1") = %+v`, r)
	}
	if r, _ := resp.Get("2"); string(r.Result) != "true" || r.Time.Start != 3 {
		t.Errorf(`Get("2") = %+v`, r)
	}

	// All succeeded: PHP sends every member as a list.
	recordBatch(mt, `{"result": [[1,2], {"a":1}], "result_error": [], "result_total": [2, 0], "result_next": [], "result_time": [{"start": 5}, {"start": 6}]}`)
	resp, err = c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "crm.deal.list"}, {Method: "profile"}})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	want := map[string]b24oauth.BatchResult{
		"0": {Result: json.RawMessage(`[1,2]`), Total: 2, Time: b24oauth.ResponseTime{Start: 5}},
		"1": {Result: json.RawMessage(`{"a":1}`), Time: b24oauth.ResponseTime{Start: 6}},
	}
	if diff := cmp.Diff(want, resp.Results); diff != "" {
		t.Errorf("Results (-want +got):\n%s", diff)
	}
	if resp.Err() != nil {
		t.Errorf("Err() = %v, want nil", resp.Err())
	}
}

func TestBatchEmptyPHPArrays(t *testing.T) {
	c, mt := newMocked(t, testParams())
	recordBatch(mt, emptyBatchReply)
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Key: "a", Method: "profile"}})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if len(resp.Results) != 0 || resp.Err() != nil || !cmp.Equal(resp.Keys, []string{"a"}) {
		t.Errorf("resp = %+v, want no outcomes", resp)
	}
	if resp.Time.Duration != 1.5 {
		t.Errorf("outer Time not decoded: %+v", resp.Time)
	}
}

func TestBatchWholeFailure(t *testing.T) {
	c, mt := newMocked(t, testParams())
	mt.RegisterResponder(http.MethodPost, batchURL,
		httpmock.NewStringResponder(403, `{"error":"ACCESS_DENIED","error_description":"REST is available only on commercial plans."}`))
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "profile"}})
	var apiErr *b24oauth.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "ACCESS_DENIED" || apiErr.Status != 403 || apiErr.Method != "batch" || resp != nil {
		t.Fatalf("Batch = %v, %v; want a 403 *APIError for method batch", resp, err)
	}

	mt.RegisterResponder(http.MethodPost, batchURL, httpmock.NewStringResponder(200, `{"result":"nonsense","time":{}}`))
	if _, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "profile"}}); err == nil {
		t.Error("a malformed batch reply was accepted")
	}
}

func TestBatchValidationSendsNothing(t *testing.T) {
	c, mt := newMocked(t, testParams())
	recordBatch(mt, emptyBatchReply)
	many := make([]b24oauth.BatchCommand, 51)
	for i := range many {
		many[i] = b24oauth.BatchCommand{Method: "profile"}
	}
	cases := []struct {
		name string
		cmds []b24oauth.BatchCommand
		want error
	}{
		{"empty", nil, b24oauth.ErrInvalidBatch},
		{"51 commands", many, b24oauth.ErrBatchTooLarge},
		{"no method", []b24oauth.BatchCommand{{Key: "a"}}, b24oauth.ErrInvalidBatch},
		{"method with a query", []b24oauth.BatchCommand{{Key: "a", Method: "crm.deal.get?id=1"}}, b24oauth.ErrInvalidBatch},
		{"nested batch", []b24oauth.BatchCommand{{Key: "a", Method: "profile"}, {Key: "b", Method: "BATCH"}}, b24oauth.ErrInvalidBatch},
		{"keys on some", []b24oauth.BatchCommand{{Key: "a", Method: "profile"}, {Method: "profile"}}, b24oauth.ErrInvalidBatch},
		{"keys on the others", []b24oauth.BatchCommand{{Method: "profile"}, {Key: "a", Method: "profile"}}, b24oauth.ErrInvalidBatch},
		{"duplicate key", []b24oauth.BatchCommand{{Key: "a", Method: "profile"}, {Key: "a", Method: "server.time"}}, b24oauth.ErrInvalidBatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Batch(context.Background(), tc.cmds)
			if !errors.Is(err, tc.want) || resp != nil {
				t.Errorf("Batch = %v, %v; want %v", resp, err, tc.want)
			}
		})
	}
	if _, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "profile", Params: []int{1}}}); err == nil {
		t.Error("params that are not an object were accepted")
	}
	if n := mt.GetTotalCallCount(); n != 0 {
		t.Errorf("%d requests sent for invalid batches, want 0", n)
	}
	if _, err := c.Batch(context.Background(), many[:50]); err != nil {
		t.Errorf("50 commands: %v", err)
	}
}

// A batch whose fate is unknown is re-sent only when every command only reads.
func TestBatchWithWriteNotResent(t *testing.T) {
	c, mt := newMocked(t, testParams())
	mt.RegisterResponder(http.MethodPost, batchURL,
		httpmock.NewErrorResponder(errors.New("connection reset by peer")).Then(httpmock.NewStringResponder(200, `{"result":`+emptyBatchReply+`}`)))
	_, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "crm.deal.list"}, {Method: "crm.deal.add"}})
	if err == nil || !strings.Contains(err.Error(), "not re-sent") {
		t.Errorf("batch with a write: err = %v, want not re-sent", err)
	}
	if n := mt.GetTotalCallCount(); n != 1 {
		t.Errorf("batch with a write sent %d times, want 1", n)
	}

	mt.Reset()
	mt.RegisterResponder(http.MethodPost, batchURL,
		httpmock.NewErrorResponder(errors.New("connection reset by peer")).Then(httpmock.NewStringResponder(200, `{"result":`+emptyBatchReply+`}`)))
	if _, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "crm.deal.list"}, {Method: "profile"}}); err != nil {
		t.Errorf("read-only batch: %v", err)
	}
	if n := mt.GetTotalCallCount(); n != 2 {
		t.Errorf("read-only batch sent %d times, want 2 (one retry)", n)
	}
}
