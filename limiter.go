package b24oauth

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RestrictionParams tunes how a client paces its requests to stay within a portal's limits, and
// how it retries a call the portal rejected for exceeding them.
//
// Bitrix24 enforces two limits. The request-rate limit is a leaky bucket per portal (shared by
// every application calling it from the same address): each request adds one, the bucket drains
// at a fixed rate, and a request that overflows it gets HTTP 503 QUERY_LIMIT_EXCEEDED. The
// operating limit counts, per method and application, the seconds of server time the method used
// in a sliding window; once over the limit the method is refused with HTTP 429
// OPERATION_TIME_LIMIT until old time expires. Each command of a batch counts against both (the
// client paces a batch as that many requests).
//
// The zero RestrictionParams means DefaultRestrictionParams(). Otherwise a zero field means its
// default (see each field), except MaxRetries and RateLimit.Adaptive, which are used as given.
type RestrictionParams struct {
	// RateLimit paces requests against the portal's leaky bucket.
	RateLimit RateLimitParams

	// OperatingLimit slows down and blocks methods close to their operating limit.
	OperatingLimit OperatingLimitParams

	// MaxRetries is how many times a call rejected by a limit (QUERY_LIMIT_EXCEEDED or
	// OPERATION_TIME_LIMIT, which the portal did not run) is sent again after the first attempt.
	// Used as given: 0 means no retries, a negative value is taken as 0.
	// DefaultRestrictionParams sets 3.
	MaxRetries int

	// RetryDelay is the base of the exponential backoff between retries (it doubles each
	// attempt, with jitter, capped at 30s or RetryDelay if larger). Zero or negative: 1s.
	RetryDelay time.Duration
}

// RateLimitParams describes the portal's leaky bucket: a client may send BurstLimit requests at
// once, then DrainRate requests per second.
type RateLimitParams struct {
	// BurstLimit is the bucket's size: how many requests may be sent back to back. Zero or
	// negative: 50 (standard plans). Fractions are rounded up.
	BurstLimit float64

	// DrainRate is how many requests per second the bucket drains. Zero: 2 (standard plans).
	// A negative DrainRate turns the request-rate limiter off: requests are never delayed by it
	// (a 503 from the portal is still retried as MaxRetries says).
	DrainRate float64

	// Adaptive makes the client react to a 503 QUERY_LIMIT_EXCEEDED, which means something else
	// (another application or process on the same address) also drains the portal's bucket: the
	// client empties its own bucket and halves its rate (down to an eighth of DrainRate), then
	// restores an eighth of DrainRate every 5 seconds without a 503.
	// DefaultRestrictionParams sets it; it is used as given otherwise.
	Adaptive bool
}

// OperatingLimitParams describes the portal's per-method operating limit: a method may use Limit
// seconds of server time in any Window.
type OperatingLimitParams struct {
	// Window is the period over which the portal sums a method's time. Zero or negative: 10m.
	Window time.Duration

	// Limit is the server time a method may use in a Window. Zero: 480s. A negative Limit turns
	// the operating limiter off: methods are never slowed down or blocked by the client, and a
	// 429 OPERATION_TIME_LIMIT is left to the retry logic.
	Limit time.Duration

	// HeavyPercent is the share of Limit, in percent, from which a method counts as heavy: its
	// calls are then spaced so that the time left in its budget lasts until the portal's window
	// resets. Zero or negative: 80. 100 or more: methods are never slowed down, only blocked once
	// they reach Limit.
	HeavyPercent float64
}

// Defaults of RestrictionParams (DefaultRestrictionParams).
const (
	defaultBurstLimit   = 50
	defaultDrainRate    = 2
	defaultWindow       = 10 * time.Minute
	defaultOpLimit      = 480 * time.Second
	defaultHeavyPercent = 80
	defaultMaxRetries   = 3
	defaultRetryDelay   = time.Second
	maxBackoff          = 30 * time.Second
)

