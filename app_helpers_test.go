package b24oauth_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// storeCase is a TokenStore the App's tests run with. open returns a store over the same data
// every time it is called: the same MemoryStore, or a new FileStore over the same directory
// (as another process would open it).
type storeCase struct {
	name    string
	newOpen func(t testing.TB) (open func() b24oauth.TokenStore)
}

var storeCases = []storeCase{
	{"memory", func(t testing.TB) func() b24oauth.TokenStore {
		s := b24oauth.NewMemoryStore()
		return func() b24oauth.TokenStore { return s }
	}},
	{"file", func(t testing.TB) func() b24oauth.TokenStore {
		dir := t.TempDir()
		return func() b24oauth.TokenStore { return newFileStore(t, dir) }
	}},
}

// forEachStore runs fn as a subtest for each store case; open gives the case's store.
func forEachStore(t *testing.T, fn func(t *testing.T, open func() b24oauth.TokenStore)) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) { fn(t, sc.newOpen(t)) })
	}
}

// errStoreDown is what a spyStore fails with when told to.
var errStoreDown = errors.New("test store: down")

// spyStore wraps a TokenStore: it counts loads and writes, and fails writes on demand.
type spyStore struct {
	b24oauth.TokenStore

	loads  atomic.Int64
	writes atomic.Int64 // Saves, Updates that wrote, Deletes

	mu sync.Mutex
	// failWrite, when set, is asked before each write (Save, or Update after its fn ran): true
	// makes the write fail with errStoreDown and leaves the record as it was.
	failWrite func(cur *b24oauth.Installation, next b24oauth.Installation) bool
	// loadGate, when set, is called by Load after it read, before it returns.
	loadGate func()
}

func (s *spyStore) setFailWrite(f func(cur *b24oauth.Installation, next b24oauth.Installation) bool) {
	s.mu.Lock()
	s.failWrite = f
	s.mu.Unlock()
}

func (s *spyStore) shouldFail(cur *b24oauth.Installation, next b24oauth.Installation) bool {
	s.mu.Lock()
	f := s.failWrite
	s.mu.Unlock()
	return f != nil && f(cur, next)
}

func (s *spyStore) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	s.loads.Add(1)
	inst, err := s.TokenStore.Load(ctx, memberID)
	s.mu.Lock()
	gate := s.loadGate
	s.mu.Unlock()
	if gate != nil {
		gate()
	}
	return inst, err
}

func (s *spyStore) Save(ctx context.Context, inst b24oauth.Installation) error {
	if s.shouldFail(nil, inst) {
		return errStoreDown
	}
	err := s.TokenStore.Save(ctx, inst)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

func (s *spyStore) Delete(ctx context.Context, memberID string) error {
	err := s.TokenStore.Delete(ctx, memberID)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

func (s *spyStore) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	err := s.TokenStore.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		next, err := fn(cur)
		if err != nil {
			return next, err
		}
		if s.shouldFail(&cur, next) {
			return cur, errStoreDown
		}
		return next, nil
	})
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

