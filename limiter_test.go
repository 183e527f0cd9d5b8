package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/time/rate"
)

// fakeClock is a virtual clock: sleeping advances it at once, so limiter tests never wait.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept []time.Duration

	// onSleep, if set, runs instead of advancing the clock (e.g. to cancel a context).
	onSleep func(ctx context.Context, d time.Duration) error
}

var testEpoch = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	hook := c.onSleep
	c.mu.Unlock()
	if hook != nil {
		return hook(ctx, d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept = append(c.slept, d)
	return nil
}

// takeSleeps returns the sleeps since the last call and forgets them.
func (c *fakeClock) takeSleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slept
	c.slept = nil
	return s
}

func newTestLimiter(p RestrictionParams) (*limiter, *fakeClock) {
	c := &fakeClock{t: testEpoch}
	l := newLimiter(p)
	l.now, l.sleep = c.now, c.sleep
	return l, c
}

// rateParams is DefaultRestrictionParams with another bucket.
func rateParams(burst, drain float64, adaptive bool) RestrictionParams {
	p := DefaultRestrictionParams()
	p.RateLimit = RateLimitParams{BurstLimit: burst, DrainRate: drain, Adaptive: adaptive}
	return p
}

func mustWait(t *testing.T, l *limiter, method string) {
	t.Helper()
	if err := l.wait(context.Background(), method, 1); err != nil {
		t.Fatalf("wait(%q): %v", method, err)
	}
}

func TestLimiterParamsDefaults(t *testing.T) {
	def := DefaultRestrictionParams()
	tests := []struct {
		name string
		in   RestrictionParams
		want RestrictionParams
	}{
		{"zero is the default", RestrictionParams{}, def},
		{"default is kept", def, def},
		{"enterprise is kept", EnterpriseRestrictionParams(), EnterpriseRestrictionParams()},
		{
			"zero fields are filled, MaxRetries and Adaptive kept",
			RestrictionParams{RetryDelay: 2 * time.Second},
			RestrictionParams{
				RateLimit:      RateLimitParams{BurstLimit: 50, DrainRate: 2},
				OperatingLimit: OperatingLimitParams{Window: 10 * time.Minute, Limit: 480 * time.Second, HeavyPercent: 80},
				RetryDelay:     2 * time.Second,
			},
		},
		{
			"negative values",
			RestrictionParams{
				RateLimit:      RateLimitParams{BurstLimit: -1, DrainRate: -1, Adaptive: true},
				OperatingLimit: OperatingLimitParams{Window: -time.Second, Limit: -1, HeavyPercent: -5},
				MaxRetries:     -2,
				RetryDelay:     -time.Second,
			},
			RestrictionParams{
				RateLimit:      RateLimitParams{BurstLimit: 50, DrainRate: -1, Adaptive: true},
				OperatingLimit: OperatingLimitParams{Window: 10 * time.Minute, Limit: -1, HeavyPercent: 80},
				MaxRetries:     0,
				RetryDelay:     time.Second,
			},
		},
		{
			"NaN rates",
			RestrictionParams{RateLimit: RateLimitParams{BurstLimit: math.NaN(), DrainRate: math.NaN()}, MaxRetries: 1},
			RestrictionParams{
				RateLimit:      RateLimitParams{BurstLimit: 50, DrainRate: 2},
				OperatingLimit: def.OperatingLimit,
				MaxRetries:     1,
				RetryDelay:     time.Second,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.in.withDefaults()); diff != "" {
				t.Errorf("withDefaults() mismatch (-want +got):\n%s", diff)
			}
		})
	}

	want := RestrictionParams{
		RateLimit:      RateLimitParams{BurstLimit: 50, DrainRate: 2, Adaptive: true},
		OperatingLimit: OperatingLimitParams{Window: 10 * time.Minute, Limit: 480 * time.Second, HeavyPercent: 80},
		MaxRetries:     3,
		RetryDelay:     time.Second,
	}
	if diff := cmp.Diff(want, def); diff != "" {
		t.Errorf("DefaultRestrictionParams() mismatch (-want +got):\n%s", diff)
	}
	want.RateLimit.BurstLimit, want.RateLimit.DrainRate = 250, 5
	if diff := cmp.Diff(want, EnterpriseRestrictionParams()); diff != "" {
		t.Errorf("EnterpriseRestrictionParams() mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterBurstThenDrain(t *testing.T) {
	l, c := newTestLimiter(rateParams(6, 2, false))
	for range 5 { // the burst, less one request of headroom
		mustWait(t, l, "crm.deal.list")
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Fatalf("the burst slept %v, want no sleep", s)
	}
	for range 3 {
		mustWait(t, l, "crm.deal.list")
	}
	want := []time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}
	if diff := cmp.Diff(want, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps after the burst mismatch (-want +got):\n%s", diff)
	}

	// The bucket refills while idle, up to the burst.
	c.advance(time.Hour)
	for range 5 {
		mustWait(t, l, "user.get")
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("a refilled burst slept %v", s)
	}
}