// Adaptive rate limiting: how fast the rate drops on a 503 and how it recovers.
const (
	adaptiveMinFactor    = 0.125           // the rate never drops below this share of DrainRate
	adaptiveStep         = 0.125           // share of DrainRate restored per adaptiveRecovery
	adaptiveRecovery     = 5 * time.Second // quiet time (no 503) per recovery step
	adaptiveCutCooldown  = time.Second     // 503s of requests already in flight halve the rate once
	defaultCallCost      = 1.0             // seconds a call of a heavy method is assumed to add, until measured
	callCostWeight       = 0.3             // weight of the newest sample in a method's average call cost
	maxBurst             = math.MaxInt32   // burst sizes are clamped to an int rate.Limiter accepts
	operatingSweepDivide = 10              // forgotten methods are swept at most every Window/10
)

// DefaultRestrictionParams returns the limits of standard (non-Enterprise) Bitrix24 plans: a
// bucket of 50 requests draining 2 per second, adaptive; 480s of method time per 10 minutes,
// methods slowed down from 80% of it; 3 retries with a 1s base backoff.
func DefaultRestrictionParams() RestrictionParams {
	return RestrictionParams{
		RateLimit: RateLimitParams{
			BurstLimit: defaultBurstLimit,
			DrainRate:  defaultDrainRate,
			Adaptive:   true,
		},
		OperatingLimit: OperatingLimitParams{
			Window:       defaultWindow,
			Limit:        defaultOpLimit,
			HeavyPercent: defaultHeavyPercent,
		},
		MaxRetries: defaultMaxRetries,
		RetryDelay: defaultRetryDelay,
	}
}

// EnterpriseRestrictionParams returns the limits of Bitrix24 Enterprise plans: as
// DefaultRestrictionParams, with a bucket of 250 requests draining 5 per second.
func EnterpriseRestrictionParams() RestrictionParams {
	p := DefaultRestrictionParams()
	p.RateLimit.BurstLimit = 250
	p.RateLimit.DrainRate = 5
	return p
}

// withDefaults returns p with every zero (or out-of-range) field replaced by its default, as the
// field docs say. The zero RestrictionParams becomes DefaultRestrictionParams().
func (p RestrictionParams) withDefaults() RestrictionParams {
	if p == (RestrictionParams{}) {
		return DefaultRestrictionParams()
	}
	if !(p.RateLimit.BurstLimit > 0) { // also NaN
		p.RateLimit.BurstLimit = defaultBurstLimit
	}
	if p.RateLimit.DrainRate == 0 || math.IsNaN(p.RateLimit.DrainRate) {
		p.RateLimit.DrainRate = defaultDrainRate
	}
	if p.OperatingLimit.Window <= 0 {
		p.OperatingLimit.Window = defaultWindow
	}
	if p.OperatingLimit.Limit == 0 {
		p.OperatingLimit.Limit = defaultOpLimit
	}
	if !(p.OperatingLimit.HeavyPercent > 0) {
		p.OperatingLimit.HeavyPercent = defaultHeavyPercent
	}
	if p.MaxRetries < 0 {
		p.MaxRetries = 0
	}
	if p.RetryDelay <= 0 {
		p.RetryDelay = defaultRetryDelay
	}
	return p
}

// rateOff reports whether the request-rate limiter is turned off.
func (p RestrictionParams) rateOff() bool { return p.RateLimit.DrainRate < 0 }

// operatingOff reports whether the operating limiter is turned off.
func (p RestrictionParams) operatingOff() bool { return p.OperatingLimit.Limit < 0 }

// burst is RateLimit.BurstLimit as rate.Limiter's burst, less a headroom: requests leave
// evenly paced but reach the portal with network jitter, and one that arrives early into a full
// bucket is rejected. The headroom absorbs a quarter second of jitter at the drain rate, at
// least one request and at most a fifth of the burst (never leaving less than one). p is
// defaulted.
func (p RestrictionParams) burst() int {
	b := math.Min(math.Ceil(p.RateLimit.BurstLimit), maxBurst)
	headroom := math.Max(1, math.Min(math.Ceil(burstJitter.Seconds()*p.RateLimit.DrainRate), math.Floor(b/5)))
	return int(math.Max(1, b-headroom))
}

// burstJitter is how much earlier than paced a request may reach the portal.
const burstJitter = 250 * time.Millisecond

