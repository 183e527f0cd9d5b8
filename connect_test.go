package b24oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// callbackURL is the redirect URI the fake's portals send the browser to (never dialled).
const callbackURL = "https://app.example.net/oauth/callback"

// connectEnv is an appEnv whose fake redirects authorizations to callbackURL, and that records
// the kind of every OnInstall.
type connectEnv struct {
	*appEnv

	mu    sync.Mutex
	kinds []b24oauth.InstallKind
}

func newConnectEnv(t *testing.T, store b24oauth.TokenStore, fakeOpts ...b24test.Option) *connectEnv {
	t.Helper()
	fake := newFake(t, append([]b24test.Option{b24test.WithRedirectURI(callbackURL)}, fakeOpts...)...)
	ce := &connectEnv{}
	ce.appEnv = newAppEnv(t, fake, store, func(c *b24oauth.AppConfig) {
		hook := c.OnInstall
		c.OnInstall = func(ctx context.Context, inst b24oauth.Installation) {
			ce.mu.Lock()
			ce.kinds = append(ce.kinds, b24oauth.InstallKindFrom(ctx))
			ce.mu.Unlock()
			hook(ctx, inst)
		}
	})
	return ce
}

// wantKinds fails the test unless OnInstall ran with these kinds, in order.
func (e *connectEnv) wantKinds(want ...b24oauth.InstallKind) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if d := cmp.Diff(want, e.kinds); d != "" {
		e.t.Errorf("OnInstall kinds (-want +got):\n%s", d)
	}
}

// authorize sends a browser to the authorize URL of the App's OAuth2Config for p and returns
// the query of the portal's redirect.
func (e *connectEnv) authorize(p *b24test.Portal, state string) url.Values {
	e.t.Helper()
	cfg, err := e.app.OAuth2Config(p.Domain())
	if err != nil {
		e.t.Fatalf("OAuth2Config: %v", err)
	}
	browser := *e.fake.Client()
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := browser.Get(cfg.AuthCodeURL(state))
	if err != nil {
		e.t.Fatalf("GET authorize: %v", err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), callbackURL+"?") {
		e.t.Fatalf("authorize: %d Location %q, want a redirect to %s", resp.StatusCode, resp.Header.Get("Location"), callbackURL)
	}
	return loc.Query()
}

// connect runs the whole flow for p and fails the test unless Connect succeeds.
func (e *connectEnv) connect(p *b24test.Portal) b24oauth.Installation {
	e.t.Helper()
	q := e.authorize(p, "state")
	inst, err := e.app.Connect(context.Background(), q.Get("domain"), q.Get("code"))
	if err != nil {
		e.t.Fatalf("Connect: %v", err)
	}
	return inst
}

// mustBeAbsent fails the test unless the store has no installation of memberID.
func (e *connectEnv) mustBeAbsent(memberID string) {
	e.t.Helper()
	if inst, err := e.store.TokenStore.Load(context.Background(), memberID); !errors.Is(err, b24oauth.ErrNotInstalled) {
		e.t.Errorf("Load(%s) = %v, %v; want ErrNotInstalled", memberID, inst, err)
	}
}

// wantConnectError fails the test unless err is a *ConnectError with code.
func wantConnectError(t *testing.T, err error, code string) *b24oauth.ConnectError {
	t.Helper()
	var ce *b24oauth.ConnectError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("error %v, want a *ConnectError with Code %q", err, code)
	}
	if !errors.Is(err, &b24oauth.ConnectError{Code: code}) {
		t.Errorf("errors.Is(err, &ConnectError{Code: %q}) = false", code)
	}
	return ce
}

