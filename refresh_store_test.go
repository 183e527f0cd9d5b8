package b24oauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Tests of the refresh through the store (storeRefresher): two Apps on one store stand for two
// processes, and a gatedStore orders their refreshes' store phases.

// gatedStore passes every call to its TokenStore, except that the Update numbered gate (1:
// the first) announces itself on reached and waits for release before it runs.
type gatedStore struct {
	b24oauth.TokenStore
	gate             int32
	n                atomic.Int32
	reached, release chan struct{}
}

func newGatedStore(s b24oauth.TokenStore, gate int32) *gatedStore {
	return &gatedStore{TokenStore: s, gate: gate, reached: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedStore) Update(ctx context.Context, memberID string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	if g.n.Add(1) == g.gate {
		close(g.reached)
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.TokenStore.Update(ctx, memberID, fn)
}

// waitReached waits until the gated Update has been called.
func (g *gatedStore) waitReached(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never reached its gated store write", what)
	}
}

// revokedHooks counts OnRevoked runs of several Apps.
type revokedHooks struct {
	mu   sync.Mutex
	errs []error
}

func (h *revokedHooks) hook(_ context.Context, inst b24oauth.Installation, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if inst.State != b24oauth.StateRevoked {
		err = errors.Join(err, errors.New("OnRevoked got an installation that is not StateRevoked"))
	}
	h.errs = append(h.errs, err)
}

func (h *revokedHooks) all() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// newRefreshApp returns an App on store, calling the fake, with OnRevoked reported to hooks.
func newRefreshApp(t *testing.T, fake *b24test.Server, store b24oauth.TokenStore, hooks *revokedHooks) *b24oauth.App {
	t.Helper()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        store,
		HTTPClient:   fake.Client(),
		OAuthServers: []string{fake.OAuthOrigin()},
		Restriction: &b24oauth.RestrictionParams{
			RateLimit:  b24oauth.RateLimitParams{DrainRate: -1},
			MaxRetries: 3,
			RetryDelay: time.Millisecond,
		},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnRevoked: hooks.hook,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app
}

// callProfile calls profile on memberID's portal through app, in the background.
func callProfile(app *b24oauth.App, memberID string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := app.ClientForMember(ctx, memberID)
		if err == nil {
			_, err = c.Call(ctx, "profile", nil)
		}
		done <- err
	}()
	return done
}

func wantInvalidGrant(t *testing.T, who string, err error) {
	t.Helper()
	var rte *b24oauth.RefreshTokenError
	if !errors.As(err, &rte) || rte.Code != "invalid_grant" {
		t.Errorf("%s: %v; want a *RefreshTokenError invalid_grant", who, err)
	}
}

