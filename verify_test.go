package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// mustNotChange fails the test if memberID's stored installation differs from before, or if a
// hook ran.
func (e *appEnv) mustNotChange(memberID string, before b24oauth.Installation, installsBefore int) {
	e.t.Helper()
	if d := cmp.Diff(before, e.load(memberID)); d != "" {
		e.t.Errorf("the installation changed (-before +after):\n%s", d)
	}
	if n, u, _ := e.hooks.counts(); n != installsBefore || u != 0 {
		e.t.Errorf("hooks ran: OnInstall %d times (want %d), OnUninstall %d times", n, installsBefore, u)
	}
}

// A portal user who is not an administrator receives AUTH_ID/REFRESH_ID (and, on current
// portals, the real APPLICATION_TOKEN) each time they open the app. Neither an install page POST
// nor an ONAPPINSTALL or ONAPPUPDATE built from them may change the installation: not its
// application token (then the genuine uninstall would be refused), not its pair, not its
// endpoints.
func TestInstallTakeoverWithAUsersToken(t *testing.T) {
	forged := map[string]func(p *b24test.Portal, user int) b24test.Event{
		"install page POST with the sender's application token": func(p *b24test.Portal, user int) b24test.Event {
			ev := p.OpenPage(user)
			ev.Form.Set("APPLICATION_TOKEN", randomHex(16))
			return ev
		},
		"install page POST with the real application token": func(p *b24test.Portal, user int) b24test.Event {
			return p.OpenPage(user)
		},
		"ONAPPINSTALL with the sender's application token": func(p *b24test.Portal, user int) b24test.Event {
			ev := p.InstallEventAs(user)
			ev.Form.Set("auth[application_token]", randomHex(16))
			return ev
		},
		"ONAPPUPDATE with the real application token": func(p *b24test.Portal, user int) b24test.Event {
			ev := p.InstallEventAs(user)
			ev.Form.Set("event", "ONAPPUPDATE")
			return ev
		},
	}
	for name, forge := range forged {
		t.Run(name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				p := env.install()
				user := p.AddUser(false)
				before := env.load(p.MemberID())
				code, body := env.post("/install", forge(p, user))
				if code != http.StatusForbidden {
					t.Fatalf("forged event: %d %q, want 403", code, body)
				}
				env.mustNotChange(p.MemberID(), before, 1)
				if p.Refreshes() != 0 {
					t.Errorf("verification spent %d refresh tokens", p.Refreshes())
				}
				mustCallProfile(t, env.client(p.MemberID()))
				// Bitrix24's own uninstall still works.
				env.mustPost("/uninstall", p.UninstallEvent(false))
				if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("after the genuine uninstall: %v, want ErrNotInstalled", err)
				}
			})
		})
	}
}

