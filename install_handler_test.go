package b24oauth_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jarcoal/httpmock"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// serveForm sends a request to h in process and returns the recorded response.
func serveForm(h http.Handler, method, target, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

const formType = "application/x-www-form-urlencoded"

func TestInstallHandlerRejects(t *testing.T) {
	type request struct {
		method, contentType, body string
	}
	for _, tc := range []struct {
		name string
		edit func(f url.Values, p *b24test.Portal) // changes the genuine event's form
		req  func(f url.Values) request            // the request; nil: a POST of the form
		want int
	}{
		{name: "GET", req: func(f url.Values) request { return request{http.MethodGet, "", ""} }, want: 405},
		{name: "PUT", req: func(f url.Values) request { return request{http.MethodPut, formType, f.Encode()} }, want: 405},
		{name: "text/plain", req: func(f url.Values) request { return request{"POST", "text/plain", f.Encode()} }, want: 415},
		{name: "JSON", req: func(f url.Values) request { return request{"POST", "application/json", `{"event":"ONAPPINSTALL"}`} }, want: 415},
		{name: "multipart", req: func(f url.Values) request { return request{"POST", "multipart/form-data; boundary=x", f.Encode()} }, want: 415},
		{name: "no content type", req: func(f url.Values) request { return request{"POST", "", f.Encode()} }, want: 415},
		{name: "body over 64 KiB", edit: func(f url.Values, _ *b24test.Portal) { f.Set("pad", strings.Repeat("a", 64<<10)) }, want: 413},
		{name: "malformed body", req: func(f url.Values) request { return request{"POST", formType, f.Encode() + "&%zz"} }, want: 400},
		{name: "missing event", edit: del("event"), want: 400},
		{name: "unknown event", edit: set("event", "ONCRMDEALADD"), want: 400},
		{name: "uninstall event", edit: set("event", "ONAPPUNINSTALL"), want: 400},
		{name: "missing member_id", edit: del("auth[member_id]"), want: 400},
		{name: "missing application_token", edit: del("auth[application_token]"), want: 400},
		{name: "missing access_token", edit: del("auth[access_token]"), want: 400},
		{name: "missing refresh_token", edit: del("auth[refresh_token]"), want: 400},
		{name: "missing domain", edit: del("auth[domain]"), want: 400},
		{name: "member_id path", edit: set("auth[member_id]", "../x"), want: 400},
		{name: "member_id deep path", edit: set("auth[member_id]", "../../../../etc/passwd"), want: 400},
		{name: "member_id with slash", edit: set("auth[member_id]", "0123456789abcdef/0123456789abcde"), want: 400},
		{name: "member_id 300 chars", edit: set("auth[member_id]", strings.Repeat("a", 300)), want: 400},
		{name: "member_id too short", edit: set("auth[member_id]", "abc"), want: 400},
		{name: "member_id with NUL", edit: set("auth[member_id]", "0123456789abcdef\x000123456789abcde"), want: 400},
		{name: "member_id with spaces", edit: set("auth[member_id]", "0123456789abcdef 123456789abcdef"), want: 400},
		{name: "member_id not ASCII", edit: set("auth[member_id]", "абвгдеёжзийклмнопрст"), want: 400},
		{name: "application_token path", edit: set("auth[application_token]", "../x"), want: 400},
		{name: "application_token 300 chars", edit: set("auth[application_token]", strings.Repeat("a", 300)), want: 400},
		{name: "access_token with a newline", edit: set("auth[access_token]", "abc\ndef"), want: 400},
		{name: "refresh_token 600 chars", edit: set("auth[refresh_token]", strings.Repeat("a", 600)), want: 400},
		{name: "client_endpoint elsewhere", edit: set("auth[client_endpoint]", "https://evil.example.com/rest/"), want: 400},
		{name: "client_endpoint suffix host", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[client_endpoint]", "https://"+p.Domain()+".evil.com/rest/")
		}, want: 400},
		{name: "client_endpoint other path", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[client_endpoint]", "https://"+p.Domain()+"/rest/x/")
		}, want: 400},
		{name: "client_endpoint with user info", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[client_endpoint]", "https://user@"+p.Domain()+"/rest/")
		}, want: 400},
		{name: "client_endpoint with a query", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[client_endpoint]", "https://"+p.Domain()+"/rest/?a=1")
		}, want: 400},
		{name: "client_endpoint plain http", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[client_endpoint]", "http://"+p.Domain()+"/rest/")
		}, want: 400},
		{name: "domain not the endpoint's", edit: set("auth[domain]", "evil.example.com"), want: 400},
		{name: "domain with a path", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[domain]", p.Domain()+"/x")
			f.Set("auth[client_endpoint]", "https://"+p.Domain()+"/x/rest/")
		}, want: 400},
		{name: "domain with user info", edit: func(f url.Values, p *b24test.Portal) {
			f.Set("auth[domain]", "evil.com@"+p.Domain())
			f.Set("auth[client_endpoint]", "https://evil.com@"+p.Domain()+"/rest/")
		}, want: 400},
		{name: "server_endpoint untrusted", edit: set("auth[server_endpoint]", "https://evil.example.com/rest/"), want: 400},
		{name: "server_endpoint plain http", edit: set("auth[server_endpoint]", "http://oauth.example.com/rest/"), want: 400},
		{name: "server_endpoint suffix host", edit: set("auth[server_endpoint]", "https://oauth.example.com.evil.com/rest/"), want: 400},
		{name: "server_endpoint with user info", edit: set("auth[server_endpoint]", "https://user:pw@oauth.example.com/rest/"), want: 400},
		{name: "server_endpoint without scheme", edit: set("auth[server_endpoint]", "//oauth.example.com/rest/"), want: 400},
		{name: "server_endpoint host only", edit: set("auth[server_endpoint]", "oauth.example.com"), want: 400},
		{name: "server_endpoint with a query", edit: set("auth[server_endpoint]", "https://oauth.example.com/rest/?x=1"), want: 400},
		{name: "server_endpoint with a fragment", edit: set("auth[server_endpoint]", "https://oauth.example.com/rest/#x"), want: 400},
		{name: "expires not a number", edit: set("auth[expires]", "soon"), want: 400},
		{name: "expires negative", edit: set("auth[expires]", "-1"), want: 400},
		{name: "expires float", edit: set("auth[expires]", "1e9"), want: 400},
		{name: "expires overflows", edit: set("auth[expires]", "99999999999999999999"), want: 400},
		{name: "expires_in not a number", edit: set("auth[expires_in]", "an hour"), want: 400},
		{name: "user_id not a number", edit: set("auth[user_id]", "admin"), want: 400},
		{name: "unknown status", edit: set("auth[status]", "Z"), want: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.fake.AddPortal()
			f := p.InstallEvent().Form
			if tc.edit != nil {
				tc.edit(f, p)
			}
			r := request{http.MethodPost, formType, f.Encode()}
			if tc.req != nil {
				r = tc.req(f)
			}
			rec := serveForm(env.app.InstallHandler(), r.method, "/install", r.contentType, r.body)
			if rec.Code != tc.want {
				t.Errorf("status = %d %q, want %d", rec.Code, rec.Body, tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || rec.Body.Len() == 0 || rec.Body.Len() > 200 {
				t.Errorf("reply %q (%s), want a short plain reason", rec.Body, ct)
			}
			if rec.Code == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", rec.Header().Get("Allow"))
			}
			assertNothingStored(t, env, p)
		})
	}
}

