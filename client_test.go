package b24oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jarcoal/httpmock"

	"github.com/b24go/b24oauth"
)

const (
	testMember   = "5f0c2a9e1b7d4c3a8e6f9b2d1a0c4e7f"
	testAccess   = "access0000000000000000000000000000000000000000000000000000000000000001"
	testRefresh  = "refresh000000000000000000000000000000000000000000000000000000000000001"
	testAppToken = "9d3b7e1f0a2c4b6d8e0f1a3c5b7d9e2f"
	testSecret   = "s3cr3t-client-secret-000000000000000000000000000000"
)

func testParams() b24oauth.OAuthParams {
	return b24oauth.OAuthParams{
		ApplicationToken: testAppToken,
		UserID:           1,
		MemberID:         testMember,
		AccessToken:      testAccess,
		RefreshToken:     testRefresh,
		Expires:          time.Now().Add(time.Hour).Unix(),
		ExpiresIn:        3600,
		Scope:            "crm,user_brief",
		Domain:           "acme.bitrix24.com",
		ClientEndpoint:   "https://acme.bitrix24.com/rest/",
		ServerEndpoint:   "https://oauth.bitrix.info/rest/",
		Status:           b24oauth.StatusLocal,
	}
}

var testSecretPair = b24oauth.OAuthSecret{ClientID: "local.0123456789abcd.12345678", ClientSecret: testSecret}

// mockClient returns an *http.Client routed to a fresh httpmock transport.
func mockClient(t *testing.T) (*http.Client, *httpmock.MockTransport) {
	t.Helper()
	mt := httpmock.NewMockTransport()
	return &http.Client{Transport: mt}, mt
}

func newMocked(t *testing.T, p b24oauth.OAuthParams, opts ...b24oauth.Option) (*b24oauth.B24OAuth, *httpmock.MockTransport) {
	t.Helper()
	hc, mt := mockClient(t)
	c, err := b24oauth.New(p, testSecretPair, append([]b24oauth.Option{b24oauth.WithHTTPClient(hc), unlimited()}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, mt
}

func okReply(result any) httpmock.Responder {
	return httpmock.NewJsonResponderOrPanic(200, map[string]any{
		"result": result,
		"time":   map[string]any{"start": 1767225600.5, "finish": 1767225600.6, "duration": 0.1, "processing": 0.05, "date_start": "2026-01-01T00:00:00+00:00", "date_finish": "2026-01-01T00:00:00+00:00", "operating": 0, "operating_reset_at": 1767226200},
	})
}

func tokenReply(access, refresh string) map[string]any {
	return map[string]any{
		"access_token": access, "refresh_token": refresh, "expires": time.Now().Add(time.Hour).Unix(), "expires_in": 3600,
		"scope": "crm,user_brief,task", "domain": "oauth.bitrix.info", "server_endpoint": "https://oauth.bitrix24.tech/rest/",
		"status": "P", "client_endpoint": "https://acme.bitrix24.com/rest/", "member_id": testMember, "user_id": 7,
	}
}

func TestNewValidates(t *testing.T) {
	cases := map[string]func(*b24oauth.OAuthParams){
		"no member_id":            func(p *b24oauth.OAuthParams) { p.MemberID = "" },
		"no endpoint":             func(p *b24oauth.OAuthParams) { p.ClientEndpoint, p.Domain = "", "" },
		"relative endpoint":       func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "/rest/" },
		"http endpoint":           func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "http://acme.bitrix24.com/rest/" },
		"wrong path":              func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "https://acme.bitrix24.com/api/" },
		"domain mismatch":         func(p *b24oauth.OAuthParams) { p.Domain = "evil.com" },
		"user info":               func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "https://u:p@acme.bitrix24.com/rest/" },
		"query":                   func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "https://acme.bitrix24.com/rest/?x=1" },
		"bad server endpoint":     func(p *b24oauth.OAuthParams) { p.ServerEndpoint = "oauth.bitrix.info" },
		"http server endpoint":    func(p *b24oauth.OAuthParams) { p.ServerEndpoint = "http://oauth.bitrix.info/rest/" },
		"javascript url endpoint": func(p *b24oauth.OAuthParams) { p.ClientEndpoint = "javascript:alert(1)" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			p := testParams()
			mutate(&p)
			if _, err := b24oauth.New(p, testSecretPair); err == nil {
				t.Fatal("New accepted invalid params")
			}
		})
	}
	t.Run("domain only", func(t *testing.T) {
		p := testParams()
		p.ClientEndpoint = ""
		c, err := b24oauth.New(p, testSecretPair)
		if err != nil {
			t.Fatal(err)
		}
		if c.TargetOrigin() != "https://acme.bitrix24.com" {
			t.Errorf("TargetOrigin = %q", c.TargetOrigin())
		}
	})
	t.Run("insecure http allowed by option", func(t *testing.T) {
		p := testParams()
		p.ClientEndpoint, p.Domain = "http://127.0.0.1:8080/rest/", "127.0.0.1:8080"
		if _, err := b24oauth.New(p, testSecretPair, b24oauth.WithInsecureHTTP()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad oauth server option", func(t *testing.T) {
		if _, err := b24oauth.New(testParams(), testSecretPair, b24oauth.WithOAuthServers("not a url")); err == nil {
			t.Fatal("accepted an invalid OAuth server")
		}
	})
}

