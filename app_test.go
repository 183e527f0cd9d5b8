package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func TestNewAppValidatesConfig(t *testing.T) {
	store := b24oauth.NewMemoryStore()
	ok := b24oauth.AppConfig{ClientID: "id", ClientSecret: "secret", Store: store}
	for _, tc := range []struct {
		name   string
		change func(*b24oauth.AppConfig)
	}{
		{"no client id", func(c *b24oauth.AppConfig) { c.ClientID = "" }},
		{"no client secret", func(c *b24oauth.AppConfig) { c.ClientSecret = "" }},
		{"no store", func(c *b24oauth.AppConfig) { c.Store = nil }},
		{"negative cache size", func(c *b24oauth.AppConfig) { c.CacheSize = -1 }},
		{"empty OAuth server list", func(c *b24oauth.AppConfig) { c.OAuthServers = []string{} }},
		{"OAuth server with a path", func(c *b24oauth.AppConfig) { c.OAuthServers = []string{"https://oauth.example.com/rest/"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			if a, err := b24oauth.NewApp(cfg); err == nil {
				a.Close()
				t.Fatal("NewApp accepted the config")
			}
		})
	}
	a, err := b24oauth.NewApp(ok)
	if err != nil {
		t.Fatalf("NewApp of a valid config: %v", err)
	}
	a.Close()
}

func TestAppInstallThenCall(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.fake.AddPortal(b24test.PortalAppVersion("3"), b24test.PortalLanguage("de"))
		ev := p.InstallEvent()
		env.mustPost("/install", ev)
		installLoads := env.store.loads.Load()

		installedAt := env.clock.Now()
		want := b24oauth.Installation{
			OAuthParams: paramsFor(env.fake, p),
			State:       b24oauth.StateActive,
			Version:     "3",
			LanguageID:  "de",
			InstalledAt: installedAt,
			UpdatedAt:   installedAt,
		}
		got := env.load(p.MemberID())
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("stored installation (-want +got):\n%s", d)
		}
		if n, _, _ := env.hooks.counts(); n != 1 {
			t.Errorf("OnInstall ran %d times, want 1", n)
		}
		if d := cmp.Diff(want, env.hooks.lastInstall()); d != "" {
			t.Errorf("OnInstall's installation (-want +got):\n%s", d)
		}

		c := env.client(p.MemberID())
		mustCallProfile(t, c)
		if c2 := env.client(p.MemberID()); c2 != c {
			t.Error("a second ClientForMember built another client for a cached portal")
		}
		if got := env.store.loads.Load() - installLoads; got != 1 {
			t.Errorf("ClientForMember made %d store loads, want 1", got)
		}
	})
}

func TestAppUnknownMember(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		env.install() // another portal
		_, err := env.app.ClientForMember(context.Background(), randomHex(16))
		if !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Fatalf("ClientForMember(unknown) = %v, want ErrNotInstalled", err)
		}
	})
}

func TestAppUpdateEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.install()
		installed := env.load(p.MemberID())
		old := env.client(p.MemberID())
		mustCallProfile(t, old)

		env.clock.Advance(time.Hour)
		env.mustPost("/install", p.UpdateEvent("2"))

		got := env.load(p.MemberID())
		if !got.InstalledAt.Equal(installed.InstalledAt) {
			t.Errorf("InstalledAt = %v, want the first install's %v", got.InstalledAt, installed.InstalledAt)
		}
		if !got.UpdatedAt.Equal(env.clock.Now()) {
			t.Errorf("UpdatedAt = %v, want the update's %v", got.UpdatedAt, env.clock.Now())
		}
		if got.Version != "2" {
			t.Errorf("Version = %q, want 2", got.Version)
		}
		if pairOf(got) != fakePair(p) || pairOf(got) == pairOf(installed) {
			t.Errorf("stored pair is not the update event's")
		}
		if n, _, _ := env.hooks.counts(); n != 2 {
			t.Errorf("OnInstall ran %d times, want 2", n)
		}

		// A fresh client uses the update's pair; the one handed out before still works.
		c := env.client(p.MemberID())
		if c == old {
			t.Fatal("ClientForMember returned the client built from the replaced pair")
		}
		if ad, ok := c.Auth().AuthData(); !ok || ad.AccessToken != got.AccessToken {
			t.Errorf("the new client does not use the update's pair")
		}
		mustCallProfile(t, c)
		mustCallProfile(t, old)
		if n := p.Refreshes(); n != 0 {
			t.Errorf("the fake saw %d refreshes, want 0", n)
		}
	})
}

