package b24oauth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// AppConfig configures an App: one Bitrix24 application serving many portals.
type AppConfig struct {
	// ClientID and ClientSecret are the application's credentials. Required.
	ClientID, ClientSecret string
	// Store persists installations. Required. NewFileStore gives a durable single-host store;
	// pgstore and redisstore serve fleets of replicas.
	Store TokenStore
	// HTTPClient is used for REST calls and token refreshes; nil: a client with sane timeouts.
	// Whatever its CheckRedirect says, no redirect is followed (see WithHTTPClient).
	HTTPClient *http.Client
	// Logger receives the App's and its clients' logs; nil: slog.Default().
	Logger *slog.Logger
	// OAuthServers are the origins the client secret may be sent to; nil: the two Bitrix24
	// OAuth servers (https://oauth.bitrix.info, https://oauth.bitrix24.tech). An event whose
	// server_endpoint is not one of them is rejected.
	OAuthServers []string
	// Restriction sets each portal's rate limits and retries; nil: DefaultRestrictionParams().
	Restriction *RestrictionParams
	// RateLimiter, when set, paces every portal's requests together with the other replicas
	// sharing it (redisstore.NewLimiter); while it fails, each portal is paced in this process
	// (logged once per outage, counted by App.RateLimiterFallbacks), and after a failure it is
	// asked again only a second later. nil: in this process only.
	RateLimiter RateLimiter
	// Observer receives what the App and its clients do (calls, retries, limiter waits,
	// refreshes, store operations, events): otelb24.NewObserver records it as OpenTelemetry
	// metrics and spans. nil: nothing is recorded.
	Observer Observer
	// CacheSize bounds the clients ClientForMember keeps (least recently used go first);
	// 0: 1024.
	CacheSize int

	// OnInstall runs after an install or update event, or a Connect, is stored. Its context
	// keeps the request's values but outlives the response (a goroutine started from it is not
	// cancelled); InstallKindFrom(ctx) tells a new install from an update or a reinstall.
	OnInstall func(ctx context.Context, inst Installation)
	// OnUninstall runs after an uninstall event was applied; clean reports the administrator's
	// "clear app data" choice (data[CLEAN]).
	OnUninstall func(ctx context.Context, inst Installation, clean bool)
	// OnRevoked runs after a portal's refresh token was refused and its installation was
	// marked StateRevoked: the portal's administrator must reinstall (or reopen) the app.
	OnRevoked func(ctx context.Context, inst Installation, err error)

	// AllowInternalPortals lets an install name a portal at a loopback, link-local or
	// unspecified address, or localhost (an on-premise portal on the same host, in tests); by
	// default such an install is refused before any request is sent there, even when the OAuth
	// server names it. Private ranges (10/8, 192.168/16...) are allowed either way: intranet
	// portals live there.
	AllowInternalPortals bool
	// InsecureHTTP accepts plain http:// portal and OAuth endpoints. For local development and
	// tests only.
	InsecureHTTP bool
	// MaxEventBytes bounds an event's body; 0: 64 KiB. A larger body gets 413.
	MaxEventBytes int64
	// InstallPageHTML replaces the page the install handler answers an app's install page POST
	// with. It must call BX24.installFinish(); nil: a minimal page that does.
	InstallPageHTML []byte
	// ClientOptions are applied to every client ClientForMember builds, after the App's own.
	ClientOptions []Option
	// EventTimeout bounds the work of one lifecycle event (verification at the OAuth server and
	// the portal, the store write): a store lock held by a stalled replica cannot hold the
	// handler, and Bitrix24's queue, for longer. 0: 20 seconds. A write of a pair that cost a
	// single-use refresh token is given its own EventTimeout, even when the sender hung up.
	EventTimeout time.Duration
	// StaleRefreshAfter is how old a "refresh in flight" mark must be for the next refresh to
	// treat it as left by a crashed process; 0: one minute.
	StaleRefreshAfter time.Duration

	// Events are bound on every accepted install and update, with the installation's (an
	// administrator's) token: only those the portal lacks (event.get first), so reinstalls,
	// updates and replicas never bind twice. See EventBinding and App.BindEvents.
	Events []EventBinding
	// OnBindError runs when binding Events on a portal failed (a *BindError, or why the portal
	// could not be asked); the install itself succeeded. nil: the failure is only logged.
	OnBindError func(ctx context.Context, inst Installation, err error)
}

