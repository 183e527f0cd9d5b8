package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// A state is good once, for its domain, until it expires, and only as issued by its key.
func TestStatesAreSingleUseAndTamperProof(t *testing.T) {
	st, err := newStates(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	st.now = func() time.Time { return now }
	state, err := st.issue("acme.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.take(state, "other.example.com"); !errors.Is(err, errStateInvalid) {
		t.Errorf("another domain: %v, want errStateInvalid", err)
	}
	enc, sig, _ := strings.Cut(state, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(enc)
	forged := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), "acme.", "evil.", 1))) + "." + sig
	flipped := []byte(state)
	flipped[len(flipped)-2] ^= 1
	other, _ := newStates(bytes.Repeat([]byte{8}, 32))
	otherState, _ := other.issue("acme.example.com")
	for name, s := range map[string]string{
		"empty": "", "no signature": enc, "no payload": "." + sig, "payload changed": forged,
		"signature changed": string(flipped), "another key": otherState, "too long": strings.Repeat("a", 2000),
		"not base64": "!!!." + sig,
	} {
		if err := st.take(s, "acme.example.com"); !errors.Is(err, errStateInvalid) {
			t.Errorf("%s: %v, want errStateInvalid", name, err)
		}
	}
	if err := st.take(forged, "evil.example.com"); !errors.Is(err, errStateInvalid) {
		t.Errorf("a payload changed to the other domain: %v", err)
	}
	if err := st.take(state, "acme.example.com"); err != nil {
		t.Fatalf("the genuine state: %v", err)
	}
	if err := st.take(state, "acme.example.com"); !errors.Is(err, errStateUsed) {
		t.Errorf("taken twice: %v, want errStateUsed", err)
	}

	late, _ := st.issue("acme.example.com")
	now = now.Add(stateTTL)
	if err := st.take(late, "acme.example.com"); !errors.Is(err, errStateExpired) {
		t.Errorf("after %v: %v, want errStateExpired", stateTTL, err)
	}
	if _, err := newStates([]byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// connectServer is the example's server over real HTTP against a fake whose portals redirect
// to its /oauth/callback.
func connectServer(t *testing.T) (*b24test.Server, *b24oauth.App, b24oauth.TokenStore, string) {
	t.Helper()
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	store := b24oauth.NewMemoryStore()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: store,
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
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
	fake.SetRedirectURI(srv.URL + "/oauth/callback")
	return fake, app, store, srv.URL
}

// browse GETs u following redirects and returns the final status, body and the URL of the last
// request (the callback's, for a connect flow).
func browse(t *testing.T, fake *b24test.Server, u string) (int, string, string) {
	t.Helper()
	last := u
	browser := &http.Client{Transport: fake.Client().Transport, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		last = req.URL.String()
		return nil
	}}
	resp, err := browser.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), last
}

func TestConnectFlow(t *testing.T) {
	fake, _, store, base := connectServer(t)
	p := fake.AddPortal()
	status, body, callback := browse(t, fake, base+"/connect?domain="+strings.ToUpper(p.Domain()))
	if status != http.StatusOK || !strings.Contains(body, "connected "+p.Domain()) || !strings.HasPrefix(callback, base+"/oauth/callback?") {
		t.Fatalf("connect: %d %q via %s", status, body, callback)
	}
	if _, err := store.Load(context.Background(), p.MemberID()); err != nil {
		t.Fatalf("not stored: %v", err)
	}

	// The callback again (a replay, the browser's back button): refused before Connect.
	tokenRequests := fake.TokenRequests()
	if status, body, _ := browse(t, fake, callback); status != http.StatusBadRequest || !strings.Contains(body, "already used") {
		t.Errorf("replayed callback: %d %q, want 400", status, body)
	}
	// A callback with a state of its own making: refused before Connect.
	u, _ := url.Parse(callback)
	q := u.Query()
	q.Set("state", "x."+base64.RawURLEncoding.EncodeToString(make([]byte, 32)))
	q.Set("code", p.AuthCode())
	u.RawQuery = q.Encode()
	if status, body, _ := browse(t, fake, u.String()); status != http.StatusBadRequest || !strings.Contains(body, "invalid state") {
		t.Errorf("forged state: %d %q, want 400", status, body)
	}
	if got := fake.TokenRequests(); got != tokenRequests {
		t.Errorf("refused callbacks made %d token requests, want 0", got-tokenRequests)
	}

	if status, _, _ := browse(t, fake, base+"/connect?domain=https://"+p.Domain()); status != http.StatusBadRequest {
		t.Errorf("/connect with a URL for a domain: %d, want 400", status)
	}
}

func TestConnectFlowErrors(t *testing.T) {
	fake, app, _, base := connectServer(t)

	// The app is installed on the portal by an install event and its tokens work: 409.
	installed := fake.AddPortal()
	if rec := installed.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("install: %d %s", rec.Code, rec.Body)
	}
	if status, body, _ := browse(t, fake, base+"/connect?domain="+installed.Domain()); status != http.StatusConflict {
		t.Errorf("connect over an install: %d %q, want 409", status, body)
	}

	// A portal where the app is not installed shows its error page: the browser never comes back.
	gone := fake.AddPortal()
	gone.UninstallEvent(false)
	status, _, last := browse(t, fake, base+"/connect?domain="+gone.Domain())
	if status != http.StatusForbidden || strings.HasPrefix(last, base) {
		t.Errorf("app not installed: %d, last request %s; want the portal's 403 page", status, last)
	}

	// A genuine state with a code the OAuth server refuses: 400.
	p := fake.AddPortal()
	first := callbackOf(t, fake, base, p.Domain())
	if status, _, _ := browse(t, fake, first); status != http.StatusOK {
		t.Fatalf("first flow: %d", status)
	}
	second, _ := url.Parse(callbackOf(t, fake, base, p.Domain()))
	cu, _ := url.Parse(first)
	q := second.Query()
	q.Set("code", cu.Query().Get("code")) // the first flow's code, used already
	second.RawQuery = q.Encode()
	if status, body, _ := browse(t, fake, second.String()); status != http.StatusBadRequest || !strings.Contains(body, "did not confirm") {
		t.Errorf("a used code: %d %q, want 400", status, body)
	}
}

// callbackOf runs /connect for domain up to the portal's redirect and returns the callback URL,
// not requested yet.
func callbackOf(t *testing.T, fake *b24test.Server, base, domain string) string {
	t.Helper()
	var callback string
	browser := &http.Client{Transport: fake.Client().Transport, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Path == "/oauth/callback" {
			callback = req.URL.String()
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := browser.Get(base + "/connect?domain=" + domain)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if callback == "" {
		t.Fatalf("/connect?domain=%s: %d, no redirect to the callback", domain, resp.StatusCode)
	}
	return callback
}
