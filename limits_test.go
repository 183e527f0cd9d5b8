package b24oauth_test

import (
	"time"

	"github.com/b24go/b24oauth"
)

// unlimited turns the client's own rate limiting off, for tests whose subject is not the
// limiter (the limiter's pace would make them slow), and makes retries quick.
func unlimited() b24oauth.Option {
	return b24oauth.WithRestrictionParams(b24oauth.RestrictionParams{
		RateLimit:  b24oauth.RateLimitParams{DrainRate: -1},
		MaxRetries: 3,
		RetryDelay: time.Millisecond,
	})
}
