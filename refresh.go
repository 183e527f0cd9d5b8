package b24oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// RefreshAuthEvent is what a CallbackRefreshAuth receives after a successful refresh: the new
// pair, and the full parameters now in use.
type RefreshAuthEvent struct {
	AuthData AuthData
	Params   OAuthParams
}

// String returns a representation with every token redacted.
func (e RefreshAuthEvent) String() string {
	return "b24oauth.RefreshAuthEvent{AuthData: " + e.AuthData.String() + ", Params: " + e.Params.String() + "}"
}

// GoString is String.
func (e RefreshAuthEvent) GoString() string { return e.String() }

// Format makes every fmt verb print the redacted form.
func (e RefreshAuthEvent) Format(f fmt.State, verb rune) { formatRedacted(f, verb, e.String()) }

// LogValue implements slog.LogValuer with every token redacted.
func (e RefreshAuthEvent) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("auth_data", e.AuthData), slog.Any("params", e.Params))
}

// CallbackRefreshAuth is called after each successful refresh with the new pair, typically to
// persist it. If it returns an error, the new pair stays in use (the old refresh token is spent,
// so it is the only valid one) and is offered to the callback again on later calls until the
// callback accepts it.
type CallbackRefreshAuth func(ctx context.Context, ev RefreshAuthEvent) error

// HandlerRefreshAuth is what a CustomRefreshAuth returns: the OAuth server's reply, with its JSON
// names. Empty fields keep the current value, except RefreshToken: a reply without one leaves
// the client without a refresh token rather than with a spent one. Domain is ignored (the OAuth
// server reports its own domain there); the portal's domain follows ClientEndpoint.
type HandlerRefreshAuth struct {
	AccessToken    string    `json:"access_token"`
	RefreshToken   string    `json:"refresh_token"`
	Expires        int64     `json:"expires"`
	ExpiresIn      int64     `json:"expires_in"`
	ClientEndpoint string    `json:"client_endpoint"`
	ServerEndpoint string    `json:"server_endpoint"`
	MemberID       string    `json:"member_id"`
	Scope          string    `json:"scope"`
	Domain         string    `json:"domain"`
	Status         AppStatus `json:"status"`
}

// String returns a representation with both tokens redacted.
func (h HandlerRefreshAuth) String() string {
	return "b24oauth.HandlerRefreshAuth{MemberID: " + strconv.Quote(h.MemberID) +
		", AccessToken: " + strconv.Quote(redact(h.AccessToken)) +
		", RefreshToken: " + strconv.Quote(redact(h.RefreshToken)) +
		", Expires: " + strconv.FormatInt(h.Expires, 10) +
		", ExpiresIn: " + strconv.FormatInt(h.ExpiresIn, 10) +
		", ClientEndpoint: " + strconv.Quote(h.ClientEndpoint) +
		", ServerEndpoint: " + strconv.Quote(h.ServerEndpoint) +
		", Scope: " + strconv.Quote(h.Scope) +
		", Status: " + strconv.Quote(string(h.Status)) + "}"
}

// GoString is String.
func (h HandlerRefreshAuth) GoString() string { return h.String() }

// Format makes every fmt verb print the redacted form.
func (h HandlerRefreshAuth) Format(f fmt.State, verb rune) { formatRedacted(f, verb, h.String()) }

// LogValue implements slog.LogValuer with both tokens redacted.
func (h HandlerRefreshAuth) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("member_id", h.MemberID),
		slog.String("access_token", redact(h.AccessToken)),
		slog.String("refresh_token", redact(h.RefreshToken)),
		slog.Int64("expires", h.Expires),
	)
}

// CustomRefreshAuth replaces the exchange with the OAuth server (for instance to ask another
// service that owns the tokens). The client still coordinates it (one at a time), applies its
// reply, and calls the CallbackRefreshAuth.
type CustomRefreshAuth func(ctx context.Context) (HandlerRefreshAuth, error)

// SetCallbackRefreshAuth sets the function called after each successful refresh.
func (b *B24OAuth) SetCallbackRefreshAuth(fn CallbackRefreshAuth) {
	b.mu.Lock()
	b.callback = fn
	b.mu.Unlock()
}

// RemoveCallbackRefreshAuth removes the refresh callback, and any pair still waiting for it.
func (b *B24OAuth) RemoveCallbackRefreshAuth() {
	b.mu.Lock()
	b.callback = nil
	b.pending.event = nil
	b.pendingChangedLocked()
	b.mu.Unlock()
}