func TestCallWireFormat(t *testing.T) {
	c, mt := newMocked(t, testParams())
	var body map[string]any
	var order string
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/crm.deal.add", func(r *http.Request) (*http.Response, error) {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		raw, _ := io.ReadAll(r.Body)
		order = string(raw)
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Errorf("body is not JSON: %s", raw)
		}
		return okReply(42)(r)
	})
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/api/tasks.task.get", okReply(map[string]any{"item": map[string]any{"id": 1}}))
	resp, err := c.Call(context.Background(), "crm.deal.add", map[string]any{"fields": map[string]any{"TITLE": "Deal"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"auth": testAccess, "fields": map[string]any{"TITLE": "Deal"}}
	if diff := cmp.Diff(want, body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(order, `{"auth":`) {
		t.Errorf("auth is not the first key: %s", order)
	}
	var id int
	if err := resp.Decode(&id); err != nil || id != 42 {
		t.Errorf("Decode = %d, %v", id, err)
	}
	wantTime := b24oauth.ResponseTime{Start: 1767225600.5, Finish: 1767225600.6, Duration: 0.1, Processing: 0.05,
		DateStart: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), DateFinish: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), OperatingResetAt: 1767226200}
	if diff := cmp.Diff(wantTime, resp.Time, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("Time (-want +got):\n%s", diff)
	}
	if _, err := c.CallV3(context.Background(), "tasks.task.get", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "../oauth/token", nil); err == nil {
		t.Error("a method name with a path was accepted")
	}
	if _, err := c.Call(context.Background(), "crm.deal.list", []int{1}); err == nil {
		t.Error("params that are not an object were accepted")
	}
	info := mt.GetCallCountInfo()
	if info["POST https://acme.bitrix24.com/rest/crm.deal.add"] != 1 || info["POST https://acme.bitrix24.com/rest/api/tasks.task.get"] != 1 || mt.GetTotalCallCount() != 2 {
		t.Errorf("calls = %v", info)
	}
}

