package b24oauth_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func TestCallProfile(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	resp, err := c.Call(context.Background(), "profile", nil)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	var profile struct {
		ID    string `json:"ID"`
		Admin bool   `json:"ADMIN"`
	}
	if err := resp.Decode(&profile); err != nil {
		t.Fatal(err)
	}
	if profile.ID != "1" || !profile.Admin {
		t.Errorf("profile = %+v, want ID 1 admin", profile)
	}
	if resp.Time.Start == 0 || resp.Time.DateStart.IsZero() {
		t.Errorf("time block not decoded: %+v", resp.Time)
	}
	if got := p.Requests("profile"); got != 1 {
		t.Errorf("portal saw %d profile requests, want 1", got)
	}
}

func TestCallV3(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(3)
	c := newClient(t, s, p)
	resp, err := c.CallV3(context.Background(), "crm.deal.get", map[string]any{"id": 2})
	if err != nil {
		t.Fatalf("CallV3: %v", err)
	}
	var got struct {
		Item map[string]any `json:"item"`
	}
	if err := resp.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Item == nil {
		t.Fatalf("no item in %s", resp.Result)
	}
	_, err = c.CallV3(context.Background(), "crm.deal.get", map[string]any{"id": 999})
	var apiErr *b24oauth.APIError
	if !errors.As(err, &apiErr) || apiErr.Version != b24oauth.APIVersionV3 || apiErr.Status < 400 || apiErr.Code == "" {
		t.Fatalf("missing deal: err = %v, want a v3 *APIError", err)
	}
}

func TestCallAPIError(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	_, err := c.Call(context.Background(), "no.such.method", nil)
	var apiErr *b24oauth.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	want := &b24oauth.APIError{Code: "ERROR_METHOD_NOT_FOUND", Status: 404, Method: "no.such.method", Version: b24oauth.APIVersionV2, Description: apiErr.Description}
	if diff := cmp.Diff(want, apiErr); diff != "" {
		t.Errorf("APIError (-want +got):\n%s", diff)
	}
	if !errors.Is(err, &b24oauth.APIError{Code: "ERROR_METHOD_NOT_FOUND"}) {
		t.Error("errors.Is by code failed")
	}
}

func TestRefreshOnExpiredToken(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	var events []b24oauth.RefreshAuthEvent
	c := newClient(t, s, p, b24oauth.WithCallbackRefreshAuth(func(_ context.Context, ev b24oauth.RefreshAuthEvent) error {
		events = append(events, ev)
		return nil
	}))
	// The client still believes the token is valid: the portal's 401 expired_token triggers the refresh.
	p.ExpireAccessToken()
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatalf("Call after expiry: %v", err)
	}
	if got := p.Refreshes(); got != 1 {
		t.Fatalf("refreshes = %d, want 1", got)
	}
	tok := p.Tokens()
	ad, ok := c.Auth().AuthData()
	if !ok || ad.AccessToken != tok.AccessToken || ad.RefreshToken != tok.RefreshToken || ad.Expires != tok.Expires.Unix() {
		t.Errorf("client did not adopt the new pair: ok=%v", ok)
	}
	if len(events) != 1 || events[0].AuthData.RefreshToken != tok.RefreshToken || events[0].Params.MemberID != p.MemberID() {
		t.Errorf("callback events = %d, want 1 with the new pair", len(events))
	}
	// The old refresh token is spent: a second refresh must use the new one.
	if _, err := c.Auth().RefreshAuth(context.Background()); err != nil {
		t.Fatalf("second refresh: %v", err)
	}
	if got := p.Refreshes(); got != 2 {
		t.Errorf("refreshes = %d, want 2", got)
	}
}

func TestRefreshBeforeExpiry(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	params := paramsFor(s, p)
	params.Expires = time.Now().Add(5 * time.Second).Unix() // inside the default 15 s margin
	c, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()}, fakeOptions(s)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatal(err)
	}
	if p.Refreshes() != 1 || p.Requests("profile") != 1 {
		t.Errorf("refreshes=%d profile requests=%d, want 1 and 1 (refresh first, no 401 round trip)", p.Refreshes(), p.Requests("profile"))
	}
}