// limiter paces the requests of one portal: a token bucket mirrors the portal's leaky bucket,
// and per-method state mirrors the operating limit the portal reports in every reply. One limiter
// serves every client of a portal, for v2 and v3 calls alike. It is safe for concurrent use.
//
// The client calls wait before sending each request (a batch counts its commands), observe after
// each successful reply, and queryLimitExceeded or operationTimeLimit when the portal rejects a
// request for a limit.
type limiter struct {
	// now and sleep are the clock; tests replace them so that nothing sleeps for real.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	// bucket has its own lock; its limit and burst change, and the field itself is read and
	// replaced, only under mu. It is nil while the request-rate limiter is turned off.
	bucket *rate.Limiter

	mu sync.Mutex
	p  RestrictionParams // defaulted

	// Adaptive rate: the bucket drains at DrainRate*factor. A 503 sets factor to cutFactor at
	// penaltyAt; it then grows back by adaptiveStep per adaptiveRecovery.
	factor    float64
	cutFactor float64
	penaltyAt time.Time
	lastCut   time.Time

	methods   map[string]*methodState // methods with reported operating time or a block
	lastSweep time.Time

	// shared, when set, decides when requests take tokens from the portal's bucket (memberID's)
	// across replicas; bucket then only paces while shared fails.
	shared   *sharedLimiter
	memberID string
}

// methodState is what the limiter knows of one method's operating limit.
type methodState struct {
	operating    float64   // seconds used in the current window, as last reported
	resetAt      time.Time // when the portal resets the method's window (operating_reset_at)
	cost         float64   // average seconds a call adds to operating, once costKnown
	costKnown    bool      // cost has been measured (two replies in one window)
	blockedUntil time.Time // no call before this time (a 429, or operating ≥ Limit)
	next         time.Time // earliest start of the next call while the method is paced
	seen         time.Time // last observation or block; the state is forgotten a Window later
}

// newLimiter returns a limiter for one portal with p (defaulted here) and a full bucket.
func newLimiter(p RestrictionParams) *limiter {
	p = p.withDefaults()
	l := &limiter{
		now:     time.Now,
		sleep:   sleepContext,
		p:       p,
		factor:  1,
		methods: make(map[string]*methodState),
	}
	if !p.rateOff() {
		l.bucket = rate.NewLimiter(l.rateLimit(), p.burst())
	}
	return l
}

// sleepContext waits for d or until ctx is done, whichever comes first.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rateLimit is the bucket's current drain rate. l.mu is held (or l is not shared yet).
func (l *limiter) rateLimit() rate.Limit {
	return rate.Limit(l.p.RateLimit.DrainRate * l.factor)
}

// params returns the limiter's current parameters, defaulted.
func (l *limiter) params() RestrictionParams {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p
}

// setParams changes the parameters live. The bucket keeps the tokens it has (capped at the new
// burst), or starts full when the request-rate limiter is turned back on; what is known of each
// method's operating time is kept, unless the operating limiter is turned off.
func (l *limiter) setParams(p RestrictionParams) {
	p = p.withDefaults()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.p = p
	if !p.RateLimit.Adaptive || p.rateOff() {
		l.factor, l.cutFactor = 1, 1
	}
	switch {
	case p.rateOff():
		// rate.Inf would do, but turning it back on from Inf yields NaN tokens.
		l.bucket = nil
	case l.bucket == nil:
		l.bucket = rate.NewLimiter(l.rateLimit(), p.burst())
	default:
		l.bucket.SetBurstAt(now, p.burst())
		l.bucket.SetLimitAt(now, l.rateLimit())
	}
	if p.operatingOff() {
		clear(l.methods)
	}
}

// wait blocks until a request for method standing for n requests against the portal's bucket (a
// batch's commands; n < 1 counts as 1, more than the burst as the burst) may be sent: the method
// is neither blocked nor waiting for its paced turn, and the bucket has n tokens, which wait
// takes. If ctx ends first, or its
// deadline would pass before the request may be sent, wait returns an error wrapping ctx's error
// (context.DeadlineExceeded for a deadline) and takes nothing.
func (l *limiter) wait(ctx context.Context, method string, n int) error {
	return l.waitReporting(ctx, method, n, nil)
}

// waitReport is what a wait tells an Observer: how long each limit held the request, the
// limit a failed wait was waiting for, and whether the in-process bucket stood in for a shared
// limiter that failed.
type waitReport struct {
	held     [len(waitLimits)]time.Duration // by waitLimits' index: the sleeps each limit asked for, added up
	failedOn string
	fallback bool
}