// Create creates inst in the wrapped store as the App would (its Create, or the fallback of
// CreateInstallation); it fails on demand like Save.
func (s *spyStore) Create(ctx context.Context, inst b24oauth.Installation) error {
	if s.shouldFail(nil, inst) {
		return errStoreDown
	}
	err := b24oauth.CreateInstallation(ctx, s.TokenStore, inst)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

// DeleteIf deletes from the wrapped store as the App would (its DeleteIf, or the fallback of
// DeleteInstallationIf).
func (s *spyStore) DeleteIf(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) error) error {
	err := b24oauth.DeleteInstallationIf(ctx, s.TokenStore, memberID, fn)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

// plainStore hides every method of its store but those of TokenStore: a store of a user's
// that has none of the optional ones.
type plainStore struct{ b24oauth.TokenStore }

// List lists the wrapped store's installations, or yields ErrNotLister when it cannot.
func (s *spyStore) List(ctx context.Context) iter.Seq2[string, error] {
	if l, ok := s.TokenStore.(b24oauth.Lister); ok {
		return l.List(ctx)
	}
	return func(yield func(string, error) bool) { yield("", b24oauth.ErrNotLister) }
}

// newPairWrite matches a write that replaces the stored token pair (a refresh's write).
func newPairWrite(cur *b24oauth.Installation, next b24oauth.Installation) bool {
	return cur != nil && cur.RefreshToken != next.RefreshToken
}

// uninstallCall is one OnUninstall call.
type uninstallCall struct {
	Inst  b24oauth.Installation
	Clean bool
}

// revokedCall is one OnRevoked call.
type revokedCall struct {
	Inst b24oauth.Installation
	Err  error
}

// hookRecorder records the App's hooks, and checks in each that the store already shows what
// the hook reports. Problems are reported when the test ends.
type hookRecorder struct {
	store b24oauth.TokenStore

	mu         sync.Mutex
	installs   []b24oauth.Installation
	uninstalls []uninstallCall
	revoked    []revokedCall
	problems   []string
}

func (h *hookRecorder) problem(format string, args ...any) {
	h.problems = append(h.problems, fmt.Sprintf(format, args...))
}

func (h *hookRecorder) attach(cfg *b24oauth.AppConfig) {
	cfg.OnInstall = func(ctx context.Context, inst b24oauth.Installation) {
		got, err := h.store.Load(ctx, inst.MemberID)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.installs = append(h.installs, inst)
		if err != nil {
			h.problem("OnInstall(%s) ran before the store write: Load: %v", inst.MemberID, err)
		} else if d := cmp.Diff(got, inst); d != "" {
			h.problem("OnInstall(%s): the stored installation differs from the hook's (-stored +hook):\n%s", inst.MemberID, d)
		}
	}
	cfg.OnUninstall = func(ctx context.Context, inst b24oauth.Installation, clean bool) {
		_, err := h.store.Load(ctx, inst.MemberID)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.uninstalls = append(h.uninstalls, uninstallCall{inst, clean})
		if !errors.Is(err, b24oauth.ErrNotInstalled) {
			h.problem("OnUninstall(%s) ran before the delete: Load: %v", inst.MemberID, err)
		}
	}
	cfg.OnRevoked = func(ctx context.Context, inst b24oauth.Installation, err error) {
		got, lerr := h.store.Load(ctx, inst.MemberID)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.revoked = append(h.revoked, revokedCall{inst, err})
		switch {
		case lerr != nil:
			h.problem("OnRevoked(%s): Load: %v", inst.MemberID, lerr)
		case got.State != b24oauth.StateRevoked:
			h.problem("OnRevoked(%s) ran before the store write: stored state %q", inst.MemberID, got.State)
		case cmp.Diff(got, inst) != "":
			h.problem("OnRevoked(%s): the stored installation differs from the hook's (-stored +hook):\n%s", inst.MemberID, cmp.Diff(got, inst))
		}
	}
}

func (h *hookRecorder) counts() (installs, uninstalls, revoked int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.installs), len(h.uninstalls), len(h.revoked)
}

func (h *hookRecorder) lastInstall() b24oauth.Installation {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.installs) == 0 {
		return b24oauth.Installation{}
	}
	return h.installs[len(h.installs)-1]
}

// appEnv is an App serving its handlers over real HTTP on loopback, against a b24test fake.
type appEnv struct {
	t     testing.TB
	fake  *b24test.Server
	store *spyStore
	app   *b24oauth.App
	clock *b24test.Clock // the App's clock
	hooks *hookRecorder
	url   string // base URL of the App's server: /install and /uninstall
}

// appConfig is the AppConfig of an App talking to the fake, without a rate limit.
func appConfig(fake *b24test.Server, store b24oauth.TokenStore) b24oauth.AppConfig {
	return b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        store,
		HTTPClient:   fake.Client(),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OAuthServers: []string{fake.OAuthOrigin()},
		Restriction:  unlimitedParams(),
	}
}

// unlimitedParams are RestrictionParams without a rate limit and with quick retries.
func unlimitedParams() *b24oauth.RestrictionParams {
	return &b24oauth.RestrictionParams{
		RateLimit:  b24oauth.RateLimitParams{DrainRate: -1},
		MaxRetries: 3,
		RetryDelay: time.Millisecond,
	}
}

