package b24oauth_test

// Red-team tests of how the App verifies lifecycle events (issue 7, sections 2 and 3). Each
// test is an attack, or a genuine Bitrix24 sequence, that the current code handles unsafely: it
// fails on the code it was written against and passes once the finding is fixed. The comment of
// each test says the attack and the expected safe behaviour.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// profileErr calls profile with c; unlike mustCallProfile it may run outside the test's
// goroutine (inside a store hook or a handler).
func profileErr(c *b24oauth.B24OAuth) error {
	_, err := c.Call(context.Background(), "profile", nil)
	return err
}

// copyEvent returns a deep copy of ev, to forge a variant of a captured event.
func copyEvent(ev b24test.Event) b24test.Event {
	cp := b24test.Event{Query: url.Values{}, Form: url.Values{}}
	for k, v := range ev.Query {
		cp.Query[k] = append([]string(nil), v...)
	}
	for k, v := range ev.Form {
		cp.Form[k] = append([]string(nil), v...)
	}
	return cp
}

// setLoadGate makes the spy store run fn once, inside the next Load, after it read.
func setLoadGate(s *spyStore, fn func()) {
	var armed atomic.Bool
	armed.Store(true)
	s.mu.Lock()
	s.loadGate = func() {
		if armed.CompareAndSwap(true, false) {
			fn()
		}
	}
	s.mu.Unlock()
}

// oauthOutage makes the fake's OAuth server answer 503 (a gateway error page) while down is
// set; the portals keep working.
type oauthOutage struct {
	base http.RoundTripper
	down atomic.Bool
}

func (o *oauthOutage) RoundTrip(r *http.Request) (*http.Response, error) {
	if o.down.Load() && r.URL.Hostname() == b24test.OAuthHost {
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable,
			Header:     http.Header{"Content-Type": {"text/html"}},
			Body:       io.NopCloser(strings.NewReader("<html>502 Bad Gateway</html>")),
			Request:    r,
		}, nil
	}
	return o.base.RoundTrip(r)
}

// Finding: an uninstall fails open.
//
// Attack: a portal user who is not an administrator learns the real APPLICATION_TOKEN from an
// app page (current portals send it to every user) and sends ONAPPUNINSTALL events with it, one
// every couple of seconds, which costs nothing. Whenever the stored pair's state cannot be
// established, the handler "uninstalls anyway" and deletes the installation: during an OAuth
// server outage (5xx, timeouts), and, with no outage at all, while a refresh of the portal is in
// flight in another replica (storedPairState's "a refusal while another process's refresh is in
// flight proves nothing" becomes errVerifyUnavailable, which the uninstall ignores). The claimed
// rule is "the matching application_token AND the stored pair no longer working"; here nothing
// proved the second.
//
// Expected: when the stored pair's state cannot be established, the uninstall is refused (503)
// and nothing is deleted. A genuine uninstall lost that way leaves dead tokens, which the next
// call marks revoked: a safe failure, unlike a deleted live installation.
func TestRedTeamUninstallFailsOpenWhenOAuthServerUnavailable(t *testing.T) {
	t.Run("OAuth server outage", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
			fake := newFake(t)
			outage := &oauthOutage{base: fake.Client().Transport}
			env := newAppEnv(t, fake, open(), func(c *b24oauth.AppConfig) {
				c.HTTPClient = &http.Client{Transport: outage}
			})
			p := env.install()
			leaked := p.OpenPage(p.AddUser(false)).Form.Get("APPLICATION_TOKEN")
			before := env.load(p.MemberID())

			outage.down.Store(true)
			code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, true))
			outage.down.Store(false)

			if code == http.StatusOK {
				t.Errorf("forged uninstall during an OAuth server outage: %d %q, want it refused (503)", code, body)
			}
			if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); err != nil {
				t.Fatalf("the live installation was deleted by a non-administrator: Load: %v", err)
			}
			env.mustNotChange(p.MemberID(), before, 1)
			mustCallProfile(t, env.client(p.MemberID()))
		})
	})
	t.Run("another replica's refresh in flight", func(t *testing.T) {
		forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
			env := newAppEnv(t, nil, open())
			p := env.install()
			leaked := p.OpenPage(p.AddUser(false)).Form.Get("APPLICATION_TOKEN")
			// The stored access token has expired; another replica has marked its refresh
			// (phase 1) and exchanged the stored refresh token, and is about to write the new
			// pair.
			p.ExpireAccessToken()
			env.clock.Advance(2 * time.Hour)
			stored := env.load(p.MemberID())
			if err := env.store.TokenStore.Update(context.Background(), p.MemberID(), func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				cur.RefreshingSince = env.clock.Now().UTC()
				return cur, nil
			}); err != nil {
				t.Fatal(err)
			}
			spendAtFake(t, env.fake, stored.RefreshToken)

			code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, true))
			if code == http.StatusOK {
				t.Errorf("forged uninstall during another replica's refresh: %d %q, want it refused", code, body)
			}
			if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); err != nil {
				t.Fatalf("the live installation was deleted by a non-administrator (the other replica's new pair has nowhere to go): Load: %v", err)
			}
		})
	})
}

