package pgstore_test

import (
	"context"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/sealtest"
	"github.com/b24go/b24oauth/pgstore"
	"github.com/b24go/b24oauth/storetest"
	"github.com/jackc/pgx/v5"
)

// A sealstore over pgstore passes the suite.
func TestSealedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		s, _ := sealtest.Wrap(t, newStore(t, testPool(t, 0)))
		return s
	})
}

// The table, every column of every row read with pgx, holds no token in clear: only values
// sealed with the store's key; the member_id, domain, endpoints and state stay readable.
func TestSealedRowHoldsNoToken(t *testing.T) {
	pool := testPool(t, 0)
	table := newTable(t, pool)
	inner, err := pgstore.New(context.Background(), pool, pgstore.WithTable(table))
	if err != nil {
		t.Fatal(err)
	}
	s, key := sealtest.Wrap(t, inner)
	sealtest.Run(t, s, key, "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e01", func(t *testing.T) string {
		rows, err := pool.Query(context.Background(), `SELECT t::text FROM `+pgx.Identifier{table}.Sanitize()+` AS t`)
		if err != nil {
			t.Fatal(err)
		}
		all, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 {
			t.Fatalf("%d rows; want 1", len(all))
		}
		return all[0]
	})
}