// A first install is stored only when the OAuth server vouches for its token and the portal
// says its user is an administrator; the domain and endpoints are the OAuth server's.
func TestFirstInstallIsVerified(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   func(env *appEnv) (b24test.Event, string)
		want int
	}{
		{"made-up tokens for a new member_id", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[member_id]", randomHex(16))
			return ev, ev.Form.Get("auth[member_id]")
		}, http.StatusForbidden},
		{"made-up tokens", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[access_token]", randomHex(35))
			ev.Form.Set("auth[refresh_token]", randomHex(35))
			return ev, p.MemberID()
		}, http.StatusForbidden},
		{"an internal host as the domain", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[domain]", "127.0.0.1:6379")
			ev.Form.Set("auth[client_endpoint]", "https://127.0.0.1:6379/rest/")
			return ev, p.MemberID()
		}, http.StatusForbidden},
		{"the metadata address as the domain", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[domain]", "169.254.169.254")
			ev.Form.Del("auth[client_endpoint]")
			return ev, p.MemberID()
		}, http.StatusForbidden},
		{"another portal's domain", func(env *appEnv) (b24test.Event, string) {
			other := env.fake.AddPortal()
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[domain]", other.Domain())
			ev.Form.Set("auth[client_endpoint]", other.ClientEndpoint())
			return ev, p.MemberID()
		}, http.StatusForbidden},
		{"another portal's token", func(env *appEnv) (b24test.Event, string) {
			other := env.fake.AddPortal()
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			tok := other.IssueTokens()
			ev.Form.Set("auth[access_token]", tok.AccessToken)
			ev.Form.Set("auth[refresh_token]", tok.RefreshToken)
			return ev, p.MemberID()
		}, http.StatusForbidden},
		{"a user who is not an administrator (install page)", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			return p.OpenPage(p.AddUser(false)), p.MemberID()
		}, http.StatusForbidden},
		{"a user who is not an administrator (ONAPPINSTALL)", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			return p.InstallEventAs(p.AddUser(false)), p.MemberID()
		}, http.StatusForbidden},
		{"a 31 KB domain", func(env *appEnv) (b24test.Event, string) {
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			ev.Form.Set("auth[domain]", strings.Repeat("a", 31<<10)+".example.com")
			ev.Form.Del("auth[client_endpoint]")
			return ev, p.MemberID()
		}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				ev, memberID := tc.ev(env)
				if code, body := env.post("/install", ev); code != tc.want {
					t.Fatalf("status %d %q, want %d", code, body, tc.want)
				}
				if _, err := env.store.TokenStore.Load(context.Background(), memberID); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("Load after a refused first install: %v, want ErrNotInstalled", err)
				}
				if n, _, _ := env.hooks.counts(); n != 0 {
					t.Errorf("OnInstall ran %d times", n)
				}
				if env.fake.Refreshes() != 0 {
					t.Errorf("verification spent %d refresh tokens", env.fake.Refreshes())
				}
			})
		})
	}
}

// What a genuine first install costs, and what it stores: the OAuth server's word.
func TestFirstInstallCost(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.fake.AddPortal()
	env.mustPost("/install", p.InstallEvent())
	if n := env.fake.AppInfoRequests(); n != 1 {
		t.Errorf("app.info requests to the OAuth server: %d, want 1", n)
	}
	if n := p.Requests("user.admin"); n != 1 || p.TotalRequests() != 1 {
		t.Errorf("requests to the portal: user.admin %d, all %d; want 1 and 1", n, p.TotalRequests())
	}
	if n := env.fake.TokenRequests(); n != 0 {
		t.Errorf("token requests: %d, want none", n)
	}
	got := env.load(p.MemberID())
	if got.Domain != p.Domain() || got.ClientEndpoint != p.ClientEndpoint() || got.UserID != 1 {
		t.Errorf("stored domain %q, endpoint %q, user %d", got.Domain, got.ClientEndpoint, got.UserID)
	}
}

// A genuine install event captured and replayed after the app refreshed its pair never
// replaces the stored pair with the spent one: the portal is not revoked.
func TestInstallReplayKeepsTheNewerPair(t *testing.T) {
	for _, oldValid := range []bool{false, true} {
		name := map[bool]string{false: "old access tokens revoked", true: "old access tokens valid until they expire"}[oldValid]
		t.Run(name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				clock := b24test.NewClock(time.Now())
				fake := newFake(t, b24test.WithOldAccessTokenValid(oldValid), b24test.WithClock(clock.Now))
				env := newAppEnv(t, fake, open())
				p := fake.AddPortal()
				captured := p.InstallEvent()
				env.mustPost("/install", captured)
				clock.Advance(time.Minute) // the refreshed pair expires a minute after the captured one
				p.ExpireAccessToken()
				mustCallProfile(t, env.client(p.MemberID())) // refreshes; the captured pair is spent
				refreshed := env.load(p.MemberID())
				if pairOf(refreshed) != fakePair(p) {
					t.Fatal("the refresh was not stored")
				}
				code, body := env.post("/install", captured)
				if code != http.StatusOK && code != http.StatusForbidden {
					t.Fatalf("replay: %d %q, want 200 (ignored) or 403", code, body)
				}
				if got := env.load(p.MemberID()); pairOf(got) != pairOf(refreshed) || got.State != b24oauth.StateActive {
					t.Fatalf("the replay replaced the stored pair (state %q)", got.State)
				}
				if n, _, _ := env.hooks.counts(); n != 1 {
					t.Errorf("OnInstall ran %d times, want 1 (the replay changed nothing)", n)
				}
				p.ExpireAccessToken()
				mustCallProfile(t, env.client(p.MemberID()))
				if _, _, revoked := env.hooks.counts(); revoked != 0 {
					t.Error("the portal was revoked after the replay")
				}
			})
		})
	}
}

