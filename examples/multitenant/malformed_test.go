package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// A request path naming no possible portal is a 404 on the store the server runs with (a
// FileStore), never a 500.
func TestProfileMalformedMemberIDIs404(t *testing.T) {
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	store, err := b24oauth.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: store,
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	st, err := newStates(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newMux(app, st, nil))
	t.Cleanup(srv.Close)
	for _, member := range []string{
		"x", "ABCDEF0123456789ABCDEF0123456789", "..", "%2e%2e", "..%2F..%2Fetc", "%00",
		"0123456789abcdef0123456789abcdeg", strings.Repeat("a", 200), "%27%3B%20DROP",
	} {
		resp, err := http.Get(srv.URL + "/portal/" + member + "/profile")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			u, _ := url.PathUnescape(member)
			t.Errorf("GET /portal/%.40q/profile: %d; want 404", u, resp.StatusCode)
		}
	}
}