// waitLimits are the limits a wait reports, in the order of waitReport.held.
var waitLimits = [...]string{LimitOperating, LimitShared, LimitBucket}

const (
	heldByOperating = iota
	heldByShared
	heldByBucket
)

// hold records that the limit at index i holds the request for d more.
func (r *waitReport) hold(i int, d time.Duration) {
	if r != nil && d > 0 {
		r.held[i] += d
	}
}

// fail records that the wait failed while the limit at index i held the request.
func (r *waitReport) fail(i int) {
	if r != nil {
		r.failedOn = waitLimits[i]
	}
}

// fellBack records that the in-process bucket paces the request in the shared limiter's place.
func (r *waitReport) fellBack() {
	if r != nil {
		r.fallback = true
	}
}

// limit is LimiterWaitInfo.Limit: the limit a failed wait was waiting for, else the one that
// held the request longest in all, else "".
func (r *waitReport) limit() string {
	if r.failedOn != "" {
		return r.failedOn
	}
	var limit string
	var longest time.Duration
	for i, d := range r.held {
		if d > longest {
			limit, longest = waitLimits[i], d
		}
	}
	return limit
}

// waitReporting is wait, filling rep (when not nil) as it goes.
func (l *limiter) waitReporting(ctx context.Context, method string, n int, rep *waitReport) error {
	if err := ctx.Err(); err != nil {
		return err
	}

	// The method gate comes first: a request held back for minutes must not hold a token.
	var (
		paced    *methodState // the state whose pacing slot this call took, if any
		slot     time.Time
		interval time.Duration
		bucket   *rate.Limiter
	)
	for {
		l.mu.Lock()
		now := l.now()
		if l.factor < 1 {
			l.recoverRate(now)
		}
		var d time.Duration
		if len(l.methods) != 0 {
			if st := l.methods[method]; st != nil {
				if st.blockedUntil.After(now) {
					d = st.blockedUntil.Sub(now)
				} else if paced == nil {
					if iv := l.paceInterval(st, now); iv > 0 {
						paced, interval = st, iv
						slot = now
						if st.next.After(now) {
							slot = st.next
						}
						st.next = slot.Add(iv)
						d = slot.Sub(now)
					}
				}
			}
		}
		bucket = l.bucket
		l.mu.Unlock()
		if d <= 0 {
			break
		}
		rep.hold(heldByOperating, d)
		if err := l.sleepUntil(ctx, method, now, d); err != nil {
			rep.fail(heldByOperating)
			l.releaseSlot(paced, slot, interval)
			return err
		}
	}

	if bucket == nil {
		return nil
	}
	n = max(1, min(n, bucket.Burst()))
	if l.shared != nil {
		b := Bucket{Burst: bucket.Burst(), Rate: float64(bucket.Limit())}
		d, ok, err := l.shared.take(ctx, l.memberID, b, n)
		if err != nil {
			rep.fail(heldByShared) // the caller's context ended in Take, or Take's wait would pass its deadline
			l.releaseSlot(paced, slot, interval)
			return fmt.Errorf("b24oauth: waiting for the portal's limits for %s: %w", method, err)
		}
		if ok {
			rep.hold(heldByShared, d)
			if err := l.sleepUntil(ctx, method, l.now(), d); err != nil {
				rep.fail(heldByShared)
				l.releaseSlot(paced, slot, interval)
				return err
			}
			return nil
		}
		rep.fellBack()
	}
	now := l.now()
	if bucket.AllowN(now, n) {
		return nil
	}
	r := bucket.ReserveN(now, n)
	if !r.OK() { // burst is at least 1, so this does not happen; do not spin if it does
		rep.fail(heldByBucket)
		l.releaseSlot(paced, slot, interval)
		return fmt.Errorf("b24oauth: rate limiter refused a request for %s", method)
	}
	delay := r.DelayFrom(now)
	rep.hold(heldByBucket, delay)
	if err := l.sleepUntil(ctx, method, now, delay); err != nil {
		rep.fail(heldByBucket)
		r.CancelAt(l.now())
		l.releaseSlot(paced, slot, interval)
		return err
	}
	return nil
}

