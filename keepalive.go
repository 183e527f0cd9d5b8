package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"
)

// Refresh tokens lapse when unused (180 days in the current docs; real tokens encode 30 days),
// so a portal nobody calls for a month is lost for good. KeepAlive refreshes the idle ones,
// rarely and paced: the docs warn that refreshing on a short fixed schedule can get an app
// blocked.

// KeepAliveOptions configures one KeepAlive pass.
type KeepAliveOptions struct {
	// IdleFor: a portal whose pair was issued longer ago than this is refreshed; 0: 20 days.
	IdleFor time.Duration
	// Rate: at most this many refreshes per second in one pass (portals that need none cost a
	// store read only); 0: 2 per second. Replicas running a pass at once each keep to it.
	Rate float64
	// Jitter spreads the refreshes: each wait between two is the paced interval times a random
	// factor in [1-Jitter, 1+Jitter]; 0: 0.5. Negative: none.
	Jitter float64
}

// KeepAliveReport counts what one KeepAlive pass did.
type KeepAliveReport struct {
	Checked   int // installations read
	Refreshed int // idle portals refreshed by this pass
	Revoked   int // portals whose refresh token was refused: marked StateRevoked, OnRevoked fired
	Failed    int // refreshes that failed for another reason (network, store): tried again next pass
	Adopted   int // idle portals another process refreshed meanwhile
	Inactive  int // portals already revoked, or without a refresh token
	Duration  time.Duration
}

// String summarizes the report.
func (r KeepAliveReport) String() string {
	return fmt.Sprintf("checked %d, refreshed %d, revoked %d, failed %d, adopted %d, inactive %d in %v",
		r.Checked, r.Refreshed, r.Revoked, r.Failed, r.Adopted, r.Inactive, r.Duration.Round(time.Millisecond))
}

// ErrNotLister is returned by KeepAlive when the App's store cannot enumerate its
// installations (it does not implement Lister).
var ErrNotLister = fmt.Errorf("b24oauth: the store does not implement Lister: %w", errors.ErrUnsupported)

const (
	defaultKeepAliveIdle   = 20 * 24 * time.Hour
	defaultKeepAliveRate   = 2
	defaultKeepAliveJitter = 0.5
)

// KeepAlive makes one pass over the store (which must be a Lister): each active portal whose
// pair was issued longer than opts.IdleFor ago is refreshed once, through the store, so any
// number of replicas running it at once refresh a portal once in total; a portal whose refresh
// token was refused becomes StateRevoked and OnRevoked fires. A portal left with a stale
// "refresh in flight" mark (a process died mid-refresh) is checked whatever its age, so that a
// lost pair is reported even when no call comes.
//
// The pass reads every installation once and paces its refreshes at opts.Rate with jitter, so
// a pass over 100,000 portals never bursts at the OAuth server. It stops at ctx's end and
// returns what it did, with ctx's error. Errors of single portals are counted, not returned;
// an error listing the store ends the pass and is returned.
func (a *App) KeepAlive(ctx context.Context, opts KeepAliveOptions) (KeepAliveReport, error) {
	start := time.Now()
	var rep KeepAliveReport
	lister, ok := a.cfg.Store.(Lister)
	if !ok {
		return rep, ErrNotLister
	}
	if opts.IdleFor <= 0 {
		opts.IdleFor = defaultKeepAliveIdle
	}
	if opts.Rate <= 0 {
		opts.Rate = defaultKeepAliveRate
	}
	if opts.Jitter == 0 {
		opts.Jitter = defaultKeepAliveJitter
	}
	opts.Jitter = min(max(opts.Jitter, 0), 1)
	pace := newPacer(opts.Rate, opts.Jitter)
	var err error
	for id, lerr := range a.storeList(ctx, lister) {
		if lerr != nil {
			err = lerr
			break
		}
		rep.Checked++
		a.keepAliveOne(ctx, id, opts.IdleFor, pace, &rep)
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
	}
	rep.Duration = time.Since(start)
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
	}
	a.log.LogAttrs(ctx, level, "b24oauth: keep-alive pass",
		slog.Int("checked", rep.Checked), slog.Int("refreshed", rep.Refreshed), slog.Int("revoked", rep.Revoked),
		slog.Int("failed", rep.Failed), slog.Int("adopted", rep.Adopted), slog.Duration("duration", rep.Duration), slog.Any("error", err))
	return rep, err
}

// keepAliveOne checks one portal and refreshes it if it is idle.
func (a *App) keepAliveOne(ctx context.Context, memberID string, idleFor time.Duration, pace *pacer, rep *KeepAliveReport) {
	inst, err := a.storeLoad(ctx, memberID)
	switch {
	case errors.Is(err, ErrNotInstalled):
		return // uninstalled since it was listed
	case err != nil:
		rep.Failed++
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: keep-alive: loading an installation failed",
			slog.String("member_id", memberID), slog.Any("error", err))
		return
	case inst.State == StateRevoked || inst.RefreshToken == "":
		rep.Inactive++
		return
	}
	now := a.now()
	staleMark := !inst.RefreshingSince.IsZero() && now.Sub(inst.RefreshingSince) > a.cfg.StaleRefreshAfter
	if !staleMark && now.Sub(pairIssuedAt(inst)) < idleFor {
		return
	}
	if err := pace.wait(ctx); err != nil {
		return
	}
	refreshed, err := a.refreshThroughStore(ctx, inst)
	var rte *RefreshTokenError
	switch {
	case err == nil && refreshed:
		rep.Refreshed++
		a.forget(memberID) // the cached client's pair is spent; the next call builds from the store
	case err == nil:
		rep.Adopted++
		a.forget(memberID)
	case errors.As(err, &rte) && rte.Revoked() && !errors.Is(err, errRefreshElsewhere):
		rep.Revoked++
	default:
		rep.Failed++
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: keep-alive refresh failed; tried again next pass",
			slog.String("member_id", memberID), slog.Any("error", err))
	}
}