func TestLimiterFractionalBurst(t *testing.T) {
	l, c := newTestLimiter(rateParams(2.5, 1, false))
	mustWait(t, l, "m")
	mustWait(t, l, "m")
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("burst 2.5 (rounded up to 3, less one request of headroom) slept %v", s)
	}
}

func TestLimiterWaitCancelledKeepsToken(t *testing.T) {
	l, c := newTestLimiter(rateParams(1, 1, false))
	mustWait(t, l, "m")
	before := l.bucket.TokensAt(c.now())

	ctx, cancel := context.WithCancel(context.Background())
	c.onSleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return ctx.Err()
	}
	err := l.wait(ctx, "m", 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context = %v, want context.Canceled", err)
	}
	if got := l.bucket.TokensAt(c.now()); got != before {
		t.Errorf("tokens after a cancelled wait = %v, want %v", got, before)
	}

	// An already cancelled context fails at once, whatever the bucket holds.
	c.onSleep = nil
	c.advance(time.Hour)
	if err := l.wait(ctx, "m", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("wait(cancelled ctx) = %v, want context.Canceled", err)
	}
	if got := l.bucket.TokensAt(c.now()); got != 1 {
		t.Errorf("tokens after wait(cancelled ctx) = %v, want 1", got)
	}

	// The next caller waits for one token only, not for the cancelled one too.
	mustWait(t, l, "m")
	mustWait(t, l, "m")
	if diff := cmp.Diff([]time.Duration{time.Second}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterWaitRealTimerCancel(t *testing.T) {
	l := newLimiter(rateParams(1, 0.001, false)) // a token every 1000s: wait blocks until cancelled
	mustWait(t, l, "m")
	sleeping := make(chan struct{})
	l.sleep = func(ctx context.Context, d time.Duration) error {
		close(sleeping)
		return sleepContext(ctx, d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- l.wait(ctx, "m", 1) }()
	<-sleeping
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait = %v, want context.Canceled", err)
	}
	if got := l.bucket.Tokens(); got < 0 {
		t.Errorf("tokens after a cancelled wait = %v, want ≥ 0 (the reservation given back)", got)
	}
}

func TestLimiterSleepContext(t *testing.T) {
	ctx := context.Background()
	if err := sleepContext(ctx, 0); err != nil {
		t.Errorf("sleepContext(0) = %v", err)
	}
	if err := sleepContext(ctx, time.Millisecond); err != nil {
		t.Errorf("sleepContext(1ms) = %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := sleepContext(cancelled, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("sleepContext(cancelled, 1h) = %v, want context.Canceled", err)
	}
}

func TestLimiterWaitPastDeadline(t *testing.T) {
	l, c := newTestLimiter(rateParams(1, 1.0/3600, false)) // a token an hour
	// Context deadlines are in real time: start the fake clock there.
	c.t = time.Now()
	mustWait(t, l, "m")
	ctx, cancel := context.WithDeadline(context.Background(), c.now().Add(10*time.Minute))
	defer cancel()
	err := l.wait(ctx, "m", 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the deadline = %v, want context.DeadlineExceeded", err)
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("wait past the deadline slept %v, want to fail at once", s)
	}
	if got := l.bucket.TokensAt(c.now()); got != 0 {
		t.Errorf("tokens = %v, want 0 (nothing taken)", got)
	}

	ctx2, cancel2 := context.WithDeadline(context.Background(), c.now().Add(2*time.Hour))
	defer cancel2()
	if err := l.wait(ctx2, "m", 1); err != nil {
		t.Errorf("wait within the deadline: %v", err)
	}
	if diff := cmp.Diff([]time.Duration{time.Hour}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterAdaptive(t *testing.T) {
	l, c := newTestLimiter(rateParams(10, 2, true))
	mustWait(t, l, "m")

	l.queryLimitExceeded()
	l.queryLimitExceeded() // more 503s of requests that were in flight halve only once
	if got := l.bucket.TokensAt(c.now()); got > 0 {
		t.Errorf("tokens after a 503 = %v, want the bucket emptied", got)
	}
	if got := l.bucket.Limit(); got != 1 {
		t.Errorf("rate after a 503 = %v, want 1 (halved)", got)
	}
	mustWait(t, l, "m")
	if diff := cmp.Diff([]time.Duration{time.Second}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps after a 503 mismatch (-want +got):\n%s", diff)
	}

	// Later ones halve again, down to an eighth of DrainRate.
	for _, want := range []rate.Limit{0.5, 0.25, 0.25} {
		c.advance(time.Second)
		l.queryLimitExceeded()
		if got := l.bucket.Limit(); got != want {
			t.Errorf("rate after another 503 = %v, want %v", got, want)
		}
	}

	// Recovery: an eighth of DrainRate per 5s without a 503, up to DrainRate.
	for _, want := range []rate.Limit{0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2} {
		if got := l.bucket.Limit(); got != want {
			t.Errorf("rate after %v without a 503 = %v, want %v", c.now().Sub(l.penaltyAt), got, want)
		}
		c.advance(adaptiveRecovery)
		mustWait(t, l, "m")
	}
	if l.factor != 1 {
		t.Errorf("factor = %v, want 1 after recovery", l.factor)
	}
}

func TestLimiterNotAdaptive(t *testing.T) {
	l, c := newTestLimiter(rateParams(10, 2, false))
	l.queryLimitExceeded()
	if got := l.bucket.TokensAt(c.now()); got != 9 {
		t.Errorf("tokens = %v, want 9: the burst less its headroom (a non-adaptive limiter ignores 503s)", got)
	}
	if got := l.bucket.Limit(); got != 2 {
		t.Errorf("rate = %v, want 2", got)
	}
}

func TestLimiterSetParams(t *testing.T) {
	l, c := newTestLimiter(rateParams(10, 2, true))
	for range 4 {
		mustWait(t, l, "m")
	}
	l.setParams(EnterpriseRestrictionParams())
	if got := l.bucket.TokensAt(c.now()); got != 5 {
		t.Errorf("tokens after raising the burst = %v, want 5 (kept)", got)
	}
	if got, want := l.params(), EnterpriseRestrictionParams(); !cmp.Equal(got, want) {
		t.Errorf("params() = %+v, want %+v", got, want)
	}
	l.setParams(rateParams(3, 2, true))
	if got := l.bucket.TokensAt(c.now()); got != 2 {
		t.Errorf("tokens after lowering the burst = %v, want 2 (capped at 3 less the headroom)", got)
	}

	// A reduced adaptive rate stays reduced across a change of burst, and is reset by turning
	// Adaptive off.
	l.queryLimitExceeded()
	l.setParams(rateParams(5, 2, true))
	if got := l.bucket.Limit(); got != 1 {
		t.Errorf("rate = %v, want 1 (still reduced)", got)
	}
	l.setParams(rateParams(5, 2, false))
	if got := l.bucket.Limit(); got != 2 {
		t.Errorf("rate = %v, want 2", got)
	}

	// Turned off: nothing waits.
	off := DefaultRestrictionParams()
	off.RateLimit.DrainRate = -1
	l.setParams(off)
	c.takeSleeps()
	for range 1000 {
		mustWait(t, l, "m")
	}
	l.queryLimitExceeded()
	mustWait(t, l, "m")
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("a limiter turned off slept %v", s)
	}

	// Turned on again: a full bucket (3 less one request of headroom).
	l.setParams(rateParams(3, 1, false))
	for range 3 {
		mustWait(t, l, "m")
	}
	if diff := cmp.Diff([]time.Duration{time.Second}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

// unlimitedRate is DefaultRestrictionParams without the request-rate limit, to test the
// operating limit alone.
func unlimitedRate() RestrictionParams {
	p := DefaultRestrictionParams()
	p.RateLimit.DrainRate = -1
	return p
}

func TestLimiterOperatingLight(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	reset := c.now().Add(5 * time.Minute).Unix()
	l.observe("crm.deal.list", 0, reset)
	if len(l.methods) != 0 {
		t.Errorf("a method without operating time has state: %v", l.methods)
	}
	l.observe("crm.deal.list", 300, reset) // below 80% of 480s
	for range 10 {
		mustWait(t, l, "crm.deal.list")
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("a light method slept %v", s)
	}
	l.observe("crm.deal.list", 0, reset)
	if len(l.methods) != 0 {
		t.Errorf("state kept after operating dropped to 0: %v", l.methods)
	}
}

func TestLimiterOperatingHeavyPacing(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	const m = "crm.deal.list"
	// 400s of 480s used, 80s left; the window resets in 200s; the call cost is unknown (1s):
	// 80 calls over 200s, one per 2.5s.
	l.observe(m, 400, c.now().Add(200*time.Second).Unix())
	for range 3 {
		mustWait(t, l, m)
	}
	want := []time.Duration{2500 * time.Millisecond, 2500 * time.Millisecond}
	if diff := cmp.Diff(want, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps of a heavy method mismatch (-want +got):\n%s", diff)
	}

	// Other methods are not affected.
	for range 5 {
		mustWait(t, l, "user.get")
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("another method slept %v", s)
	}

	// A measured cost: 2s per call (400 → 402 → 404 → 406).
	l.observe(m, 402, 0)
	l.observe(m, 404, 0)
	st := l.methods[m]
	if !st.costKnown || st.cost != 2 {
		t.Fatalf("cost = %v (known %v), want 2", st.cost, st.costKnown)
	}
	reset := c.now().Add(148 * time.Second)
	l.observe(m, 406, reset.Unix())
	c.advance(time.Minute) // the earlier pacing slots are long past
	mustWait(t, l, m)
	mustWait(t, l, m)
	// 88s left until reset, 74s of budget, 2s a call: 37 calls, one per 88/37 s.
	left := 88 * time.Second
	want = []time.Duration{time.Duration(float64(left) * 2 / 74)}
	if diff := cmp.Diff(want, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps with a measured cost mismatch (-want +got):\n%s", diff)
	}

	// After the window resets, the method is light again.
	c.advance(2 * time.Minute)
	for range 3 {
		mustWait(t, l, m)
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("a method whose window was reset slept %v", s)
	}
}

func TestLimiterOperatingLastCallWaitsForReset(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	l.observe("m", 479.5, c.now().Add(30*time.Second).Unix()) // less than a call's cost left
	mustWait(t, l, "m")
	mustWait(t, l, "m")
	if diff := cmp.Diff([]time.Duration{30 * time.Second}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterPacingFollowsFresherFigures(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	l.observe("m", 479.5, c.now().Add(30*time.Second).Unix())
	mustWait(t, l, "m") // the next slot is 30s away
	// Old time expired: 80s of budget left for 200s.
	l.observe("m", 400, c.now().Add(200*time.Second).Unix())
	mustWait(t, l, "m")
	if diff := cmp.Diff([]time.Duration{2500 * time.Millisecond}, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterOperatingBlock(t *testing.T) {
	tests := []struct {
		name  string
		block func(l *limiter, now time.Time)
		want  time.Duration
	}{
		{"reported over the limit", func(l *limiter, now time.Time) { l.observe("m", 480, now.Add(100*time.Second).Unix()) }, 100 * time.Second},
		{"reported over the limit, no reset time", func(l *limiter, now time.Time) { l.observe("m", 500, 0) }, 10 * time.Minute},
		{"429 with a reset time", func(l *limiter, now time.Time) { l.operationTimeLimit("m", now.Add(30*time.Second)) }, 30 * time.Second},
		{"429 without a reset time", func(l *limiter, now time.Time) { l.operationTimeLimit("m", time.Time{}) }, time.Minute},
		{"429 with a past reset time", func(l *limiter, now time.Time) { l.operationTimeLimit("m", now.Add(-time.Second)) }, time.Minute},
		{"429 with a far reset time", func(l *limiter, now time.Time) { l.operationTimeLimit("m", now.Add(24*time.Hour)) }, 10 * time.Minute},
		{"bogus reset time", func(l *limiter, now time.Time) { l.observe("m", 480, now.Add(24*time.Hour).Unix()) }, 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, c := newTestLimiter(unlimitedRate())
			tt.block(l, c.now())
			mustWait(t, l, "other")
			if s := c.takeSleeps(); len(s) != 0 {
				t.Errorf("another method slept %v", s)
			}
			mustWait(t, l, "m")
			if diff := cmp.Diff([]time.Duration{tt.want}, c.takeSleeps()); diff != "" {
				t.Errorf("sleeps of the blocked method mismatch (-want +got):\n%s", diff)
			}
			// Once the block is over, the method's window has reset: no pacing.
			mustWait(t, l, "m")
			if s := c.takeSleeps(); len(s) != 0 {
				t.Errorf("the unblocked method slept %v", s)
			}
		})
	}
}

func TestLimiterBlockDuringPacedWait(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	l.observe("m", 400, c.now().Add(200*time.Second).Unix())
	mustWait(t, l, "m") // takes the first slot
	// A 429 arrives while the next caller sleeps for its slot: it then waits for the block too.
	c.onSleep = func(ctx context.Context, d time.Duration) error {
		c.onSleep = nil
		l.operationTimeLimit("m", c.now().Add(time.Minute))
		return c.sleep(ctx, d)
	}
	mustWait(t, l, "m")
	want := []time.Duration{2500 * time.Millisecond, time.Minute - 2500*time.Millisecond}
	if diff := cmp.Diff(want, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

func TestLimiterPacingSlotReleasedOnCancel(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	l.observe("m", 400, c.now().Add(200*time.Second).Unix())
	mustWait(t, l, "m")
	next := l.methods["m"].next

	ctx, cancel := context.WithCancel(context.Background())
	c.onSleep = func(ctx context.Context, d time.Duration) error {
		cancel()
		return ctx.Err()
	}
	if err := l.wait(ctx, "m", 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait = %v, want context.Canceled", err)
	}
	if got := l.methods["m"].next; !got.Equal(next) {
		t.Errorf("next slot after a cancelled wait = %v, want %v (given back)", got, next)
	}
}

func TestLimiterOperatingOff(t *testing.T) {
	p := unlimitedRate()
	p.OperatingLimit.Limit = -1
	l, c := newTestLimiter(p)
	l.observe("m", 1000, c.now().Add(time.Minute).Unix())
	l.operationTimeLimit("m", c.now().Add(time.Minute))
	mustWait(t, l, "m")
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("a limiter without operating limit slept %v", s)
	}
	if len(l.methods) != 0 {
		t.Errorf("state kept: %v", l.methods)
	}

	// Turning it off live forgets a block.
	l.setParams(unlimitedRate())
	l.operationTimeLimit("m", c.now().Add(time.Minute))
	l.setParams(p)
	mustWait(t, l, "m")
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("slept %v after turning the operating limit off", s)
	}
}

func TestLimiterForgetsOldMethods(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	for i := range 100 {
		l.observe(fmt.Sprintf("method.%d", i), 10, 0)
	}
	c.advance(5 * time.Minute)
	l.operationTimeLimit("blocked", c.now().Add(time.Minute))
	l.observe("method.7", 20, 0)
	c.advance(5*time.Minute + time.Second)
	l.observe("fresh", 1, 0)
	var got []string
	for m := range l.methods {
		got = append(got, m)
	}
	want := []string{"blocked", "fresh", "method.7"}
	if diff := cmp.Diff(want, got, cmpSortStrings); diff != "" {
		t.Errorf("methods kept mismatch (-want +got):\n%s", diff)
	}
}

var cmpSortStrings = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestLimiterIgnoresBogusOperating(t *testing.T) {
	l, c := newTestLimiter(unlimitedRate())
	l.observe("m", math.NaN(), 0)
	l.observe("m", math.Inf(1), 0)
	l.observe("m", -5, 0)
	mustWait(t, l, "m")
	if s := c.takeSleeps(); len(s) != 0 || len(l.methods) != 0 {
		t.Errorf("slept %v, state %v; want neither", s, l.methods)
	}
}

// TestLimiterConcurrent exercises every entry point at once, for the race detector.
func TestLimiterConcurrent(t *testing.T) {
	l, c := newTestLimiter(rateParams(5, 50, true))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			method := fmt.Sprintf("m%d", g%3)
			for i := range 50 {
				if err := l.wait(context.Background(), method, 1); err != nil {
					t.Errorf("wait: %v", err)
					return
				}
				switch i % 10 {
				case 3:
					l.observe(method, float64(400+i), c.now().Add(time.Minute).Unix())
				case 5:
					l.queryLimitExceeded()
				case 7:
					l.operationTimeLimit(method, c.now().Add(time.Second))
				case 9:
					if g == 0 {
						l.setParams(rateParams(float64(5+i), 50, i%20 == 9))
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt int
		base    time.Duration
		full    time.Duration // the delay before jitter; backoff is within [full/2, full]
	}{
		{1, time.Second, time.Second},
		{2, time.Second, 2 * time.Second},
		{3, time.Second, 4 * time.Second},
		{5, time.Second, 16 * time.Second},
		{6, time.Second, 30 * time.Second},
		{1000, time.Second, 30 * time.Second},
		{0, time.Second, time.Second},
		{-3, time.Second, time.Second},
		{1, 0, time.Second},
		{2, -time.Second, 2 * time.Second},
		{1, time.Minute, time.Minute},
		{4, time.Minute, time.Minute},
		{3, 100 * time.Millisecond, 400 * time.Millisecond},
		{1, time.Nanosecond, time.Nanosecond},
		{2, time.Nanosecond, 2 * time.Nanosecond},
		{70, math.MaxInt64 / 3, math.MaxInt64 / 3},
	}
	for _, tt := range tests {
		for range 200 {
			got := backoff(tt.attempt, tt.base)
			if got <= 0 || got < tt.full-tt.full/2 || got > tt.full {
				t.Fatalf("backoff(%d, %v) = %v, want within [%v, %v]", tt.attempt, tt.base, got, tt.full-tt.full/2, tt.full)
			}
		}
	}
}

func BenchmarkLimiterWait(b *testing.B) {
	l := newLimiter(rateParams(1<<30, 1e12, true))
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		if err := l.wait(ctx, "crm.deal.list", 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLimiterWaitParallel(b *testing.B) {
	l := newLimiter(rateParams(1<<30, 1e12, true))
	l.observe("crm.deal.get", 10, 0) // some per-method state, not heavy
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.wait(ctx, "crm.deal.list", 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestLimiterBurstHeadroom(t *testing.T) {
	for _, tc := range []struct {
		burst float64
		want  int
	}{{50, 49}, {250, 249}, {10, 9}, {2, 1}, {1, 1}} {
		p := rateParams(tc.burst, 2, true).withDefaults()
		if got := p.burst(); got != tc.want {
			t.Errorf("burst(%v) = %d, want %d", tc.burst, got, tc.want)
		}
	}
	// A fast drain needs more headroom: a quarter second of it, at most a fifth of the burst.
	if got := rateParams(50, 20, true).withDefaults().burst(); got != 45 {
		t.Errorf("burst(50 at 20/s) = %d, want 45", got)
	}
	if got := rateParams(50, 1000, true).withDefaults().burst(); got != 40 {
		t.Errorf("burst(50 at 1000/s) = %d, want 40", got)
	}
}

// A batch takes as many tokens as it has commands (the portal counts every nested call); one
// larger than the burst takes the whole bucket instead of failing.
func TestLimiterBatchCost(t *testing.T) {
	l, c := newTestLimiter(rateParams(50, 2, true)) // 49 tokens after the headroom
	if err := l.wait(context.Background(), "batch", 5); err != nil {
		t.Fatal(err)
	}
	if got := l.bucket.TokensAt(c.now()); got != 44 {
		t.Errorf("tokens after a batch of 5 = %v, want 44", got)
	}
	c.advance(time.Hour)
	if err := l.wait(context.Background(), "batch", 100); err != nil {
		t.Fatalf("batch larger than the burst: %v", err)
	}
	if got := l.bucket.TokensAt(c.now()); got != 0 {
		t.Errorf("tokens after a batch larger than the burst = %v, want 0", got)
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Errorf("slept %v, want no sleep", s)
	}
}

// TestLimiterWaitNCountsEachCommand: a batch of n commands takes n tokens (the portal counts
// each nested call), capped at the burst, which a single request could never exceed.
func TestLimiterWaitNCountsEachCommand(t *testing.T) {
	l, c := newTestLimiter(rateParams(51, 2, false)) // a burst of 50 tokens, 2 a second
	ctx := context.Background()
	if err := l.wait(ctx, "batch", 50); err != nil {
		t.Fatal(err)
	}
	if s := c.takeSleeps(); len(s) != 0 {
		t.Fatalf("a full bucket's worth slept %v, want no sleep", s)
	}
	if err := l.wait(ctx, "batch", 10); err != nil {
		t.Fatal(err)
	}
	if err := l.wait(ctx, "batch", 500); err != nil { // capped at 50
		t.Fatal(err)
	}
	want := []time.Duration{5 * time.Second, 25 * time.Second}
	if diff := cmp.Diff(want, c.takeSleeps()); diff != "" {
		t.Errorf("sleeps mismatch (-want +got):\n%s", diff)
	}
}

// A wait's report names the limit whose holds add up to the longest, or the one a failed wait
// was waiting for: two short operating holds outweigh a longer single bucket hold.
func TestWaitReportLimit(t *testing.T) {
	var r waitReport
	if got := r.limit(); got != "" {
		t.Errorf("nothing held: %q", got)
	}
	r.hold(heldByOperating, 300*time.Millisecond)
	r.hold(heldByBucket, 400*time.Millisecond)
	r.hold(heldByOperating, 200*time.Millisecond)
	if got := r.limit(); got != LimitOperating {
		t.Errorf("operating 500 ms in two holds, bucket 400 ms: %q, want %q", got, LimitOperating)
	}
	r.fail(heldByShared)
	if got := r.limit(); got != LimitShared {
		t.Errorf("failed in the shared limiter: %q, want %q", got, LimitShared)
	}
	var none *waitReport // wait's own calls: no report, nothing recorded, no panic
	none.hold(heldByBucket, time.Second)
	none.fail(heldByBucket)
}