// A late ONAPPUPDATE after the uninstall does not bring the installation back.
func TestLateUpdateAfterUninstallDoesNotResurrect(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.install()
		late := p.UpdateEvent("2")
		env.mustPost("/uninstall", p.UninstallEvent(false))
		if code, body := env.post("/install", late); code != http.StatusForbidden {
			t.Fatalf("late update: %d %q, want 403", code, body)
		}
		if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load: %v, want ErrNotInstalled", err)
		}
	})
}

// A portal user who learnt the application token from an app page cannot uninstall the app:
// Bitrix24's uninstall revokes every token, so stored tokens that still work unmask the forgery.
func TestUninstallWithALeakedApplicationToken(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.install()
		leaked := p.OpenPage(p.AddUser(false)).Form.Get("APPLICATION_TOKEN")
		before := env.load(p.MemberID())
		if code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, true)); code != http.StatusForbidden {
			t.Fatalf("forged uninstall: %d %q, want 403", code, body)
		}
		env.mustNotChange(p.MemberID(), before, 1)
		mustCallProfile(t, env.client(p.MemberID()))

		// With the access token expired, the check exchanges the refresh token, and the new
		// pair is stored: the check loses nothing.
		p.ExpireAccessToken()
		env.clock.Advance(2 * time.Hour)
		if code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, true)); code != http.StatusForbidden {
			t.Fatalf("forged uninstall, access token expired: %d %q, want 403", code, body)
		}
		if got := env.load(p.MemberID()); pairOf(got) != fakePair(p) {
			t.Fatal("the pair the check exchanged for was not stored")
		}
		env.clock.Set(time.Now())
		mustCallProfile(t, env.client(p.MemberID()))

		env.mustPost("/uninstall", p.UninstallEvent(true))
		if _, u, _ := env.hooks.counts(); u != 1 {
			t.Errorf("OnUninstall ran %d times, want 1", u)
		}
	})
}

// 500 forged events for a known portal cause a handful of requests to the OAuth server, not
// 500.
func TestForgedEventsAreNotAmplified(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.install()
	base := env.fake.AppInfoRequests() + env.fake.TokenRequests() + p.TotalRequests()
	var wg sync.WaitGroup
	codes := make(chan int, 500)
	for i := 0; i < 500; i++ {
		ev := p.InstallEventAs(1)
		ev.Form.Set("auth[application_token]", randomHex(16))
		ev.Form.Set("auth[access_token]", randomHex(35))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := ev.Send(env.app.InstallHandler())
			codes <- rec.Code
		}()
	}
	wg.Wait()
	close(codes)
	counts := map[int]int{}
	for c := range codes {
		counts[c]++
	}
	if counts[http.StatusOK] != 0 {
		t.Errorf("%d forged events accepted", counts[http.StatusOK])
	}
	sent := env.fake.AppInfoRequests() + env.fake.TokenRequests() + p.TotalRequests() - base
	if sent > 20 {
		t.Errorf("500 forged events caused %d requests to Bitrix24, want at most 20 (answers %v)", sent, counts)
	}
	if counts[http.StatusTooManyRequests] == 0 {
		t.Errorf("no event was throttled: %v", counts)
	}
	// The portal's own events still pass once the burst has drained.
	mustCallProfile(t, env.client(p.MemberID()))
}