// TestRefreshStorm: any number of goroutines and any mix of v2, v3, RefreshAuth-free paths and
// TokenSource on an expired portal cause exactly one refresh, and every call succeeds.
func TestRefreshStorm(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	p.SeedDeals(1)
	c := newClient(t, s, p, unlimited())
	p.ExpireAccessToken()
	const n = 1000
	var wg sync.WaitGroup
	var failures atomic.Int32
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			var err error
			switch i % 3 {
			case 0:
				_, err = c.Call(context.Background(), "profile", nil)
			case 1:
				_, err = c.CallV3(context.Background(), "crm.deal.get", map[string]any{"id": 1})
			case 2:
				_, err = c.TokenSource().Token()
			}
			if err != nil {
				failures.Add(1)
				t.Errorf("goroutine %d: %v", i, err)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	if got := p.Refreshes(); got != 1 {
		t.Errorf("refreshes = %d, want exactly 1", got)
	}
	if s.TokenRequests() != 1 {
		t.Errorf("token endpoint requests = %d, want 1", s.TokenRequests())
	}
}

func TestRefreshTokenErrorReachesCall(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	p.ExpireAccessToken()
	p.ExpireRefreshToken()
	_, err := c.Call(context.Background(), "profile", nil)
	var rte *b24oauth.RefreshTokenError
	if !errors.As(err, &rte) {
		t.Fatalf("err = %v, want *RefreshTokenError", err)
	}
	if rte.Code != "invalid_grant" || rte.Status != 400 || rte.MemberID != p.MemberID() || !rte.Revoked() {
		t.Errorf("RefreshTokenError = %+v", rte)
	}
	before := s.TokenRequests()
	// A refused refresh token is not sent again: later calls fail fast.
	for i := 0; i < 3; i++ {
		if _, err := c.Call(context.Background(), "profile", nil); !errors.As(err, &rte) {
			t.Fatalf("call %d: err = %v, want *RefreshTokenError", i, err)
		}
	}
	if got := s.TokenRequests() - before; got != 0 {
		t.Errorf("%d more token requests after invalid_grant, want 0", got)
	}
}

func TestUntrustedOAuthServer(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	params := paramsFor(s, p)
	params.ServerEndpoint = "https://evil.example.com/rest/"
	c, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()}, fakeOptions(s)...)
	if err != nil {
		t.Fatal(err)
	}
	p.ExpireAccessToken()
	_, err = c.Call(context.Background(), "profile", nil)
	if !errors.Is(err, b24oauth.ErrUntrustedEndpoint) {
		t.Fatalf("err = %v, want ErrUntrustedEndpoint", err)
	}
	var rte *b24oauth.RefreshTokenError
	if !errors.As(err, &rte) {
		t.Errorf("err = %v, want it to be a *RefreshTokenError too", err)
	}
	if s.TokenRequests() != 0 {
		t.Errorf("token requests = %d, want 0: the secret went somewhere", s.TokenRequests())
	}
}

func TestCallbackErrorKeepsPairAndRetries(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	var calls atomic.Int32
	var accepted atomic.Value
	errDB := errors.New("database down")
	c := newClient(t, s, p)
	c.SetCallbackRefreshAuth(func(_ context.Context, ev b24oauth.RefreshAuthEvent) error {
		if calls.Add(1) == 1 {
			return errDB
		}
		accepted.Store(ev.AuthData.RefreshToken)
		return nil
	})
	_, err := c.Auth().RefreshAuth(context.Background())
	if !errors.Is(err, errDB) {
		t.Fatalf("RefreshAuth err = %v, want the callback's error", err)
	}
	newPair := p.Tokens()
	if ad, _ := c.Auth().AuthData(); ad.RefreshToken != newPair.RefreshToken {
		t.Fatal("the new pair is not in use after the callback failed")
	}
	// The next call offers the same pair again, and the call itself succeeds.
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || accepted.Load() != newPair.RefreshToken {
		t.Errorf("callback calls = %d, accepted = %v; want 2 and the new refresh token", calls.Load(), accepted.Load() != nil)
	}
	// Accepted: not offered again.
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 {
		t.Errorf("callback called %d times, want 2", calls.Load())
	}
	if p.Refreshes() != 1 {
		t.Errorf("refreshes = %d, want 1", p.Refreshes())
	}
}

