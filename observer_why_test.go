package b24oauth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// A limiter wait says which limit held the request: the client's own bucket, the method's
// operating-time budget, the shared RateLimiter, or none; and whether the in-process bucket
// stood in for a shared limiter that failed.
func TestObserverSaysWhatHeldARequest(t *testing.T) {
	ctx := context.Background()
	t.Run("bucket", func(t *testing.T) {
		fake := newFake(t)
		p := fake.AddPortal()
		obs := &recordingObserver{}
		rp := *unlimitedParams()
		rp.RateLimit = b24oauth.RateLimitParams{BurstLimit: 3, DrainRate: 50}
		c := newClient(t, fake, p, b24oauth.WithObserver(obs), b24oauth.WithRestrictionParams(rp))
		var none, bucket int
		for range 10 { // the bucket (less its headroom) holds 2: the later calls wait their turn
			mustCallProfile(t, c)
		}
		for _, w := range obs.of("wait", obs.take()) {
			switch {
			case w.wait.Err != nil || w.wait.Fallback:
				t.Errorf("wait %+v", w.wait)
			case w.wait.Limit == "":
				none++
			case w.wait.Limit == b24oauth.LimitBucket && w.wait.Wait > 0:
				bucket++
			default:
				t.Errorf("wait %+v, want none or bucket", w.wait)
			}
		}
		if none == 0 || bucket == 0 || none+bucket != 10 {
			t.Errorf("%d waits not held, %d held by the bucket; want both, 10 in all", none, bucket)
		}
	})
	t.Run("operating", func(t *testing.T) {
		fake := newFake(t, b24test.WithOperatingLimit(10*time.Minute, 480*time.Second))
		fake.SetMethodDuration("crm.deal.get", 500*time.Second) // one call uses the budget up
		p := fake.AddPortal()
		p.SeedDeals(1)
		obs := &recordingObserver{}
		c := newClient(t, fake, p, b24oauth.WithObserver(obs))
		if _, err := c.Call(ctx, "crm.deal.get", map[string]any{"id": 1}); err != nil {
			t.Fatal(err)
		}
		obs.take()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := c.Call(dctx, "crm.deal.get", map[string]any{"id": 1}); err == nil {
			t.Fatal("a method past its operating budget was let through")
		}
		w := obs.of("wait", obs.take())
		if len(w) != 1 || w[0].wait.Limit != b24oauth.LimitOperating || !errors.Is(w[0].wait.Err, context.DeadlineExceeded) {
			t.Errorf("waits %+v, want one refused, held by the operating limit", w)
		}
	})
	t.Run("shared", func(t *testing.T) {
		c, rl, obs := newObservedSharedClient(t)
		rl.set(20*time.Millisecond, nil)
		obs.take()
		mustCallProfile(t, c)
		if w := obs.of("wait", obs.take()); len(w) != 1 || w[0].wait.Limit != b24oauth.LimitShared || w[0].wait.Fallback ||
			w[0].wait.Wait < 20*time.Millisecond {
			t.Errorf("waits %+v, want one of 20 ms or more, held by the shared limiter", w)
		}
		rl.set(0, errors.New("redis: connection refused"))
		mustCallProfile(t, c)
		mustCallProfile(t, c) // the shared limiter rests after a failure: the bucket stands in at once
		w := obs.of("wait", obs.take())
		if len(w) != 2 {
			t.Fatalf("waits %+v, want 2", w)
		}
		for _, w := range w {
			if !w.wait.Fallback || w.wait.Err != nil || w.wait.Limit == b24oauth.LimitShared {
				t.Errorf("wait %+v while the shared limiter is down, want Fallback", w.wait)
			}
		}
	})
}

// A refresh says why it runs: the token was expiring, the portal refused it, or the caller
// asked (KeepAlive and the re-check of a stale mark: TestObserverReportsTheApp and
// TestObserverRedTeamKeepAliveRecheck).
func TestObserverSaysWhyARefreshRan(t *testing.T) {
	ctx := context.Background()
	fake := newFake(t)
	p := fake.AddPortal()
	obs := &recordingObserver{}
	params := paramsFor(fake, p)
	params.Expires = time.Now().Add(-time.Minute).Unix() // the client knows its token is spent
	c, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret()},
		append(fakeOptions(fake), b24oauth.WithObserver(obs))...)
	if err != nil {
		t.Fatal(err)
	}
	trigger := func(what string) string {
		t.Helper()
		r := obs.of("refresh", obs.take())
		if len(r) != 1 || r[0].refRes.Outcome != b24oauth.RefreshOK {
			t.Fatalf("%s: refreshes %+v, want one ok", what, r)
		}
		return r[0].ref.Trigger
	}
	mustCallProfile(t, c)
	if got := trigger("a call with an expired token"); got != b24oauth.TriggerExpiring {
		t.Errorf("a call with an expired token: trigger %q, want %q", got, b24oauth.TriggerExpiring)
	}
	p.ExpireAccessToken()
	mustCallProfile(t, c)
	if got := trigger("a call the portal refused"); got != b24oauth.TriggerRejected {
		t.Errorf("a call the portal refused: trigger %q, want %q", got, b24oauth.TriggerRejected)
	}
	if _, err := c.Auth().RefreshAuth(ctx); err != nil {
		t.Fatal(err)
	}
	if got := trigger("RefreshAuth"); got != b24oauth.TriggerRequested {
		t.Errorf("RefreshAuth: trigger %q, want %q", got, b24oauth.TriggerRequested)
	}
	obs.check(t, tokensOf(fake, p)...)
}

// newObservedSharedClient is the client of an installed portal of an App with the default
// limits, a fakeRateLimiter as its shared limiter and a recordingObserver.
func newObservedSharedClient(t *testing.T) (*b24oauth.B24OAuth, *fakeRateLimiter, *recordingObserver) {
	t.Helper()
	rl, obs := &fakeRateLimiter{}, &recordingObserver{}
	e := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(cfg *b24oauth.AppConfig) {
		p := b24oauth.DefaultRestrictionParams()
		p.RetryDelay = time.Millisecond
		cfg.Restriction, cfg.RateLimiter, cfg.Observer = &p, rl, obs
	})
	return e.client(e.install().MemberID()), rl, obs
}
