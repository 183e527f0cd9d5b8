package b24test_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth/b24test"
)

var hex70 = regexp.MustCompile(`^[0-9a-f]{70}$`)

func TestDefaults(t *testing.T) {
	s := newServer(t)
	if !regexp.MustCompile(`^local\.[0-9a-f]{14}\.[0-9]{8}$`).MatchString(s.ClientID()) {
		t.Errorf("client id %q", s.ClientID())
	}
	if !regexp.MustCompile(`^[A-Za-z0-9]{50}$`).MatchString(s.ClientSecret()) {
		t.Errorf("secret %q", s.ClientSecret())
	}
	if s.OAuthOrigin() != "https://oauth.example.com" || s.OAuthServerEndpoint() != "https://oauth.example.com/rest/" {
		t.Errorf("oauth %s %s", s.OAuthOrigin(), s.OAuthServerEndpoint())
	}
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Errorf("URL %s", s.URL())
	}
	p := s.AddPortal()
	if !regexp.MustCompile(`^b24-[a-z0-9]{6}\.example\.com$`).MatchString(p.Domain()) {
		t.Errorf("domain %q", p.Domain())
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p.MemberID()) || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p.ApplicationToken()) {
		t.Errorf("member %q app token %q", p.MemberID(), p.ApplicationToken())
	}
	if p.ClientEndpoint() != "https://"+p.Domain()+"/rest/" {
		t.Errorf("endpoint %s", p.ClientEndpoint())
	}
	if s.Portal(p.MemberID()) != p || s.Portal("nope") != nil {
		t.Error("Portal lookup")
	}
	tk := p.Tokens()
	if !hex70.MatchString(tk.AccessToken) || !hex70.MatchString(tk.RefreshToken) {
		t.Errorf("tokens %+v", tk)
	}
	if q := s.AddPortal(b24test.PortalName("acme")); q.Domain() != "acme.example.com" {
		t.Errorf("named domain %s", q.Domain())
	}
}

func TestProfileAuthSources(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	tok := p.Tokens().AccessToken
	c := s.Client()

	r := get(t, c, p.ClientEndpoint()+"profile.json?auth="+tok)
	wantOK(t, r)
	res := r.Body["result"].(map[string]any)
	if res["ID"] != "1" || res["ADMIN"] != true {
		t.Fatalf("profile %s", r.Raw)
	}
	tm := r.Body["time"].(map[string]any)
	for _, k := range []string{"start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at", "operating"} {
		if _, ok := tm[k]; !ok {
			t.Errorf("time lacks %s: %s", k, r.Raw)
		}
	}
	if _, ok := r.Body["next"]; ok {
		t.Error("next on a non-list method")
	}

	req, _ := http.NewRequest(http.MethodGet, p.ClientEndpoint()+"user.admin", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if r := do(t, c, req); r.Body["result"] != true {
		t.Fatalf("bearer: %s", r.Raw)
	}
	wantOK(t, get(t, c, p.ClientEndpoint()+"profile?access_token="+tok))
	wantOK(t, postJSON(t, c, p.ClientEndpoint()+"profile", map[string]any{"auth": tok}))
	// JSON body keys override the query.
	wantOK(t, postJSON(t, c, p.ClientEndpoint()+"profile?auth=bad", map[string]any{"auth": tok}))

	p.SetAdmin(false)
	if r := call(t, s, p, "profile", nil); r.Body["result"].(map[string]any)["ADMIN"] != false {
		t.Fatalf("admin flag: %s", r.Raw)
	}
	if p.Requests("profile") != 5 || p.Requests("user.admin") != 1 || p.TotalRequests() != 6 {
		t.Fatalf("counters %d %d %d", p.Requests("profile"), p.Requests("user.admin"), p.TotalRequests())
	}
}

func TestRESTErrors(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	c := s.Client()
	r := get(t, c, p.ClientEndpoint()+"profile")
	wantError(t, r, 401, "NO_AUTH_FOUND")
	if r.Body["error_description"] != "Wrong authorization data" {
		t.Errorf("desc %s", r.Raw)
	}
	wantError(t, get(t, c, p.ClientEndpoint()+"profile?auth=deadbeef"), 401, "invalid_token")
	other := s.AddPortal()
	wantError(t, get(t, c, p.ClientEndpoint()+"profile?auth="+other.Tokens().AccessToken), 401, "invalid_token")
	r = call(t, s, p, "no.such.method", nil)
	wantError(t, r, 404, "ERROR_METHOD_NOT_FOUND")
	if r.Body["error_description"] != "Method not found!" {
		t.Errorf("desc %s", r.Raw)
	}
	q := s.AddPortal(b24test.PortalScope("user_brief"))
	wantError(t, call(t, s, q, "crm.deal.list", nil), 404, "ERROR_METHOD_NOT_FOUND")
}

func TestExpiry(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	if got := p.Tokens().Expires; !got.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("expires %v", got)
	}
	wantOK(t, call(t, s, p, "profile", nil))
	p.ExpireAccessToken()
	r := call(t, s, p, "profile", nil)
	wantError(t, r, 401, "expired_token")
	if r.Body["error_description"] != "The access token provided has expired" {
		t.Errorf("desc %s", r.Raw)
	}
	// Natural expiry via the clock.
	r2 := refresh(t, s, p.Tokens().RefreshToken)
	wantOK(t, r2)
	wantOK(t, call(t, s, p, "profile", nil))
	clk.Advance(time.Hour)
	wantError(t, call(t, s, p, "profile", nil), 401, "expired_token")
}