// App serves many portals from one application: it receives lifecycle events through
// InstallHandler and UninstallHandler, keeps each portal's tokens in the Store, and hands
// business code a ready client with ClientForMember. It is safe for concurrent use.
//
// Every client an App hands out refreshes through the Store: the refresh runs inside
// TokenStore.Update for its portal, so every process sharing the store refreshes a portal once
// per expiry and every refreshed pair is written back.
type App struct {
	cfg          AppConfig
	secret       OAuthSecret
	log          *slog.Logger
	httpClient   *http.Client
	oauthServers []string
	restriction  RestrictionParams
	clientOpts   []Option
	now          func() time.Time

	mu       sync.Mutex
	entries  map[string]*list.Element // member_id → *portalEntry in lru
	lru      *list.List               // front: most recently used
	flights  map[string]*buildFlight  // member_id → its build in progress
	closed   bool
	building singleflight.Group

	verifyGate *verifyGate
	eventNames eventNames   // the ordinary event names reported to the Observer
	clients    *httpClients // the HTTP client given (or the default) and its redirect-refusing copy

	// unsaved holds, per portal, a refreshed pair the store has not taken yet (its write
	// failed): it outlives the clients, the cache and Close's wait, until a write succeeds.
	unsaved map[string]*unsavedPair

	// parked keeps the limiters of portals whose client left the cache while their limiter
	// was not at rest, so that the portal keeps one limiter whatever the cache does; a limiter
	// that came to rest is dropped (a new one is the same).
	parked    map[string]*limiter
	evictions int

	ownsTransport bool // httpClient's transport is the App's: Close closes its connections

	rechecks map[string]bool // portals with a scheduleRecheck pending

	inbound inboundState   // ordinary events, offline pulls and frames (event_handler.go)
	shared  *sharedLimiter // cfg.RateLimiter, nil without one
}

// unsavedPair is a refreshed pair whose write to the store failed.
type unsavedPair struct {
	from string      // the refresh token of the stored pair it replaced (the store still holds that one)
	next OAuthParams // the live pair
}

// buildFlight is one attempt of a build. An event that changes or removes the installation
// while the attempt runs marks it stale: what it loaded is outdated, so it loads again.
type buildFlight struct{ stale bool }

// portalEntry is one cached portal: its client and the limiter every client of it shares.
type portalEntry struct {
	memberID string
	client   *B24OAuth // nil: (re)build on the next ClientForMember
	limiter  *limiter
	appToken string // the application token of the installation client was built from
}

const defaultCacheSize = 1024

// errAppClosed is returned by ClientForMember after Close.
var errAppClosed = errors.New("b24oauth: App is closed")

