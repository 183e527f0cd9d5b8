package pgstore_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/keepalivebench"
)

// One KeepAlive pass over 10,000 idle portals in a table: the time and store reads per portal,
// and every portal refreshed exactly once (see keepalivebench):
//
//	go test -run '^$' -bench KeepAlive10k -benchtime 1x .
func BenchmarkKeepAlive10k(b *testing.B) {
	pool := testPool(b, 0)
	keepalivebench.Run(b, 10_000, func(b *testing.B) b24oauth.TokenStore { return newStore(b, pool) })
}