// The same validation in every handler, before the store is consulted.
func TestEventValidation(t *testing.T) {
	upper := strings.ToUpper(randomHex(16))
	for _, tc := range []struct {
		name, path string
		edit       func(f url.Values)
	}{
		{"install: upper-case member_id", "/install", func(f url.Values) { f.Set("auth[member_id]", strings.ToUpper(f.Get("auth[member_id]"))) }},
		{"install: 31-digit member_id", "/install", func(f url.Values) { f.Set("auth[member_id]", f.Get("auth[member_id]")[:31]) }},
		{"install: member_id with a non-hex letter", "/install", func(f url.Values) { f.Set("auth[member_id]", "g"+f.Get("auth[member_id]")[1:]) }},
		{"install: 31-digit application_token", "/install", func(f url.Values) {
			f.Set("auth[application_token]", f.Get("auth[application_token]")[:31])
		}},
		{"install: lower-case event name", "/install", func(f url.Values) { f.Set("event", "onappinstall") }},
		{"install: domain with a path", "/install", func(f url.Values) { f.Set("auth[domain]", f.Get("auth[domain]")+"/x") }},
		{"install: domain with a user", "/install", func(f url.Values) { f.Set("auth[domain]", "evil@"+f.Get("auth[domain]")) }},
		{"install: domain with a bad port", "/install", func(f url.Values) { f.Set("auth[domain]", f.Get("auth[domain]")+":99999") }},
		{"uninstall: upper-case member_id", "/uninstall", func(f url.Values) { f.Set("auth[member_id]", upper) }},
		{"uninstall: lower-case event name", "/uninstall", func(f url.Values) { f.Set("event", "onappuninstall") }},
		{"uninstall: 33-digit application_token", "/uninstall", func(f url.Values) { f.Set("auth[application_token]", randomHex(16)+"a") }},
		{"uninstall: untrusted server_endpoint", "/uninstall", func(f url.Values) { f.Set("auth[server_endpoint]", "https://evil.example.com/rest/") }},
		{"uninstall: client_endpoint of another host", "/uninstall", func(f url.Values) { f.Set("auth[client_endpoint]", "https://evil.example.com/rest/") }},
		{"uninstall: bad CLEAN", "/uninstall", func(f url.Values) { f.Set("data[CLEAN]", "yes") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.fake.AddPortal() // not installed in the App: a malformed event is 400 all the same
			var ev b24test.Event
			if tc.path == "/install" {
				ev = p.InstallEvent()
			} else {
				ev = uninstallEvent(env.fake, p, p.ApplicationToken(), false)
			}
			tc.edit(ev.Form)
			loads := env.store.loads.Load()
			if code, body := env.post(tc.path, ev); code != http.StatusBadRequest {
				t.Fatalf("status %d %q, want 400", code, body)
			}
			if n := env.store.loads.Load() - loads; n != 0 {
				t.Errorf("the store was read %d times for a malformed event", n)
			}
			if env.fake.AppInfoRequests() != 0 || p.TotalRequests() != 0 {
				t.Error("a malformed event reached Bitrix24")
			}
		})
	}
}

// blockingStore's Update and Save wait until their context ends, like a store whose lock is
// held by a stalled replica.
type blockingStore struct{ b24oauth.TokenStore }