// NewApp validates cfg and returns an App.
func NewApp(cfg AppConfig) (*App, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("b24oauth: AppConfig needs ClientID and ClientSecret")
	}
	if cfg.Store == nil {
		return nil, errors.New("b24oauth: AppConfig needs a Store")
	}
	if cfg.CacheSize < 0 {
		return nil, errors.New("b24oauth: AppConfig.CacheSize is negative")
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = defaultCacheSize
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = 64 << 10
	}
	if cfg.EventTimeout <= 0 {
		cfg.EventTimeout = 20 * time.Second
	}
	if cfg.StaleRefreshAfter <= 0 {
		cfg.StaleRefreshAfter = time.Minute
	}
	if err := checkBindings(cfg.Events); err != nil {
		return nil, err
	}
	a := &App{
		cfg:         cfg,
		secret:      OAuthSecret{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret},
		log:         cfg.Logger,
		httpClient:  cfg.HTTPClient,
		restriction: DefaultRestrictionParams(),
		now:         time.Now,
		entries:     make(map[string]*list.Element),
		lru:         list.New(),
		flights:     make(map[string]*buildFlight),
		verifyGate:  newVerifyGate(),
		unsaved:     make(map[string]*unsavedPair),
		parked:      make(map[string]*limiter),
		rechecks:    make(map[string]bool),
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.httpClient == nil {
		// The App's own transport, shared by all its clients and closed by Close.
		a.httpClient = defaultHTTPClient()
		a.httpClient.Transport = newTransport()
		a.ownsTransport = true
	}
	a.clients = newHTTPClients(a.httpClient)
	if cfg.RateLimiter != nil {
		a.shared = &sharedLimiter{rl: cfg.RateLimiter, log: a.log, now: func() time.Time { return a.now() }}
	}
	if cfg.Restriction != nil {
		a.restriction = cfg.Restriction.withDefaults()
	}
	a.oauthServers = defaultOAuthServers
	if cfg.OAuthServers != nil {
		a.oauthServers = nil
		for _, s := range cfg.OAuthServers {
			origin, err := normalizeOrigin(s)
			if err != nil {
				return nil, fmt.Errorf("b24oauth: AppConfig.OAuthServers: %w", err)
			}
			a.oauthServers = append(a.oauthServers, origin)
		}
		if len(a.oauthServers) == 0 {
			return nil, errors.New("b24oauth: AppConfig.OAuthServers is empty")
		}
	}
	a.clientOpts = []Option{
		withHTTPClients(a.clients), // one redirect-refusing copy for every client
		WithLogger(a.log),
		WithOAuthServers(a.oauthServers...),
		WithRestrictionParams(a.restriction),
	}
	if cfg.InsecureHTTP {
		a.clientOpts = append(a.clientOpts, WithInsecureHTTP())
	}
	if cfg.Observer != nil {
		a.clientOpts = append(a.clientOpts, WithObserver(cfg.Observer))
	}
	return a, nil
}