func TestRefreshWireFormatAndReplyApplied(t *testing.T) {
	p := testParams()
	p.AccessToken = "" // no access token: the first call refreshes
	c, mt := newMocked(t, p)
	var form url.Values
	mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", func(r *http.Request) (*http.Response, error) {
		if r.URL.RawQuery != "" {
			t.Errorf("refresh sent a query string: %q", r.URL.RawQuery)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("Content-Type = %q", ct)
		}
		_ = r.ParseForm()
		form = r.PostForm
		return httpmock.NewJsonResponse(200, tokenReply("new-access", "new-refresh"))
	})
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/profile", okReply(map[string]any{"ID": "7"}))
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatal(err)
	}
	wantForm := url.Values{"grant_type": {"refresh_token"}, "client_id": {testSecretPair.ClientID}, "client_secret": {testSecret}, "refresh_token": {testRefresh}}
	if diff := cmp.Diff(wantForm, form); diff != "" {
		t.Errorf("refresh form (-want +got):\n%s", diff)
	}
	ad, ok := c.Auth().AuthData()
	if !ok || ad.AccessToken != "new-access" || ad.RefreshToken != "new-refresh" {
		t.Errorf("AuthData = %v, %v", ad, ok)
	}
	// Every field of the reply is applied: the next refresh goes to the new server_endpoint.
	var second atomic.Int32
	mt.RegisterResponder("POST", "https://oauth.bitrix24.tech/oauth/token/", func(r *http.Request) (*http.Response, error) {
		second.Add(1)
		_ = r.ParseForm()
		if r.PostForm.Get("refresh_token") != "new-refresh" {
			t.Errorf("second refresh used %q", r.PostForm.Get("refresh_token"))
		}
		reply := tokenReply("third-access", "")
		delete(reply, "refresh_token")
		delete(reply, "expires")
		return httpmock.NewJsonResponse(200, reply)
	})
	before := time.Now().Unix()
	ad, err := c.Auth().RefreshAuth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if second.Load() != 1 {
		t.Fatal("the second refresh did not go to the reply's server_endpoint")
	}
	if ad.RefreshToken != "" {
		t.Error("a reply without a refresh token kept the spent one")
	}
	if ad.Expires < before+3600 || ad.Expires > time.Now().Unix()+3600 {
		t.Errorf("Expires = %d, want now + expires_in", ad.Expires)
	}
}

func TestRefreshErrorsAreTyped(t *testing.T) {
	cases := []struct {
		name      string
		responder httpmock.Responder
		want      b24oauth.RefreshTokenError
		revoked   bool
	}{
		{"invalid_grant", httpmock.NewJsonResponderOrPanic(400, map[string]string{"error": "invalid_grant", "error_description": "Invalid refresh token"}),
			b24oauth.RefreshTokenError{Code: "invalid_grant", Description: "Invalid refresh token", Status: 400, MemberID: testMember}, true},
		{"invalid_client", httpmock.NewJsonResponderOrPanic(401, map[string]string{"error": "invalid_client"}),
			b24oauth.RefreshTokenError{Code: "invalid_client", Status: 401, MemberID: testMember}, false},
		{"html 502", httpmock.NewStringResponder(502, "<html>bad gateway</html>"),
			b24oauth.RefreshTokenError{Status: 502, Description: "unexpected reply from the OAuth server", MemberID: testMember}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, mt := newMocked(t, testParams())
			mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", tc.responder)
			_, err := c.Auth().RefreshAuth(context.Background())
			var rte *b24oauth.RefreshTokenError
			if !errors.As(err, &rte) {
				t.Fatalf("err = %v", err)
			}
			if diff := cmp.Diff(&tc.want, rte); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			_, err = c.Auth().RefreshAuth(context.Background())
			if n := mt.GetTotalCallCount(); tc.revoked && n != 1 || !tc.revoked && n != 2 {
				t.Errorf("token requests = %d after two refreshes (revoked=%v)", n, tc.revoked)
			}
			if !errors.Is(err, &b24oauth.RefreshTokenError{Code: tc.want.Code}) {
				t.Errorf("second err = %v", err)
			}
		})
	}
	t.Run("network", func(t *testing.T) {
		c, mt := newMocked(t, testParams())
		mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", httpmock.NewErrorResponder(errors.New("connection refused")))
		_, err := c.Auth().RefreshAuth(context.Background())
		var rte *b24oauth.RefreshTokenError
		if !errors.As(err, &rte) || rte.Code != "" || rte.Err == nil {
			t.Fatalf("err = %#v", err)
		}
	})
	t.Run("reply for another portal", func(t *testing.T) {
		c, mt := newMocked(t, testParams())
		reply := tokenReply("a", "r")
		reply["member_id"] = "ffffffffffffffffffffffffffffffff"
		mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", httpmock.NewJsonResponderOrPanic(200, reply))
		if _, err := c.Auth().RefreshAuth(context.Background()); err == nil {
			t.Fatal("accepted tokens of another portal")
		}
		if ad, _ := c.Auth().AuthData(); ad.AccessToken != testAccess {
			t.Error("tokens of another portal were applied")
		}
	})
}