func TestAppUninstall(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run("clean="+strconv.FormatBool(clean), func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				p := env.install()
				other := env.install()
				before := env.load(p.MemberID())
				c := env.client(p.MemberID())
				mustCallProfile(t, c)
				otherClient := env.client(other.MemberID())

				env.mustPost("/uninstall", p.UninstallEvent(clean))

				if _, err := env.store.Load(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("Load after uninstall = %v, want ErrNotInstalled", err)
				}
				if _, err := c.Call(context.Background(), "profile", nil); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("Call with a client handed out before the uninstall = %v, want ErrNotInstalled", err)
				}
				if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("ClientForMember after uninstall = %v, want ErrNotInstalled", err)
				}
				_, n, _ := env.hooks.counts()
				if n != 1 {
					t.Fatalf("OnUninstall ran %d times, want 1", n)
				}
				if d := cmp.Diff(uninstallCall{before, clean}, env.hooks.uninstalls[0]); d != "" {
					t.Errorf("OnUninstall (-want +got):\n%s", d)
				}
				// Other portals are untouched.
				mustCallProfile(t, otherClient)
				env.load(other.MemberID())
			})
		})
	}
}

func TestAppUninstallRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token func(p *b24test.Portal) string
	}{
		{"wrong application_token", func(*b24test.Portal) string { return randomHex(16) }},
		{"missing application_token", func(*b24test.Portal) string { return "" }},
		{"another portal's application_token", nil}, // filled below
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				p := env.install()
				other := env.install()
				token := tc.token
				if token == nil {
					token = func(*b24test.Portal) string { return other.ApplicationToken() }
				}
				c := env.client(p.MemberID())
				before := env.load(p.MemberID())
				writes := env.store.writes.Load()

				code, _ := env.post("/uninstall", uninstallEvent(env.fake, p, token(p), true))
				if code != http.StatusForbidden {
					t.Errorf("status = %d, want 403", code)
				}
				if d := cmp.Diff(before, env.load(p.MemberID())); d != "" {
					t.Errorf("the installation changed (-before +after):\n%s", d)
				}
				if got := env.store.writes.Load(); got != writes {
					t.Errorf("the store saw %d writes, want none", got-writes)
				}
				if _, n, _ := env.hooks.counts(); n != 0 {
					t.Errorf("OnUninstall ran %d times for a rejected event", n)
				}
				mustCallProfile(t, c)
				if c2 := env.client(p.MemberID()); c2 != c {
					t.Error("a rejected uninstall evicted the cached client")
				}
			})
		})
	}
}

func TestAppUninstallUnknownMember(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	stranger := env.fake.AddPortal() // never installed through the App
	code, _ := env.post("/uninstall", stranger.UninstallEvent(false))
	if code != http.StatusOK {
		t.Errorf("status = %d, want 200", code)
	}
	if _, n, _ := env.hooks.counts(); n != 0 {
		t.Errorf("OnUninstall ran %d times for an unknown member", n)
	}
	if got := env.store.writes.Load(); got != 0 {
		t.Errorf("the store saw %d writes, want none", got)
	}
}

