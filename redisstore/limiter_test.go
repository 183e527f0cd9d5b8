package redisstore_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/internal/fleettest"
	"github.com/b24go/b24oauth/redisstore"
	"github.com/redis/go-redis/v9"
)

// slowBucket drains a token every 2 s: nothing in a test runs that long between two Takes, so
// the waits can be checked without timing the test.
var slowBucket = b24oauth.Bucket{Burst: 3, Rate: 0.5}

func newTestLimiter(t testing.TB) (*redisstore.Limiter, redis.UniversalClient) {
	t.Helper()
	client := testClient(t)
	return redisstore.NewLimiter(client, redisstore.WithLimiterKeyPrefix(newPrefix(t, client))), client
}

func mustTake(t *testing.T, l *redisstore.Limiter, ctx context.Context, member string, b b24oauth.Bucket, n int) time.Duration {
	t.Helper()
	d, err := l.Take(ctx, member, b, n)
	if err != nil {
		t.Fatalf("Take(%s, %d): %v", member, n, err)
	}
	return d
}

// The burst goes at once; then each Take reserves the next slot, one drain interval later than
// the previous one; a batch reserves as many. Portals have buckets of their own.
func TestLimiterReserves(t *testing.T) {
	l, _ := newTestLimiter(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if d := mustTake(t, l, ctx, m1, slowBucket, 1); d != 0 {
			t.Fatalf("Take %d within the burst waits %v, want 0", i+1, d)
		}
	}
	if d := mustTake(t, l, ctx, m1, slowBucket, 1); d <= 0 || d > 2*time.Second {
		t.Errorf("first Take past the burst waits %v, want (0, 2s]", d)
	}
	if d := mustTake(t, l, ctx, m1, slowBucket, 2); d <= 4*time.Second-time.Second || d > 6*time.Second {
		t.Errorf("a Take of 2 after it waits %v, want about 6s (two slots after the previous)", d)
	}
	if d := mustTake(t, l, ctx, m2, slowBucket, 3); d != 0 {
		t.Errorf("another portal's first Take waits %v, want 0", d)
	}
}

// A wait past the context's deadline takes nothing: a *b24oauth.RateLimitWaitError, which
// matches context.DeadlineExceeded.
func TestLimiterDeadline(t *testing.T) {
	l, _ := newTestLimiter(t)
	ctx := context.Background()
	mustTake(t, l, ctx, m1, slowBucket, 3)
	first := mustTake(t, l, ctx, m1, slowBucket, 1) // (0, 2s]
	short, cancel := context.WithTimeout(ctx, time.Second+first)
	defer cancel()
	_, err := l.Take(short, m1, slowBucket, 1)
	var we *b24oauth.RateLimitWaitError
	if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take past the deadline = %v, want a *b24oauth.RateLimitWaitError", err)
	}
	// Nothing was taken: the next slot is still one interval after the first.
	if d := mustTake(t, l, ctx, m1, slowBucket, 1); d > first+2*time.Second {
		t.Errorf("Take after a refused one waits %v, want at most %v", d, first+2*time.Second)
	}
}

// A portal's key carries its member_id as a hash tag and expires once its bucket is full again.
func TestLimiterKey(t *testing.T) {
	l, client := newTestLimiter(t)
	const member = "0123456789abcdef0123456789abcdef"
	key := l.Key(member)
	if !strings.HasSuffix(key, "rate:{"+member+"}") {
		t.Errorf("Key = %q, want it to end in rate:{%s}", key, member)
	}
	mustTake(t, l, context.Background(), member, slowBucket, 1)
	ttl, err := client.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 4*time.Second {
		t.Errorf("PTTL(%s) = %v, want (0, 4s]", key, ttl)
	}
}

// An invalid bucket or member_id is an error, not a division by zero or a stray key.
func TestLimiterInvalidBucket(t *testing.T) {
	l, _ := newTestLimiter(t)
	for _, b := range []b24oauth.Bucket{{Burst: 0, Rate: 1}, {Burst: 1, Rate: 0}} {
		if _, err := l.Take(context.Background(), m1, b, 1); err == nil {
			t.Errorf("Take with %+v: no error", b)
		}
	}
	// A member_id that is not one makes no key (it could carry a hash tag).
	if _, err := l.Take(context.Background(), "x}{y", slowBucket, 1); err == nil {
		t.Error("Take with an invalid member_id: no error")
	}
}

// With Redis unreachable, Take fails with an error that is not a deadline, so the client paces
// in-process (b24oauth's tests cover that side).
func TestLimiterUnreachable(t *testing.T) {
	testClient(t)
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer client.Close()
	l := redisstore.NewLimiter(client)
	_, err := l.Take(context.Background(), m1, slowBucket, 1)
	var we *b24oauth.RateLimitWaitError
	if err == nil || errors.As(err, &we) {
		t.Fatalf("Take on an unreachable Redis = %v, want an error other than a *b24oauth.RateLimitWaitError", err)
	}
}

// An App whose limiter's Redis is down goes on calling, paced in-process: every request
// counted, the outage logged once, and the portal's bucket still kept.
func TestLimiterOutageApp(t *testing.T) {
	testClient(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer down.Close()
	fake := b24test.NewServer(b24test.WithRateLimit(limiterBurst, limiterDrain))
	t.Cleanup(fake.Close)
	p := fake.AddPortal()
	store := b24oauth.NewMemoryStore()
	if err := store.Save(context.Background(), fleettest.Installation(fake, p)); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	rp := b24oauth.DefaultRestrictionParams()
	rp.RateLimit.BurstLimit, rp.RateLimit.DrainRate = limiterBurst, limiterDrain
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: store,
		HTTPClient:   fake.Client(),
		Logger:       slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
		OAuthServers: []string{fake.OAuthOrigin()},
		Restriction:  &rp,
		RateLimiter:  redisstore.NewLimiter(down),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	c, err := app.ClientForMember(context.Background(), p.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	const calls = 20
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(context.Background(), "profile", nil); err != nil {
				t.Errorf("Call with Redis down: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := app.RateLimiterFallbacks(); n != calls {
		t.Errorf("RateLimiterFallbacks = %d, want %d; calls %d\n%s", n, calls, p.Calls("profile"), logs.String())
	}
	if r := p.Rejections(); r != 0 {
		t.Errorf("the portal rejected %d requests, want 0 (one process paced in-process)", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "shared rate limiter failed"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, logs.String())
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