// ClientForMember returns a ready client for the portal with memberID, building it from the
// Store on first use and keeping it in a bounded LRU cache. A cached portal costs a map lookup.
//
// It returns ErrNotInstalled when the app is not installed on that portal, or when memberID is
// malformed (see ValidMemberID: such an id is refused before the Store is read, so a request
// path can be handed over as it is), and a *RefreshTokenError when the installation was
// revoked (StateRevoked) until the app is reinstalled; neither asks the OAuth server. A portal revoked by another process sharing the
// store keeps its cached client until that client's next call, which fails the same way after
// reading the store. The client is shared by every caller of the same portal: do not Destroy it.
func (a *App) ClientForMember(ctx context.Context, memberID string) (*B24OAuth, error) {
	if !ValidMemberID(memberID) {
		return nil, errMalformedMember
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, errAppClosed
	}
	var cached *B24OAuth
	if el, ok := a.entries[memberID]; ok {
		a.lru.MoveToFront(el)
		cached = el.Value.(*portalEntry).client
	}
	a.mu.Unlock()
	if cached != nil {
		err := cached.failFastErr()
		if err == nil {
			return cached, nil
		}
		if !isRevoked(err) {
			return nil, err
		}
		// Revoked: the store says whether a reinstall, maybe received by another process, has
		// made the portal active again. No request reaches the OAuth server.
		if err := a.recheckRevoked(ctx, memberID, cached, err); err != nil {
			return nil, err
		}
	}
	ch := a.building.DoChan(memberID, func() (any, error) {
		return a.build(context.WithoutCancel(ctx), memberID)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*B24OAuth), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recheckRevoked is ClientForMember for a cached client that failed with the revoked error
// revErr: it returns revErr while the store still says StateRevoked; once the portal was
// installed again it lets c call again and drops it from the cache, so that the caller builds a
// client from the stored pair.
func (a *App) recheckRevoked(ctx context.Context, memberID string, c *B24OAuth, revErr error) error {
	inst, err := a.storeLoad(ctx, memberID)
	switch {
	case errors.Is(err, ErrNotInstalled):
		a.evict(memberID)
		return err
	case err != nil:
		return err
	case inst.State == StateRevoked:
		return revErr
	}
	reviveClient(c)
	a.mu.Lock()
	if el, ok := a.entries[memberID]; ok {
		if e := el.Value.(*portalEntry); e.client == c {
			e.client = nil
		}
	}
	a.mu.Unlock()
	return nil
}

// isRevoked reports whether err is the error of a revoked installation.
func isRevoked(err error) bool {
	var rte *RefreshTokenError
	return errors.As(err, &rte) && rte.Revoked()
}

// reviveClient lets c, failing fast because its installation was revoked, call again after a
// reinstall: its next call finds its pair stale and adopts the stored one. Any other reason to
// fail fast (destroyed, uninstalled) stays.
func reviveClient(c *B24OAuth) {
	if p := c.failFast.Load(); p != nil && isRevoked(*p) {
		c.failFast.CompareAndSwap(p, nil)
	}
}

// build loads memberID's installation and caches a client for it. It runs once at a time per
// member (the singleflight group); it loads again when an event handled meanwhile made what it
// loaded outdated, so that it never caches a client of a replaced or deleted installation.
func (a *App) build(ctx context.Context, memberID string) (*B24OAuth, error) {
	for {
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return nil, errAppClosed
		}
		// A caller that missed the cache just before an earlier build filled it.
		if el, ok := a.entries[memberID]; ok {
			if c := el.Value.(*portalEntry).client; c != nil && c.failFastErr() == nil {
				a.mu.Unlock()
				return c, nil
			}
		}
		f := &buildFlight{}
		a.flights[memberID] = f
		a.mu.Unlock()
		c, err := a.buildOnce(ctx, memberID, f)
		if err == errStaleBuild {
			continue
		}
		return c, err
	}
}

// errStaleBuild makes build load again.
var errStaleBuild = errors.New("b24oauth: the installation changed during the build")

// buildOnce is one attempt of build, registered as f.
func (a *App) buildOnce(ctx context.Context, memberID string, f *buildFlight) (*B24OAuth, error) {
	// done ends the attempt under a.mu: a stale attempt's result, error or client, is dropped.
	done := func() bool {
		if a.flights[memberID] == f {
			delete(a.flights, memberID)
		}
		return f.stale
	}
	fail := func(err error) (*B24OAuth, error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if done() {
			return nil, errStaleBuild
		}
		return nil, err
	}
	inst, err := a.storeLoad(ctx, memberID)
	if err != nil {
		return fail(err)
	}
	if inst.State == StateRevoked {
		return fail(revokedError(memberID))
	}
	params := inst.OAuthParams
	var pendingPrev *OAuthParams
	if u := a.unsavedFor(memberID); u != nil && inst.RefreshToken == u.from {
		// A client that left the cache (or was dropped by an event) rotated this portal's pair
		// and could not store it: the stored pair is spent, the unsaved one is live. Write it
		// now; if the store still refuses, the new client goes on with it and keeps trying.
		if err := a.writeUnsaved(ctx, memberID, u); err == nil {
			params = u.next
		} else {
			prev := inst.OAuthParams
			params, pendingPrev = u.next, &prev
		}
	}
	lim := a.portalLimiter(memberID)
	opts := append(append([]Option{}, a.clientOpts...), withLimiter(lim), withRefresher(&storeRefresher{app: a, memberID: memberID}))
	opts = append(opts, a.cfg.ClientOptions...)
	c, err := New(params, a.secret, opts...)
	if err != nil {
		return fail(fmt.Errorf("b24oauth: stored installation of %s: %w", memberID, err))
	}
	if pendingPrev != nil {
		next := params
		c.mu.Lock()
		c.pending.prev, c.pending.next = pendingPrev, &next
		c.pendingChangedLocked()
		c.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if done() {
		return nil, errStaleBuild
	}
	if a.closed {
		return nil, errAppClosed
	}
	if el, ok := a.entries[memberID]; ok {
		e := el.Value.(*portalEntry)
		e.client, e.appToken = c, inst.ApplicationToken
		a.lru.MoveToFront(el)
		return c, nil
	}
	a.entries[memberID] = a.lru.PushFront(&portalEntry{memberID: memberID, client: c, limiter: lim, appToken: inst.ApplicationToken})
	delete(a.parked, memberID)
	for a.lru.Len() > a.cfg.CacheSize {
		oldest := a.lru.Back()
		a.lru.Remove(oldest)
		e := oldest.Value.(*portalEntry)
		gone := e.memberID
		delete(a.entries, gone)
		a.parkLocked(gone, e.limiter)
		if u := a.unsaved[gone]; u != nil {
			// The evicted client holds a pair the store has not taken: write it now rather
			// than at that portal's next call, which may be hours away.
			go a.flushEvicted(gone, u)
		}
	}
	return c, nil
}

// unsavedFor returns memberID's unsaved pair, or nil.
func (a *App) unsavedFor(memberID string) *unsavedPair {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unsaved[memberID]
}

// keepUnsaved records next, which replaced the stored pair whose refresh token is from, as
// memberID's unsaved pair. A pair already unsaved keeps its from: the store still holds the
// pair before it.
func (a *App) keepUnsaved(memberID, from string, next OAuthParams) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if u := a.unsaved[memberID]; u != nil {
		from = u.from
	}
	a.unsaved[memberID] = &unsavedPair{from: from, next: next}
}

// dropUnsaved forgets memberID's unsaved pair if it is still u.
func (a *App) dropUnsaved(memberID string, u *unsavedPair) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.unsaved[memberID] == u {
		delete(a.unsaved, memberID)
	}
}