// spendAtFake exchanges refreshToken at the fake's OAuth server, as another replica does.
func spendAtFake(t *testing.T, fake *b24test.Server, refreshToken string) {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "client_id": {fake.ClientID()},
		"client_secret": {fake.ClientSecret()}, "refresh_token": {refreshToken}}
	resp, err := fake.Client().PostForm(fake.OAuthOrigin()+"/oauth/token/", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("spending the refresh token at the fake: HTTP %d", resp.StatusCode)
	}
}

// Finding: an uninstall checks a pair that is no longer the stored one (check-then-delete).
//
// Attack: as above, a non-administrator with the leaked APPLICATION_TOKEN keeps sending
// ONAPPUNINSTALL. The handler Loads the installation, then asks the OAuth server about the pair
// it loaded, then Deletes unconditionally. When the App refreshes the portal in between (it does
// once an hour, whenever business code calls), the loaded pair is dead (its access token
// revoked by the rotation, or its refresh token spent) and the live installation is deleted,
// OnUninstall runs, and the portal is gone from the App.
//
// Expected: the uninstall decides on the pair the store holds when it deletes (check and delete
// under the member's lock, or re-check when the stored pair changed): 403, nothing deleted.
func TestRedTeamUninstallChecksAPairNoLongerStored(t *testing.T) {
	for _, tc := range []struct {
		name     string
		oldValid bool // the fake keeps old access tokens valid after a refresh (portal cache)
		advance  time.Duration
	}{
		{"old access token revoked by the refresh", false, 0},
		{"loaded access token had expired (old access tokens stay valid)", true, 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				fake := newFake(t, b24test.WithOldAccessTokenValid(tc.oldValid))
				env := newAppEnv(t, fake, open())
				p := env.install()
				leaked := p.OpenPage(p.AddUser(false)).Form.Get("APPLICATION_TOKEN")
				c := env.client(p.MemberID())
				p.ExpireAccessToken()
				env.clock.Advance(tc.advance)

				refreshed := make(chan error, 1)
				setLoadGate(env.store, func() {
					// Between the handler's Load and its check: business code calls, and the
					// App refreshes the portal's pair.
					refreshed <- profileErr(c)
				})
				code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, true))
				select {
				case refreshErr := <-refreshed:
					if refreshErr != nil {
						t.Fatalf("the App's own refresh failed: %v", refreshErr)
					}
				default: // the handler no longer Loads first: the race is gone by construction
				}
				if code == http.StatusOK {
					t.Errorf("forged uninstall racing a refresh: %d %q, want 403", code, body)
				}
				if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); err != nil {
					t.Fatalf("the live installation was deleted by a non-administrator: Load: %v", err)
				}
				if _, u, _ := env.hooks.counts(); u != 0 {
					t.Errorf("OnUninstall ran %d times", u)
				}
				env.clock.Set(time.Now())
				mustCallProfile(t, env.client(p.MemberID()))
			})
		})
	}
}

// Finding: a late genuine uninstall deletes the reinstall that overtook it (same
// check-then-delete as above, with genuine Bitrix24 events only).
//
// Sequence: the administrator removes the app and installs it again. Bitrix24's queue delivers
// both events, the uninstall a little late: the install handler stores the new installation
// while the uninstall handler is between its Load and its Delete. The uninstall matched the old
// application token and the old pair is dead, so it deletes the new installation: the portal
// has the app installed and the App knows nothing of it (every call ErrNotInstalled, no event
// will come to repair it).
//
// Expected: the uninstall never deletes an installation other than the one it checked: the new
// installation survives (the late uninstall is 403 or a no-op 200).
func TestRedTeamLateUninstallDeletesTheReinstall(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.install()
		uninstall := p.UninstallEvent(false)
		reinstall := p.Reinstall()

		reinstalled := make(chan int, 1)
		setLoadGate(env.store, func() {
			reinstalled <- reinstall.Send(env.app.InstallHandler()).Code
		})
		code, body := env.post("/uninstall", uninstall)
		var reinstallCode int
		select {
		case reinstallCode = <-reinstalled:
		default: // the handler no longer Loads first: the reinstall comes after it
			reinstallCode = reinstall.Send(env.app.InstallHandler()).Code
		}
		if reinstallCode != http.StatusOK {
			t.Fatalf("the reinstall: %d", reinstallCode)
		}
		t.Logf("late uninstall: %d %q", code, strings.TrimSpace(body))
		got, err := env.store.TokenStore.Load(context.Background(), p.MemberID())
		if err != nil {
			t.Fatalf("the reinstalled portal is gone from the store: Load: %v", err)
		}
		if got.ApplicationToken != p.ApplicationToken() {
			t.Errorf("stored application token is not the reinstall's")
		}
		mustCallProfile(t, env.client(p.MemberID()))
	})
}

