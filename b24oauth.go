package b24oauth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// B24OAuth is a client for one Bitrix24 portal, built from that portal's OAuth token pair (the
// JS SDK's B24OAuth). It calls the REST API (v2 and v3), refreshes its tokens by itself when they
// expire, and limits its request rate to what the portal accepts.
//
// A B24OAuth is safe for concurrent use by any number of goroutines. However many of them find
// the token expired at once, exactly one refresh request reaches the OAuth server.
//
// Printing a client (fmt, any verb) or logging it (log/slog) shows its portal and redacts its
// tokens and the client secret. It never follows a redirect (see WithHTTPClient), and bounds
// what it reads (see WithMaxResponseBytes and ResponseBudget).
type B24OAuth struct {
	secret         OAuthSecret
	state          atomic.Pointer[OAuthParams] // the current pair; replaced whole, never mutated
	clients        atomic.Pointer[httpClients] // replaced whole by SetHTTPClient
	maxReply       int64                       // bound of a REST reply
	budget         *ResponseBudget
	logger         atomic.Pointer[slog.Logger]
	restriction    atomic.Pointer[RestrictionParams]
	limiter        *limiter
	refresher      refresher // nil for a standalone client
	oauthServers   []string
	insecureHTTP   bool
	expiryMargin   time.Duration
	refreshTimeout time.Duration
	now            func() time.Time
	destroyed      atomic.Bool
	failFast       atomic.Pointer[error] // set when the installation is revoked or gone: every call returns it
	auth           AuthManager
	observer       Observer // nil: nothing is reported

	mu       sync.Mutex // guards the fields below
	inflight *refreshCall
	callback CallbackRefreshAuth
	custom   CustomRefreshAuth
	pending  pendingWork
	hasWork  atomic.Bool // pending has something; read without the lock on every call

	flushMu sync.Mutex // one goroutine at a time retries pending work
}

// New returns a ready client for the portal described by params. It validates params:
// MemberID is required; ClientEndpoint must be an absolute https URL ending in /rest/ (built from
// Domain when empty) whose host is Domain; ServerEndpoint, when set, must be an absolute https
// URL. When Expires is 0 and ExpiresIn is set, the token is taken to expire ExpiresIn seconds
// from now.
//
// The client secret is only ever sent to the OAuth servers WithOAuthServers allows.
func New(params OAuthParams, secret OAuthSecret, opts ...Option) (*B24OAuth, error) {
	o := options{expiryMargin: defaultExpiryMargin, refreshTimeout: defaultRefreshTimeout}
	o.oauthServers = defaultOAuthServers
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	if len(o.oauthServers) == 0 {
		return nil, errors.New("b24oauth: WithOAuthServers: no OAuth server allowed")
	}
	if o.now == nil {
		o.now = time.Now
	}
	p, err := normalizeParams(params, o.insecureHTTP, o.now())
	if err != nil {
		return nil, err
	}
	rp := DefaultRestrictionParams()
	if o.restriction != nil {
		rp = o.restriction.withDefaults()
	}
	b := &B24OAuth{
		secret:         secret,
		limiter:        o.limiter,
		refresher:      o.refresher,
		oauthServers:   o.oauthServers,
		insecureHTTP:   o.insecureHTTP,
		expiryMargin:   o.expiryMargin,
		refreshTimeout: o.refreshTimeout,
		now:            o.now,
		callback:       o.callback,
		custom:         o.custom,
		observer:       o.observer,
	}
	if b.limiter == nil {
		b.limiter = newLimiter(rp)
	} else if o.restriction != nil {
		b.limiter.setParams(rp)
	}
	b.auth.b = b
	b.state.Store(&p)
	b.restriction.Store(&rp)
	if o.clients == nil {
		o.clients = newHTTPClients(o.httpClient)
	}
	b.maxReply, b.budget = o.maxReply, o.budget
	if b.maxReply <= 0 {
		b.maxReply = DefaultMaxResponseBytes
	}
	if b.budget == nil {
		b.budget = processBudget
	}
	b.clients.Store(o.clients)
	if o.logger != nil {
		b.logger.Store(o.logger)
	}
	return b, nil
}