// writeUnsaved writes u to the store unless the store moved on (a newer pair, a reinstall, an
// uninstall), and forgets it once the store holds it or no longer needs it.
func (a *App) writeUnsaved(ctx context.Context, memberID string, u *unsavedPair) error {
	err := a.storeUpdate(ctx, memberID, func(inst Installation) (Installation, error) {
		if inst.RefreshToken != u.from {
			return inst, errNoWrite
		}
		inst.OAuthParams = u.next
		inst.State = StateActive
		inst.RefreshingSince = time.Time{}
		inst.UpdatedAt = a.now().UTC()
		return inst, nil
	})
	if err != nil && !errors.Is(err, errNoWrite) && !errors.Is(err, ErrNotInstalled) {
		return err
	}
	a.dropUnsaved(memberID, u)
	return nil
}

// flushEvicted writes the unsaved pair of a portal whose client left the cache, bounded in
// time; on failure the pair stays kept for the portal's next client or Close.
func (a *App) flushEvicted(memberID string, u *unsavedPair) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.EventTimeout)
	defer cancel()
	if err := a.writeUnsaved(ctx, memberID, u); err != nil {
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing the refreshed pair of an evicted client failed; kept for a retry",
			slog.String("member_id", memberID), slog.Any("error", err))
	}
}

// portalLimiter returns the rate limiter of memberID's portal: the cached or parked one, else a
// new one.
func (a *App) portalLimiter(memberID string) *limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.entries[memberID]; ok {
		return el.Value.(*portalEntry).limiter
	}
	if l := a.parked[memberID]; l != nil {
		return l
	}
	l := newLimiter(a.restriction)
	l.shared, l.memberID = a.shared, memberID
	return l
}

