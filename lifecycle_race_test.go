package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Lifecycle events that race, through the handlers over real HTTP against the fake: two first
// installs of one portal, and an uninstall racing a reinstall (issue 8, "Lifecycle events that
// race resolve consistently").

// raceStoreCases are the stores the race tests run on: the two of this package; a store of a
// user's without Create and DeleteIf, which the App sees as it is (it then uses the fallbacks
// of CreateInstallation and DeleteInstallationIf itself); and the same store behind a wrapper
// whose Create and DeleteIf are those fallbacks (as sealstore's are over such a store, and the
// test's spyStore's always are), so that the App sees a Creator and a ConditionalDeleter.
var raceStoreCases = []struct {
	name  string
	store func(t *testing.T) b24oauth.TokenStore
	opts  []func(*b24oauth.AppConfig) // for raceEnv, after the store
}{
	{name: "memory", store: func(*testing.T) b24oauth.TokenStore { return b24oauth.NewMemoryStore() }},
	{name: "file", store: func(t *testing.T) b24oauth.TokenStore { return newFileStore(t, t.TempDir()) }},
	{name: "store without Create and DeleteIf", store: plainMemoryStore, opts: []func(*b24oauth.AppConfig){hideOptionalMethods}},
	{name: "wrapper with the fallbacks as Create and DeleteIf", store: plainMemoryStore},
}

func plainMemoryStore(*testing.T) b24oauth.TokenStore { return plainStore{b24oauth.NewMemoryStore()} }

// hideOptionalMethods makes the App see its store (the test's spyStore) as a plain TokenStore.
func hideOptionalMethods(cfg *b24oauth.AppConfig) { cfg.Store = plainStore{cfg.Store} }

// rendezvousStore makes the first installs of a portal meet: a Create waits until parties of them
// have come (or a bound passed), so that every one of them has found the member_id absent and
// goes on to store a first install while none is stored yet. It is the window of a first
// install, hit every time. Create and DeleteIf then go to the inner store as the App's would.
// (The meeting is at Create, not at the Update that found the member absent: the App holds a
// lock of the process around that Update, which a party waiting there would hold too.)
type rendezvousStore struct {
	b24oauth.TokenStore
	parties int

	mu      sync.Mutex
	meeting map[string]*meeting
}

type meeting struct {
	arrived int
	all     chan struct{}
}

func newRendezvousStore(inner b24oauth.TokenStore, parties int) *rendezvousStore {
	return &rendezvousStore{TokenStore: inner, parties: parties, meeting: map[string]*meeting{}}
}

func (s *rendezvousStore) meet(memberID string) {
	s.mu.Lock()
	m := s.meeting[memberID]
	if m == nil {
		m = &meeting{all: make(chan struct{})}
		s.meeting[memberID] = m
	}
	if m.arrived++; m.arrived == s.parties {
		close(m.all)
	}
	s.mu.Unlock()
	// A bound for a party that never comes (its request failed): the test then fails on it.
	select {
	case <-m.all:
	case <-time.After(5 * time.Second):
	}
}

func (s *rendezvousStore) Create(ctx context.Context, inst b24oauth.Installation) error {
	s.meet(inst.MemberID)
	return b24oauth.CreateInstallation(ctx, s.TokenStore, inst)
}

func (s *rendezvousStore) DeleteIf(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) error) error {
	return b24oauth.DeleteInstallationIf(ctx, s.TokenStore, memberID, fn)
}

// kindRecorder counts the kinds OnInstall reports, per member_id, and checks that each runs
// after a write (the hookRecorder's stricter check, that the store holds what the hook
// reports, does not hold for racing events: the other one may have written since).
type kindRecorder struct {
	t     *testing.T
	store b24oauth.TokenStore

	mu    sync.Mutex
	kinds map[string][]b24oauth.InstallKind
}

