package redisstore_test

import (
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/fleettest"
	"github.com/b24go/b24oauth/redisstore"
)

// fleetLease is the lock lease of the fleet test's stores: short, so that the scenarios with a
// killed lock holder wait little for it, and long enough for the live holders' renewals (every
// third of it) on a busy machine.
const fleetLease = 2 * time.Second

// Several processes sharing a key prefix refresh a portal once per expiry, go on once the lease
// of a killed lock holder ends, and turn a refresh lost in a crash into one revocation (see
// fleettest).
func TestFleet(t *testing.T) {
	client := testClient(t) // skips without B24OAUTH_TEST_REDIS, fails if Redis is unreachable
	fleettest.Run(t, fleettest.Config{
		Setup: func(t *testing.T) string { return newPrefix(t, client) },
		Open: func(prefix string) (b24oauth.TokenStore, func(), error) {
			client, err := dial()
			if err != nil {
				return nil, nil, err
			}
			s, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix), redisstore.WithLockLease(fleetLease))
			if err != nil {
				_ = client.Close()
				return nil, nil, err
			}
			return s, func() { _ = client.Close() }, nil
		},
	})
}

// With every default (the Store's lock lease, the clients' refresh timeout), a replica killed
// while it holds a portal's lock costs the others a delay, never a failed call: the lock holder
// keeps the lock long enough to renew its lease once after every caller waits for it, so that
// after the kill they wait a whole lease counted from after they started. With a lease as long
// as the refresh timeout (30 s, as DefaultLockLease was), every call failed with "waiting for
// the lock: context deadline exceeded".
func TestFleetDefaults(t *testing.T) {
	client := testClient(t)
	fleettest.Run(t, fleettest.Config{
		Setup: func(t *testing.T) string { return newPrefix(t, client) },
		Open: func(prefix string) (b24oauth.TokenStore, func(), error) {
			client, err := dial()
			if err != nil {
				return nil, nil, err
			}
			s, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
			if err != nil {
				_ = client.Close()
				return nil, nil, err
			}
			return s, func() { _ = client.Close() }, nil
		},
		Scenarios: []string{"KilledLockHolder"},
		HoldFor:   redisstore.DefaultLockLease/3 + time.Second,
	})
}
