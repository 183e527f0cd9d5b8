package b24test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuthHost is the host name of the fake OAuth server.
const OAuthHost = "oauth.example.com"

// Default values of the server's knobs.
const (
	DefaultAccessTokenTTL  = time.Hour
	DefaultRefreshTokenTTL = 180 * 24 * time.Hour
	DefaultOperatingWindow = 10 * time.Minute
	DefaultOperatingLimit  = 480 * time.Second
	// DefaultScope is the scope of a new portal's app (comma-separated).
	DefaultScope = "crm,task,user_brief,placement"
)

// Server is a fake Bitrix24: one OAuth server (Host oauth.example.com) and any
// number of portals (Host <name>.example.com), all served by one
// httptest TLS server that routes by the Host header. Create it with
// NewServer and stop it with Close. All methods are safe for concurrent use.
type Server struct {
	ts     *httptest.Server
	client *http.Client
	cfg    config

	mu              sync.Mutex
	portals         map[string]*Portal // by member_id
	byDomain        map[string]*Portal
	access          map[string]*accessRec
	refresh         map[string]*refreshRec
	codes           map[string]*codeRec
	tokenRequests   int
	appInfoRequests int
	refreshes       int
	methods         map[string]MethodFunc
	methodsV3       map[string]MethodFunc
	durations       map[string]time.Duration
	appIDHex        string
	redirectURI     string
	authorizations  int
	out             outbox // events on their way to the app's handlers (delivery.go)
}

type config struct {
	clientID, clientSecret string
	clock                  func() time.Time
	accessTTL, refreshTTL  time.Duration
	refreshReuse           bool
	oldAccessValid         bool
	rateBurst, rateDrain   float64
	opWindow, opLimit      time.Duration
	oauthStatus            map[string]int
	tokenScope             string
	latency                time.Duration
	v3AuthShape            string
	redirectURI            string
	deliveryTimeout        time.Duration
	deliveryClient         *http.Client
	missingRef             string
	v3BatchFail            string
}

// Option configures a Server.
type Option func(*config)

// WithApp sets the application's credentials (client_id, client_secret).
// Default: a random "local.<14hex>.<8digits>" id and a 50-char alnum secret.
func WithApp(clientID, clientSecret string) Option {
	return func(c *config) { c.clientID, c.clientSecret = clientID, clientSecret }
}

// WithClock sets the clock used by all expiry, rate-limit and operating-limit
// logic and by the time blocks of responses. Default: time.Now. See Clock.
// The function is called with the server's lock held: it must not call back
// into the Server or its portals.
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.clock = now }
}

// WithAccessTokenTTL sets the access token lifetime (default 1 hour).
func WithAccessTokenTTL(d time.Duration) Option {
	return func(c *config) { c.accessTTL = d }
}

// WithRefreshTokenTTL sets the refresh token lifetime (default 180 days as the
// current docs say; real tokens encode 30 days, so test that too).
func WithRefreshTokenTTL(d time.Duration) Option {
	return func(c *config) { c.refreshTTL = d }
}

// WithRefreshTokenReuse, when true, lets a refresh token be used more than
// once. Default false: a used refresh token gets 400 invalid_grant.
func WithRefreshTokenReuse(allow bool) Option {
	return func(c *config) { c.refreshReuse = allow }
}

// WithOldAccessTokenValid, when true, keeps the access tokens issued earlier
// in a token chain working after a refresh until they expire (as the portal's
// token cache may do). Default false: a refresh revokes the access token
// issued together with the used refresh token (and so every earlier one of
// that chain).
func WithOldAccessTokenValid(valid bool) Option {
	return func(c *config) { c.oldAccessValid = valid }
}

// Behaviours of a batch reference ($result[cmd][49][ID]) into a value the
// earlier command's result does not have (WithMissingReference). What the real
// portal does is not documented.
const (
	// MissingRefLiteral leaves the reference text in the parameter as it is
	// (the default).
	MissingRefLiteral = "literal"
	// MissingRefEmpty replaces the reference with an empty value.
	MissingRefEmpty = "empty"
	// MissingRefError fails the command that holds it (result_error
	// BATCH_REFERENCE_NOT_FOUND); with halt the batch stops there.
	MissingRefError = "error"
	// RefsRejected fails every command that holds a reference, resolvable or
	// not, as a portal without reference support would.
	RefsRejected = "rejected"
)

// WithMissingReference sets what a batch does with a reference to a value
// that does not exist: MissingRefLiteral (default), MissingRefEmpty or
// MissingRefError; RefsRejected rejects every reference.
func WithMissingReference(mode string) Option {
	return func(c *config) { c.missingRef = mode }
}

// WithV3BatchFailure sets what a v3 batch does when a command fails:
// V3BatchFailWhole (default) or V3BatchFailSlot.
func WithV3BatchFailure(mode string) Option {
	return func(c *config) { c.v3BatchFail = mode }
}