// A refresh lost in a crash (a stale mark, a spent refresh token) is reported as such by
// whichever process asks the OAuth server first, even if another process marked a refresh of
// its own after finding the stale mark.
func TestStoreRefreshStaleMarkSurvivesOtherRefreshes(t *testing.T) {
	ctx := context.Background()
	fake := newFake(t)
	p := fake.AddPortal()
	mem := b24oauth.NewMemoryStore()
	inst := b24oauth.Installation{
		OAuthParams:     paramsFor(fake, p),
		State:           b24oauth.StateActive,
		RefreshingSince: time.Now().Add(-time.Hour).UTC(), // left by a process that died
	}
	if err := mem.Save(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// What the dead process did before it died: spend the stored refresh token.
	if _, err := newClient(t, fake, p, unlimited()).Auth().RefreshAuth(ctx); err != nil {
		t.Fatal(err)
	}
	requests := fake.TokenRequests()

	hooks := &revokedHooks{}
	gA := newGatedStore(mem, 2) // A stops after marking its refresh, before asking the server
	appA := newRefreshApp(t, fake, gA, hooks)
	appB := newRefreshApp(t, fake, mem, hooks)
	doneA := callProfile(appA, p.MemberID())
	gA.waitReached(t, "process A")
	wantInvalidGrant(t, "process B", <-callProfile(appB, p.MemberID()))
	close(gA.release)
	wantInvalidGrant(t, "process A", <-doneA)

	errs := hooks.all()
	if len(errs) != 1 {
		t.Fatalf("OnRevoked ran %d times; want 1", len(errs))
	}
	if !strings.Contains(errs[0].Error(), "refresh in flight was lost") {
		t.Errorf("OnRevoked's error = %q; want it to say that a refresh in flight was lost", errs[0])
	}
	if n := fake.TokenRequests() - requests; n != 1 {
		t.Errorf("%d token requests after the crash; want 1", n)
	}
	got, err := mem.Load(ctx, p.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != b24oauth.StateRevoked || !got.RefreshingSince.IsZero() {
		t.Errorf("stored State %q, RefreshingSince %v; want revoked and no mark", got.State, got.RefreshingSince)
	}
}

// A revocation leaves no refresh mark behind, even when another process marked a refresh of its
// own meanwhile: a mark outliving the revocation would later read as a lost refresh.
func TestStoreRefreshRevocationClearsMarks(t *testing.T) {
	ctx := context.Background()
	fake := newFake(t)
	p := fake.AddPortal()
	mem := b24oauth.NewMemoryStore()
	if err := mem.Save(ctx, b24oauth.Installation{OAuthParams: paramsFor(fake, p), State: b24oauth.StateActive}); err != nil {
		t.Fatal(err)
	}
	p.RevokeTokens() // e.g. the app was reinstalled with tokens this store never saw

	hooks := &revokedHooks{}
	gA, gB := newGatedStore(mem, 2), newGatedStore(mem, 2)
	appA := newRefreshApp(t, fake, gA, hooks)
	appB := newRefreshApp(t, fake, gB, hooks)
	doneA := callProfile(appA, p.MemberID())
	gA.waitReached(t, "process A")
	doneB := callProfile(appB, p.MemberID())
	gB.waitReached(t, "process B")
	close(gA.release)
	wantInvalidGrant(t, "process A", <-doneA)
	close(gB.release)
	wantInvalidGrant(t, "process B", <-doneB)

	if n := len(hooks.all()); n != 1 {
		t.Errorf("OnRevoked ran %d times; want 1", n)
	}
	if n := fake.TokenRequests(); n != 1 {
		t.Errorf("%d token requests; want 1", n)
	}
	got, err := mem.Load(ctx, p.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != b24oauth.StateRevoked || !got.RefreshingSince.IsZero() {
		t.Errorf("stored State %q, RefreshingSince %v; want revoked and no mark", got.State, got.RefreshingSince)
	}
}

// failFirstPairWrite is a TokenStore whose first Update that would store a new token pair
// fails without writing, as a store that is briefly unreachable does.
type failFirstPairWrite struct {
	b24oauth.TokenStore
	failed atomic.Bool
}

func (s *failFirstPairWrite) Update(ctx context.Context, memberID string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	return s.TokenStore.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		next, err := fn(cur)
		if err == nil && next.RefreshToken != cur.RefreshToken && s.failed.CompareAndSwap(false, true) {
			return cur, errors.New("store unavailable")
		}
		return next, err
	})
}

// A refreshed pair whose first write failed is written later, and that write ends the refresh:
// no mark is left to be read as a lost refresh once it is stale.
func TestStoreRefreshRetriedWriteClearsMark(t *testing.T) {
	ctx := context.Background()
	fake := newFake(t)
	p := fake.AddPortal()
	mem := b24oauth.NewMemoryStore()
	if err := mem.Save(ctx, b24oauth.Installation{OAuthParams: paramsFor(fake, p), State: b24oauth.StateActive}); err != nil {
		t.Fatal(err)
	}
	p.ExpireAccessToken()
	store := &failFirstPairWrite{TokenStore: mem}
	app := newRefreshApp(t, fake, store, &revokedHooks{})
	for i := range 2 { // the first call refreshes (its write fails), the second retries the write
		if err := <-callProfile(app, p.MemberID()); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if !store.failed.Load() {
		t.Fatal("the refresh never tried to write a new pair")
	}
	got, err := mem.Load(ctx, p.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if got.RefreshToken != p.Tokens().RefreshToken {
		t.Errorf("the store does not hold the fake's current refresh token")
	}
	if !got.RefreshingSince.IsZero() {
		t.Errorf("stored RefreshingSince = %v; want no mark once the pair is written", got.RefreshingSince)
	}
	if n := fake.Refreshes(); n != 1 {
		t.Errorf("%d refreshes; want 1", n)
	}
}

// A refresh token refused while another process's refresh is in flight (its fresh mark is
// there) is not taken for a revocation: that process may hold the new pair and not have
// stored it yet. When it does, the refused process adopts it.
func TestStoreRefreshRefusedDuringForeignRefreshIsNotRevocation(t *testing.T) {
	ctx := context.Background()
	fake := newFake(t)
	p := fake.AddPortal()
	mem := b24oauth.NewMemoryStore()
	if err := mem.Save(ctx, b24oauth.Installation{OAuthParams: paramsFor(fake, p), State: b24oauth.StateActive}); err != nil {
		t.Fatal(err)
	}
	// Process A marks its refresh and spends the stored refresh token, but has not stored the
	// new pair yet.
	if err := mem.Update(ctx, p.MemberID(), func(inst b24oauth.Installation) (b24oauth.Installation, error) {
		inst.RefreshingSince = time.Now().UTC()
		return inst, nil
	}); err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "client_id": {fake.ClientID()}, "client_secret": {fake.ClientSecret()},
		"refresh_token": {p.Tokens().RefreshToken}}
	resp, err := fake.Client().PostForm(fake.OAuthOrigin()+"/oauth/token/", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("process A's refresh: HTTP %d", resp.StatusCode)
	}
	pairA := p.Tokens()

	hooks := &revokedHooks{}
	appB := newRefreshApp(t, fake, mem, hooks)
	err = <-callProfile(appB, p.MemberID())
	var rte *b24oauth.RefreshTokenError
	if !errors.As(err, &rte) || rte.Revoked() {
		t.Fatalf("process B: %v; want a *RefreshTokenError that is not a revocation", err)
	}
	got, err := mem.Load(ctx, p.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != b24oauth.StateActive || got.RefreshingSince.IsZero() {
		t.Errorf("stored State %q, RefreshingSince %v; want active with A's mark kept", got.State, got.RefreshingSince)
	}
	if n := len(hooks.all()); n != 0 {
		t.Errorf("OnRevoked ran %d times; want 0", n)
	}

	// A stores its pair; B's next call adopts it without asking the OAuth server.
	if err := mem.Update(ctx, p.MemberID(), func(inst b24oauth.Installation) (b24oauth.Installation, error) {
		inst.AccessToken, inst.RefreshToken, inst.Expires = pairA.AccessToken, pairA.RefreshToken, pairA.Expires.Unix()
		inst.RefreshingSince = time.Time{}
		return inst, nil
	}); err != nil {
		t.Fatal(err)
	}
	before := fake.TokenRequests()
	if err := <-callProfile(appB, p.MemberID()); err != nil {
		t.Fatalf("process B after A stored its pair: %v", err)
	}
	if n := fake.TokenRequests() - before; n != 0 {
		t.Errorf("%d more token requests; want 0 (the stored pair is adopted)", n)
	}
}
