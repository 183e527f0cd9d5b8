package b24oauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// elsewhere is the host a redirect points to: it records every request it receives, and
// whether one carried a token or the client secret anywhere.
type elsewhere struct {
	srv      *httptest.Server
	requests atomic.Int64
	secrets  atomic.Int64
}

func newElsewhere(t *testing.T) *elsewhere {
	e := &elsewhere{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		all := r.URL.String() + string(body)
		for k, vs := range r.Header {
			all += k + strings.Join(vs, ",")
		}
		for _, s := range []string{testAccess, testRefresh, testSecret} {
			if strings.Contains(all, s) {
				e.secrets.Add(1)
			}
		}
		_, _ = io.WriteString(w, `{"result":{}}`)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// redirecting is a portal and OAuth server that answers every request with a redirect (code)
// to the same path and query at target.
func redirecting(t *testing.T, code int, target string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, target+r.URL.RequestURI(), code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// paramsAt is testParams with the portal and its OAuth server at srv.
func paramsAt(srv *httptest.Server) b24oauth.OAuthParams {
	p := testParams()
	p.Domain = strings.TrimPrefix(srv.URL, "http://")
	p.ClientEndpoint, p.ServerEndpoint = srv.URL+"/rest/", srv.URL+"/rest/"
	return p
}

// redirectPaths are the ways a token leaves the client: each returns the error of one request.
var redirectPaths = map[string]func(ctx context.Context, c *b24oauth.B24OAuth) error{
	"v2": func(ctx context.Context, c *b24oauth.B24OAuth) error {
		_, err := c.Call(ctx, "crm.deal.add", nil)
		return err
	},
	"v2 read": func(ctx context.Context, c *b24oauth.B24OAuth) error {
		_, err := c.Call(ctx, "profile", nil)
		return err
	},
	"v3": func(ctx context.Context, c *b24oauth.B24OAuth) error {
		_, err := c.CallV3(ctx, "tasks.task.get", nil)
		return err
	},
	"batch": func(ctx context.Context, c *b24oauth.B24OAuth) error {
		_, err := c.Batch(ctx, []b24oauth.BatchCommand{{Method: "profile"}, {Method: "crm.deal.add"}})
		return err
	},
	"list": func(ctx context.Context, c *b24oauth.B24OAuth) error {
		for _, err := range c.List(ctx, "crm.deal.list", nil) {
			if err != nil {
				return err
			}
		}
		return errors.New("the list ended without an error")
	},
	"refresh": func(ctx context.Context, c *b24oauth.B24OAuth) error { _, err := c.Auth().RefreshAuth(ctx); return err },
}

// checkRedirectRefused checks that err reports the redirect as the error of its path.
func checkRedirectRefused(t *testing.T, how, path string, code int, err error) {
	t.Helper()
	path = how + " " + path
	if strings.HasSuffix(path, " refresh") {
		var rte *b24oauth.RefreshTokenError
		if !errors.As(err, &rte) || rte.Status != code || rte.Revoked() {
			t.Errorf("refresh answered %d: err = %v; want a *RefreshTokenError with Status %d, not revoked", code, err, code)
		}
		return
	}
	var ae *b24oauth.APIError
	if !errors.As(err, &ae) || ae.Status != code || !strings.Contains(ae.Description, "redirect") {
		t.Errorf("%s answered %d: err = %v; want an *APIError with Status %d saying it was a redirect", path, code, err, code)
	}
}

// TestRedirectsAreNeverFollowed: with a user's http.Client that follows redirects (Go's default
// policy re-sends a 307 or 308 body, token included), no request of any path reaches the host
// a redirect points to, for a client of its own, after SetHTTPClient, and for an App's client.
func TestRedirectsAreNeverFollowed(t *testing.T) {
	ctx := context.Background()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			other := newElsewhere(t)
			portal := redirecting(t, code, other.srv.URL)
			p := paramsAt(portal)
			followAll := &http.Client{Timeout: time.Minute} // CheckRedirect nil: Go's default policy
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			secret := b24oauth.OAuthSecret{ClientID: testSecretPair.ClientID, ClientSecret: testSecret}
			clients := map[string]func(t *testing.T) *b24oauth.B24OAuth{
				"WithHTTPClient": func(t *testing.T) *b24oauth.B24OAuth {
					c, err := b24oauth.New(p, secret, b24oauth.WithHTTPClient(followAll), b24oauth.WithInsecureHTTP(),
						b24oauth.WithOAuthServers(portal.URL), unlimited(), b24oauth.WithLogger(quiet))
					if err != nil {
						t.Fatal(err)
					}
					if c.HTTPClient() != followAll {
						t.Error("HTTPClient is not the client given")
					}
					return c
				},
				"SetHTTPClient": func(t *testing.T) *b24oauth.B24OAuth {
					c, err := b24oauth.New(p, secret, b24oauth.WithInsecureHTTP(), b24oauth.WithOAuthServers(portal.URL), unlimited(), b24oauth.WithLogger(quiet))
					if err != nil {
						t.Fatal(err)
					}
					c.SetHTTPClient(followAll)
					if c.HTTPClient() != followAll {
						t.Error("HTTPClient is not the client set")
					}
					return c
				},
				"App": func(t *testing.T) *b24oauth.B24OAuth {
					store := b24oauth.NewMemoryStore()
					if err := store.Save(ctx, b24oauth.Installation{OAuthParams: p, State: b24oauth.StateActive}); err != nil {
						t.Fatal(err)
					}
					app, err := b24oauth.NewApp(b24oauth.AppConfig{ClientID: secret.ClientID, ClientSecret: secret.ClientSecret,
						Store: store, HTTPClient: followAll, InsecureHTTP: true, OAuthServers: []string{portal.URL}, Logger: quiet,
						ClientOptions: []b24oauth.Option{unlimited()}})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = app.Close() })
					c, err := app.ClientForMember(ctx, p.MemberID)
					if err != nil {
						t.Fatal(err)
					}
					if c.HTTPClient() != followAll {
						t.Error("HTTPClient is not AppConfig.HTTPClient")
					}
					return c
				},
			}
			for how, newClient := range clients {
				for path, run := range redirectPaths {
					checkRedirectRefused(t, how, path, code, run(ctx, newClient(t)))
				}
			}
			if n, s := other.requests.Load(), other.secrets.Load(); n != 0 || s != 0 {
				t.Errorf("the redirect's target received %d requests, %d of them with a token or the secret; want none", n, s)
			}
			if followAll.CheckRedirect != nil {
				t.Error("the user's http.Client was changed")
			}
		})
	}
}

// TestRedirectNamesTheNewOrigin: a renamed portal's 302 is reported with the origin it points
// to, and nothing else of its Location.
func TestRedirectNamesTheNewOrigin(t *testing.T) {
	portal := redirecting(t, http.StatusFound, "https://renamed.bitrix24.com")
	c, err := b24oauth.New(paramsAt(portal), testSecretPair, b24oauth.WithInsecureHTTP(), unlimited())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(context.Background(), "profile", map[string]any{"x": 1})
	var ae *b24oauth.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Description, "(to https://renamed.bitrix24.com)") || strings.Contains(ae.Description, "/rest/") {
		t.Errorf("err = %v; want an *APIError naming https://renamed.bitrix24.com and no path", err)
	}
}