// Finding: a replayed event spends the stored refresh token and throws its successor away.
//
// Attack: someone who captured a genuine ONAPPINSTALL (a proxy log, a HAR file shared for
// support, a leaked request log) waits until the access token in it has expired while the portal
// was idle: the event's pair is still the stored pair, its refresh token unused. They replay it
// with auth[member_id] changed (any valid member_id: an unknown one, or another stored portal's).
// app.info says expired_token, so verification exchanges the refresh token; only then does it
// see that the reply "names another portal" and refuse (403). The portal's refresh token is
// spent, its successor discarded ("not ours to store"), and the portal is revoked at the App's
// next call: a permanent loss until the administrator reinstalls. (A changed domain does not
// work: the exchange reply's client_endpoint replaces the event's before the check. Any other
// refusal after the exchange, such as a user.admin that fails or says "no" for an admin since
// demoted, loses the pair the same way.)
//
// Expected: a refused event never costs a stored portal its pair: store the successor of any
// stored refresh token verification spent (under Update, if the stored refresh token is still
// the spent one), whatever the verdict; or do not exchange an event's refresh token when its
// pair is already stored (the event brings nothing newer).
func TestRedTeamReplayedEventSpendsTheStoredRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		forge func(f url.Values)
	}{
		{"another member_id", func(f url.Values) { f.Set("auth[member_id]", randomHex(16)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				p := env.fake.AddPortal()
				captured := p.InstallEvent()
				env.mustPost("/install", captured)
				p.ExpireAccessToken() // an idle hour: the App has not refreshed

				forged := copyEvent(captured)
				tc.forge(forged.Form)
				code, body := env.post("/install", forged)
				t.Logf("replay: %d %q", code, strings.TrimSpace(body))

				c := env.client(p.MemberID())
				if err := profileErr(c); err != nil {
					t.Fatalf("the portal's next call after a refused replay: %v (refreshes at the fake: %d)", err, p.Refreshes())
				}
				if _, _, revoked := env.hooks.counts(); revoked != 0 {
					t.Error("the portal was revoked by a refused replay")
				}
			})
		})
	}
}

// updateHook runs hook (once) at the start of the next Update, before the store's own.
type updateHook struct {
	b24oauth.TokenStore
	hook atomic.Pointer[func()]
}

func (s *updateHook) Update(ctx context.Context, id string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	if h := s.hook.Swap(nil); h != nil {
		(*h)()
	}
	return s.TokenStore.Update(ctx, id, fn)
}

// Finding: an uninstall's check exchanges the stored refresh token outside the store's lock,
// without the "refresh in flight" mark, and its write leaves the portal revoked.
//
// Attack: a non-administrator with the leaked APPLICATION_TOKEN sends ONAPPUNINSTALL while the
// stored access token has expired (an idle portal). The check exchanges the stored refresh
// token, outside TokenStore.Update and without marking the refresh. If the App's own refresh
// runs before the check writes the successor, it finds the spent refresh token, gets
// invalid_grant with no foreign mark, and marks the portal StateRevoked (OnRevoked runs). The
// check's write (persistChecked) then stores the live successor but keeps StateRevoked: every
// ClientForMember fails until the administrator reinstalls, although a live pair is stored.
//
// Expected: the check's exchange runs under the member's lock (inside Update, like a refresh),
// or marks the refresh first; and a write of a live pair clears StateRevoked. The portal is
// never revoked by a forged uninstall.
func TestRedTeamUninstallCheckRacesRefreshIntoRevocation(t *testing.T) {
	hooked := &updateHook{TokenStore: b24oauth.NewMemoryStore()}
	env := newAppEnv(t, nil, hooked)
	p := env.install()
	leaked := p.OpenPage(p.AddUser(false)).Form.Get("APPLICATION_TOKEN")
	c := env.client(p.MemberID())
	p.ExpireAccessToken()
	env.clock.Advance(2 * time.Hour) // the stored access token has expired: the check exchanges

	called := make(chan error, 1)
	hook := func() { called <- profileErr(c) } // the App's own call, as the check writes
	hooked.hook.Store(&hook)
	code, body := env.post("/uninstall", uninstallEvent(env.fake, p, leaked, false))
	var refreshErr error
	select {
	case refreshErr = <-called:
	default: // the uninstall no longer writes: the App's call comes after it
		refreshErr = profileErr(c)
	}
	t.Logf("forged uninstall: %d %q; the App's call meanwhile: %v", code, strings.TrimSpace(body), refreshErr)

	if _, _, revoked := env.hooks.counts(); revoked != 0 {
		t.Errorf("the portal was revoked (OnRevoked ran %d times) by a forged uninstall", revoked)
	}
	got := env.load(p.MemberID())
	if got.State == b24oauth.StateRevoked {
		t.Errorf("stored state %q with a live pair stored (the check's successor): the portal needs a reinstall", got.State)
	}
	if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); err != nil {
		t.Errorf("ClientForMember after a forged uninstall: %v", err)
	}
}

