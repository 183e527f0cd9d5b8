package b24oauth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// keepAliveEnv is an App over a FileStore in dir, with the fake and the App on one manual clock.
func keepAliveEnv(t *testing.T, fake *b24test.Server, clock *b24test.Clock, dir string) *appEnv {
	t.Helper()
	env := newAppEnv(t, fake, newFileStore(t, dir))
	b24oauth.SetAppClock(env.app, clock.Now)
	env.clock = clock
	return env
}

// A portal nobody calls for longer than the refresh token lives is kept alive by KeepAlive;
// without it, it is lost (the fake's refresh tokens live 30 days, as real ones encode).
func TestKeepAliveKeepsIdlePortals(t *testing.T) {
	clock := b24test.NewClock(time.Now())
	fake := newFake(t, b24test.WithClock(clock.Now), b24test.WithRefreshTokenTTL(30*24*time.Hour))
	env := keepAliveEnv(t, fake, clock, t.TempDir())
	portals := []*b24test.Portal{env.install(), env.install(), env.install()}
	ctx := context.Background()

	rep, err := env.app.KeepAlive(ctx, b24oauth.KeepAliveOptions{Rate: 1000})
	if err != nil || rep.Checked != 3 || rep.Refreshed != 0 {
		t.Fatalf("fresh portals: %v, %v; want 3 checked, none refreshed", rep, err)
	}
	for round := 1; round <= 3; round++ { // 63 days: twice the refresh token's life
		clock.Advance(21 * 24 * time.Hour)
		rep, err := env.app.KeepAlive(ctx, b24oauth.KeepAliveOptions{Rate: 1000})
		if err != nil || rep.Checked != 3 || rep.Refreshed != 3 || rep.Revoked+rep.Failed != 0 {
			t.Fatalf("round %d: %v, %v; want 3 refreshed", round, rep, err)
		}
	}
	for _, p := range portals {
		if p.Refreshes() != 3 {
			t.Errorf("portal refreshed %d times, want 3", p.Refreshes())
		}
		if pairOf(env.load(p.MemberID())) != fakePair(p) {
			t.Error("the refreshed pair is not stored")
		}
		mustCallProfile(t, env.client(p.MemberID()))
	}
	if _, _, revoked := env.hooks.counts(); revoked != 0 {
		t.Errorf("%d portals revoked", revoked)
	}
}

// Replicas running KeepAlive at the same moment over one store refresh each portal once in
// total.
func TestKeepAliveReplicasRefreshOnce(t *testing.T) {
	clock := b24test.NewClock(time.Now())
	fake := newFake(t, b24test.WithClock(clock.Now))
	dir := t.TempDir()
	first := keepAliveEnv(t, fake, clock, dir)
	const n = 20
	for range n {
		first.install()
	}
	replicas := []*appEnv{first, keepAliveEnv(t, fake, clock, dir), keepAliveEnv(t, fake, clock, dir)}
	clock.Advance(21 * 24 * time.Hour)
	var wg sync.WaitGroup
	reps := make([]b24oauth.KeepAliveReport, len(replicas))
	for i, env := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			reps[i], err = env.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{Rate: 1000})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	refreshed := 0
	for _, r := range reps {
		refreshed += r.Refreshed
		if r.Revoked+r.Failed != 0 {
			t.Errorf("replica report %v", r)
		}
	}
	if fake.Refreshes() != n || refreshed != n {
		t.Errorf("the fake saw %d refreshes, the reports count %d; want %d (%v)", fake.Refreshes(), refreshed, n, reps)
	}
}

// A portal whose refresh token was refused is marked revoked and reported once; one that was
// already revoked is counted inactive.
func TestKeepAliveRevokes(t *testing.T) {
	clock := b24test.NewClock(time.Now())
	fake := newFake(t, b24test.WithClock(clock.Now))
	env := keepAliveEnv(t, fake, clock, t.TempDir())
	alive, dead := env.install(), env.install()
	dead.RevokeTokens()
	clock.Advance(21 * 24 * time.Hour)
	rep, err := env.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{Rate: 1000})
	if err != nil || rep.Refreshed != 1 || rep.Revoked != 1 {
		t.Fatalf("%v, %v; want 1 refreshed, 1 revoked", rep, err)
	}
	if got := env.load(dead.MemberID()); got.State != b24oauth.StateRevoked {
		t.Errorf("state %q, want revoked", got.State)
	}
	if _, _, revoked := env.hooks.counts(); revoked != 1 {
		t.Errorf("OnRevoked ran %d times, want 1", revoked)
	}
	rep, _ = env.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{Rate: 1000})
	if rep.Inactive != 1 || rep.Revoked != 0 {
		t.Errorf("second pass %v: want the revoked portal inactive", rep)
	}
	if _, _, revoked := env.hooks.counts(); revoked != 1 {
		t.Errorf("OnRevoked ran %d times after the second pass, want 1", revoked)
	}
	mustCallProfile(t, env.client(alive.MemberID()))
}

// KeepAlive needs a store that can list; the loop stops with its context.
func TestKeepAliveNeedsALister(t *testing.T) {
	env := newAppEnv(t, nil, struct{ b24oauth.TokenStore }{b24oauth.NewMemoryStore()})
	if _, err := env.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{}); !errors.Is(err, b24oauth.ErrNotLister) {
		t.Errorf("KeepAlive = %v, want ErrNotLister", err)
	}
	dirEnv := keepAliveEnv(t, nil, b24test.NewClock(time.Now()), t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	passes := make(chan b24oauth.KeepAliveReport, 10)
	done := make(chan error, 1)
	go func() {
		done <- dirEnv.app.KeepAliveLoop(ctx, time.Hour, b24oauth.KeepAliveOptions{}, func(r b24oauth.KeepAliveReport, _ error) { passes <- r })
	}()
	<-passes // the first pass runs at once
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepAliveLoop = %v, want context.Canceled", err)
	}
}

// A refusal first judged transient (another process's refresh mark was fresh) is checked again
// once the mark is stale: the lost pair is reported even though no further call comes.
func TestLostPairIsReportedWithoutAnotherCall(t *testing.T) {
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) { c.StaleRefreshAfter = 200 * time.Millisecond })
	b24oauth.SetAppClock(env.app, time.Now)
	p := env.install()
	c := env.client(p.MemberID())
	// Another process marked a refresh, spent the refresh token at the OAuth server, and died.
	ctx := context.Background()
	if err := env.store.TokenStore.Update(ctx, p.MemberID(), func(inst b24oauth.Installation) (b24oauth.Installation, error) {
		inst.RefreshingSince = time.Now().UTC()
		return inst, nil
	}); err != nil {
		t.Fatal(err)
	}
	p.RevokeTokens()
	p.ExpireAccessToken()
	var rte *b24oauth.RefreshTokenError
	if _, err := c.Call(ctx, "profile", nil); !errors.As(err, &rte) || rte.Revoked() && env.load(p.MemberID()).State == b24oauth.StateRevoked {
		t.Fatalf("Call = %v; want a transient refusal while the other process's mark is fresh", err)
	}
	waitFor(t, "OnRevoked", func() bool { _, _, n := env.hooks.counts(); return n == 1 })
	if got := env.load(p.MemberID()); got.State != b24oauth.StateRevoked {
		t.Errorf("state %q, want revoked", got.State)
	}
}
