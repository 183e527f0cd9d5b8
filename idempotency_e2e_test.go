package b24oauth_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// TestCallV3E2ELostReplyExecutedOnce: a v3 write whose reply is lost (the connection breaks
// after the portal ran it) is re-sent with the same Idempotency-Key, the portal replays the
// stored reply, and the deal exists once. The code before idempotency keys returned an error.
func TestCallV3E2ELostReplyExecutedOnce(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p, unlimited())
	p.LoseV3Replies("crm.deal.add", 1)
	resp, err := c.CallV3(context.Background(), "crm.deal.add", map[string]any{"fields": map[string]any{"title": "Once"}})
	if err != nil {
		t.Fatalf("CallV3: %v", err)
	}
	if !resp.Replayed {
		t.Error("the reply was not recognised as a replay")
	}
	var got v3Item
	if err := resp.Decode(&got); err != nil || got.Item.ID != 1 {
		t.Errorf("result %s, %v; want the deal with id 1", resp.Result, err)
	}
	keys := p.IdempotencyKeys()
	if len(keys) != 1 || p.IdempotentExecutions(keys[0]) != 1 {
		t.Fatalf("keys %v, executions %d; want one key executed once", keys, p.IdempotentExecutions(keys[0]))
	}
	if p.Deals() != 1 || p.Requests("crm.deal.add") != 2 {
		t.Errorf("%d deals after %d requests, want 1 after 2", p.Deals(), p.Requests("crm.deal.add"))
	}
}

func TestCallV3E2EIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	s := newFake(t, b24test.WithClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now }),
		b24test.WithAccessTokenTTL(1000*time.Hour))
	p := s.AddPortal()
	c := newClient(t, s, p, unlimited())
	ctx := context.Background()
	add := map[string]any{"fields": map[string]any{"title": "Deal"}}

	// Every write gets a fresh key; a read gets none.
	for range 2 {
		resp, err := c.CallV3(ctx, "crm.deal.add", add)
		if err != nil || resp.Replayed {
			t.Fatalf("CallV3 = %+v, %v; want a first run", resp, err)
		}
	}
	if _, err := c.CallV3(ctx, "crm.deal.get", map[string]any{"id": 1}); err != nil {
		t.Fatal(err)
	}
	if keys := p.IdempotencyKeys(); len(keys) != 2 || keys[0] == keys[1] {
		t.Errorf("keys %v, want two distinct ones (writes only)", keys)
	}

	// The caller's own key: the second call is a replay, the deal is created once.
	kctx := b24oauth.ContextWithIdempotencyKey(ctx, "order-42")
	first, err := c.CallV3(kctx, "crm.deal.add", add)
	if err != nil || first.Replayed {
		t.Fatalf("first = %+v, %v", first, err)
	}
	second, err := c.CallV3(kctx, "crm.deal.add", add)
	if err != nil || !second.Replayed || string(second.Result) != string(first.Result) {
		t.Fatalf("second = %+v, %v; want a replay of %s", second, err, first.Result)
	}
	if p.IdempotentExecutions("order-42") != 1 || p.Deals() != 3 {
		t.Errorf("executions %d, deals %d; want 1 and 3", p.IdempotentExecutions("order-42"), p.Deals())
	}

	// 24 hours on, the key is forgotten and the write runs again.
	mu.Lock()
	now = now.Add(b24test.IdempotencyTTL)
	mu.Unlock()
	third, err := c.CallV3(kctx, "crm.deal.add", add)
	if err != nil || third.Replayed || p.IdempotentExecutions("order-42") != 2 {
		t.Errorf("after 24 h: %+v, %v, executions %d; want a second run", third, err, p.IdempotentExecutions("order-42"))
	}

	// An invalid key is refused before anything is sent.
	before := p.TotalRequests()
	if _, err := c.CallV3(b24oauth.ContextWithIdempotencyKey(ctx, "bad\nkey"), "crm.deal.add", add); err == nil {
		t.Error("a key with a newline was accepted")
	}
	if p.TotalRequests() != before {
		t.Error("a request was sent with an invalid key")
	}
}
