package b24oauth_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func TestBatchE2EReferencesAndErrors(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(3)
	c := newClient(t, s, p)
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{
		{Key: "add", Method: "crm.deal.add", Params: map[string]any{"fields": map[string]any{"TITLE": "Big & small", "OPPORTUNITY": 1500}}},
		{Key: "get", Method: "crm.deal.get", Params: map[string]any{"id": "$result[add]"}},
		{Key: "rename", Method: "crm.deal.update", Params: map[string]any{"id": "$result[add]", "fields": map[string]any{"TITLE": "$result[get][TITLE] (copy)"}}},
		{Key: "missing", Method: "crm.deal.get", Params: map[string]any{"id": 999}},
		{Key: "list", Method: "crm.deal.list", Params: map[string]any{"filter": map[string]any{">=ID": 2}, "select": []string{"ID"}}},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	var id int
	if err := resp.Decode("add", &id); err != nil || id != 4 {
		t.Fatalf("add = %d, %v; want 4", id, err)
	}
	var got struct{ TITLE, OPPORTUNITY string }
	if err := resp.Decode("get", &got); err != nil || got.TITLE != "Big & small" || got.OPPORTUNITY != "1500" {
		t.Errorf("get = %+v, %v", got, err)
	}
	if d, _ := p.Deal(4); d["TITLE"] != "Big & small (copy)" {
		t.Errorf("deal 4 TITLE = %q, want the referenced title with a suffix", d["TITLE"])
	}
	var rows []struct{ ID string }
	if err := resp.Decode("list", &rows); err != nil || len(rows) != 3 {
		t.Errorf("list = %v, %v", rows, err)
	}
	if r, _ := resp.Get("list"); r.Total != 3 || r.Next != 0 || r.Time.Start == 0 {
		t.Errorf("list outcome = total %d next %d time %+v", r.Total, r.Next, r.Time)
	}
	var apiErr *b24oauth.APIError
	if err := resp.Decode("missing", &got); !errors.As(err, &apiErr) || apiErr.Description != "Not found" || apiErr.Status != 0 || apiErr.Method != "crm.deal.get" {
		t.Errorf("missing = %v, want the portal's per-command error", err)
	}
	if err := resp.Err(); !errors.As(err, &apiErr) || apiErr.Description != "Not found" {
		t.Errorf("Err() = %v", err)
	}
	if p.Requests("batch") != 1 || p.BatchSubcalls("crm.deal.get") != 2 || p.Requests("crm.deal.get") != 0 {
		t.Errorf("requests: batch %d, sub-calls crm.deal.get %d", p.Requests("batch"), p.BatchSubcalls("crm.deal.get"))
	}
}

func TestBatchE2EPositionalAndHalt(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(2)
	c := newClient(t, s, p)
	cmds := []b24oauth.BatchCommand{
		{Method: "crm.deal.get", Params: map[string]any{"id": 1}},
		{Method: "crm.deal.get", Params: map[string]any{"id": 999}},
		{Method: "crm.deal.get", Params: map[string]any{"id": 2}},
	}
	resp, err := c.Batch(context.Background(), cmds)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	var ran []string
	for k, r := range resp.All() {
		ran = append(ran, k+":"+strconv.FormatBool(r.Error == nil))
	}
	if diff := cmp.Diff([]string{"0:true", "1:false", "2:true"}, ran); diff != "" {
		t.Errorf("outcomes without halt (-want +got):\n%s", diff)
	}

	resp, err = c.Batch(context.Background(), cmds, b24oauth.WithHalt(true))
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if _, ok := resp.Get("2"); ok {
		t.Error("with halt, the command after the failing one ran")
	}
	if err := resp.Decode("2", new(any)); !errors.Is(err, b24oauth.ErrBatchCommandNotRun) {
		t.Errorf("Decode(2) = %v, want ErrBatchCommandNotRun", err)
	}
	if r, ok := resp.Get("1"); !ok || r.Error == nil {
		t.Errorf("with halt, the failing command's error is missing: %+v", r)
	}
	if n := p.BatchSubcalls("crm.deal.get"); n != 5 {
		t.Errorf("%d sub-calls in all, want 3 + 2", n)
	}
}

func TestBatchE2ETooLargeNotSent(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	cmds := make([]b24oauth.BatchCommand, 51)
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Key: "d" + strconv.Itoa(i), Method: "crm.deal.add"}
	}
	if _, err := c.Batch(context.Background(), cmds); !errors.Is(err, b24oauth.ErrBatchTooLarge) {
		t.Fatalf("Batch(51) = %v, want ErrBatchTooLarge", err)
	}
	if n := p.TotalRequests(); n != 0 || p.Deals() != 0 {
		t.Errorf("%d requests, %d deals after a rejected batch; want none", n, p.Deals())
	}
	resp, err := c.Batch(context.Background(), cmds[:50])
	if err != nil || resp.Err() != nil || len(resp.Results) != 50 || p.Deals() != 50 {
		t.Fatalf("Batch(50) = %v, %v; %d deals", err, resp.Err(), p.Deals())
	}
}

