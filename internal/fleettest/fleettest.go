// Package fleettest checks, for one TokenStore, the guarantees a fleet of replicas relies on
// (issue 4, "Across processes: exactly one refresh"): several OS processes, each with many
// goroutines, call one portal of a b24test fake through an App on the shared store.
//
// The processes are the test binary itself, re-executed with -test.run naming the calling test
// and an environment that makes Run play a child's part instead of the parent's. The parent
// starts the fake, installs a portal in the store, starts the children, releases them at once
// and checks what the fake and the store saw. Three scenarios run as subtests:
//
//   - OneRefresh: the portal's access token has just expired; every call succeeds, the fake
//     sees exactly one refresh, and the store ends with the pair the fake considers current.
//   - KilledLockHolder: a process holding the member's store lock is killed (SIGKILL) while
//     every goroutine of the others waits behind it; they go on once the store releases the
//     lock (the kernel for a flock, the server for a transaction, the lease for Redis), with
//     the same outcome as OneRefresh.
//   - CrashWindow: a process marks a refresh in flight, spends the refresh token at the OAuth
//     server, and is killed before it writes the new pair. Once the mark is stale, the fleet's
//     calls fail with a *b24oauth.RefreshTokenError (invalid_grant), the installation is
//     StateRevoked, OnRevoked fires exactly once in the whole fleet, and the fake sees exactly
//     one more token request: later calls fail fast.
//
// Every wait is bounded by a deadline, and every child is killed when the test ends.
package fleettest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Config describes the store under test.
type Config struct {
	// Setup runs in the parent only, once per scenario: it prepares a fresh, empty shared
	// store (a directory, a table, a key prefix), registers its clean-up with t.Cleanup, and
	// returns the string that names it. Every process receives that string in Open.
	Setup func(t *testing.T) string
	// Open opens the shared store named by arg, in the parent or in a child process; close
	// releases what Open acquired.
	Open func(arg string) (store b24oauth.TokenStore, close func(), err error)
	// Processes is the number of child processes that call the portal; 0: 4.
	Processes int
	// Goroutines is the number of goroutines of each child that call the portal; 0: 50.
	Goroutines int
	// StaleRefreshAfter is the AppConfig.StaleRefreshAfter of the children in CrashWindow;
	// 0: 100ms. The parent waits until the crashed process's mark is older than twice it.
	StaleRefreshAfter time.Duration
	// Deadline bounds each scenario; a scenario that has not finished by then fails (it is a
	// bound for a hung test, not a performance target); 0: 90s.
	Deadline time.Duration
	// HoldFor is how long, in KilledLockHolder, the holder keeps the lock once every caller
	// waits for it, before it is killed; 0: no longer than that. A store that renews a lease
	// while the lock is held renews it meanwhile if HoldFor is longer than its renewal
	// interval, so that the callers wait for a whole lease after the kill, counted from a
	// moment after they started waiting: the worst case for their refresh's deadline.
	HoldFor time.Duration
	// Scenarios names the scenarios to run (OneRefresh, KilledLockHolder, CrashWindow);
	// nil: all of them.
	Scenarios []string
}

// Environment of a child process.
const (
	envRole         = "B24OAUTH_FLEET_CHILD" // the child's part: call, hold or crash
	envURL          = "B24OAUTH_FLEET_URL"
	envClientID     = "B24OAUTH_FLEET_CLIENT_ID"
	envClientSecret = "B24OAUTH_FLEET_CLIENT_SECRET"
	envOrigin       = "B24OAUTH_FLEET_OAUTH_ORIGIN"
	envMember       = "B24OAUTH_FLEET_MEMBER"
	envStore        = "B24OAUTH_FLEET_STORE"
	envGoroutines   = "B24OAUTH_FLEET_GOROUTINES"
	envStale        = "B24OAUTH_FLEET_STALE"
	envExpect       = "B24OAUTH_FLEET_EXPECT" // ok or revoked
)