func TestRefresh(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	old := p.Tokens()

	r := refresh(t, s, old.RefreshToken)
	wantOK(t, r)
	b := r.Body
	if !hex70.MatchString(b["access_token"].(string)) || !hex70.MatchString(b["refresh_token"].(string)) ||
		b["access_token"] == old.AccessToken || b["refresh_token"] == old.RefreshToken {
		t.Fatalf("new pair: %s", r.Raw)
	}
	want := map[string]any{
		"expires": float64(clk.Now().Add(time.Hour).Unix()), "expires_in": float64(3600),
		"scope": b24test.DefaultScope, "domain": "oauth.example.com", "server_endpoint": "https://oauth.example.com/rest/",
		"status": "L", "client_endpoint": p.ClientEndpoint(), "member_id": p.MemberID(), "user_id": float64(1),
	}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("%s = %v, want %v", k, b[k], v)
		}
	}
	if len(b) != 11 {
		t.Errorf("keys: %s", r.Raw)
	}
	if p.Tokens().AccessToken != b["access_token"] || s.Refreshes() != 1 || p.Refreshes() != 1 {
		t.Fatal("current pair / counters")
	}
	// Single use.
	r = refresh(t, s, old.RefreshToken)
	wantError(t, r, 400, "invalid_grant")
	// Old access token revoked.
	wantError(t, get(t, s.Client(), p.ClientEndpoint()+"profile?auth="+old.AccessToken), 401, "invalid_token")
	wantOK(t, call(t, s, p, "profile", nil))
	// GET works too.
	q := url.Values{"grant_type": {"refresh_token"}, "client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()}, "refresh_token": {p.Tokens().RefreshToken}}
	wantOK(t, get(t, s.Client(), s.OAuthOrigin()+"/oauth/token/?"+q.Encode()))
	if s.TokenRequests() != 3 || s.Refreshes() != 2 {
		t.Fatalf("token requests %d refreshes %d", s.TokenRequests(), s.Refreshes())
	}
	// Wrong client.
	q.Set("client_secret", "nope")
	q.Set("refresh_token", p.Tokens().RefreshToken)
	wantError(t, get(t, s.Client(), s.OAuthOrigin()+"/oauth/token/?"+q.Encode()), 401, "invalid_client")
	// Missing parameter.
	q.Del("refresh_token")
	q.Set("client_secret", s.ClientSecret())
	wantError(t, get(t, s.Client(), s.OAuthOrigin()+"/oauth/token/?"+q.Encode()), 400, "invalid_request")
	// Refresh token expiry.
	clk.Advance(181 * 24 * time.Hour)
	wantError(t, refresh(t, s, p.Tokens().RefreshToken), 400, "invalid_grant")
}

func TestRefreshKnobs(t *testing.T) {
	s := newServer(t, b24test.WithRefreshTokenReuse(true), b24test.WithOldAccessTokenValid(true),
		b24test.WithTokenScope("app"), b24test.WithOAuthErrorStatus("invalid_grant", 401))
	p := s.AddPortal()
	old := p.Tokens()
	r := refresh(t, s, old.RefreshToken)
	wantOK(t, r)
	if r.Body["scope"] != "app" {
		t.Errorf("scope %v", r.Body["scope"])
	}
	wantOK(t, refresh(t, s, old.RefreshToken))
	wantOK(t, get(t, s.Client(), p.ClientEndpoint()+"profile?auth="+old.AccessToken))
	wantError(t, refresh(t, s, "bogus"), 401, "invalid_grant")
}

func TestAuthorizationCode(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	code := p.AuthCode()
	form := url.Values{"grant_type": {"authorization_code"}, "client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()}, "code": {code}}
	r := postForm(t, s.Client(), s.OAuthOrigin()+"/oauth/token/", form)
	wantOK(t, r)
	if r.Body["member_id"] != p.MemberID() {
		t.Fatal(r.Raw)
	}
	wantError(t, postForm(t, s.Client(), s.OAuthOrigin()+"/oauth/token/", form), 400, "invalid_grant")
}
