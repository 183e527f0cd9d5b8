package b24oauth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// fakeRateLimiter records what the client asks a shared RateLimiter and answers as told.
type fakeRateLimiter struct {
	mu    sync.Mutex
	takes []fakeTake
	err   error         // returned by Take when set
	wait  time.Duration // returned by Take otherwise
}

type fakeTake struct {
	memberID string
	bucket   b24oauth.Bucket
	n        int
}

func (f *fakeRateLimiter) Take(_ context.Context, memberID string, b b24oauth.Bucket, n int) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.takes = append(f.takes, fakeTake{memberID, b, n})
	return f.wait, f.err
}

func (f *fakeRateLimiter) set(wait time.Duration, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wait, f.err, f.takes = wait, err, nil
}

func (f *fakeRateLimiter) recorded() []fakeTake {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeTake(nil), f.takes...)
}

// newSharedEnv is an App with the default limits and rl as its RateLimiter, and one installed
// portal.
func newSharedEnv(t *testing.T, rl b24oauth.RateLimiter, logs *lockedBuffer) (*appEnv, string) {
	t.Helper()
	e := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(cfg *b24oauth.AppConfig) {
		p := b24oauth.DefaultRestrictionParams()
		p.RetryDelay = time.Millisecond
		cfg.Restriction = &p
		cfg.RateLimiter = rl
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	p := e.install()
	return e, p.MemberID()
}

// Every request asks the shared limiter, for its portal, with the bucket less the headroom
// (49 of the standard 50, at 2/s); a batch takes as many tokens as it has commands.
func TestSharedRateLimiterTakes(t *testing.T) {
	rl := &fakeRateLimiter{}
	e, member := newSharedEnv(t, rl, &lockedBuffer{})
	c := e.client(member)
	rl.set(0, nil)
	mustCallProfile(t, c)
	cmds := make([]b24oauth.BatchCommand, 5)
	for i := range cmds {
		cmds[i] = b24oauth.BatchCommand{Key: fmt.Sprint("k", i), Method: "profile"}
	}
	if _, err := c.Batch(context.Background(), cmds); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	got := rl.recorded()
	want := []fakeTake{
		{member, b24oauth.Bucket{Burst: 49, Rate: 2}, 1},
		{member, b24oauth.Bucket{Burst: 49, Rate: 2}, 5},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("takes = %v, want %v", got, want)
	}
	if n := e.app.RateLimiterFallbacks(); n != 0 {
		t.Errorf("RateLimiterFallbacks = %d, want 0", n)
	}
}

// A wait the shared limiter says would pass the deadline fails the call with
// context.DeadlineExceeded, without a request to the portal.
func TestSharedRateLimiterDeadline(t *testing.T) {
	rl := &fakeRateLimiter{}
	e, member := newSharedEnv(t, rl, &lockedBuffer{})
	c := e.client(member)
	rl.set(0, fmt.Errorf("redis: %w", &b24oauth.RateLimitWaitError{Wait: time.Minute}))
	p := e.fake.Portal(member)
	before := p.Calls("profile")
	_, err := c.Call(context.Background(), "profile", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call = %v, want context.DeadlineExceeded", err)
	}
	if n := p.Calls("profile") - before; n != 0 {
		t.Errorf("the portal saw %d calls, want 0", n)
	}
	if n := e.app.RateLimiterFallbacks(); n != 0 {
		t.Errorf("RateLimiterFallbacks = %d, want 0 (a deadline is not an outage)", n)
	}
}

// A limiter's own timeout (a network one matches context.DeadlineExceeded) is an outage, not
// the caller's deadline: the call goes on, paced in-process.
func TestSharedRateLimiterTimeout(t *testing.T) {
	rl := &fakeRateLimiter{}
	e, member := newSharedEnv(t, rl, &lockedBuffer{})
	c := e.client(member)
	rl.set(0, fmt.Errorf("dial tcp: i/o timeout: %w", context.DeadlineExceeded))
	mustCallProfile(t, c)
	if n := e.app.RateLimiterFallbacks(); n != 1 {
		t.Errorf("RateLimiterFallbacks = %d, want 1", n)
	}
}

// While the shared limiter fails, calls go on paced in-process, each counted, the outage
// logged once, and the limiter is not asked again for a second; then it is, and the recovery is
// logged once too.
func TestSharedRateLimiterOutage(t *testing.T) {
	rl := &fakeRateLimiter{}
	logs := &lockedBuffer{}
	e, member := newSharedEnv(t, rl, logs)
	c := e.client(member)
	rl.set(0, errors.New("redis: connection refused"))
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustCallProfile(t, c)
		}()
	}
	wg.Wait()
	if n := e.app.RateLimiterFallbacks(); n != 10 {
		t.Errorf("RateLimiterFallbacks = %d, want 10", n)
	}
	rl.set(0, nil)
	mustCallProfile(t, c) // within the pause: paced in-process, the limiter not asked
	if n := len(rl.recorded()); n != 0 {
		t.Errorf("takes within a second of the failure = %d, want 0", n)
	}
	if n := e.app.RateLimiterFallbacks(); n != 11 {
		t.Errorf("RateLimiterFallbacks = %d, want 11", n)
	}
	e.clock.Advance(time.Second)
	if n := strings.Count(logs.String(), "shared rate limiter failed"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs)
	}
	mustCallProfile(t, c)
	mustCallProfile(t, c)
	if n := len(rl.recorded()); n != 2 {
		t.Errorf("takes after the outage = %d, want 2", n)
	}
	if n := strings.Count(logs.String(), "shared rate limiter is back"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, logs)
	}
	if n := e.app.RateLimiterFallbacks(); n != 11 {
		t.Errorf("RateLimiterFallbacks = %d after the outage, want still 11", n)
	}
}
