package b24oauth_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// TestListE2EChained lists N deals with pages chained in batches, for every way the portal may
// treat a reference into a row the previous page does not have: each row exactly once, in ID
// order, in at most N/2500 + 2 requests.
func TestListE2EChained(t *testing.T) {
	sizes := []int{0, 1, 49, 50, 51, 2499, 2500, 2501, 10000}
	for _, mode := range []string{b24test.MissingRefLiteral, b24test.MissingRefEmpty, b24test.MissingRefError} {
		t.Run(mode, func(t *testing.T) {
			s := newFake(t, b24test.WithMissingReference(mode))
			for _, n := range sizes {
				t.Run(fmt.Sprint(n), func(t *testing.T) {
					p := s.AddPortal()
					p.SeedDeals(n)
					c := newClient(t, s, p, unlimited())
					ids := rowIDs(t, c.List(context.Background(), "crm.deal.list", map[string]any{"select": []string{"TITLE"}}), "ID")
					checkSequence(t, ids, 1, n)
					if got, limit := p.TotalRequests(), n/2500+2; got > limit {
						t.Errorf("%d requests, want at most %d", got, limit)
					}
					if n > 50 && p.Requests("batch") == 0 {
						t.Error("no batch sent: the pages were not chained")
					}
				})
			}
		})
	}
}

// TestListE2EChainedFilterAndTasks: the caller's filter holds on every chained page, and a
// method whose rows sit under an items key with a lower-case cursor (tasks.task.list) chains too.
func TestListE2EChainedFilterAndTasks(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(6000)
	p.SeedTasks(3000)
	c := newClient(t, s, p, unlimited())
	ctx := context.Background()

	ids := rowIDs(t, c.List(ctx, "crm.deal.list", map[string]any{"filter": map[string]any{">ID": 100, "<=ID": 5200}}), "ID")
	checkSequence(t, ids, 101, 5200)

	before := p.TotalRequests()
	ids = rowIDs(t, c.List(ctx, "tasks.task.list", map[string]any{"select": []string{"ID", "TITLE"}},
		b24oauth.WithCursorKey("ID", "id")), "id")
	checkSequence(t, ids, 1, 3000)
	if got := p.TotalRequests() - before; got > 3000/2500+2 {
		t.Errorf("tasks: %d requests, want at most %d", got, 3000/2500+2)
	}

	// Descending: chained on "<ID".
	var desc []int
	for _, id := range rowIDs(t, c.List(ctx, "crm.deal.list", map[string]any{"order": map[string]any{"ID": "DESC"}}), "ID") {
		desc = append([]int{id}, desc...)
	}
	checkSequence(t, desc, 1, 6000)
}

// TestListE2EChainRejected: a portal that fails every command holding a reference still lists
// every row once, falling back to single pages.
func TestListE2EChainRejected(t *testing.T) {
	s := newFake(t, b24test.WithMissingReference(b24test.RefsRejected))
	p := s.AddPortal()
	p.SeedDeals(260)
	c := newClient(t, s, p, unlimited())
	ids := rowIDs(t, c.List(context.Background(), "crm.deal.list", nil), "ID")
	checkSequence(t, ids, 1, 260)
	// A page, a batch whose first page is the only one run, then single pages from 100.
	if got := p.Requests("batch"); got != 1 {
		t.Errorf("%d batches, want 1 (chaining is given up after the rejection)", got)
	}
	if got := p.Requests("crm.deal.list"); got != 1+4 {
		t.Errorf("%d single pages, want 5", got)
	}
}

// TestListE2EChainedError: a command that fails for a reason of its own (access denied)
// is reported as the portal's *APIError, once.
func TestListE2EChainedError(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(120)
	c := newClient(t, s, p, unlimited())
	var errs []error
	n := 0
	for _, err := range c.List(context.Background(), "crm.deal.list", nil) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n++; n == 50 {
			// crm.deal.list fails from now on, in a batch or not.
			s.HandleMethod("crm.deal.list", func(*b24test.Portal, map[string]any) (any, error) {
				return nil, &b24test.Error{Code: "ACCESS_DENIED", Description: "Access denied", Status: 403}
			})
		}
	}
	var apiErr *b24oauth.APIError
	if len(errs) != 1 || !errors.As(errs[0], &apiErr) {
		t.Fatalf("errors %v, want one *APIError", errs)
	}
	if n != 50 {
		t.Errorf("%d rows before the error, want 50", n)
	}
}
