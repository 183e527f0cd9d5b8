package b24oauth_test

import (
	"context"
	"encoding/json"
	"iter"
	"strconv"
	"testing"

	"github.com/b24go/b24oauth"
)

// rowIDs ranges over a List sequence and returns the rows' integer IDs under key.
func rowIDs(t *testing.T, seq func(func(json.RawMessage, error) bool), key string) []int {
	t.Helper()
	var ids []int
	for row, err := range seq {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(row, &m); err != nil {
			t.Fatalf("row: %v", err)
		}
		id, err := strconv.Atoi(m[key].(string))
		if err != nil {
			t.Fatalf("row %s: %v", row, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// checkSequence reports unless ids is exactly first..last ascending.
func checkSequence(t *testing.T, ids []int, first, last int) {
	t.Helper()
	if len(ids) != last-first+1 {
		t.Errorf("%d rows, want %d", len(ids), last-first+1)
	}
	for i, id := range ids {
		if id != first+i {
			t.Fatalf("row %d has ID %d, want %d (every ID exactly once, in order)", i, id, first+i)
		}
	}
}

func TestListE2EDeals(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(10000) // once for the subtests below, which run in sequence
	c := newClient(t, s, p, unlimited())
	ctx := context.Background()

	t.Run("all 10000", func(t *testing.T) {
		before := p.TotalRequests()
		ids := rowIDs(t, c.List(ctx, "crm.deal.list", map[string]any{"select": []string{"ID", "TITLE"}}), "ID")
		checkSequence(t, ids, 1, 10000)
		// One page, then batches of 50 chained pages: 50+2500+2500+2500, then 2450 and an empty page.
		if n := p.TotalRequests() - before; n != 5 {
			t.Errorf("%d requests, want 5", n)
		}
	})
	t.Run("caller filter kept", func(t *testing.T) {
		before := p.TotalRequests()
		ids := rowIDs(t, c.List(ctx, "crm.deal.list", map[string]any{"filter": map[string]any{">ID": 9880, "<=ID": 9990}}), "ID")
		checkSequence(t, ids, 9881, 9990)
		if n := p.TotalRequests() - before; n != 2 {
			t.Errorf("%d requests, want 2 (a page, then a batch)", n)
		}
	})
	t.Run("descending", func(t *testing.T) {
		var ids []int
		for _, id := range rowIDs(t, c.List(ctx, "crm.deal.list", map[string]any{"order": map[string]any{"ID": "DESC"}, "filter": map[string]any{">ID": 9900}}), "ID") {
			ids = append([]int{id}, ids...)
		}
		checkSequence(t, ids, 9901, 10000)
	})
	t.Run("break", func(t *testing.T) {
		before := p.TotalRequests()
		n := 0
		for _, err := range c.List(ctx, "crm.deal.list", nil) {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 75 {
				break
			}
		}
		if got := p.TotalRequests() - before; got != 2 {
			t.Errorf("%d requests for 75 rows, want 2", got)
		}
	})
}

func TestListE2ETasks(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedTasks(130)
	c := newClient(t, s, p)
	ids := rowIDs(t, c.List(context.Background(), "tasks.task.list", map[string]any{"select": []string{"ID", "TITLE"}},
		b24oauth.WithCursorKey("ID", "id"), b24oauth.WithItemsKey("tasks")), "id")
	checkSequence(t, ids, 1, 130)
	if n := p.TotalRequests(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestListE2EExpiredTokenMidway(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(120)
	c := newClient(t, s, p)
	var ids []int
	for row, err := range c.List(context.Background(), "crm.deal.list", nil) {
		if err != nil {
			t.Fatal(err)
		}
		var d struct{ ID string }
		_ = json.Unmarshal(row, &d)
		id, _ := strconv.Atoi(d.ID)
		ids = append(ids, id)
		if len(ids) == 50 {
			p.ExpireAccessToken() // the next page's request gets 401, refreshes, and goes on
		}
	}
	checkSequence(t, ids, 1, 120)
	if s.Refreshes() != 1 || p.Requests("crm.deal.list") != 1 || p.Requests("batch") != 2 {
		t.Errorf("refreshes %d, requests %d and batches %d; want 1, 1 and 2 (one rejected)",
			s.Refreshes(), p.Requests("crm.deal.list"), p.Requests("batch"))
	}
}

// BenchmarkList10000 lists 10,000 deals of the fake portal per op (seeded once).
func BenchmarkList10000(b *testing.B) {
	benchList(b, func(c *b24oauth.B24OAuth) iter.Seq2[json.RawMessage, error] {
		return c.List(context.Background(), "crm.deal.list", map[string]any{"select": []string{"ID", "TITLE"}})
	})
}

// benchList ranges over list(c) per op, 10,000 deals of a fake portal, and reports the
// requests per op and rows per second.
func benchList(b *testing.B, list func(*b24oauth.B24OAuth) iter.Seq2[json.RawMessage, error]) {
	s := newFake(b)
	p := s.AddPortal()
	p.SeedDeals(10000)
	c := newClient(b, s, p, unlimited())
	before := p.TotalRequests()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := 0
		for _, err := range list(c) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 10000 {
			b.Fatalf("%d rows, want 10000", n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(p.TotalRequests()-before)/float64(b.N), "requests/op")
	b.ReportMetric(float64(10000*b.N)/b.Elapsed().Seconds(), "rows/s")
}
