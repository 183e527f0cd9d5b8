package b24test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Portal is one fake Bitrix24 portal with the app installed. All methods are
// safe for concurrent use.
type Portal struct {
	s *Server

	// Immutable after AddPortal.
	memberID string
	domain   string
	instHex  string // token chars 8..15

	// Guarded by s.mu.
	appToken   string
	scope      string
	status     string
	language   string
	version    string
	installed  bool
	users      map[int]bool // user id → portal administrator
	nextUser   int
	current    Tokens
	refreshes  int
	total      int
	requests   map[string]int
	subcalls   map[string]int
	idem       map[string]*idemReply // v3 replies by Idempotency-Key
	idemExec   map[string]int        // v3 executions by Idempotency-Key
	loseV3     map[string]int        // v3 replies still to lose, by method
	rejections int
	opRejects  int
	bucket     float64
	bucketAt   time.Time
	opUsage    map[string][]opEntry
	deals      []deal
	tasks      []task
	nextDealID int
	nextTaskID int

	// Event bindings and the offline queue (event_bindings.go, offline.go).
	bindings    []*Binding
	nextBinding int
	offline     []*offlineRec
	nextOffline int
	lastSignal  map[int]time.Time // ONOFFLINEEVENT binding id → last signal sent
}

// Tokens is a token pair issued by the fake.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	Expires      time.Time // access token expiry
}

type accessRec struct {
	p       *Portal
	user    int
	expires time.Time
	revoked bool
}

type refreshRec struct {
	p       *Portal
	user    int
	expires time.Time
	used    bool
	revoked bool
	access  string // the access token issued with it
}

type codeRec struct {
	p       *Portal
	user    int
	expires time.Time
	used    bool
}

type opEntry struct {
	at time.Time
	d  time.Duration
}

// PortalOption configures a new portal.
type PortalOption func(*Portal)

// PortalName sets the portal's name: the domain is "<name>.example.com".
// Default "b24-<6 lowercase alnum>".
func PortalName(name string) PortalOption {
	return func(p *Portal) { p.domain = strings.ToLower(name) + ".example.com" }
}

// PortalScope sets the app's scope on the portal (comma-separated; default
// DefaultScope). Methods of scopes not listed answer 404 ERROR_METHOD_NOT_FOUND.
func PortalScope(scope string) PortalOption {
	return func(p *Portal) { p.scope = scope }
}

// PortalStatus sets the app status letter (L, F, D, T, P, S; default "L").
func PortalStatus(status string) PortalOption {
	return func(p *Portal) { p.status = status }
}

// PortalLanguage sets the portal's language id (default "en").
func PortalLanguage(lang string) PortalOption {
	return func(p *Portal) { p.language = lang }
}

// PortalAppVersion sets the installed app version (default "1").
func PortalAppVersion(v string) PortalOption {
	return func(p *Portal) { p.version = v }
}

// AddPortal creates a portal with the app installed: a random member_id (32
// lowercase hex) and application_token (32 hex), user 1 (an admin), and a
// fresh token pair (see Tokens).
func (s *Server) AddPortal(opts ...PortalOption) *Portal {
	p := &Portal{
		s:         s,
		domain:    "b24-" + randFrom("abcdefghijklmnopqrstuvwxyz0123456789", 6) + ".example.com",
		instHex:   randHex(4),
		appToken:  randHex(16),
		scope:     DefaultScope,
		status:    "L",
		language:  "en",
		version:   "1",
		installed: true,
		users:     map[int]bool{1: true},
		nextUser:  2,
		requests:  map[string]int{},
		subcalls:  map[string]int{},
		idem:      map[string]*idemReply{},
		idemExec:  map[string]int{},
		loseV3:    map[string]int{},
		opUsage:   map[string][]opEntry{},
	}
	for _, o := range opts {
		o(p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		p.memberID = randHex(16)
		if _, dup := s.portals[p.memberID]; !dup {
			break
		}
	}
	if _, dup := s.byDomain[p.domain]; dup {
		panic("b24test: duplicate portal domain " + p.domain)
	}
	s.portals[p.memberID] = p
	s.byDomain[p.domain] = p
	p.issueLocked(1)
	return p
}

// MemberID returns the portal's member_id.
func (p *Portal) MemberID() string { return p.memberID }

// Domain returns the portal's host, e.g. "b24-ab12cd.example.com".
func (p *Portal) Domain() string { return p.domain }

// ClientEndpoint returns "https://<domain>/rest/".
func (p *Portal) ClientEndpoint() string { return "https://" + p.domain + "/rest/" }

// Server returns the server the portal belongs to.
func (p *Portal) Server() *Server { return p.s }

// ApplicationToken returns the app's current application_token on the portal.
func (p *Portal) ApplicationToken() string {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.appToken
}

// SetApplicationToken replaces the application_token (as a reinstall may).
func (p *Portal) SetApplicationToken(tok string) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.appToken = tok
}

// Scope returns the app's scope on the portal (comma-separated).
func (p *Portal) Scope() string {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.scope
}

// Status returns the app status letter.
func (p *Portal) Status() string {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.status
}

// Installed reports whether the app is installed (false after UninstallEvent).
func (p *Portal) Installed() bool {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.installed
}

// SetAdmin sets whether user 1 (the user every event helper and IssueTokens
// act as) is a portal administrator (profile ADMIN, user.admin). Default true.
func (p *Portal) SetAdmin(admin bool) { p.SetUserAdmin(1, admin) }

// AddUser adds a portal user and returns its id (2, 3, ...). An
// administrator may install the app; any user may open its pages.
func (p *Portal) AddUser(admin bool) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	id := p.nextUser
	p.nextUser++
	p.users[id] = admin
	return id
}