// Finding: forged events exhaust a portal's verification budget, and Bitrix24's own events for
// that portal are then refused.
//
// Attack: an outsider who knows only a portal's member_id and domain (both are visible to
// every user of the portal) sends ONAPPINSTALL events with made-up tokens and application
// token. Each is rightly refused, but each also takes a token from the portal's per-portal
// bucket (default: a burst of 10, then one every 2 s), and so does everything after: one forged
// event every 2 s keeps it empty. Bitrix24's genuine ONAPPUNINSTALL or ONAPPUPDATE then gets
// 429, and Bitrix24 never retries: the uninstall or update is lost. (The per-App bucket has
// the same effect on every portal at once: ~20 forged events per second with random member_ids
// give every genuine event 503.)
//
// Expected: events that cannot be genuine for a stored installation do not consume the budget
// of events that can: for instance a separate bucket for events carrying the stored
// application_token (the outsider does not know it), or charge the bucket only after the cheap
// checks. The genuine events pass.
//
// The test shrinks the bucket (SetVerifyLimits: a burst of 3, refilled hourly) so that the
// drained state does not depend on timing; the defaults only change how many forged events it
// takes.
func TestRedTeamForgedEventsThrottleGenuineEvents(t *testing.T) {
	genuine := map[string]func(p *b24test.Portal) (string, b24test.Event){
		"ONAPPUNINSTALL": func(p *b24test.Portal) (string, b24test.Event) { return "/uninstall", p.UninstallEvent(false) },
		"ONAPPUPDATE":    func(p *b24test.Portal) (string, b24test.Event) { return "/install", p.UpdateEvent("2") },
	}
	for name, ev := range genuine {
		t.Run(name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			b24oauth.SetVerifyLimits(env.app, 3, time.Hour, 1000)
			p := env.install()
			throttled := 0
			for i := 0; i < 6; i++ {
				forged := outsiderInstall(p)
				if code, _ := env.post("/install", forged); code == http.StatusTooManyRequests {
					throttled++
				}
			}
			if throttled == 0 {
				t.Fatal("the forged events were never throttled: the test does not drain the bucket")
			}
			path, e := ev(p)
			if code, body := env.post(path, e); code != http.StatusOK {
				t.Errorf("Bitrix24's %s after an outsider's forged events: %d %q, want 200", name, code, strings.TrimSpace(body))
			}
		})
	}
}