// newAppEnv starts an App over store, talking to fake (a new fake when nil), with its handlers
// on a loopback HTTP server. opts change the AppConfig before NewApp.
func newAppEnv(t testing.TB, fake *b24test.Server, store b24oauth.TokenStore, opts ...func(*b24oauth.AppConfig)) *appEnv {
	t.Helper()
	if fake == nil {
		fake = newFake(t)
	}
	spy := &spyStore{TokenStore: store}
	hooks := &hookRecorder{store: store}
	cfg := appConfig(fake, spy)
	hooks.attach(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	a, err := b24oauth.NewApp(cfg)
	if err != nil {
		t.Fatalf("NewApp: %v", err)
	}
	clock := b24test.NewClock(time.Now().UTC().Truncate(time.Second))
	b24oauth.SetAppClock(a, clock.Now)
	mux := http.NewServeMux()
	mux.Handle("/install", a.InstallHandler())
	mux.Handle("/uninstall", a.UninstallHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		a.Close()
		hooks.mu.Lock()
		defer hooks.mu.Unlock()
		for _, p := range hooks.problems {
			t.Error(p)
		}
	})
	return &appEnv{t: t, fake: fake, store: spy, app: a, clock: clock, hooks: hooks, url: srv.URL}
}

// post sends ev over HTTP to the App's path and returns the status and body.
func (e *appEnv) post(path string, ev b24test.Event) (int, string) {
	e.t.Helper()
	resp, err := ev.Post(context.Background(), e.url+path)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("POST %s: reading the reply: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// install adds a portal to the fake and installs the app on it through /install.
func (e *appEnv) install(opts ...b24test.PortalOption) *b24test.Portal {
	e.t.Helper()
	p := e.fake.AddPortal(opts...)
	loads := e.store.loads.Load()
	e.mustPost("/install", p.InstallEvent())
	// The install's own store read is not counted: tests count what ClientForMember reads.
	e.store.loads.Store(loads)
	return p
}

// mustPost posts ev and fails the test unless the answer is 200.
func (e *appEnv) mustPost(path string, ev b24test.Event) {
	e.t.Helper()
	if code, body := e.post(path, ev); code != http.StatusOK {
		e.t.Fatalf("POST %s: %d %s", path, code, body)
	}
}

// load returns the stored installation of memberID, failing the test if there is none.
func (e *appEnv) load(memberID string) b24oauth.Installation {
	e.t.Helper()
	inst, err := e.store.TokenStore.Load(context.Background(), memberID)
	if err != nil {
		e.t.Fatalf("Load(%s): %v", memberID, err)
	}
	return inst
}

// client returns ClientForMember(memberID), failing the test on an error.
func (e *appEnv) client(memberID string) *b24oauth.B24OAuth {
	e.t.Helper()
	c, err := e.app.ClientForMember(context.Background(), memberID)
	if err != nil {
		e.t.Fatalf("ClientForMember(%s): %v", memberID, err)
	}
	return c
}

// mustCallProfile calls profile with c and fails the test unless it works.
func mustCallProfile(t testing.TB, c *b24oauth.B24OAuth) {
	t.Helper()
	resp, err := c.Call(context.Background(), "profile", nil)
	if err != nil {
		t.Fatalf("Call(profile): %v", err)
	}
	var profile struct {
		ID string `json:"ID"`
	}
	if err := resp.Decode(&profile); err != nil || profile.ID != "1" {
		t.Fatalf("profile = %s (%v), want user 1", resp.Result, err)
	}
}

// uninstallEvent builds an ONAPPUNINSTALL event for p with the given application_token, without
// uninstalling the app on the fake (as a forger would send it). An empty token leaves the key out.
func uninstallEvent(fake *b24test.Server, p *b24test.Portal, appToken string, clean bool) b24test.Event {
	f := url.Values{}
	f.Set("event", "ONAPPUNINSTALL")
	f.Set("event_handler_id", b24test.UninstallHandlerID)
	f.Set("data[LANGUAGE_ID]", "en")
	f.Set("data[CLEAN]", map[bool]string{true: "1", false: "0"}[clean])
	f.Set("ts", "1767312000")
	f.Set("auth[domain]", p.Domain())
	f.Set("auth[server_endpoint]", fake.OAuthServerEndpoint())
	f.Set("auth[client_endpoint]", p.ClientEndpoint())
	f.Set("auth[member_id]", p.MemberID())
	if appToken != "" {
		f.Set("auth[application_token]", appToken)
	}
	return b24test.Event{Query: url.Values{}, Form: f}
}

// randomHex returns n random bytes in lowercase hex, like a member_id or application_token.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// pairOf returns the token pair of an installation, for comparison with the fake's.
func pairOf(inst b24oauth.Installation) [2]string {
	return [2]string{inst.AccessToken, inst.RefreshToken}
}

// fakePair returns the fake portal's current token pair.
func fakePair(p *b24test.Portal) [2]string {
	tok := p.Tokens()
	return [2]string{tok.AccessToken, tok.RefreshToken}
}
