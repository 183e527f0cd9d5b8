package b24oauth

import "time"

// SetAppClock replaces the clock an App stamps installations and refresh marks with, so that
// tests can assert exact times. Call it before the App is used.
func SetAppClock(a *App, now func() time.Time) { a.now = now }