// assertNothingStored checks that a rejected request wrote nothing, ran no hook and sent
// nothing to the OAuth server.
func assertNothingStored(t *testing.T, env *appEnv, p *b24test.Portal) {
	t.Helper()
	if n := env.store.writes.Load(); n != 0 {
		t.Errorf("the store saw %d writes, want none", n)
	}
	if _, err := env.store.TokenStore.Load(context.Background(), p.MemberID()); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Load = %v, want ErrNotInstalled", err)
	}
	if n, _, _ := env.hooks.counts(); n != 0 {
		t.Errorf("OnInstall ran %d times", n)
	}
	if n := env.fake.TokenRequests(); n != 0 {
		t.Errorf("the OAuth server saw %d requests, want none", n)
	}
}

func set(key, value string) func(url.Values, *b24test.Portal) {
	return func(f url.Values, _ *b24test.Portal) { f.Set(key, value) }
}

func del(key string) func(url.Values, *b24test.Portal) {
	return func(f url.Values, _ *b24test.Portal) { f.Del(key) }
}

// A known portal, an event with another application_token (so it would be verified by an
// exchange) and an untrusted OAuth server: the exchange must not even be tried.
func TestInstallHandlerNoExchangeWithUntrustedServer(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.install()
	before := env.load(p.MemberID())
	requests := env.fake.TokenRequests()
	f := p.InstallEvent().Form
	f.Set("auth[application_token]", randomHex(16))
	f.Set("auth[server_endpoint]", "https://evil.example.com/rest/")
	if code, _ := env.post("/install", b24test.Event{Form: f}); code != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", code)
	}
	if n := env.fake.TokenRequests(); n != requests {
		t.Errorf("%d token requests, want none", n-requests)
	}
	if d := cmp.Diff(before, env.load(p.MemberID())); d != "" {
		t.Errorf("the installation changed (-before +after):\n%s", d)
	}
}