// TestCancelledWaiterDoesNotAbortRefresh: a caller that gives up stops waiting; the refresh
// goes on and the others get its result.
func TestCancelledWaiterDoesNotAbortRefresh(t *testing.T) {
	p := testParams()
	p.Expires = time.Now().Add(-time.Minute).Unix()
	c, mt := newMocked(t, p)
	release := make(chan struct{})
	arrived := make(chan struct{})
	mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", func(r *http.Request) (*http.Response, error) {
		close(arrived)
		<-release
		if r.Context().Err() != nil {
			t.Error("the refresh's context was cancelled with its first waiter")
		}
		return httpmock.NewJsonResponse(200, tokenReply("new-access", "new-refresh"))
	})
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/profile", okReply(map[string]any{"ID": "1"}))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "profile", nil)
		errc <- err
	}()
	<-arrived
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	// Another caller of the expired portal joins the refresh under way, or finds its result.
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), "profile", nil)
		done <- err
	}()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ad, _ := c.Auth().AuthData(); ad.AccessToken != "new-access" {
		t.Error("the refresh did not complete")
	}
	if n := mt.GetCallCountInfo()["POST https://oauth.bitrix.info/oauth/token/"]; n != 1 {
		t.Errorf("token requests = %d, want 1", n)
	}
}

func TestQueryLimitRetried(t *testing.T) {
	c, mt := newMocked(t, testParams())
	var n atomic.Int32
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/crm.deal.add", func(r *http.Request) (*http.Response, error) {
		if n.Add(1) <= 2 {
			return httpmock.NewJsonResponse(503, map[string]string{"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
		}
		return okReply(1)(r)
	})
	if _, err := c.Call(context.Background(), "crm.deal.add", nil); err != nil {
		t.Fatalf("Call: %v", err)
	}
	if n.Load() != 3 {
		t.Errorf("attempts = %d, want 3", n.Load())
	}
	// Past MaxRetries the rejection is returned.
	n.Store(-100)
	_, err := c.Call(context.Background(), "crm.deal.add", nil)
	var apiErr *b24oauth.APIError
	if !errors.As(err, &apiErr) || apiErr.Code != "QUERY_LIMIT_EXCEEDED" || apiErr.Status != 503 {
		t.Fatalf("err = %v", err)
	}
	if got := n.Load() + 100; got != 4 {
		t.Errorf("attempts = %d, want 1 + MaxRetries(3)", got)
	}
}

// brokenServer answers every request by closing the connection after reading it: the
// request's fate is unknown to the client.
func brokenServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestUnknownOutcomeNotResent(t *testing.T) {
	srv, hits := brokenServer(t)
	host := strings.TrimPrefix(srv.URL, "https://")
	p := testParams()
	p.Domain, p.ClientEndpoint = host, srv.URL+"/rest/"
	rp := b24oauth.DefaultRestrictionParams()
	rp.RetryDelay = time.Millisecond
	c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(srv.Client()), b24oauth.WithRestrictionParams(rp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "crm.deal.add", map[string]any{"fields": map[string]any{"TITLE": "x"}}); err == nil {
		t.Fatal("Call succeeded against a broken server")
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("a write was sent %d times, want 1 (never re-sent blindly)", got)
	}
	hits.Store(0)
	if _, err := c.Call(context.Background(), "crm.deal.list", nil); err == nil {
		t.Fatal("Call succeeded against a broken server")
	}
	if got := hits.Load(); got != 1+int32(rp.MaxRetries) {
		t.Errorf("a read was sent %d times, want 1 + MaxRetries", got)
	}
}

// redialingTransport sends each request through next and then fails it with a dial error, as a
// RoundTripper that retries on a new connection after the first one broke would: the request
// reached the portal, yet the error alone says it never left.
type redialingTransport struct{ next http.RoundTripper }

func (rt redialingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused on the retry")}
}

