package pgstore_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/fleettest"
	"github.com/b24go/b24oauth/pgstore"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Several processes sharing a table refresh a portal once per expiry, go on when a process
// holding a row lock is killed (the server ends its transaction), and turn a refresh lost in a
// crash into one revocation (see fleettest).
func TestFleet(t *testing.T) {
	pool := testPool(t, 1) // skips without B24OAUTH_TEST_POSTGRES, fails if PostgreSQL is unreachable
	fleettest.Run(t, fleettest.Config{
		Setup: func(t *testing.T) string { return newTable(t, pool) },
		Open: func(table string) (b24oauth.TokenStore, func(), error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pool, err := pgxpool.New(ctx, os.Getenv(envDSN))
			if err != nil {
				return nil, nil, err
			}
			s, err := pgstore.New(ctx, pool, pgstore.WithTable(table))
			if err != nil {
				pool.Close()
				return nil, nil, err
			}
			return s, pool.Close, nil
		},
	})
}