// parkLocked keeps the limiter of a portal leaving the cache unless it is at rest, and now and
// then drops the parked limiters that have come to rest. a.mu is held.
func (a *App) parkLocked(memberID string, l *limiter) {
	if l != nil && !l.atRest() {
		a.parked[memberID] = l
	}
	a.evictions++
	if a.evictions%256 == 0 {
		for m, pl := range a.parked {
			if pl.atRest() {
				delete(a.parked, m)
			}
		}
	}
}

// forget drops memberID's cached client after an install or update, so the next
// ClientForMember builds one from the stored tokens; the portal keeps its limiter. A client
// handed out earlier still works: its next refresh adopts the stored pair.
//
// A client that failed fast because the installation was revoked may call again: the event
// made the installation active.
func (a *App) forget(memberID string) {
	a.mu.Lock()
	var c *B24OAuth
	if el, ok := a.entries[memberID]; ok {
		e := el.Value.(*portalEntry)
		c, e.client = e.client, nil
	}
	if f := a.flights[memberID]; f != nil {
		f.stale = true
	}
	a.mu.Unlock()
	if c != nil {
		reviveClient(c)
	}
}

// evict removes memberID after an uninstall: a client handed out earlier fails with
// ErrNotInstalled from then on.
func (a *App) evict(memberID string) {
	a.mu.Lock()
	var c *B24OAuth
	if el, ok := a.entries[memberID]; ok {
		c = el.Value.(*portalEntry).client
		a.lru.Remove(el)
		delete(a.entries, memberID)
	}
	if f := a.flights[memberID]; f != nil {
		f.stale = true
	}
	a.mu.Unlock()
	if c != nil {
		c.invalidate(ErrNotInstalled)
	}
}