func TestAppRefreshPersists(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.install()
		installed := env.load(p.MemberID())
		c := env.client(p.MemberID())

		p.ExpireAccessToken()
		mustCallProfile(t, c)

		if n := p.Refreshes(); n != 1 {
			t.Fatalf("the fake saw %d refreshes, want 1", n)
		}
		got := env.load(p.MemberID())
		if pairOf(got) != fakePair(p) {
			t.Errorf("the store does not hold the refreshed pair")
		}
		if !got.RefreshingSince.IsZero() {
			t.Errorf("RefreshingSince = %v after the refresh, want zero", got.RefreshingSince)
		}
		want := installed
		want.OAuthParams = got.OAuthParams
		want.UpdatedAt = env.clock.Now()
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("the refresh changed more than the pair (-want +got):\n%s", d)
		}
		if got.Expires != p.Tokens().Expires.Unix() {
			t.Errorf("stored Expires = %d, want the new pair's %d", got.Expires, p.Tokens().Expires.Unix())
		}
	})
}

func TestAppSecondProcessAdoptsStoredPair(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		fake := newFake(t)
		first := newAppEnv(t, fake, open())
		second := newAppEnv(t, fake, open()) // another process: its own App (and FileStore)
		p := first.install()
		c1 := first.client(p.MemberID())
		c2 := second.client(p.MemberID()) // holds the install's pair in memory

		p.ExpireAccessToken()
		mustCallProfile(t, c1)
		if n := p.Refreshes(); n != 1 {
			t.Fatalf("the fake saw %d refreshes after the first App's call, want 1", n)
		}
		requests := fake.TokenRequests()

		mustCallProfile(t, c2)
		if n := p.Refreshes(); n != 1 {
			t.Errorf("the fake saw %d refreshes, want 1: the second App refreshed instead of adopting the stored pair", n)
		}
		if n := fake.TokenRequests(); n != requests {
			t.Errorf("the second App sent %d token requests, want 0", n-requests)
		}
		if ad, _ := c2.Auth().AuthData(); ad.AccessToken != p.Tokens().AccessToken {
			t.Errorf("the second App's client does not use the stored pair")
		}
		if got := second.load(p.MemberID()); pairOf(got) != fakePair(p) || !got.RefreshingSince.IsZero() {
			t.Errorf("stored pair or refresh mark changed by the adoption: refreshing since %v", got.RefreshingSince)
		}
	})
}

func TestAppRevokedThenReinstalled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reinstall func(p *b24test.Portal) b24test.Event
	}{
		{"reinstall with a new application_token", (*b24test.Portal).Reinstall},
		{"install event with the same application_token", (*b24test.Portal).InstallEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				fake := newFake(t)
				env := newAppEnv(t, fake, open())
				worker := newAppEnv(t, fake, open()) // another process that only calls
				p := env.install()
				c := env.client(p.MemberID())
				wc := worker.client(p.MemberID())

				p.ExpireRefreshToken()
				p.ExpireAccessToken()
				_, err := c.Call(context.Background(), "profile", nil)
				var rte *b24oauth.RefreshTokenError
				if !errors.As(err, &rte) || !rte.Revoked() {
					t.Fatalf("Call with a refused refresh token = %v, want a revoked *RefreshTokenError", err)
				}
				got := env.load(p.MemberID())
				if got.State != b24oauth.StateRevoked {
					t.Errorf("stored state = %q, want %q", got.State, b24oauth.StateRevoked)
				}
				if _, _, n := env.hooks.counts(); n != 1 {
					t.Fatalf("OnRevoked ran %d times, want 1", n)
				}
				if rc := env.hooks.revoked[0]; !errors.As(rc.Err, &rte) || rc.Inst.MemberID != p.MemberID() {
					t.Errorf("OnRevoked(%s, %v)", rc.Inst.MemberID, rc.Err)
				}

				// Everything fails fast from now on, without asking the OAuth server.
				requests := fake.TokenRequests()
				// The worker's cached client cannot know before its next call, which reads the
				// store's state instead of asking the OAuth server; then ClientForMember knows too.
				for i, call := range []func() error{
					func() error { _, err := c.Call(context.Background(), "profile", nil); return err },
					func() error { _, err := env.app.ClientForMember(context.Background(), p.MemberID()); return err },
					func() error { _, err := wc.Call(context.Background(), "profile", nil); return err },
					func() error { _, err := wc.Call(context.Background(), "profile", nil); return err },
					func() error { _, err := worker.app.ClientForMember(context.Background(), p.MemberID()); return err },
					func() error {
						fresh := newAppEnv(t, fake, open()) // a process started after the revocation
						_, err := fresh.app.ClientForMember(context.Background(), p.MemberID())
						return err
					},
				} {
					if err := call(); !errors.As(err, &rte) {
						t.Errorf("call %d = %v, want a *RefreshTokenError", i, err)
					}
				}
				if n := fake.TokenRequests(); n != requests {
					t.Errorf("%d token requests after the revocation, want 0", n-requests)
				}
				if _, _, n := env.hooks.counts(); n != 1 {
					t.Errorf("OnRevoked ran %d times in the App that marked it, want 1", n)
				}
				if _, _, n := worker.hooks.counts(); n != 0 {
					t.Errorf("OnRevoked ran %d times in the other App, want 0 (the store already said revoked)", n)
				}

				env.mustPost("/install", tc.reinstall(p))
				if got := env.load(p.MemberID()); got.State != b24oauth.StateActive {
					t.Fatalf("stored state after the reinstall = %q, want active", got.State)
				}
				mustCallProfile(t, env.client(p.MemberID()))
				mustCallProfile(t, worker.client(p.MemberID()))
				mustCallProfile(t, c)  // the clients handed out before the revocation recover too
				mustCallProfile(t, wc) // (the worker's once its ClientForMember saw the reinstall)
			})
		})
	}
}