// attach replaces cfg's OnInstall.
func (k *kindRecorder) attach(cfg *b24oauth.AppConfig) {
	k.kinds = map[string][]b24oauth.InstallKind{}
	cfg.OnInstall = func(ctx context.Context, inst b24oauth.Installation) {
		if _, err := k.store.Load(ctx, inst.MemberID); err != nil {
			k.t.Errorf("OnInstall(%s) ran before the write: Load: %v", inst.MemberID, err)
		}
		k.mu.Lock()
		k.kinds[inst.MemberID] = append(k.kinds[inst.MemberID], b24oauth.InstallKindFrom(ctx))
		k.mu.Unlock()
	}
}

func (k *kindRecorder) of(memberID string) []b24oauth.InstallKind {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]b24oauth.InstallKind(nil), k.kinds[memberID]...)
}

// raceEnv is an App over store with the fake and the App on one manual clock, and verification
// limits out of the way (the tests send many genuine events on purpose).
func raceEnv(t *testing.T, store b24oauth.TokenStore, opts ...func(*b24oauth.AppConfig)) (*appEnv, *b24test.Clock) {
	t.Helper()
	clock := b24test.NewClock(time.Now().UTC().Truncate(time.Second))
	fake := newFake(t, b24test.WithClock(clock.Now))
	env := newAppEnv(t, fake, store, opts...)
	b24oauth.SetAppClock(env.app, clock.Now)
	b24oauth.SetVerifyLimits(env.app, 100, time.Millisecond, 1e6)
	return env, clock
}

