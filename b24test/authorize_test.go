package b24test_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/b24go/b24oauth/b24test"
)

// noFollow is s.Client() without following redirects, so a test sees the portal's 302.
func noFollow(s *b24test.Server) *http.Client {
	c := *s.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// authorizeResp GETs rawURL without following redirects and returns the status, the Location
// header and the body.
func authorizeResp(t *testing.T, s *b24test.Server, rawURL string) (int, string, string) {
	t.Helper()
	resp, err := noFollow(s).Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

func TestAuthorizeRedirectsWithACode(t *testing.T) {
	s := newServer(t, b24test.WithRedirectURI("https://app.example.net/oauth/callback?tenant=7"))
	p := s.AddPortal(b24test.PortalName("acme"), b24test.PortalScope("crm,user"))
	q := url.Values{
		"client_id": {s.ClientID()}, "state": {"s t&ate=1"},
		// Sent by some clients; the redirect URI comes from the app's settings, never from here.
		"response_type": {"code"}, "redirect_uri": {"https://evil.example.net/steal"},
	}
	status, loc, body := authorizeResp(t, s, "https://"+p.Domain()+"/oauth/authorize/?"+q.Encode())
	if status != http.StatusFound {
		t.Fatalf("status %d %s, want 302", status, body)
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "https" || u.Host != "app.example.net" || u.Path != "/oauth/callback" {
		t.Fatalf("Location %q: want the configured redirect URI", loc)
	}
	got := u.Query()
	want := map[string]string{
		"tenant": "7", "state": "s t&ate=1", "domain": "acme.example.com", "member_id": p.MemberID(),
		"scope": "crm,user", "server_domain": b24test.OAuthHost,
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, got.Get(k), v)
		}
	}
	if s.Authorizations() != 1 {
		t.Errorf("Authorizations() = %d, want 1", s.Authorizations())
	}

	// The code is good once, for user 1 of this portal.
	code := got.Get("code")
	exchange := func() reply {
		return postForm(t, s.Client(), s.OAuthOrigin()+"/oauth/token/", url.Values{
			"grant_type": {"authorization_code"}, "client_id": {s.ClientID()},
			"client_secret": {s.ClientSecret()}, "code": {code},
		})
	}
	r := exchange()
	wantOK(t, r)
	if r.Body["member_id"] != p.MemberID() || r.Body["client_endpoint"] != p.ClientEndpoint() || r.Body["user_id"] != float64(1) {
		t.Errorf("token reply %s", r.Raw)
	}
	wantError(t, exchange(), http.StatusBadRequest, "invalid_grant")
}

func TestAuthorizeWithoutState(t *testing.T) {
	s := newServer(t, b24test.WithRedirectURI("https://app.example.net/cb"))
	p := s.AddPortal()
	_, loc, _ := authorizeResp(t, s, "https://"+p.Domain()+"/oauth/authorize?client_id="+url.QueryEscape(s.ClientID()))
	u, _ := url.Parse(loc)
	if u.Query().Has("state") || u.Query().Get("code") == "" {
		t.Errorf("Location %q: want a code and no state", loc)
	}
}

func TestAuthorizeErrorPages(t *testing.T) {
	s := newServer(t, b24test.WithRedirectURI("https://app.example.net/cb"))
	p := s.AddPortal()
	gone := s.AddPortal()
	gone.UninstallEvent(false)
	for _, tc := range []struct {
		name, url string
		status    int
		text      string
	}{
		{"no client_id", "https://" + p.Domain() + "/oauth/authorize/?state=x", http.StatusBadRequest, "client_id"},
		{"another application", "https://" + p.Domain() + "/oauth/authorize/?client_id=local.0.1", http.StatusBadRequest, "Application not found"},
		{"app not installed", "https://" + gone.Domain() + "/oauth/authorize/?client_id=" + url.QueryEscape(s.ClientID()), http.StatusForbidden, "not installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, loc, body := authorizeResp(t, s, tc.url)
			if status != tc.status || loc != "" || !strings.Contains(body, tc.text) {
				t.Errorf("got %d Location %q body %q; want %d, no redirect, %q", status, loc, body, tc.status, tc.text)
			}
		})
	}
	if s.Authorizations() != 0 {
		t.Errorf("Authorizations() = %d, want 0", s.Authorizations())
	}
}

// Without a redirect URI the portal shows the code, as for an app registered without one.
func TestAuthorizeShowsTheCodeWithoutARedirectURI(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	status, loc, body := authorizeResp(t, s, "https://"+p.Domain()+"/oauth/authorize/?client_id="+url.QueryEscape(s.ClientID()))
	if status != http.StatusOK || loc != "" || !strings.Contains(body, "authorization code") {
		t.Fatalf("got %d Location %q body %q", status, loc, body)
	}
	s.SetRedirectURI("https://app.example.net/cb")
	if status, loc, _ := authorizeResp(t, s, "https://"+p.Domain()+"/oauth/authorize/?client_id="+url.QueryEscape(s.ClientID())); status != http.StatusFound || !strings.HasPrefix(loc, "https://app.example.net/cb?") {
		t.Errorf("after SetRedirectURI: %d %q", status, loc)
	}
}