func TestAppRefreshWriteFailure(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		fake := newFake(t)
		env := newAppEnv(t, fake, open())
		p := env.install()
		installed := env.load(p.MemberID())
		c := env.client(p.MemberID())

		env.store.setFailWrite(newPairWrite)
		p.ExpireAccessToken()
		mustCallProfile(t, c) // the refresh worked; only its write failed
		if n := p.Refreshes(); n != 1 {
			t.Fatalf("the fake saw %d refreshes, want 1", n)
		}
		if got := env.load(p.MemberID()); pairOf(got) != pairOf(installed) {
			t.Fatal("the store holds a new pair although its write failed")
		}
		if ad, _ := c.Auth().AuthData(); ad.AccessToken != p.Tokens().AccessToken {
			t.Fatal("the client dropped the refreshed pair after the failed write")
		}
		mustCallProfile(t, c) // still down: the call works with the pair in memory
		if got := env.load(p.MemberID()); pairOf(got) != pairOf(installed) {
			t.Fatal("the store holds a new pair although its writes fail")
		}

		env.store.setFailWrite(nil)
		mustCallProfile(t, c) // retries the write first
		got := env.load(p.MemberID())
		if pairOf(got) != fakePair(p) {
			t.Fatal("the refreshed pair was not written on a later call")
		}
		if !got.RefreshingSince.IsZero() {
			t.Errorf("RefreshingSince = %v after the pair was written, want zero", got.RefreshingSince)
		}
		if n := p.Refreshes(); n != 1 {
			t.Errorf("the fake saw %d refreshes, want 1", n)
		}

		// Nothing was lost: another process works with the stored pair, and the next refresh
		// spends the stored refresh token successfully.
		other := newAppEnv(t, fake, open())
		oc := other.client(p.MemberID())
		mustCallProfile(t, oc)
		p.ExpireAccessToken()
		mustCallProfile(t, oc)
		if n := p.Refreshes(); n != 2 {
			t.Errorf("the fake saw %d refreshes, want 2", n)
		}
		if pairOf(other.load(p.MemberID())) != fakePair(p) {
			t.Error("the second refresh was not stored")
		}
	})
}