// outsiderInstall returns an ONAPPINSTALL an outsider can forge for p: the portal's member_id and
// domain, made-up tokens and application token.
func outsiderInstall(p *b24test.Portal) b24test.Event {
	f := url.Values{}
	f.Set("event", "ONAPPINSTALL")
	f.Set("event_handler_id", b24test.InstallHandlerID)
	f.Set("data[VERSION]", "1")
	f.Set("ts", strconv.FormatInt(time.Now().Unix(), 10))
	f.Set("auth[access_token]", randomHex(35))
	f.Set("auth[refresh_token]", randomHex(35))
	f.Set("auth[expires]", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
	f.Set("auth[expires_in]", "3600")
	f.Set("auth[scope]", p.Scope())
	f.Set("auth[domain]", p.Domain())
	f.Set("auth[server_endpoint]", p.Server().OAuthServerEndpoint())
	f.Set("auth[status]", "L")
	f.Set("auth[client_endpoint]", p.ClientEndpoint())
	f.Set("auth[member_id]", p.MemberID())
	f.Set("auth[user_id]", "1")
	f.Set("auth[application_token]", randomHex(16))
	return b24test.Event{Query: url.Values{}, Form: f}
}

// Finding: a genuine ONAPPUPDATE whose pair is older than the stored one is dropped whole.
//
// Sequence: Bitrix24 issues the ONAPPUPDATE's pair when the administrator updates the app; the
// queue delivers it a little later. If the App refreshed the portal in between (its pair
// expiring then, business code calling), the event's access token expires before the stored
// one, and rule 4 ("an older pair never replaces a newer one") discards the whole event with a
// 200: the new version and language are not stored, OnInstall(InstallUpdate) never runs (the
// app's migration for the new version), and an application_token the update rotated (the README
// says an ONAPPUPDATE may) is lost, so Bitrix24's genuine uninstall later gets 403 for good.
//
// Expected: an older pair is not taken, but the verified event's other news is: version,
// language, the rotated application token, and OnInstall with InstallUpdate.
func TestRedTeamOlderUpdateEventIsDropped(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		clock := b24test.NewClock(time.Now())
		fake := newFake(t, b24test.WithClock(clock.Now))
		var mu sync.Mutex
		var kinds []b24oauth.InstallKind
		env := newAppEnv(t, fake, open(), func(c *b24oauth.AppConfig) {
			c.OnInstall = func(ctx context.Context, _ b24oauth.Installation) {
				mu.Lock()
				kinds = append(kinds, b24oauth.InstallKindFrom(ctx))
				mu.Unlock()
			}
		})
		p := env.install()
		clock.Advance(2 * time.Minute)
		rotated := randomHex(16)
		p.SetApplicationToken(rotated)
		update := p.UpdateEvent("2") // its pair expires 2 minutes after the stored one

		// Before the event is delivered, the stored pair expires and the App refreshes.
		clock.Advance(59 * time.Minute)
		mustCallProfile(t, env.client(p.MemberID()))
		refreshed := env.load(p.MemberID())
		if pairOf(refreshed) != fakePair(p) {
			t.Fatal("the refresh was not stored")
		}

		env.mustPost("/install", update)
		got := env.load(p.MemberID())
		if pairOf(got) != pairOf(refreshed) {
			t.Error("the older pair replaced the newer one")
		}
		if got.Version != "2" {
			t.Errorf("stored version %q after a verified ONAPPUPDATE to 2", got.Version)
		}
		if got.ApplicationToken != rotated {
			t.Error("the application token the update rotated was not stored")
		}
		mu.Lock()
		if len(kinds) != 2 || kinds[1] != b24oauth.InstallUpdate {
			t.Errorf("OnInstall kinds %v, want [new update]", kinds)
		}
		mu.Unlock()
		if code, body := env.post("/uninstall", p.UninstallEvent(false)); code != http.StatusOK {
			t.Errorf("Bitrix24's uninstall after the update: %d %q, want 200", code, strings.TrimSpace(body))
		}
	})
}

// hostileNet is a test network: one TLS server standing for every host, answering by the Host
// of each request, and an http.Client (standing for a user's AppConfig.HTTPClient: Go's default
// redirect policy) whose every connection, whatever the address, reaches that server. It
// records which hosts the App sent requests to, and their bodies.
type hostileNet struct {
	srv    *httptest.Server
	client *http.Client

	mu     sync.Mutex
	hosts  map[string]int
	bodies map[string][]string
}

func newHostileNet(t *testing.T, route func(host string, w http.ResponseWriter, r *http.Request)) *hostileNet {
	n := &hostileNet{hosts: map[string]int{}, bodies: map[string][]string{}}
	n.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		n.mu.Lock()
		n.hosts[r.Host]++
		n.bodies[r.Host] = append(n.bodies[r.Host], string(body))
		n.mu.Unlock()
		route(r.Host, w, r)
	}))
	t.Cleanup(n.srv.Close)
	addr := n.srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test's stand-in for real certificates
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	n.client = &http.Client{Transport: tr}
	return n
}

func (n *hostileNet) requestsTo(host string) (int, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[host], append([]string(nil), n.bodies[host]...)
}

const hostileOAuth = "oauth.hostile.test"

// appInfoFor answers the OAuth server's app.info as Bitrix24's does for a token it issued to
// clientID on the portal memberID whose client endpoint is clientEndpoint: what the genuine
// OAuth server says of an on-premise portal its owner registered with that address.
func appInfoFor(w http.ResponseWriter, clientID, memberID, clientEndpoint string) {
	u, _ := url.Parse(clientEndpoint)
	_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{
		"client_id": clientID, "scope": "crm", "user_id": 1,
		"expires": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"install": map[string]any{
			"installed": true, "status": "L", "scope": "crm", "domain": u.Host, "uri": "https://" + u.Host,
			"client_endpoint": clientEndpoint, "member_id": memberID, "member_type": "portal",
		},
	}})
}