// sleepUntil sleeps d from now, failing at once if ctx's deadline would pass first.
func (l *limiter) sleepUntil(ctx context.Context, method string, now time.Time, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
		return fmt.Errorf("b24oauth: %s would wait %v for the portal's limits, past the context deadline: %w",
			method, d.Round(time.Millisecond), context.DeadlineExceeded)
	}
	if err := l.sleep(ctx, d); err != nil {
		return fmt.Errorf("b24oauth: waiting for the portal's limits for %s: %w", method, err)
	}
	return nil
}

// releaseSlot gives back a pacing slot a cancelled wait took, if no later call took the next one.
func (l *limiter) releaseSlot(st *methodState, slot time.Time, interval time.Duration) {
	if st == nil {
		return
	}
	l.mu.Lock()
	if st.next.Equal(slot.Add(interval)) {
		st.next = slot
	}
	l.mu.Unlock()
}

// paceInterval is the spacing of st's calls at now: zero unless the method is heavy. A heavy
// method's remaining budget (Limit − operating) is spread over the time left until its window
// resets, at the method's measured cost per call. l.mu is held.
func (l *limiter) paceInterval(st *methodState, now time.Time) time.Duration {
	if l.p.operatingOff() || !now.Before(st.resetAt) {
		return 0 // nothing reported for the current window
	}
	limit := l.p.OperatingLimit.Limit.Seconds()
	if st.operating < limit*l.p.OperatingLimit.HeavyPercent/100 {
		return 0
	}
	left := st.resetAt.Sub(now)
	remaining := limit - st.operating
	cost := defaultCallCost
	if st.costKnown {
		cost = st.cost
	}
	if remaining <= cost {
		return left // the next call may well be the last one: let the window reset after it
	}
	return time.Duration(float64(left) * cost / remaining)
}

// observe records the operating time of method the portal reported in a successful reply:
// operating is time.operating (seconds), resetAt is time.operating_reset_at (unix seconds, 0 when
// absent). A method at or over the limit is blocked until resetAt.
func (l *limiter) observe(method string, operating float64, resetAt int64) {
	if math.IsNaN(operating) || math.IsInf(operating, 0) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p.operatingOff() {
		return
	}
	now := l.now()
	l.sweep(now)
	st := l.methods[method]
	if st == nil {
		if operating <= 0 {
			return // the common case: a method that costs nothing needs no state
		}
		st = &methodState{}
		l.methods[method] = st
	} else if delta := operating - st.operating; delta >= 0 && now.Before(st.resetAt) {
		// The average increase per reply is the cost per call, whatever the concurrency: each
		// call is observed once. A decrease means old time expired and says nothing of the cost.
		if st.costKnown {
			st.cost += callCostWeight * (delta - st.cost)
		} else {
			st.cost, st.costKnown = delta, true
		}
	}
	st.operating = operating
	st.resetAt = l.resetTime(now, resetAt)
	st.seen = now
	if operating >= l.p.OperatingLimit.Limit.Seconds() && st.resetAt.After(st.blockedUntil) {
		st.blockedUntil = st.resetAt
	}
	// Fresher figures may allow a shorter spacing than the one the next slot was set with;
	// callers already sleeping keep theirs, which never outlast the window.
	if st.next.After(now) {
		if next := now.Add(l.paceInterval(st, now)); next.Before(st.next) {
			st.next = next
		}
	}
	if operating <= 0 && !st.blockedUntil.After(now) {
		delete(l.methods, method)
	}
}

// resetTime turns a reported operating_reset_at into a time within the next Window (a clock
// skew or a bogus value must not block a method for longer).
func (l *limiter) resetTime(now time.Time, unix int64) time.Time {
	w := l.p.OperatingLimit.Window
	if unix <= 0 {
		return now.Add(w)
	}
	t := time.Unix(unix, 0)
	if t.After(now.Add(w)) {
		return now.Add(w)
	}
	return t
}