func TestAppInstallStoreFailure(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		env.store.setFailWrite(func(*b24oauth.Installation, b24oauth.Installation) bool { return true })

		p := env.fake.AddPortal()
		if code, _ := env.post("/install", p.InstallEvent()); code != http.StatusServiceUnavailable {
			t.Errorf("install with the store down: status %d, want 503", code)
		}
		if _, err := env.store.Load(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load after a failed install = %v, want ErrNotInstalled", err)
		}

		env.store.setFailWrite(nil)
		env.mustPost("/install", p.InstallEvent())
		before := env.load(p.MemberID())
		env.store.setFailWrite(func(*b24oauth.Installation, b24oauth.Installation) bool { return true })
		if code, _ := env.post("/install", p.UpdateEvent("2")); code != http.StatusServiceUnavailable {
			t.Errorf("update with the store down: status %d, want 503", code)
		}
		if d := cmp.Diff(before, env.load(p.MemberID())); d != "" {
			t.Errorf("a failed update changed the installation (-before +after):\n%s", d)
		}
		if n, _, _ := env.hooks.counts(); n != 1 {
			t.Errorf("OnInstall ran %d times, want 1 (only for the install that was stored)", n)
		}
	})
}

func TestAppCacheIsBounded(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open(), func(c *b24oauth.AppConfig) { c.CacheSize = 2 })
		p1, p2, p3 := env.install(), env.install(), env.install()
		c1 := env.client(p1.MemberID())
		c2 := env.client(p2.MemberID())
		c3 := env.client(p3.MemberID()) // evicts p1
		for _, c := range []*b24oauth.B24OAuth{c1, c2, c3} {
			mustCallProfile(t, c)
		}
		if n := env.store.loads.Load(); n != 3 {
			t.Fatalf("%d loads for 3 portals, want 3", n)
		}
		if env.client(p3.MemberID()) != c3 || env.client(p2.MemberID()) != c2 {
			t.Error("a cached portal was rebuilt")
		}
		if n := env.store.loads.Load(); n != 3 {
			t.Errorf("%d loads after two cache hits, want 3", n)
		}
		c1b := env.client(p1.MemberID()) // evicted: loaded again, evicting p3 (p2 was used last)
		if c1b == c1 {
			t.Error("the evicted portal's client came back from the cache")
		}
		if n := env.store.loads.Load(); n != 4 {
			t.Errorf("%d loads after a miss, want 4", n)
		}
		env.client(p2.MemberID())
		if n := env.store.loads.Load(); n != 4 {
			t.Errorf("p2 (recently used) was evicted: %d loads, want 4", n)
		}
		env.client(p3.MemberID())
		if n := env.store.loads.Load(); n != 5 {
			t.Errorf("p3 (least recently used) was not evicted: %d loads, want 5", n)
		}
		mustCallProfile(t, c1) // a client dropped from the cache keeps working
		mustCallProfile(t, c1b)
	})
}

func TestAppConcurrentClientForMemberLoadsOnce(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.install()
	const n = 16
	var ready sync.WaitGroup
	ready.Add(n)
	release := make(chan struct{})
	env.store.mu.Lock()
	env.store.loadGate = func() { <-release }
	env.store.mu.Unlock()

	clients := make([]*b24oauth.B24OAuth, n)
	errs := make([]error, n)
	var done sync.WaitGroup
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			clients[i], errs[i] = env.app.ClientForMember(context.Background(), p.MemberID())
		}()
	}
	ready.Wait()
	close(release)
	done.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ClientForMember: %v", errs[i])
		}
		if clients[i] != clients[0] {
			t.Fatal("concurrent ClientForMember calls got different clients")
		}
	}
	if got := env.store.loads.Load(); got != 1 {
		t.Errorf("%d loads, want 1", got)
	}
	mustCallProfile(t, clients[0])
}

func TestAppClose(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.install()
	c := env.client(p.MemberID())
	mustCallProfile(t, c)
	if err := env.app.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := env.app.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); err == nil {
		t.Error("ClientForMember after Close succeeded")
	}
	if _, err := c.Call(context.Background(), "profile", nil); !errors.Is(err, b24oauth.ErrDestroyed) {
		t.Errorf("Call with a cached client after Close = %v, want ErrDestroyed", err)
	}
	// The handlers keep storing events.
	env.mustPost("/install", p.UpdateEvent("2"))
	if got := env.load(p.MemberID()); got.Version != "2" {
		t.Errorf("Version = %q after an update to a closed App, want 2", got.Version)
	}
}

