// Package keepalivebench measures one App.KeepAlive pass over many stored portals of a store,
// all of them idle, against a b24test fake: the time per portal, the store reads per portal,
// and that the pass refreshes every portal exactly once (the benchmark fails otherwise). The
// store tests of every module run it (BenchmarkKeepAlive).
package keepalivebench

import (
	"context"
	"io"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/internal/fleettest"
)

// idleFor is how long before the pass the portals' pairs were issued: past KeepAlive's default
// IdleFor (20 days), within the fake's refresh token lifetime (180 days).
const idleFor = 21 * 24 * time.Hour

// Run measures KeepAlive over portals portals in stores that newStore returns, each new and
// empty, once per iteration (the stored portals are set up anew, outside the timer, since a
// pass leaves every portal freshly refreshed). It reports, besides ns/op for a whole pass:
//
//	ns/portal         the pass's time divided by the number of portals
//	loads/portal      Store.Load calls per portal
//	updates/portal    Store.Update calls per portal (each reads the record once)
//	refreshes/portal  token refreshes the fake saw per portal: exactly 1, or the benchmark fails
func Run(b *testing.B, portals int, newStore func(b *testing.B) b24oauth.TokenStore) {
	b.ReportAllocs()
	var elapsed time.Duration
	var loads, updates, refreshes int64
	for range b.N {
		b.StopTimer()
		f := setUp(b, portals, newStore(b))
		b.StartTimer()
		start := time.Now()
		rep, err := f.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{Rate: 1e6, Jitter: -1})
		elapsed += time.Since(start)
		b.StopTimer()
		if err != nil || rep.Checked != portals || rep.Refreshed != portals || rep.Revoked+rep.Failed+rep.Adopted != 0 {
			b.Fatalf("KeepAlive over %d idle portals: %v, %v; want every one checked and refreshed", portals, rep, err)
		}
		f.checkEachRefreshedOnce(b)
		loads += f.store.loads.Load()
		updates += f.store.updates.Load()
		refreshes += int64(f.fake.Refreshes())
		f.close()
		b.StartTimer()
	}
	n := float64(b.N * portals)
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/portal")
	b.ReportMetric(float64(loads)/n, "loads/portal")
	b.ReportMetric(float64(updates)/n, "updates/portal")
	b.ReportMetric(float64(refreshes)/n, "refreshes/portal")
}

// world is one iteration's fake, store and App.
type world struct {
	fake    *b24test.Server
	portals []*b24test.Portal
	store   *countingStore
	app     *b24oauth.App
}

// setUp stores portals portals of a new fake in store, their pairs issued idleFor ago, and
// returns an App on the store (counted) that talks to the fake.
func setUp(b *testing.B, portals int, store b24oauth.TokenStore) *world {
	b.Helper()
	if _, ok := store.(b24oauth.Lister); !ok {
		b.Fatalf("%T is not a b24oauth.Lister", store)
	}
	clock := b24test.NewClock(time.Now().Add(-idleFor))
	fake := b24test.NewServer(b24test.WithClock(clock.Now))
	w := &world{fake: fake, portals: make([]*b24test.Portal, portals)}
	for i := range w.portals {
		w.portals[i] = fake.AddPortal()
	}
	// The records are written by a few goroutines: a store's write may cost an fsync or a round
	// trip, and 10,000 of them one at a time would dominate the benchmark's run.
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		mu     sync.Mutex
		failed error
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= portals {
					return
				}
				if err := store.Save(context.Background(), fleettest.InstallationOf(fake, w.portals[i], clock.Now())); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		fake.Close()
		b.Fatalf("storing the portals: %v", failed)
	}
	clock.Set(time.Now()) // the fake's time is the App's again: every pair is idleFor old
	w.store = &countingStore{TokenStore: store}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        w.store,
		HTTPClient:   b24test.ClientFor(fake.URL()),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OAuthServers: []string{fake.OAuthOrigin()},
	})
	if err != nil {
		fake.Close()
		b.Fatal(err)
	}
	w.app = app
	return w
}

// checkEachRefreshedOnce fails unless the fake refreshed every portal exactly once and the
// store holds each portal's new pair.
func (w *world) checkEachRefreshedOnce(b *testing.B) {
	b.Helper()
	twice, never, unsaved := 0, 0, 0
	for _, p := range w.portals {
		switch n := p.Refreshes(); {
		case n == 0:
			never++
		case n > 1:
			twice++
		}
		inst, err := w.store.TokenStore.Load(context.Background(), p.MemberID())
		if err != nil || inst.RefreshToken != p.Tokens().RefreshToken {
			unsaved++
		}
	}
	if twice+never+unsaved > 0 || w.fake.Refreshes() != len(w.portals) {
		b.Fatalf("of %d portals: %d refreshed more than once, %d never, %d without their new pair stored; the fake saw %d refreshes",
			len(w.portals), twice, never, unsaved, w.fake.Refreshes())
	}
}

func (w *world) close() {
	_ = w.app.Close()
	w.fake.Close()
}

// countingStore counts the reads of the store it wraps.
type countingStore struct {
	b24oauth.TokenStore
	loads, updates atomic.Int64
}

func (s *countingStore) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	s.loads.Add(1)
	return s.TokenStore.Load(ctx, memberID)
}

func (s *countingStore) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	s.updates.Add(1)
	return s.TokenStore.Update(ctx, memberID, fn)
}

func (s *countingStore) List(ctx context.Context) iter.Seq2[string, error] {
	return s.TokenStore.(b24oauth.Lister).List(ctx)
}