// SetCustomRefreshAuth replaces the HTTP exchange with the OAuth server by fn.
func (b *B24OAuth) SetCustomRefreshAuth(fn CustomRefreshAuth) {
	b.mu.Lock()
	b.custom = fn
	b.mu.Unlock()
}

// RemoveCustomRefreshAuth restores the exchange with the OAuth server.
func (b *B24OAuth) RemoveCustomRefreshAuth() { b.SetCustomRefreshAuth(nil) }

// exchangeFunc trades cur's refresh token for a new pair and returns cur updated with it.
type exchangeFunc func(ctx context.Context, cur OAuthParams) (OAuthParams, error)

// refresher runs a refresh through an App's store, so that every process sharing the store
// refreshes a portal once and no refreshed pair is lost.
type refresher interface {
	// refresh returns the pair to use from now on: one already stored by another client or
	// process, or the result of exchange, written to the store before it returns. When the
	// exchange succeeded but the write failed, it returns the new pair and a *persistError.
	refresh(ctx context.Context, cur OAuthParams, exchange exchangeFunc) (OAuthParams, error)
	// persist retries the write of next, the pair that replaced prev.
	persist(ctx context.Context, prev, next OAuthParams) error
}

// persistError reports a refresh that succeeded but whose new pair could not be stored. The
// client keeps using the pair and retries the write on later calls.
type persistError struct{ err error }

func (e *persistError) Error() string {
	return "b24oauth: refreshed tokens are in use but could not be stored: " + e.err.Error()
}

func (e *persistError) Unwrap() error { return e.err }

// pendingWork is what a refresh left undone: a store write or a callback that failed.
type pendingWork struct {
	prev, next *OAuthParams      // a pair to write to the store (next replaced prev)
	event      *RefreshAuthEvent // a pair the callback has not accepted yet
}

// refreshCall is one refresh in flight; every goroutine that needs it waits on done.
type refreshCall struct {
	done   chan struct{}
	params *OAuthParams // the pair in use afterwards
	err    error        // the refresh failed
	warn   error        // the refresh succeeded, but storing it or the callback failed
}

