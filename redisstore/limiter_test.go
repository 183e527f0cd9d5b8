package redisstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
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
		if d := mustTake(t, l, ctx, "m1", slowBucket, 1); d != 0 {
			t.Fatalf("Take %d within the burst waits %v, want 0", i+1, d)
		}
	}
	if d := mustTake(t, l, ctx, "m1", slowBucket, 1); d <= 0 || d > 2*time.Second {
		t.Errorf("first Take past the burst waits %v, want (0, 2s]", d)
	}
	if d := mustTake(t, l, ctx, "m1", slowBucket, 2); d <= 4*time.Second-time.Second || d > 6*time.Second {
		t.Errorf("a Take of 2 after it waits %v, want about 6s (two slots after the previous)", d)
	}
	if d := mustTake(t, l, ctx, "m2", slowBucket, 3); d != 0 {
		t.Errorf("another portal's first Take waits %v, want 0", d)
	}
}

// A wait past the context's deadline takes nothing and matches context.DeadlineExceeded.
func TestLimiterDeadline(t *testing.T) {
	l, _ := newTestLimiter(t)
	ctx := context.Background()
	mustTake(t, l, ctx, "m", slowBucket, 3)
	first := mustTake(t, l, ctx, "m", slowBucket, 1) // (0, 2s]
	short, cancel := context.WithTimeout(ctx, time.Second+first)
	defer cancel()
	if _, err := l.Take(short, "m", slowBucket, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take past the deadline = %v, want context.DeadlineExceeded", err)
	}
	// Nothing was taken: the next slot is still one interval after the first.
	if d := mustTake(t, l, ctx, "m", slowBucket, 1); d > first+2*time.Second {
		t.Errorf("Take after a refused one waits %v, want at most %v", d, first+2*time.Second)
	}
}

// A portal's key carries its member_id as a hash tag and expires once its bucket is full again.
func TestLimiterKey(t *testing.T) {
	l, client := newTestLimiter(t)
	key := l.Key("abc")
	if !strings.HasSuffix(key, "{abc}:rate") {
		t.Errorf("Key = %q, want it to end in {abc}:rate", key)
	}
	mustTake(t, l, context.Background(), "abc", slowBucket, 1)
	ttl, err := client.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 4*time.Second {
		t.Errorf("PTTL(%s) = %v, want (0, 4s]", key, ttl)
	}
}

// An invalid bucket is an error, not a division by zero.
func TestLimiterInvalidBucket(t *testing.T) {
	l, _ := newTestLimiter(t)
	for _, b := range []b24oauth.Bucket{{Burst: 0, Rate: 1}, {Burst: 1, Rate: 0}} {
		if _, err := l.Take(context.Background(), "m", b, 1); err == nil {
			t.Errorf("Take with %+v: no error", b)
		}
	}
}

// With Redis unreachable, Take fails with an error that is not a deadline, so the client paces
// in-process (b24oauth's tests cover that side).
func TestLimiterUnreachable(t *testing.T) {
	testClient(t)
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	defer client.Close()
	l := redisstore.NewLimiter(client)
	_, err := l.Take(context.Background(), "m", slowBucket, 1)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take on an unreachable Redis = %v, want an error other than a deadline", err)
	}
}
