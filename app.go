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
	HTTPClient *http.Client
	// Logger receives the App's and its clients' logs; nil: slog.Default().
	Logger *slog.Logger
	// OAuthServers are the origins the client secret may be sent to; nil: the two Bitrix24
	// OAuth servers (https://oauth.bitrix.info, https://oauth.bitrix24.tech). An event whose
	// server_endpoint is not one of them is rejected.
	OAuthServers []string
	// Restriction sets each portal's rate limits and retries; nil: DefaultRestrictionParams().
	Restriction *RestrictionParams
	// CacheSize bounds the clients ClientForMember keeps (least recently used go first);
	// 0: 1024.
	CacheSize int

	// OnInstall runs after an install or update event is stored.
	OnInstall func(ctx context.Context, inst Installation)
	// OnUninstall runs after an uninstall event was applied; clean reports the administrator's
	// "clear app data" choice (data[CLEAN]).
	OnUninstall func(ctx context.Context, inst Installation, clean bool)
	// OnRevoked runs after a portal's refresh token was refused and its installation was
	// marked StateRevoked: the portal's administrator must reinstall (or reopen) the app.
	OnRevoked func(ctx context.Context, inst Installation, err error)

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
	// StaleRefreshAfter is how old a "refresh in flight" mark must be for the next refresh to
	// treat it as left by a crashed process; 0: one minute.
	StaleRefreshAfter time.Duration
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
}

// buildFlight is one attempt of a build. An event that changes or removes the installation
// while the attempt runs marks it stale: what it loaded is outdated, so it loads again.
type buildFlight struct{ stale bool }

// portalEntry is one cached portal: its client and the limiter every client of it shares.
type portalEntry struct {
	memberID string
	client   *B24OAuth // nil: (re)build on the next ClientForMember
	limiter  *limiter
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
	if cfg.StaleRefreshAfter <= 0 {
		cfg.StaleRefreshAfter = time.Minute
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
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.httpClient == nil {
		a.httpClient = defaultHTTPClient()
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
		WithHTTPClient(a.httpClient),
		WithLogger(a.log),
		WithOAuthServers(a.oauthServers...),
		WithRestrictionParams(a.restriction),
	}
	if cfg.InsecureHTTP {
		a.clientOpts = append(a.clientOpts, WithInsecureHTTP())
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
	inst, err := a.cfg.Store.Load(ctx, memberID)
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
	inst, err := a.cfg.Store.Load(ctx, memberID)
	if err != nil {
		return fail(err)
	}
	if inst.State == StateRevoked {
		return fail(revokedError(memberID))
	}
	a.mu.Lock()
	var lim *limiter
	if el, ok := a.entries[memberID]; ok {
		lim = el.Value.(*portalEntry).limiter
	}
	a.mu.Unlock()
	if lim == nil {
		lim = newLimiter(a.restriction)
	}
	opts := append(append([]Option{}, a.clientOpts...), withLimiter(lim), withRefresher(&storeRefresher{app: a, memberID: memberID}))
	opts = append(opts, a.cfg.ClientOptions...)
	c, err := New(inst.OAuthParams, a.secret, opts...)
	if err != nil {
		return fail(fmt.Errorf("b24oauth: stored installation of %s: %w", memberID, err))
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
		e.client = c
		a.lru.MoveToFront(el)
		return c, nil
	}
	a.entries[memberID] = a.lru.PushFront(&portalEntry{memberID: memberID, client: c, limiter: lim})
	for a.lru.Len() > a.cfg.CacheSize {
		oldest := a.lru.Back()
		a.lru.Remove(oldest)
		delete(a.entries, oldest.Value.(*portalEntry).memberID)
	}
	return c, nil
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

// Close releases the App: the cached clients are destroyed, and ClientForMember fails from then
// on. The handlers keep storing events. Close is idempotent and never fails.
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
	a.mu.Unlock()
	for _, c := range clients {
		c.Destroy()
	}
	return nil
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

	mu sync.Mutex
	// unsavedFrom is the refresh token of the stored pair this process rotated but could not
	// write the successor of: the store still holds a spent pair, and the client's pair is
	// the live one.
	unsavedFrom string
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
	a, store := r.app, r.app.cfg.Store
	// Phase 1: mark the refresh as in flight, durably, before the OAuth server is asked. A mark
	// already there is left alone: a stale one tells of a process that died mid-refresh, a fresh
	// one of a refresh under way elsewhere.
	var mark, staleMark time.Time // ours; a stale one found
	err := store.Update(ctx, r.memberID, func(inst Installation) (Installation, error) {
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
	var storedRefresh string // the refresh token the store holds, until our write succeeds
	wrote := false
	err = store.Update(ctx, r.memberID, func(inst Installation) (Installation, error) {
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
		r.mu.Lock()
		if r.unsavedFrom != "" && stored.RefreshToken == r.unsavedFrom {
			base = cur // the store still holds the pair we spent; ours is the live one
		}
		r.mu.Unlock()
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
			r.mu.Lock()
			if r.unsavedFrom == "" {
				r.unsavedFrom = storedRefresh
			}
			r.mu.Unlock()
			return next, &persistError{err: err}
		}
		return cur, err
	}
	return next, nil
}

// persist writes next, which replaced prev, unless the store already moved on.
func (r *storeRefresher) persist(ctx context.Context, prev, next OAuthParams) error {
	r.mu.Lock()
	from := r.unsavedFrom
	r.mu.Unlock()
	err := r.app.cfg.Store.Update(ctx, r.memberID, func(inst Installation) (Installation, error) {
		if inst.RefreshToken != prev.RefreshToken && inst.RefreshToken != from {
			return inst, errNoWrite // a newer pair (or a reinstall) is stored; the client adopts it on its next refresh
		}
		inst.OAuthParams = next
		inst.State = StateActive
		inst.RefreshingSince = time.Time{} // this write ends the refresh that set it
		inst.UpdatedAt = r.app.now().UTC()
		return inst, nil
	})
	if err != nil && !errors.Is(err, errNoWrite) {
		return err
	}
	r.mu.Lock()
	r.unsavedFrom = ""
	r.mu.Unlock()
	return nil
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
