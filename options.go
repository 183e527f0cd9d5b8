package b24oauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Option configures a client built by New. Options apply in order; a later option of the same
// kind wins.
type Option func(*options)

// The OAuth servers Bitrix24 runs: the international one and the one of the RU region. They are
// the only origins the client secret is sent to unless WithOAuthServers says otherwise.
var defaultOAuthServers = []string{"https://oauth.bitrix.info", "https://oauth.bitrix24.tech"}

const (
	defaultExpiryMargin   = 15 * time.Second
	defaultRefreshTimeout = 30 * time.Second
)

type options struct {
	httpClient     *http.Client
	clients        *httpClients // set instead of httpClient by an App: shared by its clients
	maxReply       int64
	budget         *ResponseBudget
	logger         *slog.Logger
	restriction    *RestrictionParams
	oauthServers   []string
	insecureHTTP   bool
	expiryMargin   time.Duration
	refreshTimeout time.Duration
	callback       CallbackRefreshAuth
	custom         CustomRefreshAuth
	observer       Observer
	errs           []error

	// Set by App for the clients it hands out.
	limiter   *limiter
	refresher refresher
	now       func() time.Time
}

// WithHTTPClient sets the *http.Client used for REST calls and token refreshes. The default has
// a 90 s overall timeout (Bitrix24 cuts a request at 60 s).
//
// Whatever c's CheckRedirect says, the client never follows a redirect: every request it sends
// carries a token or the client secret, which a redirect would hand to another host. It sends
// through a copy of c that refuses redirects (c itself is not changed, and HTTPClient returns
// c); a 3xx reply is an error (for a portal, an *APIError saying its domain may have changed).
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) { o.httpClient, o.clients = c, nil }
}

// withHTTPClients is WithHTTPClient with the copy made once for every client of an App.
func withHTTPClients(c *httpClients) Option {
	return func(o *options) { o.httpClient, o.clients = nil, c }
}

// WithMaxResponseBytes sets the largest REST reply (v2, v3, batch, list page) the client reads:
// a longer one fails with an error matching ErrResponseTooLarge, and is not retried. 0 or less:
// DefaultMaxResponseBytes (32 MiB). The OAuth server's replies have a bound of their own, 64 KiB.
// For the clients of an App, put it in AppConfig.ClientOptions.
func WithMaxResponseBytes(n int64) Option {
	return func(o *options) { o.maxReply = n }
}

// WithResponseBudget makes the client read its long replies within budget, shared with the
// other clients given it (see ResponseBudget). nil: the budget of the process,
// DefaultResponseBudgetBytes, shared by every client given none.
func WithResponseBudget(budget *ResponseBudget) Option {
	return func(o *options) { o.budget = budget }
}

// WithLogger sets the logger. At debug level the client logs each request (method, status,
// duration, retries) and each refresh; it never logs a token or the client secret. The default
// is slog.Default() at the time of each log call.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRestrictionParams sets the rate limits and retry policy. See RestrictionParams.
func WithRestrictionParams(p RestrictionParams) Option {
	return func(o *options) { o.restriction = &p }
}

// WithOAuthServers sets the origins (scheme and host, e.g. "https://oauth.bitrix.info") the
// client secret may be sent to. A portal's server_endpoint outside this set makes a refresh fail
// with ErrUntrustedEndpoint before anything is sent. The default is https://oauth.bitrix.info and
// https://oauth.bitrix24.tech.
func WithOAuthServers(origins ...string) Option {
	return func(o *options) {
		o.oauthServers = o.oauthServers[:0:0]
		for _, s := range origins {
			origin, err := normalizeOrigin(s)
			if err != nil {
				o.errs = append(o.errs, fmt.Errorf("b24oauth: WithOAuthServers: %w", err))
				continue
			}
			o.oauthServers = append(o.oauthServers, origin)
		}
	}
}

// WithInsecureHTTP allows plain http:// portal and OAuth endpoints. Use it only for local
// development, tests, or an on-premise portal reachable only over a private network: over plain
// http every token travels in clear text.
func WithInsecureHTTP() Option {
	return func(o *options) { o.insecureHTTP = true }
}

// WithExpiryMargin sets how long before its expiry an access token is refreshed ahead of a call,
// instead of paying a 401 round trip (default 15 s).
func WithExpiryMargin(d time.Duration) Option {
	return func(o *options) { o.expiryMargin = d }
}

// WithRefreshTimeout bounds one refresh exchange with the OAuth server (default 30 s). The
// refresh runs on its own: a caller whose context ends stops waiting for it, but does not abort
// it for the others.
func WithRefreshTimeout(d time.Duration) Option {
	return func(o *options) { o.refreshTimeout = d }
}

// WithCallbackRefreshAuth is SetCallbackRefreshAuth as an option.
func WithCallbackRefreshAuth(fn CallbackRefreshAuth) Option {
	return func(o *options) { o.callback = fn }
}

// WithCustomRefreshAuth is SetCustomRefreshAuth as an option.
func WithCustomRefreshAuth(fn CustomRefreshAuth) Option {
	return func(o *options) { o.custom = fn }
}

// withLimiter shares one portal's limiter between the clients an App hands out.
func withLimiter(l *limiter) Option {
	return func(o *options) { o.limiter = l }
}

// withRefresher routes every refresh through an App's store.
func withRefresher(r refresher) Option {
	return func(o *options) { o.refresher = r }
}

// withClock replaces time.Now (tests).
func withClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

func (o *options) err() error { return errors.Join(o.errs...) }

// normalizeOrigin turns "https://Oauth.Bitrix.info/" into "https://oauth.bitrix.info".
func normalizeOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("invalid origin %q: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("invalid origin %q: want scheme://host[:port]", s)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Transport:     sharedTransport(),
		Timeout:       90 * time.Second,
		CheckRedirect: refuseRedirect,
	}
}

// newTransport is the transport of the SDK's default clients: the standard one, with more idle
// connections per host (a busy portal gets many calls at once).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return t
}

// sharedTransport is the one transport of every client New builds without WithHTTPClient, so
// that clients made and destroyed per request reuse connections instead of each keeping its
// own pool (two goroutines and a file descriptor per idle connection) until the idle timeout.
var sharedTransport = sync.OnceValue(newTransport)

// httpClients is an *http.Client as given (what HTTPClient returns) and the copy of it requests
// are sent with, which refuses redirects. Both are made once, when the client is given, so a
// call costs nothing for it.
type httpClients struct {
	given *http.Client
	send  *http.Client
}

// newHTTPClients pairs c (nil: the default client) with its copy refusing redirects. The copy is
// shallow: it shares c's Transport, Jar and Timeout.
func newHTTPClients(c *http.Client) *httpClients {
	if c == nil {
		c = defaultHTTPClient()
	}
	send := *c
	send.CheckRedirect = refuseRedirect
	return &httpClients{given: c, send: &send}
}

// refuseRedirect makes an http.Client return a 3xx reply instead of following it. Every request
// the SDK sends carries a token or the client secret: a 307 or 308 would re-send the body, token
// included, to the Location's host, and even a 302 from a portal means it was renamed, which the
// caller must hear about.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
