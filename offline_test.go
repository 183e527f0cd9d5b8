package b24oauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// offlineBindings binds ONCRMDEALADD and ONCRMDEALUPDATE offline.
func offlineBindings(string) []b24oauth.EventBinding {
	return []b24oauth.EventBinding{{Event: "ONCRMDEALADD"}, {Event: "ONCRMDEALUPDATE"}}
}

// dealID reads the deal ID of an offline deal event.
func dealID(t testing.TB, ev b24oauth.Event) int {
	t.Helper()
	var d struct{ FIELDS struct{ ID int } }
	if err := ev.Decode(&d); err != nil {
		t.Fatalf("offline event data %s: %v", ev.Data, err)
	}
	return d.FIELDS.ID
}

func TestPullOfflineEvents(t *testing.T) {
	clk := b24test.NewClock(time.Now())
	fake := newFake(t, b24test.WithClock(clk.Now))
	env := newEventEnv(t, fake, nil, offlineBindings)
	p := env.install()
	ctx := context.Background()
	for i := 0; i < 120; i++ {
		p.AddDeal(1, map[string]string{"TITLE": strconv.Itoa(i)})
		clk.Advance(time.Second)
	}
	p.UpdateDeal(1, 1, nil) // a later change of deal 1: its ONCRMDEALUPDATE comes last
	env.rec.setFail(func(ev b24oauth.Event) error {
		if ev.Name == "ONCRMDEALADD" && dealID(t, ev) == 7 {
			return fmt.Errorf("deal 7: %w", errRefused)
		}
		return nil
	})
	batches := p.Requests("batch")
	n, err := env.app.PullOfflineEvents(ctx, p.MemberID(), env.rec.handle)
	if n != 120 || !errors.Is(err, errRefused) {
		t.Fatalf("PullOfflineEvents = %d, %v; want 120 and the refusal", n, err)
	}
	got := env.rec.got()
	for i, ev := range got[:119] {
		want := i + 1
		if want >= 7 {
			want++
		}
		if ev.Name != "ONCRMDEALADD" || dealID(t, ev) != want || !ev.Offline || ev.MemberID != p.MemberID() ||
			ev.Domain != p.Domain() || ev.UserID != 1 || ev.ID == "" || len(ev.MessageID) != 32 || ev.Time.IsZero() {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if last := got[119]; last.Name != "ONCRMDEALUPDATE" || dealID(t, last) != 1 {
		t.Fatalf("last event: %+v", last)
	}
	// 3 pages, each one batch request (the clear of a page travels with the next get).
	if b := p.Requests("batch") - batches; b != 4 {
		t.Errorf("%d batch requests for 3 pages, want 4", b)
	}
	// Only the refused event is left: never cleared, marked as an error.
	q := p.OfflineEvents()
	if len(q) != 1 || !q[0].Error || q[0].ProcessID != "" || string(q[0].Data) != `{"FIELDS":{"ID":7}}` {
		t.Fatalf("queue after the pull: %+v", q)
	}
	if n, err := env.app.PullOfflineEvents(ctx, p.MemberID(), env.rec.handle); n != 0 || err != nil {
		t.Fatalf("second pull = %d, %v", n, err)
	}
	if _, err := env.app.PullOfflineEvents(ctx, randomHex(16), env.rec.handle); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Fatalf("unknown portal: %v", err)
	}
}

// Three replicas pulling one portal at once hand out every event exactly once.
func TestPullOfflineEventsConcurrently(t *testing.T) {
	fake := newFake(t)
	store := b24oauth.NewMemoryStore()
	env := newEventEnv(t, fake, store, offlineBindings)
	p := env.install()
	const n = 600
	for i := 1; i <= n; i++ {
		p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": i}})
	}
	apps := []*b24oauth.App{env.app, newAppEnv(t, fake, store).app, newAppEnv(t, fake, store).app}
	var mu sync.Mutex
	seen := map[int]int{}
	var wg sync.WaitGroup
	errs := make([]error, len(apps))
	counts := make([]int, len(apps))
	for i, a := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = a.PullOfflineEvents(context.Background(), p.MemberID(), func(_ context.Context, ev b24oauth.Event, _ *b24oauth.B24OAuth) error {
				mu.Lock()
				seen[dealID(t, ev)]++
				mu.Unlock()
				return nil
			})
		}()
	}
	wg.Wait()
	total := 0
	for i := range apps {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		total += counts[i]
	}
	if total != n || len(seen) != n {
		t.Fatalf("handled %d, %d distinct; want %d", total, len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("deal %d handed out %d times", id, c)
		}
	}
	if q := p.OfflineEvents(); len(q) != 0 {
		t.Fatalf("%d events left in the queue", len(q))
	}
	t.Logf("events per replica: %v", counts)
}