// linePrefix starts every line of the protocol a child speaks on its stdout.
const linePrefix = "fleet: "

// rounds is how many times each goroutine of a calling child calls the portal: the first
// round races for the refresh, the second checks what the first left behind.
const rounds = 2

// Run runs the scenarios as subtests of t. In a child process (the test binary re-executed by
// Run) it plays that child's part instead and returns when the part is done.
func Run(t *testing.T, cfg Config) {
	if role := os.Getenv(envRole); role != "" {
		runChild(t, cfg, role)
		return
	}
	if cfg.Setup == nil || cfg.Open == nil {
		t.Fatal("fleettest: Config needs Setup and Open")
	}
	if cfg.Processes <= 0 {
		cfg.Processes = 4
	}
	if cfg.Goroutines <= 0 {
		cfg.Goroutines = 50
	}
	if cfg.StaleRefreshAfter <= 0 {
		cfg.StaleRefreshAfter = 100 * time.Millisecond
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 90 * time.Second
	}
	pattern := runPattern(t.Name())
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *fleet)
	}{
		{"OneRefresh", oneRefresh},
		{"KilledLockHolder", killedLockHolder},
		{"CrashWindow", crashWindow},
	} {
		if cfg.Scenarios != nil && !slices.Contains(cfg.Scenarios, sc.name) {
			continue
		}
		t.Run(sc.name, func(t *testing.T) { sc.run(t, newFleet(t, cfg, pattern)) })
	}
}

// runPattern returns the -test.run pattern that selects exactly the test named name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// fleet is one scenario's world: a fake with one portal, installed in a fresh shared store.
type fleet struct {
	cfg     Config
	pattern string
	ctx     context.Context // ends at the scenario's deadline
	fake    *b24test.Server
	portal  *b24test.Portal
	arg     string
	store   b24oauth.TokenStore
}

func newFleet(t *testing.T, cfg Config, pattern string) *fleet {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Deadline)
	t.Cleanup(cancel)
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	p := fake.AddPortal()
	arg := cfg.Setup(t)
	store, closeStore, err := cfg.Open(arg)
	if err != nil {
		t.Fatalf("fleettest: opening the store in the parent: %v", err)
	}
	t.Cleanup(closeStore)
	inst := InstallationOf(fake, p, time.Now())
	if err := store.Save(ctx, inst); err != nil {
		t.Fatalf("fleettest: installing the portal: %v", err)
	}
	return &fleet{cfg: cfg, pattern: pattern, ctx: ctx, fake: fake, portal: p, arg: arg, store: store}
}

// InstallationOf is what an install of the fake's portal p stores at now: its current pair.
func InstallationOf(fake *b24test.Server, p *b24test.Portal, now time.Time) b24oauth.Installation {
	tok := p.Tokens()
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			ApplicationToken: p.ApplicationToken(),
			UserID:           1,
			MemberID:         p.MemberID(),
			AccessToken:      tok.AccessToken,
			RefreshToken:     tok.RefreshToken,
			Expires:          tok.Expires.Unix(),
			ExpiresIn:        int64(b24test.DefaultAccessTokenTTL.Seconds()),
			Scope:            p.Scope(),
			Domain:           p.Domain(),
			ClientEndpoint:   p.ClientEndpoint(),
			ServerEndpoint:   fake.OAuthServerEndpoint(),
			Status:           b24oauth.AppStatus(p.Status()),
		},
		State:       b24oauth.StateActive,
		InstalledAt: now.UTC(),
		UpdatedAt:   now.UTC(),
	}
}

// oneRefresh: just after the access token expired, every goroutine of every process calls.
func oneRefresh(t *testing.T, f *fleet) {
	f.portal.ExpireAccessToken()
	callers := f.startCallers(t, "ok", 0)
	start := time.Now()
	f.release(t, callers)
	res := f.results(t, callers)
	wall := time.Since(start)
	f.checkOneRefresh(t, res)
	t.Logf("%d processes × %d goroutines × %d calls after expiry: %d refresh(es) at the fake, %d token request(s), wall %v",
		f.cfg.Processes, f.cfg.Goroutines, rounds, f.portal.Refreshes(), f.fake.TokenRequests(), wall.Round(time.Millisecond))
}

