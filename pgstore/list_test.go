package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/pgstore"
	"github.com/b24go/b24oauth/storetest"
)

func member(n int) string { return fmt.Sprintf("%032x", n) }

// List walks the table in pages: every row once across page boundaries, including a last page
// that is exactly full, and rows changed between pages are listed by their position.
func TestListPages(t *testing.T) {
	ctx := context.Background()
	pool := testPool(t, 0)
	for _, rows := range []int{0, 1, 6, 7, 8, 49, 50} {
		t.Run(fmt.Sprint(rows, " rows"), func(t *testing.T) {
			s := newStore(t, pool)
			s.SetListPage(7)
			var want []string
			for i := range rows {
				mustSave(t, s, installation(member(i)))
				want = append(want, member(i))
			}
			var got []string
			for id, err := range s.List(ctx) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, id)
			}
			if !slices.Equal(got, want) {
				t.Errorf("List = %d ids %q; want %d in member_id order", len(got), got, len(want))
			}
		})
	}

	t.Run("changes between pages", func(t *testing.T) {
		s := newStore(t, pool)
		s.SetListPage(5)
		for i := range 20 {
			mustSave(t, s, installation(member(2*i)))
		}
		var got []string
		for id, err := range s.List(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, id)
			if id == member(12) { // inside the second page
				// Behind the cursor: not listed. Ahead of it: listed.
				mustSave(t, s, installation(member(1)))
				mustSave(t, s, installation(member(31)))
				if err := s.Delete(ctx, member(30)); err != nil {
					t.Fatal(err)
				}
			}
		}
		var want []string
		for i := range 20 {
			if 2*i == 30 {
				want = append(want, member(31))
				continue
			}
			want = append(want, member(2*i))
		}
		if !slices.Equal(got, want) {
			t.Errorf("List = %q\nwant %q", got, want)
		}
	})
}

// A row whose member_id is malformed (written by hand or by an older version) is skipped by
// List, and no method reads it.
func TestListSkipsMalformedRows(t *testing.T) {
	ctx := context.Background()
	pool := testPool(t, 0)
	s := newStore(t, pool)
	s.SetListPage(2)
	mustSave(t, s, installation(member(1)))
	for _, id := range []string{"m1", "ZZZ", strings.ToUpper(member(0xabc))} {
		if _, err := pool.Exec(ctx, `INSERT INTO `+s.Table()+` (member_id, domain, state, expires, data) VALUES ($1, '', '', 0, '{}')`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%q) of a hand-written row = %v; want ErrNotInstalled", id, err)
		}
	}
	mustSave(t, s, installation(member(3)))
	var got []string
	for id, err := range s.List(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	if want := []string{member(1), member(3)}; !slices.Equal(got, want) {
		t.Errorf("List = %q; want %q", got, want)
	}
}

// A malformed member_id is answered without a query: on a closed pool, where any query fails,
// the answers are still those of the contract.
func TestMalformedMemberIDSendsNoQuery(t *testing.T) {
	ctx := context.Background()
	// The table belongs to a pool of its own, which drops it at the end.
	table := newTable(t, testPool(t, 0))
	pool := testPool(t, 0)
	s, err := pgstore.New(ctx, pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := s.Load(ctx, member(1)); err == nil || errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Fatalf("Load of a well-formed member_id on a closed pool = %v; want the pool's error", err)
	}
	for _, id := range storetest.MalformedMemberIDs() {
		if _, err := s.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%.40q) = %v; want ErrNotInstalled without a query", id, err)
		}
		err := s.Update(ctx, id, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil })
		if !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Update(%.40q) = %v; want ErrNotInstalled without a query", id, err)
		}
		if err := s.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%.40q) = %v; want nil without a query", id, err)
		}
		if err := s.Save(ctx, installation(id)); err == nil || !strings.Contains(err.Error(), "malformed member_id") {
			t.Errorf("Save(%.40q) = %v; want the malformed member_id error", id, err)
		}
	}
}

// BenchmarkList: a List pass over 10,000 and 100,000 rows (see storetest.BenchmarkList).
func BenchmarkList(b *testing.B) {
	pool := testPool(b, 0)
	storetest.BenchmarkList(b, func(b *testing.B, ids []string) b24oauth.TokenStore {
		s := newStore(b, pool)
		// One statement for all the rows: Save one by one would take minutes.
		_, err := pool.Exec(context.Background(), `INSERT INTO `+s.Table()+` (member_id, domain, state, expires, updated_at, data)
SELECT id, 'portal.bitrix24.com', 'active', 0, now(), jsonb_build_object('member_id', id, 'domain', 'portal.bitrix24.com', 'state', 'active')
FROM unnest($1::text[]) AS id`, ids)
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