// refreshAfter returns a pair newer than the one whose access token is stale, refreshing it if
// nobody has yet. Concurrent callers share one refresh; a caller whose ctx ends stops waiting,
// and the refresh goes on for the others.
//
// trigger (a Trigger constant) is why the caller refreshes; it goes to the Observer with the
// refresh it starts (a caller that joins a refresh in flight starts none).
func (b *B24OAuth) refreshAfter(ctx context.Context, stale, trigger string) (*OAuthParams, error, error) {
	b.mu.Lock()
	c := b.inflight
	if c == nil {
		cur := b.params()
		if cur.AccessToken != stale {
			b.mu.Unlock()
			return cur, nil, nil // someone refreshed while we were looking
		}
		c = &refreshCall{done: make(chan struct{})}
		b.inflight = c
		go b.runRefresh(context.WithoutCancel(ctx), c, cur, trigger)
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.params, c.warn, c.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (b *B24OAuth) runRefresh(ctx context.Context, c *refreshCall, cur *OAuthParams, trigger string) {
	ctx, cancel := context.WithTimeout(ctx, b.refreshTimeout)
	defer cancel()
	log := b.Logger()
	start := time.Now()
	var ri RefreshInfo
	obs := b.observer
	if _, probe := b.refresher.(noRefresh); probe {
		obs = nil // a verification's probe refuses to refresh: there is no refresh to report
	}
	if obs != nil {
		ri = RefreshInfo{MemberID: cur.MemberID, Domain: cur.Domain, Trigger: trigger}
		ctx = obs.RefreshStart(ctx, ri)
	}
	next, exchanged, err := b.exchange(ctx, *cur)
	var res RefreshResult // for the Observer
	var pe *persistError
	if err != nil && !errors.As(err, &pe) {
		err = b.refreshFailed(cur, err)
		if obs != nil {
			res = RefreshResult{Outcome: refreshOutcome(exchanged, err), Duration: time.Since(start), Err: err}
			obs.RefreshEnd(ctx, ri, res)
		}
		log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: refresh failed",
			slog.String("member_id", cur.MemberID), slog.Duration("duration", time.Since(start)), slog.Any("error", err))
		b.mu.Lock()
		b.inflight = nil
		b.mu.Unlock()
		c.err = err
		close(c.done)
		return
	}
	b.mu.Lock()
	b.state.Store(&next)
	if pe != nil {
		prev := *cur
		if b.pending.prev != nil {
			prev = *b.pending.prev // the store still holds the older pair
		}
		b.pending.prev, b.pending.next = &prev, &next
		b.pendingChangedLocked()
		c.warn = pe
	}
	cb := b.callback
	b.mu.Unlock()
	if pe != nil {
		log.LogAttrs(ctx, slog.LevelError, "b24oauth: refreshed tokens are in use but could not be stored; will retry",
			slog.String("member_id", next.MemberID), slog.Any("error", pe.err))
	}
	log.LogAttrs(ctx, slog.LevelDebug, "b24oauth: refreshed",
		slog.String("member_id", next.MemberID), slog.Int64("expires", next.Expires), slog.Duration("duration", time.Since(start)))
	if cb != nil && next.AccessToken != cur.AccessToken {
		ev := RefreshAuthEvent{AuthData: next.authData(), Params: next}
		cbErr := cb(ctx, ev)
		b.mu.Lock()
		if cbErr != nil {
			b.pending.event = &ev
			c.warn = errors.Join(c.warn, cbErr)
		} else {
			b.pending.event = nil
		}
		b.pendingChangedLocked()
		b.mu.Unlock()
		if cbErr != nil {
			log.LogAttrs(ctx, slog.LevelError, "b24oauth: refresh callback failed; the new pair is in use and will be offered again",
				slog.String("member_id", next.MemberID), slog.Any("error", cbErr))
		}
	}
	if obs != nil {
		// c.warn: the store write (pe) or the callback that failed; the pair is in use.
		res = RefreshResult{Outcome: refreshOutcome(exchanged, nil), Duration: time.Since(start), Err: c.warn}
		obs.RefreshEnd(ctx, ri, res)
	}
	b.mu.Lock()
	b.inflight = nil
	b.mu.Unlock()
	c.params = &next
	close(c.done)
}

// exchange runs one refresh: through the App's store when there is one, with the custom
// refresher or the OAuth server. exchanged reports whether a new pair was issued (false: the
// refresh failed, or adopted a pair already stored).
func (b *B24OAuth) exchange(ctx context.Context, cur OAuthParams) (next OAuthParams, exchanged bool, err error) {
	b.mu.Lock()
	custom := b.custom
	b.mu.Unlock()
	ex := b.exchangeHTTP
	if custom != nil {
		ex = func(ctx context.Context, cur OAuthParams) (OAuthParams, error) {
			h, err := custom(ctx)
			if err != nil {
				return cur, err
			}
			return b.applyReply(cur, h, 0, 0)
		}
	}
	if b.refresher == nil {
		next, err = ex(ctx, cur)
		return next, err == nil, err
	}
	ex, issued := issuing(ex)
	next, err = b.refresher.refresh(ctx, cur, ex)
	return next, issued(), err
}

// issuing wraps ex: issued reports whether it has issued a pair. A refresher may keep ex past
// the refresh it was given to (a re-check scheduled for later, on another goroutine), so the
// flag is safe to set then.
func issuing(ex exchangeFunc) (wrapped exchangeFunc, issued func() bool) {
	var done atomic.Bool
	return func(ctx context.Context, cur OAuthParams) (OAuthParams, error) {
		p, err := ex(ctx, cur)
		if err == nil {
			done.Store(true)
		}
		return p, err
	}, done.Load
}

// refreshOutcome classifies a refresh for an Observer: exchanged says whether a new pair was
// issued, err is what the refresh returned.
func refreshOutcome(exchanged bool, err error) string {
	var pe *persistError
	var rte *RefreshTokenError
	switch {
	case err == nil || errors.As(err, &pe):
		if exchanged {
			return RefreshOK
		}
		return RefreshAdopted
	case errors.As(err, &rte) && rte.Revoked() && !errors.Is(err, errRefreshElsewhere):
		return RefreshRevoked
	}
	return RefreshError
}

// refreshFailed turns err into a *RefreshTokenError; a refused refresh token (invalid_grant)
// makes every later call fail fast with it, without asking the OAuth server again.
func (b *B24OAuth) refreshFailed(cur *OAuthParams, err error) error {
	var rte *RefreshTokenError
	if !errors.As(err, &rte) {
		rte = &RefreshTokenError{MemberID: cur.MemberID, Err: err}
		err = rte
	}
	if rte.Revoked() {
		b.invalidate(err)
	}
	return err
}

// tokenReply is the OAuth server's answer, numbers accepted as JSON numbers or strings.
type tokenReply struct {
	AccessToken      string    `json:"access_token"`
	RefreshToken     string    `json:"refresh_token"`
	Expires          flexInt   `json:"expires"`
	ExpiresIn        flexInt   `json:"expires_in"`
	Scope            string    `json:"scope"`
	Domain           string    `json:"domain"`
	ServerEndpoint   string    `json:"server_endpoint"`
	ClientEndpoint   string    `json:"client_endpoint"`
	MemberID         string    `json:"member_id"`
	UserID           flexInt   `json:"user_id"`
	Status           AppStatus `json:"status"`
	Error            string    `json:"error"`
	ErrorDescription string    `json:"error_description"`
}

var errNoRefreshToken = errors.New("b24oauth: no refresh token")

// exchangeHTTP POSTs cur's refresh token to the portal's OAuth server, if that server is
// trusted, and returns cur updated with the reply.
func (b *B24OAuth) exchangeHTTP(ctx context.Context, cur OAuthParams) (OAuthParams, error) {
	r, status, err := b.requestToken(ctx, cur)
	if err != nil {
		return cur, err
	}
	return b.applyReply(cur, r.handler(), int64(r.UserID), status)
}

// requestToken runs the refresh_token grant for cur and returns the OAuth server's reply.
func (b *B24OAuth) requestToken(ctx context.Context, cur OAuthParams) (tokenReply, int, error) {
	var r tokenReply
	origin, err := b.oauthOrigin(cur.ServerEndpoint)
	if err != nil {
		return r, 0, &RefreshTokenError{MemberID: cur.MemberID, Err: err}
	}
	if cur.RefreshToken == "" {
		return r, 0, &RefreshTokenError{MemberID: cur.MemberID, Err: errNoRefreshToken}
	}
	if b.secret.ClientID == "" || b.secret.ClientSecret == "" {
		return r, 0, &RefreshTokenError{MemberID: cur.MemberID, Err: errors.New("b24oauth: OAuthSecret has no client id or secret")}
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"client_id":     {b.secret.ClientID},
		"client_secret": {b.secret.ClientSecret},
		"refresh_token": {cur.RefreshToken},
	}
	return postToken(ctx, b.sender(), origin, form, cur.MemberID)
}

// postToken POSTs a grant's form to the token endpoint of origin, a trusted OAuth server, with
// hc, and returns the reply. Every failure is a *RefreshTokenError naming memberID.
func postToken(ctx context.Context, hc *http.Client, origin string, form url.Values, memberID string) (tokenReply, int, error) {
	var r tokenReply
	// POST, not GET: the secret and the refresh token stay out of URLs and so out of access logs.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, origin+"/oauth/token/", strings.NewReader(form.Encode()))
	if err != nil {
		return r, 0, &RefreshTokenError{MemberID: memberID, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return r, 0, &RefreshTokenError{MemberID: memberID, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Not followed (see refuseRedirect): the body carries the secret and the refresh token.
		return r, resp.StatusCode, &RefreshTokenError{MemberID: memberID, Status: resp.StatusCode,
			Description: "the OAuth server answered with a redirect, which is not followed"}
	}
	// A token reply is < 2 KiB: it is bounded far below the point where a reply takes from
	// the response budget, so none is needed.
	body, _, err := readReply(ctx, resp, maxOAuthReplyBytes, nil)
	if err != nil {
		return r, resp.StatusCode, &RefreshTokenError{MemberID: memberID, Status: resp.StatusCode, Err: err}
	}
	jsonErr := json.Unmarshal(body, &r)
	if resp.StatusCode != http.StatusOK || r.Error != "" {
		e := &RefreshTokenError{Code: r.Error, Description: r.ErrorDescription, Status: resp.StatusCode, MemberID: memberID}
		if jsonErr != nil {
			e.Description = "unexpected reply from the OAuth server"
		}
		return r, resp.StatusCode, e
	}
	if jsonErr != nil {
		return r, resp.StatusCode, &RefreshTokenError{MemberID: memberID, Status: resp.StatusCode, Err: fmt.Errorf("b24oauth: invalid JSON from the OAuth server: %w", jsonErr)}
	}
	return r, resp.StatusCode, nil
}

// handler is the reply as a HandlerRefreshAuth.
func (r tokenReply) handler() HandlerRefreshAuth {
	return HandlerRefreshAuth{
		AccessToken: r.AccessToken, RefreshToken: r.RefreshToken,
		Expires: int64(r.Expires), ExpiresIn: int64(r.ExpiresIn),
		ClientEndpoint: r.ClientEndpoint, ServerEndpoint: r.ServerEndpoint,
		MemberID: r.MemberID, Scope: r.Scope, Domain: r.Domain, Status: r.Status,
	}
}

// applyReply returns cur updated with every field of a refresh reply.
func (b *B24OAuth) applyReply(cur OAuthParams, h HandlerRefreshAuth, userID int64, status int) (OAuthParams, error) {
	bad := func(desc string) (OAuthParams, error) {
		return cur, &RefreshTokenError{Code: "invalid_response", Description: desc, Status: status, MemberID: cur.MemberID}
	}
	if h.AccessToken == "" {
		return bad("the reply has no access_token")
	}
	if h.MemberID != "" && h.MemberID != cur.MemberID {
		return bad("the reply is for another portal (member_id " + h.MemberID + ")")
	}
	next := cur
	next.AccessToken = h.AccessToken
	next.RefreshToken = h.RefreshToken
	next.ExpiresIn = h.ExpiresIn
	next.Expires = h.Expires
	if next.Expires <= 0 && h.ExpiresIn > 0 {
		next.Expires = b.now().Unix() + h.ExpiresIn
	}
	if h.ClientEndpoint != "" {
		u, err := parseEndpoint(h.ClientEndpoint, b.insecureHTTP)
		if err != nil || (u.Path != "/rest/" && u.Path != "/rest") {
			return bad("the reply has an invalid client_endpoint")
		}
		next.ClientEndpoint = u.Scheme + "://" + u.Host + "/rest/"
		next.Domain = u.Host
	}
	if h.ServerEndpoint != "" {
		if _, err := parseEndpoint(h.ServerEndpoint, b.insecureHTTP); err != nil {
			return bad("the reply has an invalid server_endpoint")
		}
		next.ServerEndpoint = h.ServerEndpoint
	}
	if h.Scope != "" {
		next.Scope = h.Scope
	}
	if h.Status != "" {
		next.Status = h.Status
	}
	if userID > 0 {
		next.UserID = userID
	}
	return next, nil
}

// oauthOrigin returns the origin of serverEndpoint if it is a trusted OAuth server (the first
// trusted one when serverEndpoint is empty).
func (b *B24OAuth) oauthOrigin(serverEndpoint string) (string, error) {
	if serverEndpoint == "" {
		return b.oauthServers[0], nil
	}
	u, err := url.Parse(serverEndpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: invalid server_endpoint", ErrUntrustedEndpoint)
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, s := range b.oauthServers {
		if s == origin {
			return origin, nil
		}
	}
	return "", fmt.Errorf("%w: OAuth server %s is not allowed (see WithOAuthServers)", ErrUntrustedEndpoint, origin)
}

// flushPending retries what an earlier refresh left undone: the store write, then the
// callback. One goroutine does it at a time; the others go on with their calls.
func (b *B24OAuth) flushPending(ctx context.Context) {
	if !b.hasPending() || !b.flushMu.TryLock() {
		return
	}
	defer b.flushMu.Unlock()
	b.mu.Lock()
	pw, cb := b.pending, b.callback
	b.mu.Unlock()
	log := b.Logger()
	if pw.next != nil && b.refresher != nil {
		if err := b.refresher.persist(ctx, *pw.prev, *pw.next); err != nil {
			log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing refreshed tokens failed again",
				slog.String("member_id", pw.next.MemberID), slog.Any("error", err))
		} else {
			b.mu.Lock()
			if b.pending.next == pw.next {
				b.pending.prev, b.pending.next = nil, nil
			}
			b.pendingChangedLocked()
			b.mu.Unlock()
		}
	}
	if pw.event != nil && cb != nil {
		if err := cb(ctx, *pw.event); err != nil {
			log.LogAttrs(ctx, slog.LevelError, "b24oauth: refresh callback failed again",
				slog.String("member_id", pw.event.Params.MemberID), slog.Any("error", err))
		} else {
			b.mu.Lock()
			if b.pending.event == pw.event {
				b.pending.event = nil
			}
			b.pendingChangedLocked()
			b.mu.Unlock()
		}
	}
}

func (b *B24OAuth) hasPending() bool { return b.hasWork.Load() }

// pendingChangedLocked publishes whether pending work remains; b.mu is held.
func (b *B24OAuth) pendingChangedLocked() {
	b.hasWork.Store(b.pending.next != nil || b.pending.event != nil)
}