// A process whose client holds an old pair finds a newer stored pair that is about to expire:
// it refreshes the stored pair, the write fails, and the pair it got must still be written
// later (the store holds the newer pair, not the client's old one).
func TestAppRefreshWriteFailureOfAdoptedPair(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		fake := newFake(t)
		first := newAppEnv(t, fake, open())
		second := newAppEnv(t, fake, open())
		p := first.install()
		c1 := first.client(p.MemberID())
		c2 := second.client(p.MemberID()) // holds the install's pair

		p.ExpireAccessToken()
		mustCallProfile(t, c1) // the store now holds a newer pair
		second.clock.Advance(2 * time.Hour)
		second.store.setFailWrite(newPairWrite)
		mustCallProfile(t, c2) // refreshes the stored pair (expired for the second App); the write fails
		if n := p.Refreshes(); n != 2 {
			t.Fatalf("the fake saw %d refreshes, want 2", n)
		}
		if pairOf(second.load(p.MemberID())) == fakePair(p) {
			t.Fatal("the store holds the second refresh although its write failed")
		}

		second.store.setFailWrite(nil)
		mustCallProfile(t, c2)
		got := second.load(p.MemberID())
		if pairOf(got) != fakePair(p) {
			t.Fatal("the pair of the second refresh was never written: the store holds a spent pair")
		}
		if !got.RefreshingSince.IsZero() {
			t.Errorf("RefreshingSince = %v, want zero", got.RefreshingSince)
		}
	})
}

// gateFirstLoad makes the next Load of store block, after it read, until release is closed;
// entered is closed when it blocks. Later Loads pass.
func gateFirstLoad(store *spyStore) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	store.mu.Lock()
	store.loadGate = func() {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-release
		}
	}
	store.mu.Unlock()
	return entered, release
}

// An event handled while ClientForMember is building a client from what it loaded just
// before: the build must not cache a client of the replaced or deleted installation.
func TestAppEventDuringBuild(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(env *appEnv, p *b24test.Portal)
		check func(t *testing.T, env *appEnv, p *b24test.Portal, c *b24oauth.B24OAuth, err error)
	}{
		{
			name:  "uninstall",
			event: func(env *appEnv, p *b24test.Portal) { env.mustPost("/uninstall", p.UninstallEvent(false)) },
			check: func(t *testing.T, env *appEnv, p *b24test.Portal, c *b24oauth.B24OAuth, err error) {
				if err == nil {
					// Handed out before the uninstall finished: it must fail like any other.
					if _, err := c.Call(context.Background(), "profile", nil); !errors.Is(err, b24oauth.ErrNotInstalled) {
						t.Errorf("Call with the client built during the uninstall = %v, want ErrNotInstalled", err)
					}
				} else if !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("ClientForMember during the uninstall = %v, want ErrNotInstalled or a client", err)
				}
				if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("ClientForMember after the uninstall = %v, want ErrNotInstalled", err)
				}
			},
		},
		{
			name:  "update",
			event: func(env *appEnv, p *b24test.Portal) { env.mustPost("/install", p.UpdateEvent("2")) },
			check: func(t *testing.T, env *appEnv, p *b24test.Portal, c *b24oauth.B24OAuth, err error) {
				if err != nil {
					t.Fatalf("ClientForMember during the update: %v", err)
				}
				want := env.load(p.MemberID()).AccessToken
				c, err = env.app.ClientForMember(context.Background(), p.MemberID())
				if err != nil {
					t.Fatalf("ClientForMember after the update: %v", err)
				}
				if ad, _ := c.Auth().AuthData(); ad.AccessToken != want {
					t.Error("the cached client holds the pair the update replaced")
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.install()
			entered, release := gateFirstLoad(env.store)
			var c *b24oauth.B24OAuth
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err = env.app.ClientForMember(context.Background(), p.MemberID())
			}()
			<-entered // the build has read the installation
			tc.event(env, p)
			close(release)
			<-done
			tc.check(t, env, p, c, err)
		})
	}
}
