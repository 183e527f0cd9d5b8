package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// RateLimiter takes a portal's request budget where every replica sees it. nil (the default):
// a limiter per portal in this process.
//
// The client keeps everything else of its pacing in the process: the headroom below the
// portal's burst, the adaptive slow-down after a 503 (a slower Bucket), the per-method operating
// limits. A RateLimiter only decides when requests may take tokens from the portal's bucket.
// Implementations must be safe for concurrent use; redisstore.NewLimiter is one on Redis.
type RateLimiter interface {
	// Take takes n tokens (n ≥ 1, at most b.Burst) from the bucket of memberID's portal and
	// returns how long the caller must wait before sending the requests they stand for; 0: at
	// once. The tokens are taken even when the wait is not zero (a reservation), so that every
	// caller waits for its own slot. If the wait would pass ctx's deadline, Take takes nothing
	// and returns a *RateLimitWaitError. Any other error (unless ctx is done) means the limiter
	// could not decide (its backend is unreachable): the client then paces with its in-process
	// limiter until a Take succeeds again.
	Take(ctx context.Context, memberID string, b Bucket, n int) (wait time.Duration, err error)
}

// Bucket is the token bucket a RateLimiter keeps for a portal: Burst tokens, refilled at Rate
// per second. It is the client's view of the portal's leaky bucket, less the headroom and
// slowed down after a 503, so it may change from one Take to the next.
type Bucket struct {
	Burst int
	Rate  float64
}

// RateLimitWaitError is what a RateLimiter returns when requests would have to wait past their
// context's deadline for the portal's bucket; nothing was taken. It matches
// context.DeadlineExceeded.
type RateLimitWaitError struct {
	// Wait is how long the requests would have waited.
	Wait time.Duration
}

func (e *RateLimitWaitError) Error() string {
	return fmt.Sprintf("b24oauth: the portal's rate limit would hold the request for %v, past the context deadline", e.Wait.Round(time.Millisecond))
}

// Is reports whether target is context.DeadlineExceeded.
func (e *RateLimitWaitError) Is(target error) bool { return target == context.DeadlineExceeded }

// sharedLimiter is an App's RateLimiter with what the App does around it: the log line when it
// fails (once per outage) and when it is back, the count of requests paced in-process instead,
// and the pause after a failure during which requests do not ask it (a backend that times out
// would otherwise cost every request its timeout).
type sharedLimiter struct {
	rl        RateLimiter
	log       *slog.Logger
	now       func() time.Time
	down      atomic.Bool
	retryAt   atomic.Int64 // unix nanoseconds: while down, the next Take not before this
	fallbacks atomic.Uint64
}

// sharedRetry is how long requests are paced in-process after the shared limiter failed before
// one asks it again.
const sharedRetry = time.Second

// take asks the shared limiter for n tokens. ok false: it failed, and the caller paces with its
// in-process bucket instead; err is set only when the wait would pass ctx's deadline.
func (s *sharedLimiter) take(ctx context.Context, memberID string, b Bucket, n int) (wait time.Duration, ok bool, err error) {
	if s.down.Load() && s.now().UnixNano() < s.retryAt.Load() {
		s.fallbacks.Add(1)
		return 0, false, nil
	}
	wait, err = s.rl.Take(ctx, memberID, b, n)
	if err == nil {
		if s.down.Load() && s.down.CompareAndSwap(true, false) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: shared rate limiter is back; pacing requests across replicas again",
				slog.Uint64("fallbacks", s.fallbacks.Load()))
		}
		return wait, true, nil
	}
	var we *RateLimitWaitError
	if ctx.Err() != nil || errors.As(err, &we) {
		return 0, false, err // the caller's context, not the limiter, says no
	}
	s.fallbacks.Add(1)
	s.retryAt.Store(s.now().Add(sharedRetry).UnixNano())
	if !s.down.Load() && s.down.CompareAndSwap(false, true) {
		s.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: shared rate limiter failed; pacing requests in this process until it is back",
			slog.String("member_id", memberID), slog.String("error", err.Error()))
	}
	return 0, false, nil
}

// RateLimiterFallbacks returns how many requests were paced by the App's in-process limiter
// because AppConfig.RateLimiter failed. It is 0 without a RateLimiter.
func (a *App) RateLimiterFallbacks() uint64 {
	if a.shared == nil {
		return 0
	}
	return a.shared.fallbacks.Load()
}