// WithRateLimit turns on the per-portal leaky bucket: each REST request (v2
// or v3; a batch is one request) adds 1, the level drains by drainPerSecond,
// and a request that would take the level above burst gets HTTP 503
// QUERY_LIMIT_EXCEEDED "Too many requests". Off by default. Real values:
// 50/2 (standard plans), 250/5 (Enterprise).
func WithRateLimit(burst, drainPerSecond float64) Option {
	return func(c *config) { c.rateBurst, c.rateDrain = burst, drainPerSecond }
}

// WithOperatingLimit configures the per portal+method resource limit: every
// call (batch sub-calls included, batch itself not) adds the method's
// simulated duration (Server.SetMethodDuration, default 0); when the time
// accumulated within window already exceeds limit before a call, the call
// gets HTTP 429 OPERATION_TIME_LIMIT. Default window 10 minutes, limit 480 s.
// A limit <= 0 disables the rejection (the time block is still reported).
func WithOperatingLimit(window, limit time.Duration) Option {
	return func(c *config) { c.opWindow, c.opLimit = window, limit }
}

// WithOAuthErrorStatus sets the HTTP status the OAuth server uses for an
// error code (statuses are undocumented). Defaults: invalid_grant 400,
// invalid_request 400, invalid_client 401.
func WithOAuthErrorStatus(code string, status int) Option {
	return func(c *config) { c.oauthStatus[code] = status }
}

// WithTokenScope sets the "scope" value of token endpoint replies, e.g.
// "app" as real local apps get. Default "": the portal's comma-separated
// scope list (as the docs say).
func WithTokenScope(scope string) Option {
	return func(c *config) { c.tokenScope = scope }
}

// WithLatency delays every request (OAuth and REST) by d.
func WithLatency(d time.Duration) Option {
	return func(c *config) { c.latency = d }
}

// WithV3AuthErrorShape chooses the body of errors raised before a REST v3
// method runs (authentication, rate limit, operating limit): "classic"
// (default) gives {"error":"expired_token","error_description":"..."};
// "v3" gives {"error":{"code":"expired_token","message":"..."}}. Real
// behaviour is undocumented.
func WithV3AuthErrorShape(shape string) Option {
	return func(c *config) { c.v3AuthShape = shape }
}

// NewServer starts a fake Bitrix24. Close it when done (t.Cleanup(s.Close)).
func NewServer(opts ...Option) *Server {
	cfg := config{
		clientID:     "local." + randHex(7) + "." + randDigits(8),
		clientSecret: randAlnum(50),
		clock:        time.Now,
		accessTTL:    DefaultAccessTokenTTL,
		refreshTTL:   DefaultRefreshTokenTTL,
		opWindow:     DefaultOperatingWindow,
		opLimit:      DefaultOperatingLimit,
		oauthStatus: map[string]int{
			"invalid_grant":   http.StatusBadRequest,
			"invalid_request": http.StatusBadRequest,
			"invalid_client":  http.StatusUnauthorized,
		},
		v3AuthShape:     "classic",
		deliveryTimeout: DefaultDeliveryTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{
		cfg:       cfg,
		portals:   map[string]*Portal{},
		byDomain:  map[string]*Portal{},
		access:    map[string]*accessRec{},
		refresh:   map[string]*refreshRec{},
		codes:     map[string]*codeRec{},
		methods:   map[string]MethodFunc{},
		methodsV3: map[string]MethodFunc{},
		durations: map[string]time.Duration{},
		appIDHex:  randHex(4),

		redirectURI: cfg.redirectURI,
	}
	cert, err := serverCertificate()
	if err != nil {
		panic("b24test: making the TLS certificate: " + err.Error())
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.ts.StartTLS()
	s.client = routedClient(s.ts)
	s.out.init(cfg.deliveryClient, cfg.deliveryTimeout)
	return s
}

// routedClient returns a client of ts (trusting its certificate) that sends every request for
// example.com or *.example.com to ts, whatever port the URL names.
func routedClient(ts *httptest.Server) *http.Client {
	tr := ts.Client().Transport.(*http.Transport).Clone()
	addr := ts.Listener.Addr().String()
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr.DialContext = func(ctx context.Context, network, hostport string) (net.Conn, error) {
		if host, _, err := net.SplitHostPort(hostport); err == nil && (host == "example.com" || strings.HasSuffix(host, ".example.com")) {
			hostport = addr
		}
		return d.DialContext(ctx, network, hostport)
	}
	return &http.Client{Transport: tr}
}

// Close shuts the server down.
func (s *Server) Close() {
	s.out.close()
	s.client.CloseIdleConnections()
	s.ts.Close()
}

// Client returns an *http.Client that trusts the server's certificate and
// sends every request for example.com or *.example.com (port 443) to the
// fake, so the portals' and OAuth server's real-looking URLs just work.
func (s *Server) Client() *http.Client { return s.client }

// URL returns the server's raw address, https://127.0.0.1:port.
func (s *Server) URL() string { return s.ts.URL }

// Handler returns the server's routing handler (routes by Host), for
// in-process use without a network round trip.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// OAuthOrigin returns "https://oauth.example.com".
func (s *Server) OAuthOrigin() string { return "https://" + OAuthHost }

// OAuthServerEndpoint returns "https://oauth.example.com/rest/" (what
// server_endpoint carries).
func (s *Server) OAuthServerEndpoint() string { return "https://" + OAuthHost + "/rest/" }

// ClientID returns the application's client_id.
func (s *Server) ClientID() string { return s.cfg.clientID }

// ClientSecret returns the application's client_secret.
func (s *Server) ClientSecret() string { return s.cfg.clientSecret }

// Refreshes returns the number of successful refresh_token grants, all portals.
func (s *Server) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// TokenRequests returns the number of requests to /oauth/token/, failed ones included.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// AppInfoRequests returns the number of requests to the OAuth server's app.info
// ({server_endpoint}app.info), failed ones included.
func (s *Server) AppInfoRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appInfoRequests
}

// Portal returns the portal with that member_id, or nil.
func (s *Server) Portal(memberID string) *Portal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portals[memberID]
}

