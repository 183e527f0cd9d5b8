package storetest_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

// The suite passes against the reference store.
func TestRunMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore { return b24oauth.NewMemoryStore() })
}
