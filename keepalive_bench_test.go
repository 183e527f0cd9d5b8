package b24oauth_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/keepalivebench"
)

// One KeepAlive pass over 10,000 idle portals: the time and store reads per portal, and every
// portal refreshed exactly once (see keepalivebench). Each iteration stores the portals anew,
// outside the timer:
//
//	go test -run '^$' -bench KeepAlive10k -benchtime 1x .
func BenchmarkKeepAlive10kFileStore(b *testing.B) {
	keepalivebench.Run(b, 10_000, func(b *testing.B) b24oauth.TokenStore { return newFileStore(b, b.TempDir()) })
}

func BenchmarkKeepAlive10kMemoryStore(b *testing.B) {
	keepalivebench.Run(b, 10_000, func(*testing.B) b24oauth.TokenStore { return b24oauth.NewMemoryStore() })
}