// killedLockHolder: a process holds the member's store lock and is killed while every caller
// waits for it.
func killedLockHolder(t *testing.T, f *fleet) {
	f.portal.ExpireAccessToken()
	holder := f.start(t, "hold", "hold", nil)
	holder.expect(t, f.ctx, "holding")
	callers := f.startCallers(t, "ok", 0)
	start := time.Now()
	f.release(t, callers)
	// Each goroutine's first call is refused (401) before it asks for the refresh, which waits
	// for the lock: once the fake has seen them all, every caller is at or behind the lock.
	want := f.cfg.Processes * f.cfg.Goroutines
	f.waitFor(t, callers, fmt.Sprintf("%d refused calls", want), func() bool { return f.portal.Requests("profile") >= want })
	if n := f.fake.TokenRequests(); n != 0 {
		t.Fatalf("%d token request(s) while another process held the lock; want 0", n)
	}
	if f.cfg.HoldFor > 0 {
		time.Sleep(f.cfg.HoldFor) // a wait, not an assertion: the holder renews its lease meanwhile
	}
	killed := time.Now()
	holder.kill(t, f.ctx)
	res := f.results(t, callers)
	f.checkOneRefresh(t, res)
	t.Logf("lock holder killed; %d processes × %d goroutines went on: %d refresh(es), %v from the kill to the last call, wall %v",
		f.cfg.Processes, f.cfg.Goroutines, f.portal.Refreshes(), time.Since(killed).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// crashWindow: a process dies between the OAuth server's answer and the store write.
func crashWindow(t *testing.T, f *fleet) {
	spent := f.portal.Tokens().RefreshToken
	crasher := f.start(t, "crash", "crash", nil)
	crasher.expect(t, f.ctx, "spent")
	crasher.kill(t, f.ctx)
	if f.portal.Refreshes() != 1 || f.portal.Tokens().RefreshToken == spent {
		t.Fatalf("after the crashed refresh: fake saw %d refresh(es); want 1 that rotated the pair", f.portal.Refreshes())
	}
	inst, err := f.store.Load(f.ctx, f.portal.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if inst.RefreshToken != spent || inst.RefreshingSince.IsZero() {
		t.Fatalf("after the crash the store holds the spent token: %t, a refresh mark: %v; want true and a mark",
			inst.RefreshToken == spent, inst.RefreshingSince)
	}
	// Let the mark go stale. A wait, not an assertion: it only makes the mark old enough.
	if d := time.Until(inst.RefreshingSince.Add(2 * f.cfg.StaleRefreshAfter)); d > 0 {
		time.Sleep(d)
	}

	requests := f.fake.TokenRequests()
	callers := f.startCallers(t, "revoked", f.cfg.StaleRefreshAfter)
	start := time.Now()
	f.release(t, callers)
	res := f.results(t, callers)
	wall := time.Since(start)
	want := f.cfg.Processes * f.cfg.Goroutines * rounds
	if res.invalidGrant != want || res.ok != 0 || res.other != 0 {
		t.Errorf("calls: %d failed with invalid_grant, %d succeeded, %d failed otherwise; want all %d invalid_grant",
			res.invalidGrant, res.ok, res.other, want)
	}
	if res.hooks != 1 {
		t.Errorf("OnRevoked fired %d time(s) across the fleet; want exactly 1", res.hooks)
	}
	if res.lostHooks != 1 {
		t.Errorf("OnRevoked's error said the refresh in flight was lost %d time(s); want 1 (the stale mark was recognized)", res.lostHooks)
	}
	fleetRequests := f.fake.TokenRequests() - requests
	if fleetRequests != 1 {
		t.Errorf("the fleet sent %d token request(s) after the crash; want exactly 1 (then fail fast)", fleetRequests)
	}
	inst, err = f.store.Load(f.ctx, f.portal.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != b24oauth.StateRevoked {
		t.Errorf("stored state = %q; want %q", inst.State, b24oauth.StateRevoked)
	}
	if !inst.RefreshingSince.IsZero() {
		t.Errorf("stored RefreshingSince = %v; want zero once the lost refresh was dealt with", inst.RefreshingSince)
	}

	// A process started now fails fast as well, without asking the OAuth server.
	requests = f.fake.TokenRequests()
	app := f.newApp(t, f.store, f.cfg.StaleRefreshAfter, nil)
	c, err := app.ClientForMember(f.ctx, f.portal.MemberID())
	if err == nil {
		_, err = c.Call(f.ctx, "profile", nil)
	}
	if rte := (*b24oauth.RefreshTokenError)(nil); !errors.As(err, &rte) || rte.Code != "invalid_grant" {
		t.Errorf("a new process's call = %v; want a *RefreshTokenError invalid_grant", err)
	}
	if n := f.fake.TokenRequests() - requests; n != 0 {
		t.Errorf("a new process's call sent %d token request(s); want 0", n)
	}
	t.Logf("crash window: %d processes × %d goroutines × %d calls: %d invalid_grant, %d token request(s), %d OnRevoked, wall %v",
		f.cfg.Processes, f.cfg.Goroutines, rounds, res.invalidGrant, fleetRequests, res.hooks, wall.Round(time.Millisecond))
}

// checkOneRefresh checks the outcome of a fleet that called after one expiry.
func (f *fleet) checkOneRefresh(t *testing.T, res results) {
	t.Helper()
	want := f.cfg.Processes * f.cfg.Goroutines * rounds
	if res.ok != want {
		t.Errorf("%d of %d calls succeeded (%d invalid_grant, %d other errors)", res.ok, want, res.invalidGrant, res.other)
	}
	if n := f.portal.Refreshes(); n != 1 {
		t.Errorf("the fake saw %d refreshes; want exactly 1", n)
	}
	if n := f.fake.TokenRequests(); n != 1 {
		t.Errorf("the fake saw %d token requests; want exactly 1", n)
	}
	if res.hooks != 0 {
		t.Errorf("OnRevoked fired %d time(s); want 0", res.hooks)
	}
	inst, err := f.store.Load(f.ctx, f.portal.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	cur := f.portal.Tokens()
	if inst.AccessToken != cur.AccessToken || inst.RefreshToken != cur.RefreshToken {
		t.Errorf("the store does not hold the fake's current pair (access token equal: %t, refresh token equal: %t)",
			inst.AccessToken == cur.AccessToken, inst.RefreshToken == cur.RefreshToken)
	}
	if inst.State != b24oauth.StateActive {
		t.Errorf("stored state = %q; want %q", inst.State, b24oauth.StateActive)
	}
	if !inst.RefreshingSince.IsZero() {
		t.Errorf("stored RefreshingSince = %v; want zero after the refresh", inst.RefreshingSince)
	}
}

// newApp returns an App of this process on store, calling the fake.
func (f *fleet) newApp(t *testing.T, store b24oauth.TokenStore, stale time.Duration, onRevoked func(context.Context, b24oauth.Installation, error)) *b24oauth.App {
	t.Helper()
	app, err := newApp(f.fake.URL(), f.fake.ClientID(), f.fake.ClientSecret(), f.fake.OAuthOrigin(), store, stale, onRevoked)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app
}

func newApp(fakeURL, clientID, secret, origin string, store b24oauth.TokenStore, stale time.Duration,
	onRevoked func(context.Context, b24oauth.Installation, error)) (*b24oauth.App, error) {
	return b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     clientID,
		ClientSecret: secret,
		Store:        store,
		HTTPClient:   b24test.ClientFor(fakeURL),
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OAuthServers: []string{origin},
		// The subject is the refresh, not the limiter: no client-side pacing.
		Restriction: &b24oauth.RestrictionParams{
			RateLimit:  b24oauth.RateLimitParams{DrainRate: -1},
			MaxRetries: 3,
			RetryDelay: 10 * time.Millisecond,
		},
		StaleRefreshAfter: stale,
		OnRevoked:         onRevoked,
	})
}

// startCallers starts the calling children and waits until each is ready.
func (f *fleet) startCallers(t *testing.T, expect string, stale time.Duration) []*child {
	t.Helper()
	env := []string{envExpect + "=" + expect}
	if stale > 0 {
		env = append(env, envStale+"="+stale.String())
	}
	callers := make([]*child, f.cfg.Processes)
	for i := range callers {
		callers[i] = f.start(t, "call", "caller "+strconv.Itoa(i), env)
	}
	for _, c := range callers {
		c.expect(t, f.ctx, "ready")
	}
	return callers
}

// release lets every caller go at once.
func (f *fleet) release(t *testing.T, callers []*child) {
	t.Helper()
	for _, c := range callers {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatalf("releasing %s: %v\n%s", c.name, err, c.output())
		}
	}
}

// waitFor polls cond until it holds, failing if a caller exits first or the deadline passes.
func (f *fleet) waitFor(t *testing.T, callers []*child, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		for _, c := range callers {
			select {
			case <-c.done:
				t.Fatalf("%s exited while waiting for %s (%v):\n%s", c.name, what, c.err, c.output())
			default:
			}
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("no %s within the deadline", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// results are the callers' outcomes, summed over the fleet.
type results struct {
	ok, invalidGrant, other int // calls
	hooks, lostHooks        int // OnRevoked runs, and those whose error says a refresh was lost
}

// results waits for every caller to exit and sums what they report.
func (f *fleet) results(t *testing.T, callers []*child) results {
	t.Helper()
	var sum results
	for _, c := range callers {
		line := c.expect(t, f.ctx, "result")
		var r results
		if _, err := fmt.Sscanf(line, "result ok=%d invalid_grant=%d other=%d hooks=%d lost=%d",
			&r.ok, &r.invalidGrant, &r.other, &r.hooks, &r.lostHooks); err != nil {
			t.Fatalf("%s reported %q: %v", c.name, line, err)
		}
		sum.ok += r.ok
		sum.invalidGrant += r.invalidGrant
		sum.other += r.other
		sum.hooks += r.hooks
		sum.lostHooks += r.lostHooks
	}
	for _, c := range callers {
		if err := c.wait(f.ctx); err != nil {
			t.Errorf("%s failed: %v\n%s", c.name, err, c.output())
		}
	}
	return sum
}

// child is one child process, seen from the parent.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string   // protocol lines, without linePrefix
	done  chan struct{} // closed once the process has exited and its output is read
	err   error         // the process's exit status, once done

	mu  sync.Mutex
	out strings.Builder // everything it wrote, for failure messages
}

// start starts a child in role, with env added to the fleet's environment.
func (f *fleet) start(t *testing.T, role, name string, env []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+f.pattern, "-test.count=1", "-test.timeout="+f.cfg.Deadline.String())
	cmd.Env = append(os.Environ(),
		envRole+"="+role,
		envURL+"="+f.fake.URL(),
		envClientID+"="+f.fake.ClientID(),
		envClientSecret+"="+f.fake.ClientSecret(),
		envOrigin+"="+f.fake.OAuthOrigin(),
		envMember+"="+f.portal.MemberID(),
		envStore+"="+f.arg,
		envGoroutines+"="+strconv.Itoa(f.cfg.Goroutines),
	)
	cmd.Env = append(cmd.Env, env...)
	c := &child{name: name, cmd: cmd, lines: make(chan string, 16), done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = (*childOutput)(c)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	c.stdin = stdin
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.write(line + "\n")
			if msg, ok := strings.CutPrefix(line, linePrefix); ok {
				select {
				case c.lines <- msg:
				default: // a child says only a few things; more is noise, kept in out
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		_ = stdin.Close()
	})
	return c
}

// childOutput collects a child's stderr into its output.
type childOutput child

func (o *childOutput) Write(p []byte) (int, error) {
	(*child)(o).write(string(p))
	return len(p), nil
}

func (c *child) write(s string) {
	c.mu.Lock()
	c.out.WriteString(s)
	c.mu.Unlock()
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// expect waits for the child's next protocol line to start with word, and returns it.
func (c *child) expect(t *testing.T, ctx context.Context, word string) string {
	t.Helper()
	select {
	case line := <-c.lines:
		if line != word && !strings.HasPrefix(line, word+" ") {
			t.Fatalf("%s said %q; want %q\n%s", c.name, line, word, c.output())
		}
		return line
	case <-c.done:
		// Lines read before the exit are still in the channel.
		select {
		case line := <-c.lines:
			if line == word || strings.HasPrefix(line, word+" ") {
				return line
			}
			t.Fatalf("%s said %q; want %q\n%s", c.name, line, word, c.output())
		default:
		}
		t.Fatalf("%s exited (%v) before saying %q:\n%s", c.name, c.err, word, c.output())
	case <-ctx.Done():
		t.Fatalf("%s did not say %q within the deadline:\n%s", c.name, word, c.output())
	}
	return ""
}

// wait waits for the child to exit and returns its exit status.
func (c *child) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("killed at the deadline: %w", ctx.Err())
	}
}

// kill kills the child with SIGKILL and waits until it is gone.
func (c *child) kill(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatalf("killing %s: %v", c.name, err)
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		t.Fatalf("%s outlived SIGKILL until the deadline", c.name)
	}
}

// childEnv is what a child learns from its environment.
type childEnv struct {
	fakeURL, clientID, secret, origin, member, store string
	goroutines                                       int
	stale                                            time.Duration
	expect                                           string
}

func readChildEnv() (childEnv, error) {
	e := childEnv{
		fakeURL:  os.Getenv(envURL),
		clientID: os.Getenv(envClientID),
		secret:   os.Getenv(envClientSecret),
		origin:   os.Getenv(envOrigin),
		member:   os.Getenv(envMember),
		store:    os.Getenv(envStore),
		expect:   os.Getenv(envExpect),
	}
	if e.fakeURL == "" || e.clientID == "" || e.secret == "" || e.origin == "" || e.member == "" {
		return e, errors.New("fleettest: a child needs the fake's URL, the app's credentials and the member in its environment")
	}
	var err error
	if e.goroutines, err = strconv.Atoi(os.Getenv(envGoroutines)); err != nil || e.goroutines <= 0 {
		return e, fmt.Errorf("fleettest: %s=%q", envGoroutines, os.Getenv(envGoroutines))
	}
	if s := os.Getenv(envStale); s != "" {
		if e.stale, err = time.ParseDuration(s); err != nil {
			return e, fmt.Errorf("fleettest: %s: %w", envStale, err)
		}
	}
	return e, nil
}

// say writes one protocol line to the parent.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, linePrefix+format+"\n", args...)
}

// runChild plays a child's part. The parent talks to it on stdin: "go" releases it, and the
// end of stdin (the parent closed it, or died) makes a blocked child exit.
func runChild(t *testing.T, cfg Config, role string) {
	env, err := readChildEnv()
	if err != nil {
		t.Fatal(err)
	}
	store, closeStore, err := cfg.Open(env.store)
	if err != nil {
		t.Fatalf("fleettest: opening the store in a child: %v", err)
	}
	defer closeStore()
	start, eof := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "go" {
				close(start)
			}
		}
		close(eof)
	}()
	// Orphans never outlive their parent for long.
	stayUntilEOF := func() {
		<-eof
		os.Exit(3)
	}
	// A failure bound for the child's own work.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	switch role {
	case "call":
		childCall(t, ctx, env, store, start, eof)
	case "hold":
		err := store.Update(ctx, env.member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			say("holding")
			stayUntilEOF()
			return cur, nil
		})
		t.Fatalf("Update returned (%v) while the holder should be blocked", err)
	case "crash":
		childCrash(t, ctx, env, store, stayUntilEOF)
	default:
		t.Fatalf("fleettest: unknown child role %q", role)
	}
}