// A dial error after the request was written does not make a write look unsent: the client
// learns from the transport that the request reached the wire, and does not re-send the write.
// A read is re-sent, as after any transport error.
func TestWrittenWriteNotResentAfterADialError(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result":true}`)
	}))
	t.Cleanup(srv.Close)
	p := testParams()
	p.Domain, p.ClientEndpoint = strings.TrimPrefix(srv.URL, "https://"), srv.URL+"/rest/"
	rp := b24oauth.DefaultRestrictionParams()
	rp.RetryDelay = time.Millisecond
	hc := &http.Client{Transport: redialingTransport{next: srv.Client().Transport}}
	c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(hc), b24oauth.WithRestrictionParams(rp))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(context.Background(), "crm.deal.add", map[string]any{"fields": map[string]any{"TITLE": "x"}})
	if err == nil || !strings.Contains(err.Error(), "may have been executed") {
		t.Errorf("err = %v, want the write reported as possibly executed", err)
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("the write reached the server %d times, want 1", got)
	}
	hits.Store(0)
	if _, err := c.Call(context.Background(), "crm.deal.get", map[string]any{"id": 1}); err == nil {
		t.Fatal("a read succeeded through a transport that always fails")
	}
	if got := hits.Load(); got != 1+int32(rp.MaxRetries) {
		t.Errorf("the read was sent %d times, want 1 + MaxRetries(%d)", got, rp.MaxRetries)
	}
}

// A caller's own httptrace.ClientTrace on the context sees every request, reads and writes
// alike: the client's own hook (it traces writes) is added to the caller's, never in its place.
func TestCallersClientTraceSeesEveryRequest(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result":true}`)
	}))
	t.Cleanup(srv.Close)
	p := testParams()
	p.Domain, p.ClientEndpoint = strings.TrimPrefix(srv.URL, "https://"), srv.URL+"/rest/"
	c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	var wrote, gotConn atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn:      func(httptrace.GotConnInfo) { gotConn.Add(1) },
		WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Add(1) },
	})
	for _, method := range []string{"crm.deal.get", "crm.deal.add", "crm.deal.list", "crm.deal.update"} {
		if _, err := c.Call(ctx, method, nil); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if _, err := c.CallV3(ctx, method, nil); err != nil {
			t.Fatalf("v3 %s: %v", method, err)
		}
	}
	if wrote.Load() != 8 || gotConn.Load() != 8 {
		t.Errorf("the caller's trace saw %d requests written and %d connections, want 8 of each", wrote.Load(), gotConn.Load())
	}
}

func TestConnectionRefusedIsRetried(t *testing.T) {
	// Nothing listens: the request was never sent, so even a write may be retried.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := testParams()
	p.Domain, p.ClientEndpoint = addr, "http://"+addr+"/rest/"
	rp := b24oauth.DefaultRestrictionParams()
	rp.RetryDelay, rp.MaxRetries = time.Millisecond, 2
	c, err := b24oauth.New(p, testSecretPair, b24oauth.WithInsecureHTTP(), b24oauth.WithRestrictionParams(rp))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(context.Background(), "crm.deal.add", nil)
	if err == nil || strings.Contains(err.Error(), "may have been executed") {
		t.Errorf("err = %v, want a plain connection error", err)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	p := testParams()
	inst := b24oauth.Installation{OAuthParams: p, State: b24oauth.StateActive}
	ad := b24oauth.AuthData{AccessToken: testAccess, RefreshToken: testRefresh, MemberID: testMember}
	h := b24oauth.HandlerRefreshAuth{AccessToken: testAccess, RefreshToken: testRefresh}
	ev := b24oauth.RefreshAuthEvent{AuthData: ad, Params: p}
	secrets := []string{testAccess, testRefresh, testAppToken, testSecret}
	values := []any{p, &p, testSecretPair, &testSecretPair, inst, &inst, ad, h, ev, []any{p, inst}}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(out, s) || strings.Contains(out, fmt.Sprintf("%x", s)) {
					t.Errorf("fmt %s of %T shows a secret: %s", verb, v, out)
				}
			}
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// slog resolves a LogValuer; a container of them ([]any) is marshalled by encoding/json,
	// which must keep the tokens for stores, so only the values themselves are logged here.
	for _, v := range values[:len(values)-1] {
		log.Info("value", "v", v)
	}
	for _, s := range secrets {
		if strings.Contains(buf.String(), s) {
			t.Errorf("slog output shows a secret: %s", buf.String())
		}
	}
	if !strings.Contains(fmt.Sprint(p), testMember) {
		t.Error("the redacted form lost the member_id, which is not a secret")
	}
}