// hostileApp is an App whose HTTP client is n's and whose one trusted OAuth server is
// hostileOAuth.
func hostileApp(t *testing.T, n *hostileNet, store b24oauth.TokenStore) *b24oauth.App {
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: "local.0123456789abcd.12345678", ClientSecret: strings.Repeat("s", 50),
		Store: store, HTTPClient: n.client,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OAuthServers: []string{"https://" + hostileOAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

// onPremInstall is the ONAPPINSTALL an on-premise portal at host sends.
func onPremInstall(memberID, host, accessToken string) b24test.Event {
	f := url.Values{}
	f.Set("event", "ONAPPINSTALL")
	f.Set("event_handler_id", "1")
	f.Set("data[VERSION]", "1")
	f.Set("auth[access_token]", accessToken)
	f.Set("auth[refresh_token]", randomHex(35))
	f.Set("auth[expires_in]", "3600")
	f.Set("auth[domain]", host)
	f.Set("auth[client_endpoint]", "https://"+host+"/rest/")
	f.Set("auth[server_endpoint]", "https://"+hostileOAuth+"/rest/")
	f.Set("auth[member_id]", memberID)
	f.Set("auth[user_id]", "1")
	f.Set("auth[status]", "L")
	f.Set("auth[application_token]", randomHex(16))
	return b24test.Event{Query: url.Values{}, Form: f}
}

// Finding: an on-premise portal registered at an internal address is verified there and
// stored (SSRF through verification, and then through ClientForMember).
//
// Attack: the owner of an on-premise ("box") portal, which may use any host, sets its address
// to 127.0.0.1, 169.254.169.254 (cloud metadata), localhost:6379 or 0.0.0.0 and installs our
// app. The OAuth server faithfully vouches for the token and names that client endpoint, so the
// App POSTs user.admin to an internal service of its own host, and stores the installation: the
// README's ClientForMember(m).Call pattern then sends requests, and reflects answers, from
// inside our network. Rule 1 keeps events from naming such hosts, but not a portal whose
// registration names them.
//
// Expected: by default the App refuses portal hosts that are loopback, link-local, unspecified
// (and "localhost") before sending anything (403, nothing stored); an AppConfig option may allow
// them (and private ranges) for an App serving an intranet portal.
func TestRedTeamInternalPortalNamedByOAuthServer(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "169.254.169.254", "localhost:6379", "0.0.0.0", "[::1]:8443"} {
		t.Run(host, func(t *testing.T) {
			memberID, token := randomHex(16), randomHex(35)
			n := newHostileNet(t, func(h string, w http.ResponseWriter, r *http.Request) {
				switch {
				case h == hostileOAuth && r.URL.Path == "/rest/app.info":
					appInfoFor(w, "local.0123456789abcd.12345678", memberID, "https://"+host+"/rest/")
				default: // the internal service answers whatever makes the App go on
					_, _ = io.WriteString(w, `{"result":true}`)
				}
			})
			store := b24oauth.NewMemoryStore()
			app := hostileApp(t, n, store)
			rec := onPremInstall(memberID, host, token).Send(app.InstallHandler())
			if k, _ := n.requestsTo(host); k != 0 {
				t.Errorf("the App sent %d request(s) to the internal address %s", k, host)
			}
			if rec.Code == http.StatusOK {
				t.Errorf("an installation at %s was accepted: %d", host, rec.Code)
			}
			if _, err := store.Load(context.Background(), memberID); !errors.Is(err, b24oauth.ErrNotInstalled) {
				t.Errorf("an installation at %s was stored (Load: %v)", host, err)
			}
		})
	}
}

// Finding: verification follows a portal's redirect with the token in the body.
//
// Attack: a hostile on-premise portal (or any portal host an attacker controls) answers the
// App's user.admin with 307 to another host. With an AppConfig.HTTPClient of Go's default
// redirect policy (the usual &http.Client{Timeout: ...}), the probe re-POSTs its JSON body,
// access token included, there: a request to a host that is neither the trusted OAuth server
// nor the portal it named (SSRF with a body the attacker shapes, and the answer decides the
// admin verdict). app.info already uses a client that refuses redirects; the user.admin probe and
// the event's token exchange do not.
//
// Expected: nothing the App sends during verification follows a redirect, whatever client the
// user gave: no request reaches the other host, and the event is refused.
func TestRedTeamVerificationFollowsPortalRedirect(t *testing.T) {
	const portal, other = "portal.hostile.test", "internal.hostile.test"
	memberID, token := randomHex(16), randomHex(35)
	n := newHostileNet(t, func(h string, w http.ResponseWriter, r *http.Request) {
		switch h {
		case hostileOAuth:
			appInfoFor(w, "local.0123456789abcd.12345678", memberID, "https://"+portal+"/rest/")
		case portal:
			w.Header().Set("Location", "https://"+other+"/steal")
			w.WriteHeader(http.StatusTemporaryRedirect)
		default:
			_, _ = io.WriteString(w, `{"result":true}`)
		}
	})
	store := b24oauth.NewMemoryStore()
	app := hostileApp(t, n, store)
	rec := onPremInstall(memberID, portal, token).Send(app.InstallHandler())
	if k, bodies := n.requestsTo(other); k != 0 {
		leaked := false
		for _, b := range bodies {
			leaked = leaked || strings.Contains(b, token)
		}
		t.Errorf("the App followed the portal's redirect: %d request(s) to %s (access token in the body: %v)", k, other, leaked)
	}
	if rec.Code == http.StatusOK {
		t.Errorf("the install was accepted on the redirect target's word: %d", rec.Code)
	}
}

// Finding: verification reads a portal's user.admin reply of any size up to 64 MiB.
//
// Attack: a hostile on-premise portal answers user.admin with tens of MiB (a valid reply padded
// with junk). Verification reads it whole (the per-call cap of REST replies, 64 MiB); with the
// per-portal burst of 10 and 16 verifications in flight, a handful of its install events hold
// hundreds of MiB, and it can repeat every few seconds.
//
// Expected: verification bounds the replies it reads to what they can be (app.info's 64 KiB
// bound would do for user.admin) and refuses a larger one; the App stops reading early.
func TestRedTeamVerificationReadsHugeReplies(t *testing.T) {
	const portal = "huge.hostile.test"
	const size = 40 << 20
	memberID, token := randomHex(16), randomHex(35)
	var written atomic.Int64
	n := newHostileNet(t, func(h string, w http.ResponseWriter, r *http.Request) {
		switch h {
		case hostileOAuth:
			appInfoFor(w, "local.0123456789abcd.12345678", memberID, "https://"+portal+"/rest/")
		default:
			w.Header().Set("Content-Type", "application/json")
			if _, err := io.WriteString(w, `{"result":true,"pad":"`); err != nil {
				return
			}
			chunk := strings.Repeat("a", 64<<10)
			for i := 0; i < size/len(chunk); i++ {
				k, err := io.WriteString(w, chunk)
				written.Add(int64(k))
				if err != nil {
					return
				}
			}
			_, _ = io.WriteString(w, `"}`)
		}
	})
	store := b24oauth.NewMemoryStore()
	app := hostileApp(t, n, store)
	rec := onPremInstall(memberID, portal, token).Send(app.InstallHandler())
	if w := written.Load(); w > 16<<20 {
		t.Errorf("verification read %d MiB of the portal's user.admin reply", w>>20)
	}
	if rec.Code == http.StatusOK {
		t.Errorf("a %d MiB user.admin reply was accepted: %d", size>>20, rec.Code)
	}
}

// Finding (low): a replayed event re-runs OnInstall.
//
// Attack: someone who captured a genuine ONAPPINSTALL replays it within its hour, before the App
// refreshed. Its pair is the stored pair (not older), so every replay "installs again": the
// store is rewritten and OnInstall runs with InstallAgain each time, re-running whatever the
// app does there (event.bind, welcome mails, provisioning). Bitrix24 never delivers an event
// twice, so a repeat is never Bitrix24's.
//
// Expected: an event that brings exactly the stored pair and nothing new changes nothing:
// 200, no write, no OnInstall.
func TestRedTeamReplayedEventRerunsOnInstall(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.fake.AddPortal()
	captured := p.InstallEvent()
	env.mustPost("/install", captured)
	for i := 0; i < 3; i++ {
		env.mustPost("/install", captured)
	}
	if n, _, _ := env.hooks.counts(); n != 1 {
		t.Errorf("OnInstall ran %d times for one install and 3 replays of it, want 1", n)
	}
}

// saveBarrier holds each Save until n Saves have arrived (or a bound for a broken run has
// passed), as when two requests for a new portal reach the store together.
type saveBarrier struct {
	b24oauth.TokenStore
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func (s *saveBarrier) Save(ctx context.Context, inst b24oauth.Installation) error {
	s.mu.Lock()
	s.arrived++
	if s.arrived == s.n {
		close(s.all)
	}
	s.mu.Unlock()
	select {
	case <-s.all:
	case <-time.After(10 * time.Second):
	}
	return s.TokenStore.Save(ctx, inst)
}

// Finding: ONAPPINSTALL and the install page POST arriving together are two "new" installs,
// and the last write wins.
//
// Sequence: a UI app with an ONAPPINSTALL handler: installing it, Bitrix24 sends ONAPPINSTALL
// through its queue while the administrator's browser POSTs the install page, both to the
// install handler. Both are verified, both find no installation and Save: OnInstall runs twice
// with InstallNew (provisioning twice), one of the hooks is given an installation that is not
// the stored one, and when the page's Save lands last the stored installation has no version
// (the page carries none). The same happens to any two verified first installs at once.
//
// Expected: exactly one event creates the installation (create-if-absent, e.g. an optional
// TokenStore interface, or Save then re-check under Update); the other merges into it:
// reaches its verification while the slow ones still hang.
func TestRedTeamSlowPortalHoldsVerificationSlots(t *testing.T) {
	const slow, good = "slow.hostile.test", "good.hostile.test"
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var mu sync.Mutex
	endpoint := map[string][2]string{} // access token → member_id, client endpoint
	n := newHostileNet(t, func(h string, w http.ResponseWriter, r *http.Request) {
		switch h {
		case hostileOAuth:
			mu.Lock()
			e := endpoint[r.FormValue("auth")]
			mu.Unlock()
			appInfoFor(w, "local.0123456789abcd.12345678", e[0], e[1])
		case slow:
			select {
			case <-release:
			case <-r.Context().Done():
			}
			_, _ = io.WriteString(w, `{"result":true}`)
		default:
			_, _ = io.WriteString(w, `{"result":true}`)
		}
	})
	t.Cleanup(unblock) // runs before the server's Close waits for handlers
	store := b24oauth.NewMemoryStore()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: "local.0123456789abcd.12345678", ClientSecret: strings.Repeat("s", 50),
		Store: store, HTTPClient: n.client,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OAuthServers: []string{"https://" + hostileOAuth},
		Restriction:  unlimitedParams(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })

	event := func(host string, memberID string) b24test.Event {
		tok := randomHex(35)
		mu.Lock()
		endpoint[tok] = [2]string{memberID, "https://" + host + "/rest/"}
		mu.Unlock()
		return onPremInstall(memberID, host, tok)
	}
	var wg sync.WaitGroup
	for _, m := range []string{randomHex(16), randomHex(16)} {
		for i := 0; i < 8; i++ {
			ev := event(slow, m)
			wg.Add(1)
			go func() { defer wg.Done(); ev.Send(app.InstallHandler()) }()
		}
	}
	// At most two verifications of one portal run at once: 4 hang, the other 12 are refused.
	waitFor(t, "4 verifications hanging at the slow portal", func() bool { k, _ := n.requestsTo(slow); return k >= 4 })

	genuine := event(good, randomHex(16))
	done := make(chan int, 1)
	go func() { done <- genuine.Send(app.InstallHandler()).Code }()
	deadline := time.Now().Add(15 * time.Second) // a bound on a broken run, not a timing target
	for {
		if k, _ := n.requestsTo(good); k > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Error("another portal's install event is still waiting for a verification slot 15 s later")
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	unblock()
	wg.Wait()
	<-done
}

// OnInstall runs once with InstallNew, and the stored version is the event's.
func TestRedTeamConcurrentFirstInstalls(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		barrier := &saveBarrier{TokenStore: open(), n: 2, all: make(chan struct{})}
		var mu sync.Mutex
		var kinds []b24oauth.InstallKind
		env := newAppEnv(t, nil, barrier, func(c *b24oauth.AppConfig) {
			c.OnInstall = func(ctx context.Context, _ b24oauth.Installation) {
				mu.Lock()
				kinds = append(kinds, b24oauth.InstallKindFrom(ctx))
				mu.Unlock()
			}
		})
		p := env.fake.AddPortal()
		events := []b24test.Event{p.InstallEvent(), p.InstallPage()}
		codes := make([]int, len(events))
		var wg sync.WaitGroup
		for i, ev := range events {
			wg.Add(1)
			go func(i int, ev b24test.Event) {
				defer wg.Done()
				codes[i] = ev.Send(env.app.InstallHandler()).Code
			}(i, ev)
		}
		wg.Wait()
		if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
			t.Fatalf("answers %v, want both 200", codes)
		}
		news := 0
		mu.Lock()
		for _, k := range kinds {
			if k == b24oauth.InstallNew {
				news++
			}
		}
		mu.Unlock()
		if news != 1 {
			t.Errorf("OnInstall ran with InstallNew %d times for one installation (kinds %v)", news, kinds)
		}
		if got := env.load(p.MemberID()); got.Version != "1" {
			t.Errorf("stored version %q, want the ONAPPINSTALL's 1", got.Version)
		}
	})
}

// Finding: a slow portal holds the App's verification slots, and every portal's lifecycle
// events wait behind it.
//
// Attack: the owner of an on-premise portal (two of them, to get past the per-portal burst)
// sends 16 ONAPPINSTALL events with genuine tokens of their portals; their portals answer the
// App's user.admin slowly, never quite timing out. Each verification holds one of the App's 16
// in-flight slots until EventTimeout (20 s by default), and the per-portal bucket refills fast
// enough to keep them all held. Bitrix24's own events for every other portal then wait for a
// slot for up to EventTimeout (the per-App 2 s bound only covers the rate, not the slots), and
// Bitrix24 gives up on a slow handler and never retries.
//
// Expected: one portal's (or a few portals') slowness does not hold verification for the
// others: a short per-request timeout for verification requests and/or a per-portal cap on
// slots in flight, and a bounded wait for a slot. Here a genuine event of another portal
