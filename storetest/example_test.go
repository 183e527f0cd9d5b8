package storetest_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

// A TokenStore of your own passes the same conformance suite as the stores of this module:
// put a test like this one in your store's package. newStore must return an empty store each
// time (a fresh table, key prefix or directory).
func ExampleRun() {
	testMyStore := func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
			return b24oauth.NewMemoryStore() // your store here
		})
	}
	_ = testMyStore // func TestMyStore(t *testing.T) { storetest.Run(t, ...) }
}