// Close releases the App: refreshed pairs the store has not taken yet (their write failed) are
// written, for at most AppConfig.EventTimeout, then the cached clients are destroyed, and
// ClientForMember fails from then on. The handlers keep storing events. Close returns an error
// naming the portals whose pair could still not be stored (the store was down for the whole
// wait): those portals will need a reinstall. Close is idempotent.
func (a *App) Close() error {
	a.mu.Lock()
	a.closed = true
	var clients []*B24OAuth
	for _, el := range a.entries {
		if c := el.Value.(*portalEntry).client; c != nil {
			clients = append(clients, c)
		}
	}
	a.entries = make(map[string]*list.Element)
	a.lru.Init()
	unsaved := make(map[string]*unsavedPair, len(a.unsaved))
	for m, u := range a.unsaved {
		unsaved[m] = u
	}
	a.mu.Unlock()

	var errs []error
	if len(unsaved) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.EventTimeout)
		defer cancel()
		for m, u := range unsaved {
			var err error
			for attempt := 0; ; attempt++ {
				if err = a.writeUnsaved(ctx, m, u); err == nil || ctx.Err() != nil {
					break
				}
				if sleepContext(ctx, time.Duration(attempt+1)*100*time.Millisecond) != nil {
					break
				}
			}
			if err != nil {
				a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: Close could not store a refreshed pair; the portal will need a reinstall",
					slog.String("member_id", m), slog.Any("error", err))
				errs = append(errs, fmt.Errorf("b24oauth: the refreshed pair of %s could not be stored: %w", m, err))
			}
		}
	}
	for _, c := range clients {
		c.Destroy()
	}
	if a.ownsTransport {
		a.httpClient.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// revokedError is what a revoked installation's clients fail with.
func revokedError(memberID string) *RefreshTokenError {
	return &RefreshTokenError{
		Code:        "invalid_grant",
		Description: "the installation was revoked; the portal's administrator must reinstall the application",
		MemberID:    memberID,
	}
}

// errRefreshElsewhere: a refresh was refused while another process's refresh of the same
// portal was in flight; it is not a revocation.
var errRefreshElsewhere = errors.New("b24oauth: another process is refreshing this portal")

// errNoWrite makes a TokenStore.Update write nothing, on purpose.
var errNoWrite = errors.New("b24oauth: nothing to write")

// storeRefresher runs one portal's refreshes through the App's store.
type storeRefresher struct {
	app      *App
	memberID string
}

// refresh marks the installation as refreshing (so a crash between the OAuth server's answer
// and the store write is recognized later), then, inside Update, adopts a pair another client
// or process stored meanwhile, or exchanges the stored refresh token and writes the new pair.
//
// The mark: phase 1 sets it, unless it finds a stale one, which it keeps: a stale mark is the
// only trace of a process that died holding a rotated pair, and every process that finds it
// must be able to tell, whichever of them asks the OAuth server first. The write that ends a
// refresh (a new pair, or the revocation) clears the mark, whoever set it; the others clear
// only their own.
func (r *storeRefresher) refresh(ctx context.Context, cur OAuthParams, exchange exchangeFunc) (OAuthParams, error) {
	a := r.app
	// Phase 1: mark the refresh as in flight, durably, before the OAuth server is asked. A mark
	// already there is left alone: a stale one tells of a process that died mid-refresh, a fresh
	// one of a refresh under way elsewhere.
	var mark, staleMark time.Time // ours; a stale one found
	err := a.storeUpdate(ctx, r.memberID, func(inst Installation) (Installation, error) {
		if inst.State == StateRevoked {
			return inst, revokedError(r.memberID)
		}
		if !inst.RefreshingSince.IsZero() {
			if a.now().Sub(inst.RefreshingSince) > a.cfg.StaleRefreshAfter {
				staleMark = inst.RefreshingSince
			}
			return inst, errNoWrite
		}
		mark = a.now().UTC().Truncate(time.Microsecond)
		inst.RefreshingSince = mark
		return inst, nil
	})
	if err != nil && !errors.Is(err, errNoWrite) {
		return cur, err
	}

	var next OAuthParams
	var exErr error
	var revoked Installation
	var foreignMark time.Time // the fresh mark of another process that made a refusal inconclusive
	var storedRefresh string  // the refresh token the store holds, until our write succeeds
	wrote := false
	err = a.storeUpdate(ctx, r.memberID, func(inst Installation) (Installation, error) {
		storedRefresh = inst.RefreshToken
		ours := !mark.IsZero() && inst.RefreshingSince.Equal(mark)
		if ours {
			inst.RefreshingSince = time.Time{}
		}
		if inst.State == StateRevoked {
			return inst, revokedError(r.memberID)
		}
		stored := inst.OAuthParams
		base := stored
		if u := a.unsavedFor(r.memberID); u != nil && stored.RefreshToken == u.from {
			base = cur // the store still holds the pair this process spent; cur is the live one
		}
		if base.AccessToken != cur.AccessToken && !expiringAt(base, a.now()) {
			// Another client or process refreshed (or the app was reinstalled): adopt its pair.
			next = base
			if !ours {
				return inst, errNoWrite
			}
			return inst, nil
		}
		p, err := exchange(ctx, base)
		if err != nil {
			exErr = err
			var rte *RefreshTokenError
			if errors.As(err, &rte) && rte.Revoked() {
				if since := inst.RefreshingSince; !ours && !since.IsZero() && a.now().Sub(since) <= a.cfg.StaleRefreshAfter {
					// Another process is refreshing, or holds a new pair it could not store
					// yet: the refusal may be its doing. Not revoked; a later call finds its pair
					// or, once its mark is stale, revokes.
					exErr = &RefreshTokenError{MemberID: r.memberID, Status: rte.Status,
						Description: "refused while another process refreshes this portal; retry later", Err: errRefreshElsewhere}
					foreignMark = since
					return inst, errNoWrite
				}
				if !staleMark.IsZero() && inst.RefreshingSince.Equal(staleMark) {
					rte.Description = joinDesc(rte.Description, "a refresh in flight was lost (a process died between the OAuth server's answer and the store write)")
				}
				inst.State = StateRevoked
				inst.RefreshingSince = time.Time{} // a refresh still to come finds the revocation
				inst.UpdatedAt = a.now().UTC()
				revoked = inst
				return inst, nil
			}
			if !ours {
				return inst, errNoWrite
			}
			return inst, nil
		}
		next = p
		wrote = true
		inst.RefreshingSince = time.Time{} // the refresh is done: a refresh still to come adopts p
		inst.OAuthParams = p
		inst.State = StateActive
		inst.UpdatedAt = a.now().UTC()
		return inst, nil
	})
	if !foreignMark.IsZero() {
		a.scheduleRecheck(r.memberID, foreignMark, exchange)
	}
	switch {
	case exErr != nil:
		if revoked.MemberID != "" && err == nil {
			a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: refresh token refused; installation marked revoked",
				slog.String("member_id", r.memberID), slog.Any("error", exErr))
			if a.cfg.OnRevoked != nil {
				a.cfg.OnRevoked(ctx, revoked, exErr)
			}
		}
		return cur, exErr
	case err != nil && !errors.Is(err, errNoWrite):
		if wrote {
			// The OAuth server rotated the pair: it is the only valid one now. Keep it.
			// The store still holds what fn read, which may be a pair newer than cur that we
			// refreshed: persist must recognize that one.
			a.keepUnsaved(r.memberID, storedRefresh, next)
			return next, &persistError{err: err}
		}
		return cur, err
	}
	return next, nil
}