// SetUserAdmin sets whether user is a portal administrator. It panics for an
// unknown user.
func (p *Portal) SetUserAdmin(user int, admin bool) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if _, ok := p.users[user]; !ok {
		panic(fmt.Sprintf("b24test: portal has no user %d", user))
	}
	p.users[user] = admin
}

// IsAdmin reports whether user is a portal administrator.
func (p *Portal) IsAdmin(user int) bool {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.users[user]
}

// IssueTokensFor issues a fresh token pair acting as user (earlier pairs stay
// valid), as the portal does when that user opens one of the app's pages. It
// does not change Tokens, which follows the app's own (user 1's) chain. It
// panics for an unknown user.
func (p *Portal) IssueTokensFor(user int) Tokens {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if _, ok := p.users[user]; !ok {
		panic(fmt.Sprintf("b24test: portal has no user %d", user))
	}
	cur := p.current
	t := p.issueLocked(user)
	if user != 1 {
		p.current = cur
	}
	return t
}

// Tokens returns the most recently issued token pair (by AddPortal, an event
// helper, a refresh or a code grant).
func (p *Portal) Tokens() Tokens {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.current
}

// IssueTokens issues a fresh token pair for user 1 (earlier pairs stay
// valid) and returns it.
func (p *Portal) IssueTokens() Tokens {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.issueLocked(1)
}

// ExpireAccessToken makes every access token of the portal issued so far
// expired as of now: REST calls with them get 401 expired_token. Refresh
// tokens are not touched.
func (p *Portal) ExpireAccessToken() {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, a := range s.access {
		if a.p == p && a.expires.After(now) {
			a.expires = now
		}
	}
	if p.current.Expires.After(now) {
		p.current.Expires = now
	}
}

// ExpireRefreshToken makes every refresh token of the portal expired as of
// now (refresh → 400 invalid_grant).
func (p *Portal) ExpireRefreshToken() {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, r := range s.refresh {
		if r.p == p && r.expires.After(now) {
			r.expires = now
		}
	}
}

// RevokeTokens revokes every access and refresh token of the portal (REST →
// 401 invalid_token, refresh → 400 invalid_grant) without uninstalling.
func (p *Portal) RevokeTokens() {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.revokeAllLocked()
}

func (p *Portal) revokeAllLocked() {
	for _, a := range p.s.access {
		if a.p == p {
			a.revoked = true
		}
	}
	for _, r := range p.s.refresh {
		if r.p == p {
			r.revoked = true
		}
	}
	for _, c := range p.s.codes {
		if c.p == p {
			c.used = true
		}
	}
}

// AuthCode issues a one-time authorization code (valid 30 s) for user 1, to
// be exchanged with grant_type=authorization_code.
func (p *Portal) AuthCode() string {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	code := p.tokenLocked(s.now().Add(30*time.Second), 1)
	s.codes[code] = &codeRec{p: p, user: 1, expires: s.now().Add(30 * time.Second)}
	return code
}

// Refreshes returns the number of successful refresh grants for this portal.
func (p *Portal) Refreshes() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.refreshes
}

// Requests returns how many REST HTTP requests named method the portal
// received (v2 and v3, whatever their outcome, rejected ones included; a
// batch request counts once as "batch"). Sub-calls of a batch are counted by
// BatchSubcalls, not here. Names are case-insensitive.
func (p *Portal) Requests(method string) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.requests[strings.ToLower(method)]
}

// BatchSubcalls returns how many batch sub-calls named method the portal ran
// (including failed ones).
func (p *Portal) BatchSubcalls(method string) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.subcalls[strings.ToLower(method)]
}

// Calls returns Requests(method) + BatchSubcalls(method).
func (p *Portal) Calls(method string) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	m := strings.ToLower(method)
	return p.requests[m] + p.subcalls[m]
}

// TotalRequests returns all REST HTTP requests the portal received.
func (p *Portal) TotalRequests() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.total
}

// Rejections returns how many requests the rate limit refused (503).
func (p *Portal) Rejections() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.rejections
}

// OperatingRejections returns how many calls the operating limit refused (429).
func (p *Portal) OperatingRejections() int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.opRejects
}

// issueLocked issues a fresh token pair for user and makes it current.
func (p *Portal) issueLocked(user int) Tokens {
	s := p.s
	now := s.now()
	aExp := now.Add(s.cfg.accessTTL)
	rExp := now.Add(s.cfg.refreshTTL)
	at := p.tokenLocked(aExp, user)
	rt := p.tokenLocked(rExp, user)
	s.access[at] = &accessRec{p: p, user: user, expires: aExp}
	s.refresh[rt] = &refreshRec{p: p, user: user, expires: rExp, access: at}
	p.current = Tokens{AccessToken: at, RefreshToken: rt, Expires: aExp}
	return p.current
}

// tokenLocked makes a 70-hex token shaped like the real ones: expiry as
// little-endian hex, installation and app ids, user id, 38 random hex.
func (p *Portal) tokenLocked(exp time.Time, user int) string {
	for {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(exp.Unix()))
		tok := hex.EncodeToString(b[:]) + p.instHex + p.s.appIDHex + fmt.Sprintf("%08x", user) + randHex(19)
		if _, dup := p.s.access[tok]; dup {
			continue
		}
		if _, dup := p.s.refresh[tok]; dup {
			continue
		}
		return tok
	}
}

func (p *Portal) appVersionInt() int {
	n, err := strconv.Atoi(p.version)
	if err != nil {
		return 1
	}
	return n
}