// PortalByDomain returns the portal with that domain (host, case-insensitive), or nil.
func (s *Server) PortalByDomain(domain string) *Portal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byDomain[strings.ToLower(domain)]
}

// Portals returns every portal, in no particular order.
func (s *Server) Portals() []*Portal {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Portal, 0, len(s.portals))
	for _, p := range s.portals {
		out = append(out, p)
	}
	return out
}

// SetMethodDuration sets the simulated execution time of a REST method (all
// portals), counted by the operating limit and reported in time.duration.
// Default 0.
func (s *Server) SetMethodDuration(method string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.durations[strings.ToLower(method)] = d
}

// MethodFunc implements a REST method. params holds the request parameters
// with auth removed: strings, []any and map[string]any for query/form data
// (PHP bracket notation decoded), standard encoding/json types for JSON
// bodies. Return an *Error to reply with that error; any other error gives
// 500 INTERNAL_SERVER_ERROR. The result is JSON-encoded under "result".
type MethodFunc func(p *Portal, params map[string]any) (result any, err error)

// HandleMethod registers (or overrides) a REST v2 method on every portal,
// also callable inside batch. Method names are case-insensitive.
func (s *Server) HandleMethod(method string, fn MethodFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.methods[strings.ToLower(method)] = fn
}

// HandleMethodV3 registers (or overrides) a REST v3 method (/rest/api/<method>)
// on every portal. Its result is sent as {"result": result, "time": ...}; an
// *Error is sent as {"error":{"code":Code,"message":Description}}.
func (s *Server) HandleMethodV3(method string, fn MethodFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.methodsV3[strings.ToLower(method)] = fn
}

// Error is a REST error reply: {"error": Code, "error_description":
// Description} with HTTP Status (400 when zero).
type Error struct {
	Code        string
	Description string
	Status      int
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Description, e.status())
}

func (e *Error) status() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

func (s *Server) now() time.Time { return s.cfg.clock() }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.latency > 0 {
		select {
		case <-time.After(s.cfg.latency):
		case <-r.Context().Done():
			return
		}
	}
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == OAuthHost {
		s.serveOAuth(w, r)
		return
	}
	s.mu.Lock()
	p := s.byDomain[host]
	s.mu.Unlock()
	if p == nil {
		http.Error(w, "b24test: unknown host "+host, http.StatusNotFound)
		return
	}
	p.serveHTTP(w, r)
}

// ClientFor returns an *http.Client for code running in another OS process
// of a test (e.g. a server started by the test), given the fake's URL()
// (passed by environment or flag). It dials serverURL's address for every
// host and SKIPS TLS CERTIFICATE VERIFICATION: use it in tests only. It is
// cheap; call CloseIdleConnections when done.
func ClientFor(serverURL string) *http.Client {
	addr := serverURL
	if u, err := url.Parse(serverURL); err == nil && u.Host != "" {
		addr = u.Host
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test helper, documented
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// Clock is a manual clock for WithClock: it only moves when told to.
// Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time. Pass c.Now to WithClock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Set sets the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func randHex(nBytes int) string { return hex.EncodeToString(randBytes(nBytes)) }

func randFrom(alphabet string, n int) string {
	b := randBytes(n)
	out := make([]byte, n)
	for i := range b {
		out[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(out)
}

func randDigits(n int) string { return randFrom("0123456789", n) }

func randAlnum(n int) string {
	return randFrom("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
}
