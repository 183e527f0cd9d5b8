package b24oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// v3Item is a v3 get method's result: {"item": {"id": ...}}.
type v3Item struct {
	Item struct {
		ID int `json:"id"`
	} `json:"item"`
}

const v3NotFoundCode = "BITRIX_REST_V3_EXCEPTION_ENTITYNOTFOUNDEXCEPTION"

func TestBatchV3E2E(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(10)
	c := newClient(t, s, p, unlimited())
	ctx := context.Background()

	resp, err := c.BatchV3(ctx, []b24oauth.BatchCommand{
		{Key: "deal", Method: "crm.deal.get", Params: map[string]any{"id": 3}},
		{Key: "deals", Method: "crm.deal.list", Params: map[string]any{"select": []string{"id"}, "pagination": map[string]any{"limit": 2}}},
		{Key: "me", Method: "profile"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Requests("batch"); got != 1 {
		t.Errorf("%d batch requests, want 1", got)
	}
	if got := p.BatchSubcalls("crm.deal.get") + p.BatchSubcalls("crm.deal.list") + p.BatchSubcalls("profile"); got != 3 {
		t.Errorf("%d commands run, want 3", got)
	}
	var deal v3Item
	if err := resp.Decode("deal", &deal); err != nil || deal.Item.ID != 3 {
		t.Errorf("deal: %+v, %v; want id 3", deal, err)
	}
	var deals struct {
		Items []struct {
			ID int `json:"id"`
		} `json:"items"`
	}
	if err := resp.Decode("deals", &deals); err != nil || len(deals.Items) != 2 || deals.Items[1].ID != 2 {
		t.Errorf("deals: %+v, %v; want ids 1, 2", deals, err)
	}
	var me v3Item
	if err := resp.Decode("me", &me); err != nil || me.Item.ID != 1 {
		t.Errorf("profile: %+v, %v", me, err)
	}
	if resp.Err() != nil {
		t.Errorf("Err() = %v", resp.Err())
	}

	// Positional: keys "0".."49", results in order; 50 commands are allowed, 51 are not.
	cmds := make([]b24oauth.BatchCommand, 50)
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Method: "crm.deal.get", Params: map[string]any{"id": i%10 + 1}}
	}
	resp, err = c.BatchV3(ctx, cmds)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Keys) != 50 || resp.Keys[49] != "49" {
		t.Fatalf("keys %v", resp.Keys)
	}
	for i, k := range resp.Keys {
		if err := resp.Decode(k, &deal); err != nil || deal.Item.ID != i%10+1 {
			t.Errorf("command %s: %+v, %v", k, deal, err)
		}
	}
	before := p.TotalRequests()
	_, err = c.BatchV3(ctx, append(cmds, cmds[0]))
	if !errors.Is(err, b24oauth.ErrBatchTooLarge) {
		t.Errorf("51 commands: %v, want ErrBatchTooLarge", err)
	}
	if p.TotalRequests() != before {
		t.Error("a batch of 51 commands was sent")
	}
}

// TestBatchV3E2EFailingCommand: the failing command's *APIError reaches the caller, whether the
// portal fails the batch whole or reports the error in the command's slot.
func TestBatchV3E2EFailingCommand(t *testing.T) {
	cmds := []b24oauth.BatchCommand{
		{Key: "ok", Method: "crm.deal.get", Params: map[string]any{"id": 1}},
		{Key: "bad", Method: "crm.deal.get", Params: map[string]any{"id": 999}},
		{Key: "after", Method: "crm.deal.get", Params: map[string]any{"id": 2}},
	}
	t.Run("whole", func(t *testing.T) {
		s := newFake(t, b24test.WithV3BatchFailure(b24test.V3BatchFailWhole))
		p := s.AddPortal()
		p.SeedDeals(5)
		c := newClient(t, s, p, unlimited())
		resp, err := c.BatchV3(context.Background(), cmds)
		var apiErr *b24oauth.APIError
		if !errors.As(err, &apiErr) || apiErr.Code != v3NotFoundCode || resp != nil {
			t.Fatalf("BatchV3 = %v, %v; want the command's %s", resp, err, v3NotFoundCode)
		}
	})
	t.Run("slot", func(t *testing.T) {
		s := newFake(t, b24test.WithV3BatchFailure(b24test.V3BatchFailSlot))
		p := s.AddPortal()
		p.SeedDeals(5)
		c := newClient(t, s, p, unlimited())
		resp, err := c.BatchV3(context.Background(), cmds)
		if err != nil {
			t.Fatal(err)
		}
		bad, ok := resp.Get("bad")
		if !ok || bad.Error == nil || bad.Error.Code != v3NotFoundCode || bad.Result != nil {
			t.Fatalf("bad: %+v, want its *APIError and no result", bad)
		}
		if bad.Error.Method != "crm.deal.get" || bad.Error.Version != b24oauth.APIVersionV3 {
			t.Errorf("bad: method %q version %v", bad.Error.Method, bad.Error.Version)
		}
		var v any
		var apiErr *b24oauth.APIError
		if err := resp.Decode("bad", &v); !errors.As(err, &apiErr) {
			t.Errorf("Decode(bad) = %v, want the *APIError", err)
		}
		if !errors.As(resp.Err(), &apiErr) || apiErr.Code != v3NotFoundCode {
			t.Errorf("Err() = %v", resp.Err())
		}
		for _, k := range []string{"ok", "after"} {
			if r, _ := resp.Get(k); r.Error != nil || r.Result == nil {
				t.Errorf("%s: %+v, want a result", k, r)
			}
		}
	})
}

// BenchmarkBatchV3 runs a v3 batch of 50 crm.deal.get commands per op against the fake.
func BenchmarkBatchV3(b *testing.B) {
	s := newFake(b)
	p := s.AddPortal()
	p.SeedDeals(50)
	c := newClient(b, s, p, unlimited())
	cmds := make([]b24oauth.BatchCommand, 50)
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Method: "crm.deal.get", Params: map[string]any{"id": i + 1}}
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.BatchV3(ctx, cmds)
		if err != nil || len(resp.Results) != 50 {
			b.Fatalf("BatchV3: %v", err)
		}
	}
}

// BenchmarkListV3 lists 10,000 deals through the v3 crm.deal.list per op.
func BenchmarkListV3(b *testing.B) {
	benchList(b, func(c *b24oauth.B24OAuth) iter.Seq2[json.RawMessage, error] {
		return c.ListV3(context.Background(), "crm.deal.list", nil)
	})
}