// normalizeParams validates p and fills what can be derived (ClientEndpoint from Domain and the
// other way round, Expires from ExpiresIn).
func normalizeParams(p OAuthParams, insecureHTTP bool, now time.Time) (OAuthParams, error) {
	if strings.TrimSpace(p.MemberID) == "" {
		return p, errors.New("b24oauth: OAuthParams.MemberID is required")
	}
	if p.ClientEndpoint == "" {
		if p.Domain == "" {
			return p, errors.New("b24oauth: OAuthParams needs ClientEndpoint or Domain")
		}
		p.ClientEndpoint = "https://" + p.Domain + "/rest/"
	}
	u, err := parseEndpoint(p.ClientEndpoint, insecureHTTP)
	if err != nil {
		return p, fmt.Errorf("b24oauth: OAuthParams.ClientEndpoint: %w", err)
	}
	if u.Path != "/rest/" && u.Path != "/rest" {
		return p, fmt.Errorf("b24oauth: OAuthParams.ClientEndpoint %q: path must be /rest/", p.ClientEndpoint)
	}
	p.ClientEndpoint = u.Scheme + "://" + u.Host + "/rest/"
	if p.Domain == "" {
		p.Domain = u.Host
	} else if !strings.EqualFold(p.Domain, u.Host) {
		return p, fmt.Errorf("b24oauth: OAuthParams.Domain %q does not match ClientEndpoint host %q", p.Domain, u.Host)
	}
	if p.ServerEndpoint != "" {
		if _, err := parseEndpoint(p.ServerEndpoint, insecureHTTP); err != nil {
			return p, fmt.Errorf("b24oauth: OAuthParams.ServerEndpoint: %w", err)
		}
	}
	if p.Expires == 0 && p.ExpiresIn > 0 && p.AccessToken != "" {
		p.Expires = now.Unix() + p.ExpiresIn
	}
	return p, nil
}

// parseEndpoint accepts an absolute https URL (http with insecureHTTP) without user info,
// query or fragment.
func parseEndpoint(s string, insecureHTTP bool) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid URL %q", s)
	}
	switch {
	case u.Scheme == "http" && !insecureHTTP:
		return nil, fmt.Errorf("%q: plain http is not allowed (see WithInsecureHTTP)", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("%q: want an absolute https URL", s)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("%q: want https://host/path without user info, query or fragment", s)
	}
	u.Host = strings.ToLower(u.Host)
	return u, nil
}

// Auth returns the client's auth manager.
func (b *B24OAuth) Auth() *AuthManager { return &b.auth }

// params returns the current token pair and endpoints.
func (b *B24OAuth) params() *OAuthParams { return b.state.Load() }

// TargetOrigin returns the portal's origin, e.g. "https://acme.bitrix24.com".
func (b *B24OAuth) TargetOrigin() string {
	return strings.TrimSuffix(b.params().ClientEndpoint, "/rest/")
}

// TargetOriginWithPath returns the base URL of each REST API version:
// APIVersionV2 → https://<domain>/rest/, APIVersionV3 → https://<domain>/rest/api/.
func (b *B24OAuth) TargetOriginWithPath() map[APIVersion]string {
	origin := b.TargetOrigin()
	return map[APIVersion]string{
		APIVersionV2: origin + "/rest/",
		APIVersionV3: origin + "/rest/api/",
	}
}

// HTTPClient returns the *http.Client the client uses: the very one given to WithHTTPClient or
// SetHTTPClient. Requests go out through a copy of it that refuses redirects (see
// WithHTTPClient).
func (b *B24OAuth) HTTPClient() *http.Client { return b.clients.Load().given }

// SetHTTPClient replaces the *http.Client for later requests. nil restores the default. As with
// WithHTTPClient, c is not changed and no redirect is ever followed.
func (b *B24OAuth) SetHTTPClient(c *http.Client) { b.clients.Store(newHTTPClients(c)) }

// sender is the *http.Client requests are sent with: the given one, refusing redirects.
func (b *B24OAuth) sender() *http.Client { return b.clients.Load().send }

// SetRestrictionParams changes the rate limits and retry policy. The limiter is the portal's:
// in an App every client of the portal sees the change.
func (b *B24OAuth) SetRestrictionParams(p RestrictionParams) {
	p = p.withDefaults()
	b.restriction.Store(&p)
	b.limiter.setParams(p)
}

// Logger returns the client's logger (slog.Default() unless one was set).
func (b *B24OAuth) Logger() *slog.Logger {
	if l := b.logger.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// SetLogger replaces the logger. nil restores slog.Default().
func (b *B24OAuth) SetLogger(l *slog.Logger) { b.logger.Store(l) }

// Destroy ends the client: its tokens are dropped from memory and every later call returns
// ErrDestroyed. A request already under way finishes. Clients handed out by App.ClientForMember
// are shared: close the App instead.
func (b *B24OAuth) Destroy() {
	b.destroyed.Store(true)
	p := *b.params()
	p.AccessToken, p.RefreshToken, p.ApplicationToken = "", "", ""
	b.state.Store(&p)
	b.mu.Lock()
	b.pending = pendingWork{}
	b.hasWork.Store(false)
	b.callback, b.custom = nil, nil
	b.mu.Unlock()
}

// invalidate makes every later call fail fast with err (an uninstalled or revoked portal).
func (b *B24OAuth) invalidate(err error) { b.failFast.Store(&err) }

func (b *B24OAuth) failFastErr() error {
	if b.destroyed.Load() {
		return ErrDestroyed
	}
	if e := b.failFast.Load(); e != nil {
		return *e
	}
	return nil
}

// expiring reports whether p's access token is missing, expired, or expires within margin.
func (b *B24OAuth) expiring(p *OAuthParams, margin time.Duration) bool {
	if p.AccessToken == "" {
		return true
	}
	if p.Expires <= 0 {
		return false // unknown: find out from the portal's 401
	}
	return !b.now().Add(margin).Before(time.Unix(p.Expires, 0))
}