func TestInstallHandlerTolerates(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f url.Values)
	}{
		{"unknown extra keys", func(f url.Values) {
			f.Set("auth[client_id]", "local.0123456789abcd.12345678")
			f.Set("data[EXTRA]", "x")
			f.Set("event_id", "7")
			f.Set("something", "else")
			f.Add("auth[scope]", "ignored second value")
		}},
		{"missing optional keys", func(f url.Values) {
			for _, k := range []string{"auth[expires]", "auth[user_id]", "event_handler_id", "data[ACTIVE]",
				"data[INSTALLED]", "ts", "auth[status]"} {
				f.Del(k)
			}
		}},
		{"no version or language", func(f url.Values) { f.Del("data[VERSION]"); f.Del("data[LANGUAGE_ID]") }},
		{"no endpoints (derived)", func(f url.Values) { f.Del("auth[client_endpoint]"); f.Del("auth[server_endpoint]") }},
		{"upper-case domain", func(f url.Values) {
			f.Set("auth[domain]", strings.ToUpper(f.Get("auth[domain]")))
			f.Set("auth[client_endpoint]", "https://"+strings.ToUpper(f.Get("auth[domain]"))+"/rest/")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.fake.AddPortal()
			ev := p.InstallEvent()
			tc.edit(ev.Form)
			env.mustPost("/install", ev)
			got := env.load(p.MemberID())
			if got.Domain != p.Domain() || got.ClientEndpoint != p.ClientEndpoint() || got.ServerEndpoint != env.fake.OAuthServerEndpoint() {
				t.Errorf("stored domain %q, endpoints %q %q", got.Domain, got.ClientEndpoint, got.ServerEndpoint)
			}
			if ev.Form.Get("auth[expires]") == "" && got.Expires != env.clock.Now().Unix()+3600 {
				t.Errorf("Expires = %d without auth[expires], want now + expires_in = %d", got.Expires, env.clock.Now().Unix()+3600)
			}
			mustCallProfile(t, env.client(p.MemberID()))
		})
	}
}

func TestInstallPage(t *testing.T) {
	forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
		env := newAppEnv(t, nil, open())
		p := env.fake.AddPortal(b24test.PortalLanguage("ru"))
		ev := p.InstallPage()
		resp, err := ev.Post(context.Background(), env.url+"/install")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(body, "BX24.installFinish()") {
			t.Fatalf("reply %d %s:\n%s\nwant an HTML page calling BX24.installFinish()", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		now := env.clock.Now()
		want := b24oauth.Installation{
			OAuthParams: b24oauth.OAuthParams{
				ApplicationToken: p.ApplicationToken(),
				UserID:           1, // as the OAuth server's app.info names it
				MemberID:         p.MemberID(),
				AccessToken:      ev.Form.Get("AUTH_ID"),
				RefreshToken:     ev.Form.Get("REFRESH_ID"),
				Expires:          now.Unix() + 3600, // AUTH_EXPIRES is a lifetime
				ExpiresIn:        3600,
				Scope:            p.Scope(),
				Domain:           p.Domain(),
				ClientEndpoint:   "https://" + ev.Query.Get("DOMAIN") + "/rest/",
				ServerEndpoint:   env.fake.OAuthServerEndpoint(),
				Status:           b24oauth.AppStatus(p.Status()),
			},
			State:       b24oauth.StateActive,
			Version:     "1", // app.info's install.version
			LanguageID:  "ru",
			InstalledAt: now,
			UpdatedAt:   now,
		}
		if d := cmp.Diff(want, env.load(p.MemberID())); d != "" {
			t.Errorf("stored installation (-want +got):\n%s", d)
		}
		if n, _, _ := env.hooks.counts(); n != 1 {
			t.Errorf("OnInstall ran %d times, want 1", n)
		}
		mustCallProfile(t, env.client(p.MemberID()))

		// The page is POSTed again each time the app opens: same token, an update.
		env.clock.Advance(time.Minute)
		if code, _ := env.post("/install", p.InstallPage()); code != http.StatusOK {
			t.Fatalf("second page POST: %d", code)
		}
		if got := env.load(p.MemberID()); !got.InstalledAt.Equal(now) || got.AccessToken != p.Tokens().AccessToken {
			t.Errorf("after the second page POST: InstalledAt %v (want %v), pair replaced: %v", got.InstalledAt, now, got.AccessToken == p.Tokens().AccessToken)
		}
	})
}

