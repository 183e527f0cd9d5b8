package b24oauth

import (
	"time"

	"golang.org/x/time/rate"
)

// SetAppClock replaces the clock an App stamps installations and refresh marks with, so that
// tests can assert exact times. Call it before the App is used.
func SetAppClock(a *App, now func() time.Time) { a.now = now }

// SetVerifyLimits replaces the bounds of install verification (per portal: a burst, then one
// every perMemberEvery; per App: rate per second), for tests that send many events on purpose.
func SetVerifyLimits(a *App, perMemberBurst int, perMemberEvery time.Duration, perAppRate float64) {
	g := newVerifyGate()
	g.burst, g.every = perMemberBurst, rate.Every(perMemberEvery)
	g.perApp = rate.NewLimiter(rate.Limit(perAppRate), int(perAppRate)+1)
	g.perAppTrusted = rate.NewLimiter(rate.Limit(perAppRate), int(perAppRate)+1)
	a.verifyGate = g
}

// PortalLimiter returns the identity of the rate limiter the App uses for memberID's portal.
func PortalLimiter(a *App, memberID string) any { return a.portalLimiter(memberID) }