// A pull whose context ends mid-page settles what was handled; the next pull takes the rest of
// that page first.
func TestPullOfflineEventsInterrupted(t *testing.T) {
	env := newEventEnv(t, nil, nil, offlineBindings)
	p := env.install()
	for i := 1; i <= 60; i++ {
		p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": i}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var handled []int
	fn := func(_ context.Context, ev b24oauth.Event, _ *b24oauth.B24OAuth) error {
		handled = append(handled, dealID(t, ev))
		if len(handled) == 10 {
			cancel()
		}
		return nil
	}
	n, err := env.app.PullOfflineEvents(ctx, p.MemberID(), fn)
	if n != 10 || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pull = %d, %v", n, err)
	}
	q := p.OfflineEvents()
	reserved := 0
	for _, e := range q {
		if e.ProcessID != "" {
			reserved++
		}
	}
	if len(q) != 50 || reserved != 40 {
		t.Fatalf("queue after the interrupted pull: %d events, %d reserved; want 50 and 40", len(q), reserved)
	}
	if left := b24oauth.OfflineLeftovers(env.app, p.MemberID()); len(left) != 1 {
		t.Fatalf("leftovers: %v", left)
	}
	n, err = env.app.PullOfflineEvents(context.Background(), p.MemberID(), fn)
	if n != 50 || err != nil {
		t.Fatalf("next pull = %d, %v", n, err)
	}
	for i, id := range handled {
		if id != i+1 {
			t.Fatalf("handled %v, want 1..60 in order", handled)
		}
	}
	if len(handled) != 60 || len(p.OfflineEvents()) != 0 {
		t.Fatalf("handled %d, %d left", len(handled), len(p.OfflineEvents()))
	}
}

// The loop pulls a portal when its ONOFFLINEEVENT arrives through EventHandler, and every
// portal on its interval.
func TestOfflineLoop(t *testing.T) {
	store := newFileStore(t, t.TempDir())
	env := newEventEnv(t, nil, store, func(url string) []b24oauth.EventBinding {
		return []b24oauth.EventBinding{{Event: "ONCRMDEALADD"}, {Event: "ONOFFLINEEVENT", Handler: url}}
	})
	quiet := env.install()
	quiet.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 99}})
	env.rec.seen = make(chan b24oauth.Event, 10)
	loop, err := env.app.NewOfflineLoop(env.rec.handle, b24oauth.OfflineLoopOptions{
		Interval: time.Hour, Concurrency: 2, Members: store.List,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.serve(env.app.EventHandler(loop.Signals(nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- loop.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	wait := func(what string) b24oauth.Event {
		t.Helper()
		select {
		case ev := <-env.rec.seen:
			return ev
		case <-time.After(time.Minute):
			t.Fatalf("%s never reached fn", what)
			return b24oauth.Event{}
		}
	}
	if ev := wait("the first pass"); ev.MemberID != quiet.MemberID() || dealID(t, ev) != 99 {
		t.Fatalf("first pass: %+v", ev)
	}
	p := env.install()
	id := p.AddDeal(1, nil)
	if ev := wait("the signalled event"); ev.MemberID != p.MemberID() || dealID(t, ev) != id || !ev.Offline {
		t.Fatalf("signalled pull: %+v", ev)
	}
	waitDelivered(t, env.fake)
	if ds := p.Deliveries(); len(ds) != 1 || ds[0].Event != "ONOFFLINEEVENT" || ds[0].Status != http.StatusOK {
		t.Fatalf("signal deliveries: %+v", ds)
	}
}

func TestNewOfflineLoopNeedsMembers(t *testing.T) {
	app, err := b24oauth.NewApp(appConfig(newFake(t), notALister{b24oauth.NewMemoryStore()}))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	fn := func(context.Context, b24oauth.Event, *b24oauth.B24OAuth) error { return nil }
	if _, err := app.NewOfflineLoop(fn, b24oauth.OfflineLoopOptions{}); !errors.Is(err, b24oauth.ErrNotLister) {
		t.Fatalf("a loop over a store that cannot list its portals: %v", err)
	}
	if _, err := app.NewOfflineLoop(fn, b24oauth.OfflineLoopOptions{Interval: -1}); err != nil {
		t.Fatalf("a loop on signals only: %v", err)
	}
}

// notALister hides a store's List.
type notALister struct{ b24oauth.TokenStore }

// event.offline.get reserves (clear=0) or deletes (clear=1) what it returns: a call whose fate
// is unknown is never re-sent, whatever its name says.
func TestOfflineGetNotResent(t *testing.T) {
	srv, hits := brokenServer(t)
	host := strings.TrimPrefix(srv.URL, "https://")
	p := testParams()
	p.Domain, p.ClientEndpoint = host, srv.URL+"/rest/"
	rp := b24oauth.DefaultRestrictionParams()
	rp.RetryDelay = time.Millisecond
	c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(srv.Client()), b24oauth.WithRestrictionParams(rp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(context.Background(), "event.offline.get", map[string]any{"clear": 0}); err == nil {
		t.Fatal("Call succeeded against a broken server")
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("event.offline.get was sent %d times, want 1", got)
	}
	hits.Store(0)
	if _, err := c.Batch(context.Background(), []b24oauth.BatchCommand{{Method: "event.offline.get"}}); err == nil {
		t.Fatal("Batch succeeded against a broken server")
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("a batch of event.offline.get was sent %d times, want 1", got)
	}
}