// scheduleRecheck looks at memberID again once another process's refresh mark is stale: if
// the mark is still there, that process died holding the rotated pair, and the refresh run then
// (the refusal now conclusive) marks the portal revoked and fires OnRevoked, even if no call
// comes. One recheck per portal is pending at a time.
func (a *App) scheduleRecheck(memberID string, mark time.Time, exchange exchangeFunc) {
	a.mu.Lock()
	if a.closed || a.rechecks[memberID] {
		a.mu.Unlock()
		return
	}
	a.rechecks[memberID] = true
	a.mu.Unlock()
	delay := time.Until(mark.Add(a.cfg.StaleRefreshAfter)) + time.Second
	if d := mark.Add(a.cfg.StaleRefreshAfter).Sub(a.now()) + time.Second; d < delay {
		delay = d // the App's clock (tests move it)
	}
	time.AfterFunc(max(delay, 0), func() {
		defer func() {
			a.mu.Lock()
			delete(a.rechecks, memberID)
			a.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), defaultRefreshTimeout)
		defer cancel()
		inst, err := a.storeLoad(ctx, memberID)
		if err != nil || inst.State == StateRevoked || !inst.RefreshingSince.Equal(mark) {
			return // gone, revoked, or the other process finished its refresh
		}
		if _, err := a.refreshStored(ctx, inst.OAuthParams, exchange, TriggerRecheck); err == nil {
			a.forget(memberID)
		}
	})
}

// persist retries the write of the portal's unsaved pair (the client's next, or a newer one
// another client of the portal kept), unless the store already moved on.
func (r *storeRefresher) persist(ctx context.Context, _, _ OAuthParams) error {
	u := r.app.unsavedFor(r.memberID)
	if u == nil {
		return nil // written meanwhile: by the eviction flush, a rebuilt client or Close
	}
	return r.app.writeUnsaved(ctx, r.memberID, u)
}

func expiringAt(p OAuthParams, now time.Time) bool {
	if p.AccessToken == "" {
		return true
	}
	return p.Expires > 0 && !now.Add(defaultExpiryMargin).Before(time.Unix(p.Expires, 0))
}

func joinDesc(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
