package sealstore_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

// BenchmarkUpdate measures Update (one token refresh is one Update) through a Store and on the
// bare inner store, for MemoryStore and FileStore: the difference is the cost of opening and
// sealing three tokens.
//
//	go test -run '^$' -bench Update -benchmem ./sealstore
func BenchmarkUpdate(b *testing.B) {
	for _, inner := range []struct {
		name string
		new  func(b *testing.B) b24oauth.TokenStore
	}{
		{"memory", func(*testing.B) b24oauth.TokenStore { return b24oauth.NewMemoryStore() }},
		{"file", func(b *testing.B) b24oauth.TokenStore { return newFileStore(b) }},
	} {
		b.Run(inner.name+"/bare", func(b *testing.B) { storetest.BenchmarkUpdate(b, inner.new) })
		b.Run(inner.name+"/sealed", func(b *testing.B) {
			storetest.BenchmarkUpdate(b, func(b *testing.B) b24oauth.TokenStore {
				return newSealed(b, inner.new(b), testKey(1), testKey(2))
			})
		})
	}
}