func TestOAuth2Config(t *testing.T) {
	env := newConnectEnv(t, b24oauth.NewMemoryStore())
	p := env.fake.AddPortal(b24test.PortalName("acme"))
	cfg, err := env.app.OAuth2Config("ACME.example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := oauth2.Endpoint{
		AuthURL:   "https://acme.example.com/oauth/authorize/",
		TokenURL:  env.fake.OAuthOrigin() + "/oauth/token/",
		AuthStyle: oauth2.AuthStyleInParams,
	}
	if cfg.Endpoint != want || cfg.ClientID != env.fake.ClientID() || cfg.ClientSecret != env.fake.ClientSecret() {
		t.Errorf("config %+v, want endpoint %+v and the App's credentials", cfg.Endpoint, want)
	}
	u, _ := url.Parse(cfg.AuthCodeURL("st-1"))
	if u.Host != "acme.example.com" || u.Query().Get("client_id") != env.fake.ClientID() || u.Query().Get("state") != "st-1" {
		t.Errorf("AuthCodeURL = %s", u)
	}

	// x/oauth2's own Exchange works against the token endpoint: the credentials go in the form.
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, env.fake.Client())
	tok, err := cfg.Exchange(ctx, p.AuthCode())
	if err != nil || tok.AccessToken != p.Tokens().AccessToken || tok.RefreshToken != p.Tokens().RefreshToken {
		t.Errorf("Exchange = %v, %v; want the portal's new pair", tok, err)
	}

	// The Bitrix24 OAuth server when the App names none.
	def, err := b24oauth.NewApp(b24oauth.AppConfig{ClientID: "id", ClientSecret: "secret", Store: b24oauth.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if cfg, err := def.OAuth2Config("acme.bitrix24.com"); err != nil || cfg.Endpoint.TokenURL != "https://oauth.bitrix.info/oauth/token/" {
		t.Errorf("default TokenURL: %v, %v", cfg, err)
	}
	for _, d := range []string{"", "https://acme.example.com", "acme.example.com/", "acme.example.com/x", "acme .example.com",
		"acme.example.com:0", "user@acme.example.com", "acme.example.com?x=1", "acme.example.com#x", strings.Repeat("a", 300)} {
		cfg, err := env.app.OAuth2Config(d)
		if cfg != nil {
			t.Errorf("OAuth2Config(%q) = %+v, want nil", d, cfg.Endpoint)
		}
		wantConnectError(t, err, "invalid_request")
	}
}

func TestConnect(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newConnectEnv(t, open())
		p := env.fake.AddPortal(b24test.PortalScope("crm,user"))
		q := env.authorize(p, "state-1")
		if q.Get("state") != "state-1" || q.Get("domain") != p.Domain() || q.Get("member_id") != p.MemberID() {
			t.Fatalf("redirect query %v", q)
		}
		inst, err := env.app.Connect(context.Background(), q.Get("domain"), q.Get("code"))
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		tok := p.Tokens()
		want := b24oauth.Installation{
			OAuthParams: b24oauth.OAuthParams{
				UserID: 1, MemberID: p.MemberID(), AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
				Expires: tok.Expires.Unix(), ExpiresIn: 3600, Scope: "crm,user", Domain: p.Domain(),
				ClientEndpoint: p.ClientEndpoint(), ServerEndpoint: env.fake.OAuthServerEndpoint(), Status: b24oauth.StatusLocal,
			},
			State:       b24oauth.StateActive,
			InstalledAt: env.clock.Now(),
			UpdatedAt:   env.clock.Now(),
		}
		if d := cmp.Diff(want, inst); d != "" {
			t.Errorf("connected installation (-want +got):\n%s", d)
		}
		if d := cmp.Diff(inst, env.load(p.MemberID())); d != "" {
			t.Errorf("stored installation differs from the returned one (-returned +stored):\n%s", d)
		}
		if got := env.fake.TokenRequests(); got != 1 {
			t.Errorf("token requests %d, want 1 (the code grant)", got)
		}
		mustCallProfile(t, env.client(p.MemberID()))

		// Connected again (another user session, the same portal): the new pair replaces the old.
		env.clock.Advance(time.Minute)
		again := env.connect(p)
		if pairOf(again) != fakePair(p) || pairOf(env.load(p.MemberID())) != fakePair(p) || !again.InstalledAt.Equal(inst.InstalledAt) {
			t.Errorf("after connecting again: stored pair is the new one %v; installed at %v, want %v",
				pairOf(env.load(p.MemberID())) == fakePair(p), again.InstalledAt, inst.InstalledAt)
		}
		mustCallProfile(t, env.client(p.MemberID()))
		env.wantKinds(b24oauth.InstallNew, b24oauth.InstallAgain)
	})
}