func TestBatchE2EExpiredTokenRefreshed(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	p.ExpireAccessToken() // the client still believes its token valid: the portal's 401 tells it
	resp, err := c.Batch(context.Background(), []b24oauth.BatchCommand{
		{Key: "add", Method: "crm.deal.add", Params: map[string]any{"fields": map[string]any{"TITLE": "after refresh"}}},
		{Key: "me", Method: "profile"},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if err := resp.Err(); err != nil {
		t.Fatalf("commands failed: %v", err)
	}
	// The 401 batch never ran, so re-sending it (with a write) after the refresh is safe.
	if s.Refreshes() != 1 || p.Requests("batch") != 2 || p.Deals() != 1 {
		t.Errorf("refreshes %d, batch requests %d, deals %d; want 1, 2, 1", s.Refreshes(), p.Requests("batch"), p.Deals())
	}
	if got, _ := c.Auth().AuthData(); got.AccessToken != p.Tokens().AccessToken {
		t.Error("the client does not hold the refreshed token")
	}
}

// BenchmarkBatch50 runs one batch of 50 crm.deal.get commands per op.
func BenchmarkBatch50(b *testing.B) {
	s := newFake(b)
	p := s.AddPortal()
	p.SeedDeals(50)
	c := newClient(b, s, p, unlimited())
	cmds := make([]b24oauth.BatchCommand, 50)
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Key: "d" + strconv.Itoa(i+1), Method: "crm.deal.get", Params: map[string]any{"id": i + 1}}
	}
	ctx := context.Background()
	before := p.Requests("batch")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Batch(ctx, cmds)
		if err != nil {
			b.Fatal(err)
		}
		if err := resp.Err(); err != nil || len(resp.Results) != 50 {
			b.Fatalf("%d results, %v", len(resp.Results), err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(p.Requests("batch")-before)/float64(b.N), "requests/op")
	b.ReportMetric(float64(50*b.N)/b.Elapsed().Seconds(), "commands/s")
}

// The commands of a batch count against their methods' operating limits: a batch that uses up
// crm.deal.get's budget blocks later crm.deal.get calls in the client, before they are sent.
func TestBatchE2EOperatingTimeObserved(t *testing.T) {
	s := newFake(t, b24test.WithOperatingLimit(10*time.Minute, 480*time.Second))
	s.SetMethodDuration("crm.deal.get", 20*time.Second)
	p := s.AddPortal()
	p.SeedDeals(1)
	c := newClient(t, s, p)
	cmds := make([]b24oauth.BatchCommand, 25) // 25 × 20 s = 500 s > 480 s
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Method: "crm.deal.get", Params: map[string]any{"id": 1}}
	}
	resp, err := c.Batch(context.Background(), cmds)
	if err != nil || resp.Err() != nil {
		t.Fatalf("Batch: %v, %v", err, resp.Err())
	}
	if r, _ := resp.Get("24"); r.Time.Operating != 500 {
		t.Fatalf("last command's operating = %v, want 500", r.Time.Operating)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "crm.deal.get", map[string]any{"id": 1}); err == nil {
		t.Fatal("crm.deal.get was allowed although the batch used up its operating time")
	}
	if n := p.Requests("crm.deal.get"); n != 0 {
		t.Errorf("%d crm.deal.get requests reached the portal, want 0", n)
	}
	if _, err := c.Call(ctx, "profile", nil); err != nil {
		t.Errorf("another method is blocked too: %v", err)
	}
}