// childCall calls the portal from env.goroutines goroutines once start is closed, reports the
// outcomes, and fails unless they are what env.expect says.
func childCall(t *testing.T, ctx context.Context, env childEnv, store b24oauth.TokenStore, start, eof <-chan struct{}) {
	var hooks, lost atomic.Int64
	app, err := newApp(env.fakeURL, env.clientID, env.secret, env.origin, store, env.stale,
		func(_ context.Context, inst b24oauth.Installation, err error) {
			hooks.Add(1)
			if strings.Contains(err.Error(), "refresh in flight was lost") {
				lost.Add(1)
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()

	var ok, invalidGrant, other atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for range env.goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-start:
			case <-eof:
				return
			case <-ctx.Done():
				return
			}
			for range rounds {
				c, err := app.ClientForMember(ctx, env.member)
				if err == nil {
					_, err = c.Call(ctx, "profile", nil)
				}
				var rte *b24oauth.RefreshTokenError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &rte) && rte.Code == "invalid_grant":
					invalidGrant.Add(1)
				default:
					other.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
				}
			}
		}()
	}
	say("ready")
	wg.Wait()
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "fleettest: call failed:", e)
	}
	say("result ok=%d invalid_grant=%d other=%d hooks=%d lost=%d", ok.Load(), invalidGrant.Load(), other.Load(), hooks.Load(), lost.Load())
	want := int64(env.goroutines * rounds)
	switch env.expect {
	case "ok":
		if ok.Load() != want {
			t.Fatalf("%d of %d calls succeeded", ok.Load(), want)
		}
	case "revoked":
		if invalidGrant.Load() != want {
			t.Fatalf("%d of %d calls failed with invalid_grant", invalidGrant.Load(), want)
		}
	default:
		t.Fatalf("fleettest: %s=%q", envExpect, env.expect)
	}
}