// operationTimeLimit records a 429 OPERATION_TIME_LIMIT for method: the method is blocked until
// resetAt, or for a tenth of the Window when resetAt is zero or already past.
func (l *limiter) operationTimeLimit(method string, resetAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.p.operatingOff() {
		return
	}
	now := l.now()
	w := l.p.OperatingLimit.Window
	switch {
	case !resetAt.After(now):
		resetAt = now.Add(w / 10)
	case resetAt.After(now.Add(w)):
		resetAt = now.Add(w)
	}
	l.sweep(now)
	st := l.methods[method]
	if st == nil {
		st = &methodState{}
		l.methods[method] = st
	}
	st.seen = now
	if resetAt.After(st.blockedUntil) {
		st.blockedUntil = resetAt
	}
	// The portal counts the method as over its limit for the rest of its window.
	st.operating = math.Max(st.operating, l.p.OperatingLimit.Limit.Seconds())
	if resetAt.After(st.resetAt) {
		st.resetAt = resetAt
	}
}

// queryLimitExceeded records a 503 QUERY_LIMIT_EXCEEDED: the portal's bucket is full although
// ours was not, so something else drains it too. When RateLimit.Adaptive is set, the bucket is
// emptied (the next request waits for one token to drain) and the rate halved, as
// RateLimitParams.Adaptive describes. Otherwise it does nothing.
func (l *limiter) queryLimitExceeded() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.p.RateLimit.Adaptive || l.bucket == nil {
		return
	}
	now := l.now()
	l.recoverRate(now)
	if tokens := l.bucket.TokensAt(now); tokens > 0 {
		l.bucket.ReserveN(now, int(math.Ceil(tokens)))
	}
	// Requests in flight when the bucket overflowed all come back with a 503: halve once for them.
	if l.lastCut.IsZero() || now.Sub(l.lastCut) >= adaptiveCutCooldown {
		l.factor = math.Max(adaptiveMinFactor, l.factor/2)
		l.lastCut = now
	}
	l.cutFactor = l.factor
	l.penaltyAt = now
	l.bucket.SetLimitAt(now, l.rateLimit())
}

// recoverRate raises a reduced rate by adaptiveStep for every adaptiveRecovery since the last
// 503. l.mu is held.
func (l *limiter) recoverRate(now time.Time) {
	if l.factor >= 1 || l.bucket == nil {
		return
	}
	steps := math.Floor(float64(now.Sub(l.penaltyAt)) / float64(adaptiveRecovery))
	f := math.Min(1, l.cutFactor+math.Max(0, steps)*adaptiveStep)
	if f != l.factor {
		l.factor = f
		l.bucket.SetLimitAt(now, l.rateLimit())
	}
}

// sweep forgets methods not seen for a Window that are not blocked, at most once per Window/10,
// so that the state stays as small as the set of methods in recent use. l.mu is held.
func (l *limiter) sweep(now time.Time) {
	w := l.p.OperatingLimit.Window
	if now.Sub(l.lastSweep) < w/operatingSweepDivide {
		return
	}
	l.lastSweep = now
	for m, st := range l.methods {
		if now.Sub(st.seen) > w && !st.blockedUntil.After(now) {
			delete(l.methods, m)
		}
	}
}

// backoff is the delay before retry number attempt (1, 2, 3, ...) of a rejected call: base
// doubled per attempt, capped at 30s (or base, if larger), with equal jitter: a random delay
// between half and all of that. It is never zero. base ≤ 0 means 1s; attempt < 1 counts as 1.
func backoff(attempt int, base time.Duration) time.Duration {
	if base <= 0 {
		base = defaultRetryDelay
	}
	limit := max(maxBackoff, base)
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		if d > limit/2 {
			d = limit
			break
		}
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return d - half + rand.N(half+1)
}

// atRest reports whether l behaves as a new limiter would: a full bucket, no slow-down after a
// 503, nothing known of any method's operating time. Such a limiter can be dropped and made
// again.
func (l *limiter) atRest() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.recoverRate(now)
	if l.factor < 1 {
		return false
	}
	if l.bucket != nil && l.bucket.TokensAt(now) < float64(l.bucket.Burst()) {
		return false
	}
	w := l.p.OperatingLimit.Window
	for _, st := range l.methods {
		if now.Sub(st.seen) <= w || st.blockedUntil.After(now) {
			return false
		}
	}
	return true
}

// available is how many requests the bucket would let through now without waiting (the burst
// when the request-rate limiter is off, or when a shared limiter decides).
func (l *limiter) available() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bucket == nil {
		return l.p.burst()
	}
	if l.shared != nil {
		return l.bucket.Burst()
	}
	return max(0, int(l.bucket.TokensAt(l.now())))
}
