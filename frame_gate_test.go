package b24oauth

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/time/rate"
)

// The page verification gate refuses a portal past its burst, and waits no longer than the
// caller's context for a verification slot.
func TestFrameGate(t *testing.T) {
	g := &frameGate{perApp: rate.NewLimiter(rate.Inf, 1), inFlight: make(chan struct{}, 1), perMember: map[string]*rate.Limiter{}}
	g.perMember["m"] = rate.NewLimiter(0, 2)
	ctx := context.Background()
	release, err := g.enter(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.enter(cctx, "m"); !errors.Is(err, errFrameBusy) {
		t.Fatalf("no slot free: %v", err)
	}
	release()
	if _, err := g.enter(ctx, "m"); !errors.Is(err, errFrameThrottled) {
		t.Fatalf("past the portal's burst: %v", err)
	}
	other, err := g.enter(ctx, "other")
	if err != nil {
		t.Fatalf("another portal: %v", err)
	}
	other()
}