// postAll posts the events at once and returns their statuses, in order.
func (e *appEnv) postAll(path []string, evs ...b24test.Event) []int {
	e.t.Helper()
	codes := make([]int, len(evs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, ev := range evs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := ev.Post(context.Background(), e.url+path[i])
			if err != nil {
				e.t.Errorf("POST %s: %v", path[i], err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	return codes
}

// The ONAPPINSTALL event and the install page POST of one new portal arrive together, 100
// times, each time both past the store's "not installed" before either writes. One installation
// results, holding the newer pair (the event's: the page's was issued a minute earlier) and the
// application token (which this page, as older ones do, lacks), and OnInstall reports one new
// install. Before Create, the last write won: half the rounds stored the page's older pair
// without the application token.
func TestFirstInstallsRace(t *testing.T) {
	for _, sc := range raceStoreCases {
		t.Run(sc.name, func(t *testing.T) {
			store := sc.store(t)
			kinds := kindRecorder{t: t, store: store}
			env, clock := raceEnv(t, newRendezvousStore(store, 2), append([]func(*b24oauth.AppConfig){kinds.attach}, sc.opts...)...)
			const rounds = 100
			for round := range rounds {
				p := env.fake.AddPortal()
				page := p.InstallPage()
				page.Form.Del("APPLICATION_TOKEN")
				clock.Advance(time.Minute)
				event := p.InstallEvent()
				codes := env.postAll([]string{"/install", "/install"}, page, event)
				if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
					t.Fatalf("round %d: install page %d, install event %d; want 200 for both", round, codes[0], codes[1])
				}
				got := env.load(p.MemberID())
				if pairOf(got) != fakePair(p) {
					t.Errorf("round %d: the stored pair is not the newer one (the event's, the fake's current one)", round)
				}
				if got.ApplicationToken != p.ApplicationToken() {
					t.Errorf("round %d: the stored installation has lost the application token", round)
				}
				if k := env.kinds(&kinds, p.MemberID()); k[b24oauth.InstallNew] != 1 {
					t.Errorf("round %d: OnInstall reported %v; want exactly one new install", round, kinds.of(p.MemberID()))
				}
				if t.Failed() {
					t.FailNow()
				}
			}
		})
	}
}

// kinds counts the kinds OnInstall reported for memberID.
func (e *appEnv) kinds(k *kindRecorder, memberID string) map[b24oauth.InstallKind]int {
	n := map[b24oauth.InstallKind]int{}
	for _, kind := range k.of(memberID) {
		n[kind]++
	}
	return n
}

// roundGate holds the first Load that passes it (the uninstall handler's) until released.
type roundGate struct {
	entered, release chan struct{}
}

// gateLoads makes the first Load after each arm wait at the gate.
func gateLoads(t *testing.T, env *appEnv) (arm func() *roundGate) {
	var current atomic.Pointer[roundGate]
	env.store.mu.Lock()
	env.store.loadGate = func() {
		if g := current.Swap(nil); g != nil {
			close(g.entered)
			<-g.release
		}
	}
	env.store.mu.Unlock()
	return func() *roundGate {
		g := &roundGate{entered: make(chan struct{}), release: make(chan struct{})}
		current.Store(g)
		return g
	}
}

// startUninstall posts ev to /uninstall in the background and waits until the handler has
// loaded the installation and stands at g; the returned channel gives its status.
func (e *appEnv) startUninstall(t *testing.T, g *roundGate, ev b24test.Event) <-chan int {
	t.Helper()
	done := make(chan int, 1)
	go func() {
		resp, err := ev.Post(context.Background(), e.url+"/uninstall")
		if err != nil {
			t.Errorf("POST /uninstall: %v", err)
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case <-g.entered:
	case code := <-done:
		t.Fatalf("the uninstall answered %d before loading the installation", code)
	case <-time.After(10 * time.Second):
		t.Fatal("the uninstall did not load the installation")
	}
	return done
}

// An uninstall is checked (its application token, the stored tokens at the OAuth server) and
// meanwhile the app is installed again: the reinstall is stored while the uninstall stands
// between its Load and its delete. The uninstall must not delete the reinstall, which stays
// usable. Before DeleteIf, the uninstall deleted it every time.
func TestUninstallRacingReinstall(t *testing.T) {
	for _, sc := range raceStoreCases {
		t.Run(sc.name, func(t *testing.T) {
			env, _ := raceEnv(t, sc.store(t), sc.opts...)
			arm := gateLoads(t, env)
			const rounds = 20
			for round := range rounds {
				p := env.install()
				uninstall := p.UninstallEvent(false)
				reinstall := p.InstallEvent() // on an uninstalled portal: a new application token
				g := arm()
				done := env.startUninstall(t, g, uninstall)
				if code, body := env.post("/install", reinstall); code != http.StatusOK {
					t.Fatalf("round %d: reinstall: %d %s", round, code, body)
				}
				close(g.release)
				if code := <-done; code != http.StatusForbidden {
					t.Errorf("round %d: the uninstall of the replaced installation answered %d; want 403", round, code)
				}
				got, err := env.store.TokenStore.Load(context.Background(), p.MemberID())
				if err != nil {
					t.Fatalf("round %d: the reinstall is gone: %v", round, err)
				}
				if got.ApplicationToken != p.ApplicationToken() || pairOf(got) != fakePair(p) {
					t.Fatalf("round %d: the stored installation is not the reinstall", round)
				}
			}
			if _, uninstalls, _ := env.hooks.counts(); uninstalls != 0 {
				t.Errorf("OnUninstall ran %d times; want 0", uninstalls)
			}
			mustCallProfile(t, env.client(env.fake.Portals()[rounds-1].MemberID()))
		})
	}
}

// The same race, without the gate: the uninstall and the reinstall are posted at once, 50
// times. Whatever the order, the reinstall survives; OnUninstall runs exactly for the
// uninstalls that answered 200 (they deleted the old installation first).
func TestUninstallRacingReinstallFree(t *testing.T) {
	for _, sc := range raceStoreCases {
		t.Run(sc.name, func(t *testing.T) {
			// The hookRecorder checks that the portal is gone when OnUninstall runs; here the
			// reinstall may already be stored again by then.
			var uninstalls atomic.Int64
			env, _ := raceEnv(t, sc.store(t), append([]func(*b24oauth.AppConfig){func(cfg *b24oauth.AppConfig) {
				cfg.OnUninstall = func(context.Context, b24oauth.Installation, bool) { uninstalls.Add(1) }
			}}, sc.opts...)...)
			const rounds = 50
			deleted := 0
			for round := range rounds {
				p := env.install()
				uninstall := p.UninstallEvent(false)
				reinstall := p.InstallEvent()
				codes := env.postAll([]string{"/uninstall", "/install"}, uninstall, reinstall)
				if codes[1] != http.StatusOK {
					t.Fatalf("round %d: reinstall answered %d", round, codes[1])
				}
				switch codes[0] {
				case http.StatusOK:
					deleted++
				case http.StatusForbidden:
				default:
					t.Fatalf("round %d: uninstall answered %d; want 200 or 403", round, codes[0])
				}
				got, err := env.store.TokenStore.Load(context.Background(), p.MemberID())
				if err != nil {
					t.Fatalf("round %d: the reinstall is gone (uninstall answered %d): %v", round, codes[0], err)
				}
				if got.ApplicationToken != p.ApplicationToken() || pairOf(got) != fakePair(p) {
					t.Fatalf("round %d: the stored installation is not the reinstall", round)
				}
			}
			if n := uninstalls.Load(); n != int64(deleted) {
				t.Errorf("OnUninstall ran %d times; %d uninstalls answered 200", n, deleted)
			}
			t.Logf("%d of %d uninstalls came first", deleted, rounds)
		})
	}
}

// The stored pair changes (same application token) between the uninstall's check at the OAuth
// server and its delete: the uninstall checks the new pair once more. A new pair that works
// means the portal is in use: 403, and it stays. A new pair that is dead too: deleted (200),
// and OnUninstall gets the record as deleted.
func TestUninstallRechecksChangedPair(t *testing.T) {
	for _, alive := range []bool{true, false} {
		name := map[bool]string{true: "new pair alive", false: "new pair dead"}[alive]
		t.Run(name, func(t *testing.T) {
			env, _ := raceEnv(t, b24oauth.NewMemoryStore())
			arm := gateLoads(t, env)
			p := env.install()
			uninstall := uninstallEvent(env.fake, p, p.ApplicationToken(), false)
			p.ExpireAccessToken() // the stored pair is dead at the OAuth server...
			p.ExpireRefreshToken()
			next := p.IssueTokens() // ...and a new one is issued
			if !alive {
				p.ExpireAccessToken()
				p.ExpireRefreshToken()
			}
			g := arm()
			done := env.startUninstall(t, g, uninstall)
			err := env.store.TokenStore.Update(context.Background(), p.MemberID(), func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				cur.AccessToken, cur.RefreshToken, cur.Expires = next.AccessToken, next.RefreshToken, next.Expires.Unix()
				return cur, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			close(g.release)
			code := <-done
			_, lerr := env.store.TokenStore.Load(context.Background(), p.MemberID())
			_, uninstalls, _ := env.hooks.counts()
			if alive {
				if code != http.StatusForbidden || lerr != nil || uninstalls != 0 {
					t.Errorf("uninstall: %d, Load: %v, OnUninstall ran %d times; want 403, the installation kept, no OnUninstall", code, lerr, uninstalls)
				}
				return
			}
			if code != http.StatusOK || !errors.Is(lerr, b24oauth.ErrNotInstalled) || uninstalls != 1 {
				t.Fatalf("uninstall: %d, Load: %v, OnUninstall ran %d times; want 200, the installation deleted, one OnUninstall", code, lerr, uninstalls)
			}
			env.hooks.mu.Lock()
			defer env.hooks.mu.Unlock()
			if got := env.hooks.uninstalls[0].Inst; got.RefreshToken != next.RefreshToken {
				t.Error("OnUninstall did not get the installation as it was deleted")
			}
		})
	}
}

// deleteGateStore is a plain TokenStore whose next Delete, once armed, waits at the gate: the
// uninstall's fallback delete (DeleteInstallationIf) then stands between its check and its
// delete. writes counts the Updates that wrote.
type deleteGateStore struct {
	b24oauth.TokenStore
	gate   atomic.Pointer[roundGate]
	writes atomic.Int64
}

func (s *deleteGateStore) Delete(ctx context.Context, memberID string) error {
	if g := s.gate.Swap(nil); g != nil {
		close(g.entered)
		<-g.release
	}
	return s.TokenStore.Delete(ctx, memberID)
}

func (s *deleteGateStore) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	err := s.TokenStore.Update(ctx, memberID, fn)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

// The App's store is a wrapper whose DeleteIf is DeleteInstallationIf's fallback over a plain
// store (as sealstore over a store of a user's): the App sees a ConditionalDeleter, but the
// delete is a check and then a Delete. A reinstall arriving while the uninstall stands between
// the two must not be written into the record the Delete removes: it waits for the delete and
// is then stored as a new install. Before the App's install writes took the fallback's lock
// whatever the store, the reinstall was written and deleted (TestUninstallRacingReinstallFree
// lost it in about one run of 8).
func TestUninstallDeleteDoesNotTakeAReinstallWithIt(t *testing.T) {
	store := &deleteGateStore{TokenStore: b24oauth.NewMemoryStore()}
	// The spyStore's Create and DeleteIf are the fallbacks over store. OnUninstall is counted
	// only: the hookRecorder's check that the portal is gone when it runs does not hold here,
	// where the reinstall is stored right after the delete.
	var uninstalls atomic.Int64
	env, _ := raceEnv(t, store, func(cfg *b24oauth.AppConfig) {
		cfg.OnUninstall = func(context.Context, b24oauth.Installation, bool) { uninstalls.Add(1) }
	})
	const rounds = 5
	for round := range rounds {
		p := env.install()
		uninstall := p.UninstallEvent(false)
		reinstall := p.InstallEvent()
		g := &roundGate{entered: make(chan struct{}), release: make(chan struct{})}
		store.gate.Store(g)
		uninstalled := make(chan []int, 1)
		go func() { uninstalled <- env.postAll([]string{"/uninstall"}, uninstall) }()
		select {
		case <-g.entered: // the uninstall's check passed; its Delete waits
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the uninstall did not reach its delete", round)
		}
		before := store.writes.Load()
		reinstalled := make(chan []int, 1)
		go func() { reinstalled <- env.postAll([]string{"/install"}, reinstall) }()
		// Give the reinstall time to be written if it is not held back (it answers once it is).
		var early bool
		select {
		case <-reinstalled:
			early = true
		case <-time.After(500 * time.Millisecond):
		}
		if early || store.writes.Load() != before {
			t.Errorf("round %d: the reinstall was written while the uninstall stood between its check and its delete", round)
		}
		close(g.release)
		if codes := <-uninstalled; codes[0] != http.StatusOK {
			t.Fatalf("round %d: uninstall answered %d, want 200 (its check passed)", round, codes[0])
		}
		if !early {
			if codes := <-reinstalled; codes[0] != http.StatusOK {
				t.Fatalf("round %d: reinstall answered %d", round, codes[0])
			}
		}
		got, err := env.store.TokenStore.Load(context.Background(), p.MemberID())
		if err != nil {
			t.Fatalf("round %d: the reinstall is gone: %v", round, err)
		}
		if got.ApplicationToken != p.ApplicationToken() || pairOf(got) != fakePair(p) {
			t.Fatalf("round %d: the stored installation is not the reinstall", round)
		}
	}
	if n := uninstalls.Load(); n != rounds {
		t.Errorf("OnUninstall ran %d times, want %d", n, rounds)
	}
}