// childCrash does what a refreshing process does up to the OAuth server's answer (mark the
// installation, then exchange its refresh token while holding the member's lock) and then
// blocks, for the parent to kill it before it writes anything.
func childCrash(t *testing.T, ctx context.Context, env childEnv, store b24oauth.TokenStore, stayUntilEOF func()) {
	mark := time.Now().UTC().Truncate(time.Microsecond)
	err := store.Update(ctx, env.member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.RefreshingSince = mark
		return cur, nil
	})
	if err != nil {
		t.Fatalf("marking the refresh: %v", err)
	}
	err = store.Update(ctx, env.member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		if err := spend(ctx, env, cur.RefreshToken); err != nil {
			return cur, err
		}
		say("spent")
		stayUntilEOF()
		return cur, nil
	})
	t.Fatalf("exchanging the refresh token: %v", err)
}

// spend exchanges refreshToken at the fake's OAuth server, as a refresh does, and drops the
// answer.
func spend(ctx context.Context, env childEnv, refreshToken string) error {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"client_id":     {env.clientID},
		"client_secret": {env.secret},
		"refresh_token": {refreshToken},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, env.origin+"/oauth/token/", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := b24test.ClientFor(env.fakeURL)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var reply struct {
		RefreshToken string `json:"refresh_token"`
		Error        string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return fmt.Errorf("token reply (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || reply.RefreshToken == "" {
		return fmt.Errorf("token reply: HTTP %d, error %q", resp.StatusCode, reply.Error)
	}
	return nil
}

// Installation returns the active installation of p, a portal of fake, with its current
// tokens: what a fleet's shared store holds once the app is installed.
func Installation(fake *b24test.Server, p *b24test.Portal) b24oauth.Installation {
	return InstallationOf(fake, p, time.Now().UTC())
}
