package b24oauth_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// itemIDs ranges over a ListV3 sequence and returns the items' integer ids.
func itemIDs(t *testing.T, seq func(func(json.RawMessage, error) bool)) []int {
	t.Helper()
	var ids []int
	for row, err := range seq {
		if err != nil {
			t.Fatalf("ListV3: %v", err)
		}
		var item struct {
			ID *int `json:"id"`
		}
		if err := json.Unmarshal(row, &item); err != nil || item.ID == nil {
			t.Fatalf("item %s: %v", row, err)
		}
		ids = append(ids, *item.ID)
	}
	return ids
}

func TestListV3E2E(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(10000)
	c := newClient(t, s, p, unlimited())
	ctx := context.Background()

	before := p.TotalRequests()
	ids := itemIDs(t, c.ListV3(ctx, "crm.deal.list", map[string]any{"select": []string{"title"}}))
	checkSequence(t, ids, 1, 10000)
	// Ten full pages of 1000, then an empty one.
	if got := p.TotalRequests() - before; got != 11 {
		t.Errorf("%d requests, want 11", got)
	}

	before = p.TotalRequests()
	ids = itemIDs(t, c.ListV3(ctx, "crm.deal.list", map[string]any{"filter": []any{[]any{"id", ">", 100}, []any{"id", "<=", 2600}}},
		b24oauth.WithPageSize(300)))
	checkSequence(t, ids, 101, 2600)
	if got := p.TotalRequests() - before; got != 9 {
		t.Errorf("%d requests, want 9 (2500 items in pages of 300)", got)
	}

	var desc []int
	for _, id := range itemIDs(t, c.ListV3(ctx, "crm.deal.list", map[string]any{"order": map[string]any{"id": "DESC"}}, b24oauth.WithPageSize(700))) {
		desc = append([]int{id}, desc...)
	}
	checkSequence(t, desc, 1, 10000)

	for _, n := range []int{0, 1001} {
		var errs int
		for _, err := range c.ListV3(ctx, "crm.deal.list", nil, b24oauth.WithPageSize(n)) {
			if err != nil {
				errs++
			}
		}
		if errs != 1 {
			t.Errorf("WithPageSize(%d): %d errors, want 1", n, errs)
		}
	}
}

// TestListV3E2ERejectedPages: pages the portal rejects (503 QUERY_LIMIT_EXCEEDED) are asked
// again, and every item still comes exactly once, in order.
func TestListV3E2ERejectedPages(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { // each look at the clock is 100 ms later
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(100 * time.Millisecond)
		return now
	}
	s := newFake(t, b24test.WithClock(clock), b24test.WithRateLimit(2, 1), b24test.WithAccessTokenTTL(1000*time.Hour))
	p := s.AddPortal()
	p.SeedDeals(5000)
	c := newClient(t, s, p, b24oauth.WithRestrictionParams(b24oauth.RestrictionParams{
		RateLimit: b24oauth.RateLimitParams{DrainRate: -1}, MaxRetries: 50, RetryDelay: time.Millisecond,
	}))
	ids := itemIDs(t, c.ListV3(context.Background(), "crm.deal.list", nil, b24oauth.WithPageSize(250)))
	checkSequence(t, ids, 1, 5000)
	if p.Rejections() == 0 {
		t.Error("no page was rejected: the test proves nothing")
	}
}