func TestConnectRefusesAUsedCode(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newConnectEnv(t, open())
		p := env.fake.AddPortal()
		code := p.AuthCode()
		if _, err := env.app.Connect(context.Background(), p.Domain(), code); err != nil {
			t.Fatal(err)
		}
		before := env.load(p.MemberID())
		_, err := env.app.Connect(context.Background(), p.Domain(), code)
		wantConnectError(t, err, "invalid_grant")
		if d := cmp.Diff(before, env.load(p.MemberID())); d != "" {
			t.Errorf("a reused code changed the installation (-before +after):\n%s", d)
		}

		// A code someone else exchanged first stores nothing.
		other := env.fake.AddPortal()
		code = other.AuthCode()
		cfg, _ := env.app.OAuth2Config(other.Domain())
		if _, err := cfg.Exchange(context.WithValue(context.Background(), oauth2.HTTPClient, env.fake.Client()), code); err != nil {
			t.Fatal(err)
		}
		_, err = env.app.Connect(context.Background(), other.Domain(), code)
		wantConnectError(t, err, "invalid_grant")
		env.mustBeAbsent(other.MemberID())
		if installs, _, _ := env.hooks.counts(); installs != 1 {
			t.Errorf("OnInstall ran %d times, want 1 (the first connection)", installs)
		}
	})
}

func TestConnectRefusesACodeOfAnotherPortal(t *testing.T) {
	env := newConnectEnv(t, b24oauth.NewMemoryStore())
	victim, other := env.fake.AddPortal(), env.fake.AddPortal()
	_, err := env.app.Connect(context.Background(), victim.Domain(), other.AuthCode())
	ce := wantConnectError(t, err, "invalid_response")
	if ce.MemberID != other.MemberID() || ce.Domain != victim.Domain() {
		t.Errorf("error names member %q domain %q, want %q %q", ce.MemberID, ce.Domain, other.MemberID(), victim.Domain())
	}
	env.mustBeAbsent(victim.MemberID())
	env.mustBeAbsent(other.MemberID())
	if installs, _, _ := env.hooks.counts(); installs != 0 {
		t.Errorf("OnInstall ran %d times, want 0", installs)
	}
}

func TestConnectRefusesAnExpiredCode(t *testing.T) {
	clock := b24test.NewClock(time.Now())
	env := newConnectEnv(t, b24oauth.NewMemoryStore(), b24test.WithClock(clock.Now))
	p := env.fake.AddPortal()
	code := p.AuthCode()
	clock.Advance(31 * time.Second)
	_, err := env.app.Connect(context.Background(), p.Domain(), code)
	wantConnectError(t, err, "expired_token")
	env.mustBeAbsent(p.MemberID())

	code = p.AuthCode()
	clock.Advance(29 * time.Second)
	if _, err := env.app.Connect(context.Background(), p.Domain(), code); err != nil {
		t.Errorf("a code 29 s old: %v", err)
	}
}

func TestConnectRefusesMalformedInput(t *testing.T) {
	env := newConnectEnv(t, b24oauth.NewMemoryStore())
	p := env.fake.AddPortal()
	for _, tc := range []struct{ domain, code string }{
		{"", "abc"},
		{"https://" + p.Domain(), "abc"},
		{p.Domain() + "/oauth", "abc"},
		{p.Domain(), ""},
		{p.Domain(), "a b"},
		{p.Domain(), "a\nb"},
		{p.Domain(), strings.Repeat("a", 600)},
	} {
		_, err := env.app.Connect(context.Background(), tc.domain, tc.code)
		wantConnectError(t, err, "invalid_request")
	}
	if got := env.fake.TokenRequests(); got != 0 {
		t.Errorf("token requests %d, want 0", got)
	}
}

