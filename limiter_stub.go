package b24oauth

// TEMPORARY: replaced by limiter.go from the limiter branch.

import (
	"context"
	"time"
)

type RestrictionParams struct {
	RateLimit      RateLimitParams
	OperatingLimit OperatingLimitParams
	MaxRetries     int
	RetryDelay     time.Duration
}
type RateLimitParams struct {
	BurstLimit, DrainRate float64
	Adaptive              bool
}
type OperatingLimitParams struct {
	Window, Limit time.Duration
	HeavyPercent  float64
}

func DefaultRestrictionParams() RestrictionParams {
	return RestrictionParams{RateLimit: RateLimitParams{50, 2, true}, OperatingLimit: OperatingLimitParams{10 * time.Minute, 480 * time.Second, 80}, MaxRetries: 3, RetryDelay: time.Second}
}
func EnterpriseRestrictionParams() RestrictionParams {
	p := DefaultRestrictionParams()
	p.RateLimit.BurstLimit, p.RateLimit.DrainRate = 250, 5
	return p
}
func (p RestrictionParams) withDefaults() RestrictionParams { return p }

type limiter struct{}

func newLimiter(p RestrictionParams) *limiter                              { return &limiter{} }
func (l *limiter) setParams(p RestrictionParams)                           {}
func (l *limiter) wait(ctx context.Context, method string) error           { return ctx.Err() }
func (l *limiter) observe(method string, operating float64, resetAt int64) {}
func (l *limiter) queryLimitExceeded()                                     {}
func (l *limiter) operationTimeLimit(method string, resetAt time.Time)     {}
func backoff(attempt int, base time.Duration) time.Duration                { return base }