func TestInstallPageOfOlderPortals(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.fake.AddPortal()
	ev := p.InstallPage()
	for _, k := range []string{"SERVER_ENDPOINT", "APPLICATION_TOKEN", "APPLICATION_SCOPE"} {
		ev.Form.Del(k)
	}
	if code, body := env.post("/install", ev); code != http.StatusOK || !strings.Contains(body, "BX24.installFinish()") {
		t.Fatalf("reply %d %q", code, body)
	}
	got := env.load(p.MemberID())
	if got.ServerEndpoint != env.fake.OAuthServerEndpoint() || got.AccessToken != ev.Form.Get("AUTH_ID") {
		t.Errorf("stored server endpoint %q (want the trusted default), access token from AUTH_ID: %v",
			got.ServerEndpoint, got.AccessToken == ev.Form.Get("AUTH_ID"))
	}
	c := env.client(p.MemberID())
	mustCallProfile(t, c)
	p.ExpireAccessToken()
	mustCallProfile(t, c) // refreshes at the default OAuth server
	if pairOf(env.load(p.MemberID())) != fakePair(p) {
		t.Error("the refresh was not stored")
	}

	// Opening the app again (no APPLICATION_TOKEN to compare) is verified like any install:
	// the OAuth server vouches for the page's token and the portal says its user is an
	// administrator. Its pair, newer than the stored one, is stored; nothing is exchanged.
	env.clock.Advance(time.Minute)
	refreshes := p.Refreshes()
	ev = p.InstallPage()
	ev.Form.Del("APPLICATION_TOKEN")
	env.mustPost("/install", ev)
	if got := env.load(p.MemberID()); got.AccessToken != ev.Form.Get("AUTH_ID") || got.RefreshToken != ev.Form.Get("REFRESH_ID") {
		t.Error("the page's verified pair was not stored")
	}
	if p.Refreshes() != refreshes {
		t.Errorf("verification exchanged %d refresh tokens, want none", p.Refreshes()-refreshes)
	}
}

func TestInstallPageRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(ev *b24test.Event)
	}{
		{"plain http portal", func(ev *b24test.Event) { ev.Query.Set("PROTOCOL", "0") }},
		{"no DOMAIN", func(ev *b24test.Event) { ev.Query.Del("DOMAIN") }},
		{"no member_id", func(ev *b24test.Event) { ev.Form.Del("member_id") }},
		{"no REFRESH_ID", func(ev *b24test.Event) { ev.Form.Del("REFRESH_ID") }},
		{"AUTH_EXPIRES not a number", func(ev *b24test.Event) { ev.Form.Set("AUTH_EXPIRES", "3600s") }},
		{"untrusted SERVER_ENDPOINT", func(ev *b24test.Event) { ev.Form.Set("SERVER_ENDPOINT", "https://evil.example.com/rest/") }},
		{"DOMAIN with a path", func(ev *b24test.Event) { ev.Query.Set("DOMAIN", ev.Query.Get("DOMAIN")+"/evil") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.fake.AddPortal()
			ev := p.InstallPage()
			tc.edit(&ev)
			if code, _ := env.post("/install", ev); code != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", code)
			}
			assertNothingStored(t, env, p)
		})
	}
}

// forge returns an ONAPPINSTALL event for the known portal victim sent by someone who knows its
// member_id but not its application_token.
func forge(env *appEnv, victim *b24test.Portal, accessToken, refreshToken string) b24test.Event {
	ev := victim.InstallEvent() // a genuine shape; its tokens are replaced below
	ev.Form.Set("auth[application_token]", randomHex(16))
	ev.Form.Set("auth[access_token]", accessToken)
	ev.Form.Set("auth[refresh_token]", refreshToken)
	return ev
}