func (blockingStore) Update(ctx context.Context, _ string, _ func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (blockingStore) Save(ctx context.Context, _ b24oauth.Installation) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestEventHandlersHaveADeadline(t *testing.T) {
	fake := newFake(t)
	cfg := appConfig(fake, blockingStore{b24oauth.NewMemoryStore()})
	cfg.EventTimeout = 300 * time.Millisecond
	app, err := b24oauth.NewApp(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	p := fake.AddPortal()
	done := make(chan int, 1)
	go func() { done <- p.InstallEvent().Send(app.InstallHandler()).Code }()
	select {
	case code := <-done:
		if code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("the install handler is still waiting for the store a minute later")
	}
}

// cancelOnWrite cancels the request's context when a write starts, as a sender that hangs up
// while the event is being stored.
type cancelOnWrite struct {
	b24oauth.TokenStore
	cancel func()
}

func (s cancelOnWrite) Save(ctx context.Context, inst b24oauth.Installation) error {
	s.cancel()
	return s.TokenStore.Save(ctx, inst)
}

func (s cancelOnWrite) Update(ctx context.Context, id string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	s.cancel()
	return s.TokenStore.Update(ctx, id, fn)
}

// A late install event whose access token has expired is verified by exchanging its refresh
// token: the new pair is the only live one, and is stored even if the sender hangs up.
func TestLateInstallEventIsStoredWhenTheSenderHangsUp(t *testing.T) {
	fake := newFake(t)
	store := b24oauth.NewMemoryStore()
	ctx, cancel := context.WithCancel(context.Background())
	app, err := b24oauth.NewApp(appConfig(fake, cancelOnWrite{store, cancel}))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	p := fake.AddPortal()
	ev := p.InstallEvent()
	p.ExpireAccessToken()
	req := httptest.NewRequest(http.MethodPost, "/install", strings.NewReader(ev.Form.Encode())).WithContext(ctx)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	app.InstallHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d %q, want 200", rec.Code, rec.Body)
	}
	got, err := store.Load(context.Background(), p.MemberID())
	if err != nil {
		t.Fatalf("the exchanged pair was not stored: %v", err)
	}
	if pairOf(got) != fakePair(p) || fake.Refreshes() != 1 {
		t.Errorf("stored pair is the exchanged one: %v; refreshes %d", pairOf(got) == fakePair(p), fake.Refreshes())
	}
}

// An installation stored without an application token (an older portal's install page) is
// removed by Bitrix24's uninstall, verified by its stored tokens being refused; an uninstall
// event while they still work is forged.
func TestUninstallOfAnInstallationWithoutApplicationToken(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.fake.AddPortal()
		page := p.InstallPage()
		page.Form.Del("APPLICATION_TOKEN")
		env.mustPost("/install", page)
		if got := env.load(p.MemberID()); got.ApplicationToken != "" {
			t.Fatalf("stored application token %q, want none", got.ApplicationToken)
		}
		before := env.load(p.MemberID())
		if code, body := env.post("/uninstall", uninstallEvent(env.fake, p, randomHex(16), false)); code != http.StatusForbidden {
			t.Fatalf("forged uninstall: %d %q, want 403", code, body)
		}
		env.mustNotChange(p.MemberID(), before, 1)
		env.mustPost("/uninstall", p.UninstallEvent(false))
		if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("after the genuine uninstall: %v, want ErrNotInstalled", err)
		}
	})
}

// OnInstall tells a new install from an update, a repeated install and a reinstall, and its
// context outlives the response.
func TestOnInstallKindAndContext(t *testing.T) {
	var mu sync.Mutex
	var kinds []b24oauth.InstallKind
	var ctxs []context.Context
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) {
		c.OnInstall = func(ctx context.Context, _ b24oauth.Installation) {
			mu.Lock()
			defer mu.Unlock()
			kinds = append(kinds, b24oauth.InstallKindFrom(ctx))
			ctxs = append(ctxs, ctx)
		}
	})
	p := env.install()
	env.mustPost("/install", p.UpdateEvent("2"))
	env.mustPost("/install", p.InstallPage())
	env.mustPost("/install", p.Reinstall())
	mu.Lock()
	defer mu.Unlock()
	want := []b24oauth.InstallKind{b24oauth.InstallNew, b24oauth.InstallUpdate, b24oauth.InstallAgain, b24oauth.InstallReinstall}
	if d := cmp.Diff(want, kinds); d != "" {
		t.Errorf("kinds (-want +got):\n%s", d)
	}
	for i, ctx := range ctxs {
		if ctx.Err() != nil {
			t.Errorf("hook %d: context %v after the response", i, ctx.Err())
		}
	}
}
