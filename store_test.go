package b24oauth_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore { return b24oauth.NewMemoryStore() })
}

func TestFileStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		s, err := b24oauth.NewFileStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