func TestInstallHandlerSpoofing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(env *appEnv, victim *b24test.Portal) b24test.Event
	}{
		{"made-up refresh token", func(env *appEnv, victim *b24test.Portal) b24test.Event {
			return forge(env, victim, randomHex(35), randomHex(35))
		}},
		{"made-up tokens and another portal host", func(env *appEnv, victim *b24test.Portal) b24test.Event {
			ev := forge(env, victim, randomHex(35), randomHex(35))
			ev.Form.Set("auth[domain]", "evil.example.com")
			ev.Form.Set("auth[client_endpoint]", "https://evil.example.com/rest/")
			return ev
		}},
		{"genuine refresh token of another portal", func(env *appEnv, victim *b24test.Portal) b24test.Event {
			other := env.fake.AddPortal()
			tok := other.Tokens()
			return forge(env, victim, tok.AccessToken, tok.RefreshToken)
		}},
		{"install page with another APPLICATION_TOKEN", func(env *appEnv, victim *b24test.Portal) b24test.Event {
			ev := victim.InstallPage()
			ev.Form.Set("APPLICATION_TOKEN", randomHex(16))
			ev.Form.Set("AUTH_ID", randomHex(35))
			ev.Form.Set("REFRESH_ID", randomHex(35))
			return ev
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				store := open()
				env := newAppEnv(t, nil, store)
				victim := env.install()
				c := env.client(victim.MemberID())
				before := env.load(victim.MemberID())
				file := recordBytes(t, store, victim.MemberID())

				if code, _ := env.post("/install", tc.event(env, victim)); code != http.StatusForbidden {
					t.Errorf("status = %d, want 403", code)
				}
				if d := cmp.Diff(before, env.load(victim.MemberID())); d != "" {
					t.Errorf("the installation changed (-before +after):\n%s", d)
				}
				if got := recordBytes(t, store, victim.MemberID()); got != file {
					t.Errorf("the record file changed")
				}
				if n, _, _ := env.hooks.counts(); n != 1 {
					t.Errorf("OnInstall ran %d times, want 1 (the genuine install only)", n)
				}
				if victim.Refreshes() != 0 {
					t.Error("the victim's tokens were exchanged")
				}
				if env.client(victim.MemberID()) != c {
					t.Error("a rejected event dropped the cached client")
				}
				mustCallProfile(t, c)
			})
		})
	}
}