// refreshThroughStore refreshes inst's pair the way a client of the App does (the store's
// "refresh in flight" mark, adopt a pair another process stored, revoke on a refused token,
// OnRevoked), and reports whether this call exchanged a token (false: it adopted one).
func (a *App) refreshThroughStore(ctx context.Context, inst Installation) (bool, error) {
	c, err := New(inst.OAuthParams, a.secret, a.clientOpts...)
	if err != nil {
		return false, err
	}
	defer c.Destroy()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultRefreshTimeout)
	defer cancel()
	// A pair exchanged but not stored comes back as a *persistError, counted as failed: the App
	// keeps it for the portal (unsaved) and writes it at the next chance.
	return a.refreshStored(ctx, inst.OAuthParams, c.exchangeHTTP, TriggerKeepAlive)
}

// refreshStored refreshes the stored pair p through the store (storeRefresher.refresh) with
// exchange, reporting it to the Observer, and reports whether a token was exchanged (false: a
// pair stored by another process was adopted, or the refresh failed).
func (a *App) refreshStored(ctx context.Context, p OAuthParams, exchange exchangeFunc, trigger string) (bool, error) {
	ex, issued := issuing(exchange)
	r := &storeRefresher{app: a, memberID: p.MemberID}
	return a.observedRefresh(ctx, p, trigger, func(ctx context.Context) (bool, error) {
		_, err := r.refresh(ctx, p, ex)
		return issued(), err
	})
}

// observedRefresh runs a refresh the App makes without a client (KeepAlive, a re-check),
// reporting it to the Observer; run reports whether it exchanged a token.
func (a *App) observedRefresh(ctx context.Context, p OAuthParams, trigger string, run func(context.Context) (bool, error)) (bool, error) {
	o := a.cfg.Observer
	if o == nil {
		return run(ctx)
	}
	ri := RefreshInfo{MemberID: p.MemberID, Domain: p.Domain, Trigger: trigger}
	start := time.Now()
	ctx = o.RefreshStart(ctx, ri)
	ended := false
	defer func() {
		if !ended { // a panic (the user's store or RoundTripper): the refresh still ends, once
			o.RefreshEnd(ctx, ri, RefreshResult{Outcome: RefreshError, Duration: time.Since(start), Err: errRefreshPanicked})
		}
	}()
	exchanged, err := run(ctx)
	ended = true
	o.RefreshEnd(ctx, ri, RefreshResult{Outcome: refreshOutcome(exchanged, err), Duration: time.Since(start), Err: err})
	return exchanged, err
}

// errRefreshPanicked is RefreshResult.Err of a refresh that panicked.
var errRefreshPanicked = errors.New("b24oauth: the refresh panicked")

// pairIssuedAt is when inst's pair was issued: its access token's expiry less its lifetime,
// else the installation's last write.
func pairIssuedAt(inst Installation) time.Time {
	if inst.Expires > 0 && inst.ExpiresIn > 0 {
		return time.Unix(inst.Expires-inst.ExpiresIn, 0)
	}
	return inst.UpdatedAt
}

// pacer spaces events at a rate, each interval stretched or shrunk by a random jitter.
type pacer struct {
	lim    *rate.Limiter
	jitter float64
	every  time.Duration
	first  bool
}

func newPacer(perSecond, jitter float64) *pacer {
	return &pacer{lim: rate.NewLimiter(rate.Limit(perSecond), 1), jitter: jitter,
		every: time.Duration(float64(time.Second) / perSecond), first: true}
}

// wait returns when the next event may happen, or ctx's error.
func (p *pacer) wait(ctx context.Context) error {
	if err := p.lim.Wait(ctx); err != nil {
		return err
	}
	if p.first || p.jitter == 0 {
		p.first = false
		return nil
	}
	// The limiter spaced this event one interval after the last; move it by up to ±jitter.
	d := time.Duration((rand.Float64()*2 - 1) * p.jitter * float64(p.every))
	if d <= 0 {
		return nil
	}
	return sleepContext(ctx, d)
}

// KeepAliveLoop runs KeepAlive every interval (each wait stretched or shrunk by up to 10% at
// random, so replicas started together drift apart) until ctx ends, and hands each pass's
// report to report (which may be nil). interval 0: a day. It returns ctx's error, or
// ErrNotLister at once when the store cannot list.
//
//	go app.KeepAliveLoop(ctx, 0, b24oauth.KeepAliveOptions{}, func(r b24oauth.KeepAliveReport, err error) {
//		slog.Info("keep-alive", "report", r.String(), "error", err)
//	})
func (a *App) KeepAliveLoop(ctx context.Context, interval time.Duration, opts KeepAliveOptions, report func(KeepAliveReport, error)) error {
	if _, ok := a.cfg.Store.(Lister); !ok {
		return ErrNotLister
	}
	if interval <= 0 {
		interval = 24 * time.Hour
	}
	for {
		rep, err := a.KeepAlive(ctx, opts)
		if report != nil {
			report(rep, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64()))
		if err := sleepContext(ctx, wait); err != nil {
			return err
		}
	}
}
