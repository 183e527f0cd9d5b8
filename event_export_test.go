package b24oauth

// ClientLimiter returns the identity of the rate limiter c uses.
func ClientLimiter(c *B24OAuth) any { return c.limiter }

// OfflineLeftovers returns the reservations a pull of memberID's queue left for the next one.
func OfflineLeftovers(a *App, memberID string) []string {
	a.inbound.offlineMu.Lock()
	defer a.inbound.offlineMu.Unlock()
	return append([]string(nil), a.inbound.offlineLeft[memberID]...)
}
