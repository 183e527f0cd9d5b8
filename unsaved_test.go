package b24oauth_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// refreshWithFailedWrite expires p's access token and calls through its client while the
// store refuses the new pair: the client goes on with a pair only it holds.
func refreshWithFailedWrite(t *testing.T, env *appEnv, p *b24test.Portal) {
	t.Helper()
	c := env.client(p.MemberID())
	env.store.setFailWrite(newPairWrite)
	p.ExpireAccessToken()
	mustCallProfile(t, c)
	if pairOf(env.load(p.MemberID())) == fakePair(p) {
		t.Fatal("the refreshed pair was stored although the store refused it")
	}
}

// waitFor polls cond for up to 30 s (a bound on a broken run, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A refreshed pair whose write failed is kept per portal, not per client: a client leaving the
// LRU does not take it along.
func TestUnsavedPairSurvivesEviction(t *testing.T) {
	t.Run("written when the client is evicted", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
			env := newAppEnv(t, nil, open(), func(c *b24oauth.AppConfig) { c.CacheSize = 1 })
			p1, p2 := env.install(), env.install()
			refreshWithFailedWrite(t, env, p1)
			env.store.setFailWrite(nil) // the store is back
			env.client(p2.MemberID())   // evicts p1's client
			waitFor(t, "the evicted client's pair to be stored", func() bool { return pairOf(env.load(p1.MemberID())) == fakePair(p1) })
			mustCallProfile(t, env.client(p1.MemberID()))
			if _, _, revoked := env.hooks.counts(); revoked != 0 {
				t.Error("the portal was revoked")
			}
		})
	})
	t.Run("taken by the portal's next client when the store was still down", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
			env := newAppEnv(t, nil, open(), func(c *b24oauth.AppConfig) { c.CacheSize = 1 })
			p1, p2 := env.install(), env.install()
			refreshWithFailedWrite(t, env, p1)
			var attempts atomic.Int32
			env.store.setFailWrite(func(cur *b24oauth.Installation, next b24oauth.Installation) bool {
				if newPairWrite(cur, next) {
					attempts.Add(1)
					return true
				}
				return false
			})
			env.client(p2.MemberID()) // evicts p1's client; its flush fails
			waitFor(t, "the eviction flush to try", func() bool { return attempts.Load() >= 1 })
			env.store.setFailWrite(nil)
			mustCallProfile(t, env.client(p1.MemberID())) // a new client: it must use the live pair
			if pairOf(env.load(p1.MemberID())) != fakePair(p1) {
				t.Error("the live pair is not stored")
			}
			if _, _, revoked := env.hooks.counts(); revoked != 0 {
				t.Error("the portal was revoked")
			}
			if p1.Refreshes() != 1 {
				t.Errorf("%d refreshes, want 1", p1.Refreshes())
			}
		})
	})
}

// Close writes the unsaved pairs before it returns, retrying for up to EventTimeout; a pair it
// could not write is named in its error.
func TestCloseWritesUnsavedPairs(t *testing.T) {
	t.Run("store back during Close", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
			env := newAppEnv(t, nil, open())
			p := env.install()
			refreshWithFailedWrite(t, env, p)
			go func() {
				time.Sleep(200 * time.Millisecond)
				env.store.setFailWrite(nil)
			}()
			if err := env.app.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if pairOf(env.load(p.MemberID())) != fakePair(p) {
				t.Error("Close did not store the refreshed pair")
			}
		})
	})
	t.Run("store down for good", func(t *testing.T) {
		env := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) { c.EventTimeout = 300 * time.Millisecond })
		p := env.install()
		refreshWithFailedWrite(t, env, p)
		err := env.app.Close()
		if err == nil || !strings.Contains(err.Error(), p.MemberID()) {
			t.Fatalf("Close = %v, want an error naming %s", err, p.MemberID())
		}
		if strings.Contains(err.Error(), fakePair(p)[1]) || strings.Contains(err.Error(), fakePair(p)[0]) {
			t.Error("Close's error holds a token")
		}
	})
}

// A portal keeps one rate limiter whatever the client cache does: a client rebuilt after an
// eviction paces with the same bucket.
func TestPortalKeepsItsLimiterAcrossEviction(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) {
		c.CacheSize = 1
		r := b24oauth.DefaultRestrictionParams()
		c.Restriction = &r
	})
	p1, p2 := env.install(), env.install()
	mustCallProfile(t, env.client(p1.MemberID())) // the bucket is no longer full
	before := b24oauth.PortalLimiter(env.app, p1.MemberID())
	env.client(p2.MemberID()) // evicts p1
	if b24oauth.PortalLimiter(env.app, p1.MemberID()) != before {
		t.Fatal("the evicted portal's limiter was dropped while it was in use")
	}
	mustCallProfile(t, env.client(p1.MemberID()))
	if b24oauth.PortalLimiter(env.app, p1.MemberID()) != before {
		t.Error("the rebuilt client has a limiter of its own")
	}
}