// recorder is an HTTP server that must never be contacted: any request fails the test.
func recorder(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		t.Errorf("the untrusted server got %s %s", r.Method, r.URL)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// The client secret, the code and the new tokens go to the trusted OAuth server only: not to
// the domain, not where a redirect points, not to a server_endpoint the reply names.
func TestConnectSendsTheSecretToTheTrustedServerOnly(t *testing.T) {
	evil, hits := recorder(t)
	evilHost := strings.TrimPrefix(evil.URL, "http://")

	t.Run("domain", func(t *testing.T) {
		env := newConnectEnv(t, b24oauth.NewMemoryStore())
		p := env.fake.AddPortal()
		cfg, err := env.app.OAuth2Config(evilHost)
		if err != nil || strings.Contains(cfg.Endpoint.TokenURL, evilHost) {
			t.Errorf("OAuth2Config(%s): TokenURL %q, %v", evilHost, cfg.Endpoint.TokenURL, err)
		}
		_, err = env.app.Connect(context.Background(), evilHost, p.AuthCode())
		wantConnectError(t, err, "invalid_response")
		env.mustBeAbsent(p.MemberID())
	})

	// A trusted OAuth server whose token endpoint answers with reply.
	trusted := func(t *testing.T, reply http.HandlerFunc) (*b24oauth.App, *atomic.Int64) {
		var n atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			reply(w, r)
		}))
		t.Cleanup(srv.Close)
		app, err := b24oauth.NewApp(b24oauth.AppConfig{
			ClientID: "local.0123456789abcd.12345678", ClientSecret: "the-secret", Store: b24oauth.NewMemoryStore(),
			OAuthServers: []string{srv.URL}, InsecureHTTP: true,
			HTTPClient: &http.Client{}, // follows redirects: Connect must not
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { app.Close() })
		return app, &n
	}

	t.Run("redirect", func(t *testing.T) {
		for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
			app, n := trusted(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, evil.URL+"/oauth/token/", status)
			})
			_, err := app.Connect(context.Background(), "acme.example.com", "code")
			ce := wantConnectError(t, err, "")
			if ce.Status != status || n.Load() != 1 {
				t.Errorf("HTTP %d: error status %d, trusted server hit %d times", status, ce.Status, n.Load())
			}
		}
	})

	t.Run("server_endpoint", func(t *testing.T) {
		app, n := trusted(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/oauth/token/" || r.PostFormValue("client_secret") != "the-secret" || r.PostFormValue("code") != "code" {
				t.Errorf("trusted server: %s %s", r.Method, r.URL.Path)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"at","refresh_token":"rt","expires_in":3600,"member_id":"0123456789abcdef0123456789abcdef",`+
				`"client_endpoint":"https://acme.example.com/rest/","server_endpoint":"`+evil.URL+`/rest/","status":"L","user_id":1}`)
		})
		_, err := app.Connect(context.Background(), "acme.example.com", "code")
		wantConnectError(t, err, "invalid_response")
		if n.Load() != 1 {
			t.Errorf("trusted server hit %d times, want 1 (the token request)", n.Load())
		}
	})
	if hits.Load() != 0 {
		t.Errorf("the untrusted server got %d requests", hits.Load())
	}
}

// fakeOAuthServer is a trusted OAuth server over plain HTTP whose token endpoint answers with
// token and app.info with appInfo (status 200 unless appInfoStatus says otherwise), and an App
// trusting it. n counts its requests.
func fakeOAuthServer(t *testing.T, token, appInfo map[string]any, appInfoStatus int) (app *b24oauth.App, store b24oauth.TokenStore, n *atomic.Int64) {
	t.Helper()
	n = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/rest/app.info" {
			if appInfoStatus != 0 {
				w.WriteHeader(appInfoStatus)
			}
			_ = json.NewEncoder(w).Encode(appInfo)
			return
		}
		_ = json.NewEncoder(w).Encode(token)
	}))
	t.Cleanup(srv.Close)
	store = b24oauth.NewMemoryStore()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: "local.0123456789abcd.12345678", ClientSecret: "the-secret", Store: store,
		OAuthServers: []string{srv.URL}, InsecureHTTP: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app, store, n
}

// with returns a copy of m with key set to v (a dotted key sets a field of a nested map).
func with(m map[string]any, key string, v any) map[string]any {
	out := map[string]any{}
	for k, x := range m {
		out[k] = x
	}
	if k, rest, ok := strings.Cut(key, "."); ok {
		out[k] = with(out[k].(map[string]any), rest, v)
		return out
	}
	out[key] = v
	return out
}

const connectMember = "0123456789abcdef0123456789abcdef"

var (
	goodTokenReply = map[string]any{
		"access_token": "at", "refresh_token": "rt", "expires_in": 3600, "member_id": connectMember,
		"client_endpoint": "https://acme.example.com/rest/", "status": "L", "user_id": 1,
	}
	goodAppInfo = map[string]any{"result": map[string]any{
		"client_id": "local.0123456789abcd.12345678", "scope": "crm",
		"install": map[string]any{"member_id": connectMember, "client_endpoint": "https://acme.example.com/rest/"},
	}}
)

// A reply that does not name the portal, or is malformed, is refused before its token is used;
// a token app.info does not vouch for is refused too. Either way nothing is stored.
func TestConnectChecksTheReply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		token    map[string]any
		appInfo  map[string]any
		status   int    // app.info's HTTP status
		code     string // the ConnectError's Code
		requests int64  // requests the OAuth server gets
	}{
		{"another portal", with(goodTokenReply, "client_endpoint", "https://other.example.com/rest/"), goodAppInfo, 0, "invalid_response", 1},
		{"a portal with a suffix", with(goodTokenReply, "client_endpoint", "https://acme.example.com.evil.net/rest/"), goodAppInfo, 0, "invalid_response", 1},
		{"another path", with(goodTokenReply, "client_endpoint", "https://acme.example.com/rest/x/"), goodAppInfo, 0, "invalid_response", 1},
		{"no client_endpoint", with(goodTokenReply, "client_endpoint", ""), goodAppInfo, 0, "invalid_response", 1},
		{"member_id upper case", with(goodTokenReply, "member_id", strings.ToUpper(connectMember)), goodAppInfo, 0, "invalid_response", 1},
		{"member_id a path", with(goodTokenReply, "member_id", "../../../../etc/passwd"), goodAppInfo, 0, "invalid_response", 1},
		{"no member_id", with(goodTokenReply, "member_id", ""), goodAppInfo, 0, "invalid_response", 1},
		{"no refresh token", with(goodTokenReply, "refresh_token", ""), goodAppInfo, 0, "invalid_response", 1},
		{"no access token", with(goodTokenReply, "access_token", ""), goodAppInfo, 0, "invalid_response", 1},
		{"a bad status", with(goodTokenReply, "status", "X"), goodAppInfo, 0, "invalid_response", 1},
		{"app.info refuses the token", goodTokenReply, map[string]any{"error": "invalid_token"}, 401, "invalid_response", 2},
		{"app.info names another app", goodTokenReply, with(goodAppInfo, "result.client_id", "local.other"), 0, "invalid_response", 2},
		{"app.info names another member", goodTokenReply, with(goodAppInfo, "result.install.member_id", strings.Repeat("f", 32)), 0, "invalid_response", 2},
		{"app.info names another portal", goodTokenReply, with(goodAppInfo, "result.install.client_endpoint", "https://other.example.com/rest/"), 0, "invalid_response", 2},
		{"app.info unavailable", goodTokenReply, map[string]any{"error": "INTERNAL_SERVER_ERROR"}, 500, "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, store, n := fakeOAuthServer(t, tc.token, tc.appInfo, tc.status)
			_, err := app.Connect(context.Background(), "acme.example.com", "code")
			wantConnectError(t, err, tc.code)
			if n.Load() != tc.requests {
				t.Errorf("the OAuth server got %d requests, want %d", n.Load(), tc.requests)
			}
			if _, err := store.Load(context.Background(), connectMember); !errors.Is(err, b24oauth.ErrNotInstalled) {
				t.Errorf("stored: %v", err)
			}
		})
	}
	// The good reply, for contrast; without a server_endpoint it is the first trusted server's.
	app, store, _ := fakeOAuthServer(t, goodTokenReply, goodAppInfo, 0)
	if _, err := app.Connect(context.Background(), "acme.example.com", "code"); err != nil {
		t.Fatalf("the good reply: %v", err)
	}
	if inst, err := store.Load(context.Background(), connectMember); err != nil || inst.Scope != "crm" || inst.UserID != 1 {
		t.Errorf("stored %v, %v", inst, err)
	}
}

func TestDisconnect(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newConnectEnv(t, open())
		p := env.fake.AddPortal()
		env.connect(p)
		c := env.client(p.MemberID())
		mustCallProfile(t, c)
		if err := env.app.Disconnect(context.Background(), p.MemberID()); err != nil {
			t.Fatalf("Disconnect: %v", err)
		}
		env.mustBeAbsent(p.MemberID())
		if _, err := c.Call(context.Background(), "profile", nil); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("a client handed out before: %v, want ErrNotInstalled", err)
		}
		if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("ClientForMember: %v, want ErrNotInstalled", err)
		}
		if err := env.app.Disconnect(context.Background(), p.MemberID()); err != nil {
			t.Errorf("Disconnect of a portal not stored: %v", err)
		}
		if _, uninstalls, _ := env.hooks.counts(); uninstalls != 0 {
			t.Errorf("OnUninstall ran %d times, want 0", uninstalls)
		}
		env.connect(p)
		mustCallProfile(t, env.client(p.MemberID()))
		env.wantKinds(b24oauth.InstallNew, b24oauth.InstallNew)
	})
}

// A connected portal has no application token: Bitrix24's uninstall removes it (the stored
// tokens are refused), an uninstall event while they work does not.
func TestUninstallOfAConnectedPortal(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newConnectEnv(t, open())
		p := env.fake.AddPortal()
		env.connect(p)
		before := env.load(p.MemberID())
		for _, tok := range []string{randomHex(16), p.ApplicationToken()} {
			if code, body := env.post("/uninstall", uninstallEvent(env.fake, p, tok, false)); code != http.StatusForbidden {
				t.Fatalf("uninstall event while the tokens work: %d %q, want 403", code, body)
			}
		}
		env.mustNotChange(p.MemberID(), before, 1)
		env.mustPost("/uninstall", p.UninstallEvent(true))
		env.mustBeAbsent(p.MemberID())
		if _, err := env.app.ClientForMember(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("ClientForMember after the uninstall: %v, want ErrNotInstalled", err)
		}
		if _, uninstalls, _ := env.hooks.counts(); uninstalls != 1 {
			t.Errorf("OnUninstall ran %d times, want 1", uninstalls)
		}
	})
}

// A connection replaces a stored installation by the rules of installs.
func TestConnectReplacesByTheRulesOfInstalls(t *testing.T) {
	ctx := context.Background()
	env := newConnectEnv(t, b24oauth.NewMemoryStore())

	// An installation from an install event, its tokens working: kept.
	installed := env.install()
	before := env.load(installed.MemberID())
	if _, err := env.app.Connect(ctx, installed.Domain(), installed.AuthCode()); !errors.Is(err, b24oauth.ErrInstallationInUse) {
		t.Fatalf("Connect over a live install: %v, want ErrInstallationInUse", err)
	}
	if d := cmp.Diff(before, env.load(installed.MemberID())); d != "" {
		t.Errorf("the live install changed (-before +after):\n%s", d)
	}
	// Its tokens dead (an uninstall whose event was lost): replaced, without its application token.
	installed.RevokeTokens()
	inst, err := env.app.Connect(ctx, installed.Domain(), installed.AuthCode())
	if err != nil || inst.ApplicationToken != "" || pairOf(env.load(installed.MemberID())) != fakePair(installed) {
		t.Errorf("Connect over a dead install: %v, %v", inst, err)
	}

	// An installation of another domain (a renamed portal), its tokens working: kept; dead: replaced.
	renamed := env.fake.AddPortal()
	old := b24oauth.Installation{OAuthParams: paramsFor(env.fake, renamed), State: b24oauth.StateActive}
	old.ApplicationToken, old.Domain, old.ClientEndpoint = "", "old.example.com", "https://old.example.com/rest/"
	if err := env.store.Save(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := env.app.Connect(ctx, renamed.Domain(), renamed.AuthCode()); !errors.Is(err, b24oauth.ErrInstallationInUse) {
		t.Errorf("Connect over a live installation of another domain: %v, want ErrInstallationInUse", err)
	}
	old.AccessToken, old.RefreshToken = randomHex(35), randomHex(35)
	if err := env.store.Save(ctx, old); err != nil {
		t.Fatal(err)
	}
	if inst, err := env.app.Connect(ctx, renamed.Domain(), renamed.AuthCode()); err != nil || inst.Domain != renamed.Domain() {
		t.Errorf("Connect over a dead installation of another domain: %v, %v", inst, err)
	}

	// A newer pair stored (a later connection won a race): kept, and Connect reports it.
	raced := env.fake.AddPortal()
	env.connect(raced)
	newer := env.load(raced.MemberID())
	newer.AccessToken, newer.Expires = randomHex(35), newer.Expires+7200
	if err := env.store.Save(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if inst, err := env.app.Connect(ctx, raced.Domain(), raced.AuthCode()); err != nil || cmp.Diff(newer, inst) != "" {
		t.Errorf("Connect with an older pair: %v, %v; want the stored newer one", inst, err)
	}
	if d := cmp.Diff(newer, env.load(raced.MemberID())); d != "" {
		t.Errorf("the newer pair changed (-before +after):\n%s", d)
	}

	// A revoked connection comes back to life.
	revoked := env.fake.AddPortal()
	env.connect(revoked)
	revoked.ExpireAccessToken()
	revoked.ExpireRefreshToken()
	if _, err := env.client(revoked.MemberID()).Call(ctx, "profile", nil); err == nil || env.load(revoked.MemberID()).State != b24oauth.StateRevoked {
		t.Fatalf("the portal was not revoked: %v", err)
	}
	env.clock.Advance(time.Second)
	env.connect(revoked)
	if got := env.load(revoked.MemberID()).State; got != b24oauth.StateActive {
		t.Errorf("state after reconnecting %q", got)
	}
	mustCallProfile(t, env.client(revoked.MemberID()))

	env.wantKinds(
		b24oauth.InstallNew, b24oauth.InstallReinstall, // installed: the install event, then the connection
		b24oauth.InstallReinstall,                  // renamed
		b24oauth.InstallNew,                        // raced
		b24oauth.InstallNew, b24oauth.InstallAgain, // revoked
	)
}

// Neither the errors nor the logs of Connect hold the code, a token or the client secret.
func TestConnectKeepsSecretsOut(t *testing.T) {
	var logs lockedBuffer
	fake := newFake(t)
	env := newAppEnv(t, fake, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	p, other := fake.AddPortal(), fake.AddPortal()
	code := p.AuthCode()
	inst, err := env.app.Connect(context.Background(), p.Domain(), code)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{code, inst.AccessToken, inst.RefreshToken, fake.ClientSecret()}
	var texts []string
	_, err = env.app.Connect(context.Background(), p.Domain(), code)
	texts = append(texts, err.Error())
	foreign := other.AuthCode()
	_, err = env.app.Connect(context.Background(), p.Domain(), foreign)
	texts = append(texts, err.Error(), logs.String())
	secrets = append(secrets, foreign, other.Tokens().AccessToken, other.Tokens().RefreshToken)
	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("a secret appears in %q", text)
			}
		}
	}
	if !strings.Contains(logs.String(), "authorization code refused") || !strings.Contains(logs.String(), "portal connected") {
		t.Errorf("the log lacks the refusal or the connection:\n%s", logs.String())
	}
}

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Once the code is spent, its pair is verified and stored even if the caller goes away.
func TestConnectCompletesWhenTheCallerGoesAway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fake := newFake(t)
	env := newAppEnv(t, fake, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) {
		next := fake.Client().Transport
		c.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(r)
			if r.URL.Path == "/oauth/token/" {
				cancel() // the browser hung up just after the code was exchanged
			}
			return resp, err
		})}
	})
	p := fake.AddPortal()
	if _, err := env.app.Connect(ctx, p.Domain(), p.AuthCode()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if ctx.Err() == nil {
		t.Fatal("the context was not cancelled during Connect")
	}
	if pairOf(env.load(p.MemberID())) != fakePair(p) {
		t.Error("the exchanged pair was not stored")
	}
}

// Callbacks with made-up codes cannot turn the App into an amplifier against the OAuth server:
// Connect is bounded per portal like install verification.
func TestConnectIsBounded(t *testing.T) {
	env := newConnectEnv(t, b24oauth.NewMemoryStore())
	b24oauth.SetVerifyLimits(env.app, 3, time.Hour, 1000) // per portal: 3, then none for an hour
	p := env.fake.AddPortal()
	var refused int
	for i := 0; i < 30; i++ {
		_, err := env.app.Connect(context.Background(), p.Domain(), randomHex(35))
		var ce *b24oauth.ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("Connect %d: %v", i, err)
		}
		if ce.Code == "" {
			refused++
		}
	}
	if got := env.fake.TokenRequests(); got != 3 || refused != 27 {
		t.Errorf("30 made-up codes: %d token requests, %d refused before asking; want 3 and 27", got, refused)
	}
	// Another portal is not held back by this one.
	if _, err := env.app.Connect(context.Background(), env.fake.AddPortal().Domain(), randomHex(35)); !errors.Is(err, &b24oauth.ConnectError{Code: "invalid_grant"}) {
		t.Errorf("another portal: %v, want invalid_grant", err)
	}
}