// TestDebugLogHasNoSecrets runs a whole session (call, 401, refresh, retry, refresh error) with
// debug logging and checks that no token or secret reaches the log.
func TestDebugLogHasNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, mt := newMocked(t, testParams(), b24oauth.WithLogger(log))
	var n atomic.Int32
	mt.RegisterResponder("POST", "https://acme.bitrix24.com/rest/profile", func(r *http.Request) (*http.Response, error) {
		if n.Add(1) == 1 {
			return httpmock.NewJsonResponse(401, map[string]string{"error": "expired_token", "error_description": "The access token provided has expired"})
		}
		return okReply(map[string]any{"ID": "1"})(r)
	})
	mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", httpmock.NewJsonResponderOrPanic(200, tokenReply("new-access-token-value", "new-refresh-token-value")))
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatal(err)
	}
	mt.RegisterResponder("POST", "https://oauth.bitrix.info/oauth/token/", httpmock.NewJsonResponderOrPanic(400, map[string]string{"error": "invalid_grant"}))
	_, err := c.Auth().RefreshAuth(context.Background())
	log.Debug("error", "err", err)
	out := buf.String()
	if !strings.Contains(out, "refreshed") || !strings.Contains(out, "method=profile") {
		t.Errorf("the debug log misses the refresh or the call:\n%s", out)
	}
	for _, s := range []string{testAccess, testRefresh, testSecret, "new-access-token-value", "new-refresh-token-value"} {
		if strings.Contains(out, s) {
			t.Errorf("debug log shows a secret %q:\n%s", s, out)
		}
	}
}

// Only writes without an Idempotency-Key are traced (post's traceWrite). A v2 or v3 batch carries no key (sendAttempts skips it for "batch"), so a batch with a write, and
// the offline pull's batch (event.offline.get is a write: it deletes or reserves the events),
// must be traced: a dial error after the request reached the portal must not make them look
// unsent. Existing tests cover a single v2 write only. Expected: each batch reaches the
// portal once and is reported as possibly executed; a read-only batch is re-sent.
func TestWrittenBatchNotResentAfterADialError(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result":{"result":{},"result_error":[]}}`)
	}))
	t.Cleanup(srv.Close)
	p := testParams()
	p.Domain, p.ClientEndpoint = strings.TrimPrefix(srv.URL, "https://"), srv.URL+"/rest/"
	rp := *unlimitedParams()
	hc := &http.Client{Transport: redialingTransport{next: srv.Client().Transport}}
	for _, obs := range []b24oauth.Observer{nil, b24oauth.NopObserver{}} {
		c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(hc), b24oauth.WithRestrictionParams(rp), b24oauth.WithObserver(obs))
		if err != nil {
			t.Fatal(err)
		}
		for name, run := range map[string]func([]b24oauth.BatchCommand) error{
			"v2": func(cmds []b24oauth.BatchCommand) error { _, err := c.Batch(context.Background(), cmds); return err },
			"v3": func(cmds []b24oauth.BatchCommand) error { _, err := c.BatchV3(context.Background(), cmds); return err },
		} {
			for _, cmds := range [][]b24oauth.BatchCommand{
				{{Key: "a", Method: "crm.deal.get", Params: map[string]any{"id": 1}}, {Key: "b", Method: "crm.deal.add"}},
				{{Key: "get", Method: "event.offline.get", Params: map[string]any{"clear": 1}}},
			} {
				hits.Store(0)
				err := run(cmds)
				if err == nil || !strings.Contains(err.Error(), "may have been executed") {
					t.Errorf("%s %s (observer %T): err = %v, want the batch reported as possibly executed", name, cmds[len(cmds)-1].Method, obs, err)
				}
				if got := hits.Load(); got != 1 {
					t.Errorf("%s %s (observer %T): the batch reached the server %d times, want 1", name, cmds[len(cmds)-1].Method, obs, got)
				}
			}
			hits.Store(0)
			if err := run([]b24oauth.BatchCommand{{Key: "a", Method: "crm.deal.get"}}); err == nil {
				t.Errorf("%s: a read batch succeeded through a transport that always fails", name)
			}
			if got := hits.Load(); got != 1+int32(rp.MaxRetries) {
				t.Errorf("%s: the read batch was sent %d times, want 1 + MaxRetries(%d)", name, got, rp.MaxRetries)
			}
		}
	}
}