func TestCustomRefresh(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	var cbPair string
	c.SetCallbackRefreshAuth(func(_ context.Context, ev b24oauth.RefreshAuthEvent) error {
		cbPair = ev.AuthData.AccessToken
		return nil
	})
	fresh := p.IssueTokens() // what "another service" holds
	c.SetCustomRefreshAuth(func(ctx context.Context) (b24oauth.HandlerRefreshAuth, error) {
		return b24oauth.HandlerRefreshAuth{AccessToken: fresh.AccessToken, RefreshToken: fresh.RefreshToken, Expires: fresh.Expires.Unix(), ExpiresIn: 3600, MemberID: p.MemberID()}, nil
	})
	p.ExpireAccessToken()
	fresh2 := p.IssueTokens()
	fresh = fresh2
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatalf("Call: %v", err)
	}
	if s.TokenRequests() != 0 {
		t.Errorf("token requests = %d, want 0 with a custom refresher", s.TokenRequests())
	}
	if cbPair != fresh2.AccessToken {
		t.Error("the callback did not fire with the custom refresher's pair")
	}
	c.RemoveCustomRefreshAuth()
	if _, err := c.Auth().RefreshAuth(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.TokenRequests() != 1 {
		t.Errorf("token requests = %d after RemoveCustomRefreshAuth, want 1", s.TokenRequests())
	}
}

func TestTokenSourceAndDestroy(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	tok, err := c.TokenSource().Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != p.Tokens().AccessToken || tok.RefreshToken != "" || tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
		t.Errorf("token = %+v", tok)
	}
	c.Destroy()
	if _, err := c.Call(context.Background(), "profile", nil); !errors.Is(err, b24oauth.ErrDestroyed) {
		t.Errorf("Call after Destroy: %v, want ErrDestroyed", err)
	}
	if _, err := c.TokenSource().Token(); !errors.Is(err, b24oauth.ErrDestroyed) {
		t.Errorf("Token after Destroy: %v, want ErrDestroyed", err)
	}
	if ad, ok := c.Auth().AuthData(); ok || ad.AccessToken != "" {
		t.Error("AuthData after Destroy still has a token")
	}
}

func TestInitIsAdmin(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	c := newClient(t, s, p)
	if _, err := c.Auth().IsAdmin(); !errors.Is(err, b24oauth.ErrIsAdminNotInit) {
		t.Fatalf("IsAdmin before init: %v", err)
	}
	if err := c.InitIsAdmin(context.Background()); err != nil {
		t.Fatal(err)
	}
	if admin, err := c.Auth().IsAdmin(); err != nil || !admin {
		t.Errorf("IsAdmin = %v, %v; want true", admin, err)
	}
	p.SetAdmin(false)
	if err := c.InitIsAdmin(context.Background()); err != nil {
		t.Fatal(err)
	}
	if admin, _ := c.Auth().IsAdmin(); admin {
		t.Error("IsAdmin = true for a non-admin")
	}
}

func TestAccessors(t *testing.T) {
	s := newFake(t)
	p := s.AddPortal()
	hc := s.Client()
	c := newClient(t, s, p, b24oauth.WithHTTPClient(hc))
	if c.HTTPClient() != hc {
		t.Error("HTTPClient is not the client given")
	}
	origin := "https://" + p.Domain()
	if c.TargetOrigin() != origin {
		t.Errorf("TargetOrigin = %q", c.TargetOrigin())
	}
	want := map[b24oauth.APIVersion]string{b24oauth.APIVersionV2: origin + "/rest/", b24oauth.APIVersionV3: origin + "/rest/api/"}
	if diff := cmp.Diff(want, c.TargetOriginWithPath()); diff != "" {
		t.Error(diff)
	}
	if got := c.Auth().Uniq("cache"); got != "cache_"+p.MemberID() {
		t.Errorf("Uniq = %q", got)
	}
	other := b24test.ClientFor(s.URL())
	c.SetHTTPClient(other)
	if c.HTTPClient() != other {
		t.Error("SetHTTPClient did not take")
	}
	if c.Logger() == nil {
		t.Error("Logger is nil")
	}
}
