//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package b24oauth_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/fleettest"
)

// Several processes sharing a FileStore directory refresh a portal once per expiry, survive a
// killed lock holder, and turn a refresh lost in a crash into one revocation (see fleettest).
func TestFleetFileStore(t *testing.T) {
	fleettest.Run(t, fleettest.Config{
		Setup: func(t *testing.T) string { return t.TempDir() },
		Open: func(dir string) (b24oauth.TokenStore, func(), error) {
			s, err := b24oauth.NewFileStore(dir)
			return s, func() {}, err
		},
	})
}
