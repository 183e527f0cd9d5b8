package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/redis/go-redis/v9"
)

// Limiter is a b24oauth.RateLimiter on Redis: every process that shares a Redis (and a key
// prefix) takes a portal's tokens from one bucket, kept in one key per portal. Set it as
// AppConfig.RateLimiter. It is safe for concurrent use.
//
// The bucket is a GCRA (generic cell rate algorithm): the key holds the portal's theoretical
// arrival time, on Redis's own clock, and one Lua script reads and advances it, so the replicas'
// clocks do not matter. A Take reserves its slot: it advances the time even when the caller
// must wait, so each caller waits once, for its own slot, with one round trip.
type Limiter struct {
	client redis.UniversalClient
	prefix string
}

// LimiterOption configures a Limiter.
type LimiterOption func(*Limiter)

// WithLimiterKeyPrefix sets the string every key of the Limiter starts with (DefaultKeyPrefix by
// default). A portal's key is prefix + "rate:{" + member_id + "}".
func WithLimiterKeyPrefix(prefix string) LimiterOption {
	return func(l *Limiter) { l.prefix = prefix }
}

// NewLimiter returns a Limiter on client.
func NewLimiter(client redis.UniversalClient, opts ...LimiterOption) *Limiter {
	l := &Limiter{client: client, prefix: DefaultKeyPrefix}
	for _, opt := range opts {
		if opt != nil {
			opt(l)
		}
	}
	return l
}

// Key returns the key of memberID's bucket. The member_id is a hash tag, so that on a Redis
// Cluster a portal's keys live on one node.
func (l *Limiter) Key(memberID string) string {
	return l.prefix + "rate:{" + memberID + "}"
}

// maxReserve bounds a reservation without a context deadline: no caller waits longer for its
// slot (a caller asking more gets an error and takes nothing).
const maxReserve = time.Hour

// takeScript reserves ARGV[3] tokens of the bucket in KEYS[1]: ARGV[1] is the time one token
// takes to drain (µs), ARGV[2] the burst, ARGV[4] the longest wait the caller accepts (µs). The
// key holds the theoretical arrival time (µs on Redis's clock) and expires once it has passed.
// It returns {1, wait µs} when the tokens were taken, {0, wait µs} when the wait is too long
// (nothing taken).
var takeScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: replicate the SET, not the script
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local maxwait = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local newtat = tat + n * interval
local wait = newtat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > maxwait then return {0, wait} end
redis.call('SET', KEYS[1], string.format('%d', newtat), 'PX', math.floor((newtat - now) / 1000) + 1000)
return {1, wait}
`)

// Take implements b24oauth.RateLimiter: it reserves n tokens of memberID's bucket b and returns
// how long the caller waits before sending. If that wait would pass ctx's deadline (or an
// hour), it takes nothing and returns a *b24oauth.RateLimitWaitError (it matches
// context.DeadlineExceeded).
func (l *Limiter) Take(ctx context.Context, memberID string, b b24oauth.Bucket, n int) (time.Duration, error) {
	if !b24oauth.ValidMemberID(memberID) {
		return 0, errors.New("redisstore: rate limiter: invalid member_id")
	}
	if !(b.Rate > 0) || b.Burst < 1 {
		return 0, fmt.Errorf("redisstore: invalid bucket (burst %d, rate %v)", b.Burst, b.Rate)
	}
	n = max(1, min(n, b.Burst))
	// A token's drain time, rounded up to a microsecond: never faster than the bucket.
	interval := int64(math.Ceil(1e6 / b.Rate))
	maxWait := maxReserve
	if dl, ok := ctx.Deadline(); ok {
		maxWait = min(maxWait, time.Until(dl))
	}
	res, err := takeScript.Run(ctx, l.client, []string{l.Key(memberID)},
		interval, b.Burst, n, max(0, maxWait.Microseconds())).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("redisstore: rate limiter for %s: %w", memberID, err)
	}
	if len(res) != 2 {
		return 0, errors.New("redisstore: rate limiter: unexpected reply from Redis")
	}
	wait := time.Duration(res[1]) * time.Microsecond
	if res[0] != 1 {
		return 0, &b24oauth.RateLimitWaitError{Wait: wait}
	}
	return wait, nil
}

var _ b24oauth.RateLimiter = (*Limiter)(nil)