// recordBytes returns the FileStore's record of memberID, or "" for another store.
func recordBytes(t *testing.T, store b24oauth.TokenStore, memberID string) string {
	t.Helper()
	fs, ok := store.(*b24oauth.FileStore)
	if !ok {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(fs.Dir(), memberID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestInstallHandlerGenuineTokenChange(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(p *b24test.Portal) b24test.Event
	}{
		{"reinstall whose uninstall event was lost", (*b24test.Portal).Reinstall},
		{"update with a new application_token", func(p *b24test.Portal) b24test.Event {
			p.SetApplicationToken(randomHex(16))
			return p.UpdateEvent("2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, open func() b24oauth.TokenStore) {
				env := newAppEnv(t, nil, open())
				p := env.install()
				installed := env.load(p.MemberID())
				ev := tc.event(p)
				env.clock.Advance(time.Minute)
				env.mustPost("/install", ev)

				got := env.load(p.MemberID())
				if got.ApplicationToken != p.ApplicationToken() || got.ApplicationToken == installed.ApplicationToken {
					t.Error("the new application_token was not stored")
				}
				if p.Refreshes() != 0 {
					t.Errorf("the fake saw %d refreshes, want none (app.info verifies without spending a token)", p.Refreshes())
				}
				if got.AccessToken != ev.Form.Get("auth[access_token]") || got.RefreshToken != ev.Form.Get("auth[refresh_token]") {
					t.Error("the stored pair is not the event's")
				}
				if !got.InstalledAt.Equal(installed.InstalledAt) || got.State != b24oauth.StateActive {
					t.Errorf("InstalledAt %v (want %v), state %q", got.InstalledAt, installed.InstalledAt, got.State)
				}
				if d := cmp.Diff(got, env.hooks.lastInstall()); d != "" {
					t.Errorf("OnInstall's installation (-stored +hook):\n%s", d)
				}
				mustCallProfile(t, env.client(p.MemberID()))
				// The new application_token is the one an uninstall must carry.
				env.mustPost("/uninstall", p.UninstallEvent(false))
			})
		})
	}
}

func TestInstallHandlerUpdateSameToken(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	p := env.install()
	requests := env.fake.TokenRequests()
	if code, _ := env.post("/install", p.UpdateEvent("2")); code != http.StatusOK {
		t.Fatalf("status = %d, want 200", code)
	}
	if n := env.fake.TokenRequests(); n != requests {
		t.Errorf("an update with the stored token sent %d token requests, want none", n-requests)
	}
	if got := env.load(p.MemberID()); got.Version != "2" || pairOf(got) != fakePair(p) {
		t.Errorf("version %q, update's pair stored: %v", got.Version, pairOf(got) == fakePair(p))
	}
}

func TestUninstallHandlerRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(f url.Values)
		want int
	}{
		{"install event", func(f url.Values) { f.Set("event", "ONAPPINSTALL") }, 400},
		{"missing event", func(f url.Values) { f.Del("event") }, 400},
		{"missing member_id", func(f url.Values) { f.Del("auth[member_id]") }, 400},
		{"member_id path", func(f url.Values) { f.Set("auth[member_id]", "../x") }, 400},
		{"member_id 300 chars", func(f url.Values) { f.Set("auth[member_id]", strings.Repeat("a", 300)) }, 400},
		{"application_token path", func(f url.Values) { f.Set("auth[application_token]", "../x") }, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
			p := env.install()
			before := env.load(p.MemberID())
			ev := uninstallEvent(env.fake, p, p.ApplicationToken(), false)
			tc.edit(ev.Form)
			if code, _ := env.post("/uninstall", ev); code != tc.want {
				t.Errorf("status = %d, want %d", code, tc.want)
			}
			if d := cmp.Diff(before, env.load(p.MemberID())); d != "" {
				t.Errorf("the installation changed (-before +after):\n%s", d)
			}
			if _, n, _ := env.hooks.counts(); n != 0 {
				t.Errorf("OnUninstall ran %d times", n)
			}
		})
	}
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore())
	rec := serveForm(env.app.UninstallHandler(), http.MethodGet, "/uninstall", "", "")
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", rec.Code)
	}
	rec = serveForm(env.app.UninstallHandler(), http.MethodPost, "/uninstall", "application/json", "{}")
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("JSON: status %d, want 415", rec.Code)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An install is verified by the OAuth server's app.info naming the event's member_id and our
// client_id; a reply that names no member_id proves nothing and is refused.
func TestInstallHandlerVerificationNeedsMemberID(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		edit func(install map[string]any, result map[string]any)
	}{
		{"no member_id", func(install, _ map[string]any) { delete(install, "member_id") }},
		{"another member_id", func(install, _ map[string]any) { install["member_id"] = strings.Repeat("e", 32) }},
		{"another application", func(_, result map[string]any) { result["client_id"] = "app.other" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc, mt := mockClient(t)
			store := b24oauth.NewMemoryStore()
			app, err := b24oauth.NewApp(b24oauth.AppConfig{ClientID: testSecretPair.ClientID, ClientSecret: testSecret, Store: store, HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			stored := b24oauth.Installation{OAuthParams: testParams(), State: b24oauth.StateActive}
			if err := store.Save(ctx, stored); err != nil {
				t.Fatal(err)
			}
			install := map[string]any{"member_id": testMember, "client_endpoint": "https://acme.bitrix24.com/rest/", "domain": "acme.bitrix24.com", "status": "L"}
			result := map[string]any{"client_id": testSecretPair.ClientID, "scope": "crm", "user_id": 1, "install": install}
			tc.edit(install, result)
			mt.RegisterResponder("POST", "https://oauth.bitrix.info/rest/app.info", httpmock.NewJsonResponderOrPanic(200, map[string]any{"result": result}))
			form := url.Values{
				"event": {"ONAPPINSTALL"}, "auth[member_id]": {testMember}, "auth[application_token]": {"ffffffffffffffffffffffffffffffff"},
				"auth[access_token]": {"forged-access"}, "auth[refresh_token]": {"forged-refresh"}, "auth[domain]": {"acme.bitrix24.com"},
				"auth[client_endpoint]": {"https://acme.bitrix24.com/rest/"}, "auth[server_endpoint]": {"https://oauth.bitrix.info/rest/"},
			}
			rec := serveForm(app.InstallHandler(), http.MethodPost, "/install", "application/x-www-form-urlencoded", form.Encode())
			if rec.Code != http.StatusForbidden {
				t.Fatalf("status %d (%s), want 403", rec.Code, rec.Body)
			}
			if mt.GetTotalCallCount() != 1 {
				t.Fatalf("requests = %d, want the one app.info", mt.GetTotalCallCount())
			}
			got, err := store.Load(ctx, testMember)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(stored, got); diff != "" {
				t.Errorf("the stored installation changed (-want +got):\n%s", diff)
			}
		})
	}
}
