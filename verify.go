package b24oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// This file holds how an App decides that an install event comes from Bitrix24 (the rules are
// in InstallHandler's doc and in the README, "What proves an install"):
//
//  1. The OAuth server vouches for the event's access token: {server_endpoint}app.info answers
//     only for a token it issued, and names our client_id, the portal's member_id and its client
//     endpoint. The portal's domain and endpoints are taken from that reply, never from the event.
//  2. The portal says the token's user is an administrator (user.admin at the client endpoint
//     the OAuth server named).
//  3. An event that would replace another installation (another application_token) must also
//     show that the stored pair is dead at the OAuth server, which is what an uninstall leaves.
//  4. An event never replaces the stored pair with an older one (a replay).
//
// Verification requests are bounded per portal and per App, so forged events cannot turn the
// App into an amplifier against the OAuth server.

// appInfo is the OAuth server's app.info result for an access token it issued.
type appInfo struct {
	ClientID string         `json:"client_id"`
	Scope    string         `json:"scope"`
	Expires  string         `json:"expires"`
	UserID   flexInt        `json:"user_id"`
	Install  appInfoInstall `json:"install"`
}

type appInfoInstall struct {
	Version        flexInt   `json:"version"`
	Status         AppStatus `json:"status"`
	Scope          string    `json:"scope"`
	Domain         string    `json:"domain"`
	ClientEndpoint string    `json:"client_endpoint"`
	MemberID       string    `json:"member_id"`
}

// maxOAuthReplyBytes bounds a reply of the OAuth server (a token or app.info reply is < 2 KiB).
const maxOAuthReplyBytes = 64 << 10

// Verdicts of a verification step, mapped to the handler's answer by asEventError.
var (
	errVerifyForbidden   = &eventError{http.StatusForbidden, "the OAuth server does not confirm this installation"}
	errVerifyNotAdmin    = &eventError{http.StatusForbidden, "the event's user is not an administrator of the portal"}
	errVerifyUnavailable = &eventError{http.StatusServiceUnavailable, "cannot verify the installation now (OAuth server or portal unavailable)"}
	errVerifyThrottled   = &eventError{http.StatusTooManyRequests, "too many installation events for this portal; retry later"}
	errVerifyBusy        = &eventError{http.StatusServiceUnavailable, "too many installation events being verified; retry later"}
	errStoredPairAlive   = &eventError{http.StatusForbidden, "application_token does not match the installation, and the installed tokens still work"}
)

// appInfoAt asks the OAuth server of serverEndpoint (which must be trusted) which installation
// accessToken belongs to. A refusal is an *APIError (expired_token, invalid_token, ...); a
// failure to ask is any other error.
func (a *App) appInfoAt(ctx context.Context, serverEndpoint, accessToken string) (appInfo, error) {
	var info appInfo
	origin, err := a.trustedOAuthOrigin(serverEndpoint)
	if err != nil {
		return info, err
	}
	// POST, not GET: the token stays out of URLs and so out of access logs.
	form := url.Values{"auth": {accessToken}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, origin+"/rest/app.info", strings.NewReader(form.Encode()))
	if err != nil {
		return info, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := a.noRedirectClient().Do(req)
	if err != nil {
		return info, err
	}
	defer resp.Body.Close()
	// An app.info reply is < 2 KiB: bounded far below the point where a reply takes from the
	// response budget.
	body, _, err := readReply(ctx, resp, maxOAuthReplyBytes, nil)
	if err != nil {
		return info, err
	}
	r, apiErr := decodeReply(resp.StatusCode, body)
	if apiErr != nil {
		if apiErr.Code == "" || resp.StatusCode >= 500 {
			return info, fmt.Errorf("b24oauth: app.info at the OAuth server: HTTP %d", resp.StatusCode)
		}
		return info, apiErr
	}
	if err := json.Unmarshal(r.Result, &info); err != nil {
		return info, fmt.Errorf("b24oauth: app.info at the OAuth server: %w", err)
	}
	return info, nil
}

// noRedirectClient is the App's HTTP client, refusing redirects: nothing the App sends with a
// token in it may be forwarded to another host.
func (a *App) noRedirectClient() *http.Client { return a.clients.send }

// trustedOAuthOrigin returns the origin of serverEndpoint if it is one of the App's OAuth
// servers.
func (a *App) trustedOAuthOrigin(serverEndpoint string) (string, error) {
	u, err := parseEndpoint(serverEndpoint, a.cfg.InsecureHTTP)
	if err != nil {
		return "", fmt.Errorf("%w: invalid server_endpoint", ErrUntrustedEndpoint)
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, s := range a.oauthServers {
		if s == origin {
			return origin, nil
		}
	}
	return "", fmt.Errorf("%w: OAuth server %s", ErrUntrustedEndpoint, origin)
}

// refusal reports whether err is the OAuth server's or the portal's refusal of a token (an
// error reply with a code), as opposed to a failure to ask.
func refusal(err error) (*APIError, bool) {
	var ae *APIError
	if errors.As(err, &ae) && ae.Code != "" && ae.Status < 500 {
		return ae, true
	}
	if errors.Is(err, errProbeNoRefresh) {
		// The portal refused the token (a probe asks for a refresh only then).
		return &APIError{Code: "invalid_token", Status: http.StatusUnauthorized}, true
	}
	return nil, false
}

// verifiedInstall is an install event after verification: what the OAuth server and the
// portal confirmed, and whether verification spent the event's refresh token.
type verifiedInstall struct {
	inst      Installation
	spent     bool   // the event's refresh token was exchanged: inst holds the only live pair
	spentFrom string // the refresh token exchanged
}

// verifyInstall checks ev's tokens at the trusted OAuth server and at the portal (steps 1 and 2
// above) and returns ev with the portal's identity as the OAuth server gave it.
func (a *App) verifyInstall(ctx context.Context, ev Installation, trusted bool) (verifiedInstall, error) {
	v := verifiedInstall{inst: ev}
	release, err := a.verifyGate.enter(ctx, ev.MemberID, trusted)
	if err != nil {
		return v, err
	}
	defer release()
	// A slow portal or OAuth server holds a verification slot for this long at most.
	ctx, cancel := context.WithTimeout(ctx, verifyRequestTimeout)
	defer cancel()

	info, err := a.appInfoAt(ctx, ev.ServerEndpoint, ev.AccessToken)
	if ae, ok := refusal(err); ok && ae.Code == "expired_token" {
		// A late event: its access token has expired. The refresh token proves the pair is ours
		// (the OAuth server only exchanges it for our client_id and secret); the new pair is then
		// the only live one, and must be stored whatever happens to the request.
		next, xerr := a.exchangeEventPair(ctx, ev.OAuthParams)
		if next.RefreshToken != ev.RefreshToken && next.MemberID != "" {
			v.inst.OAuthParams, v.spent, v.spentFrom = next, true, ev.RefreshToken
		}
		if xerr != nil {
			return v, xerr
		}
		info, err = a.appInfoAt(ctx, next.ServerEndpoint, next.AccessToken)
	}
	if err != nil {
		if _, ok := refusal(err); ok {
			a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event refused by the OAuth server",
				slog.String("member_id", ev.MemberID), slog.Any("error", err))
			return v, errVerifyForbidden
		}
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: verifying an install event failed",
			slog.String("member_id", ev.MemberID), slog.Any("error", err))
		return v, errVerifyUnavailable
	}
	p := &v.inst.OAuthParams
	if info.ClientID != a.secret.ClientID || info.Install.MemberID != ev.MemberID {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event's token belongs to another application or portal",
			slog.String("member_id", ev.MemberID), slog.String("oauth_member_id", clip(info.Install.MemberID)))
		return v, errVerifyForbidden
	}
	u, err := parseEndpoint(info.Install.ClientEndpoint, a.cfg.InsecureHTTP)
	if err != nil || (u.Path != "/rest/" && u.Path != "/rest") || !validHost(u.Host) {
		return v, errVerifyForbidden
	}
	if !strings.EqualFold(u.Host, p.Domain) {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event names another domain than the OAuth server",
			slog.String("member_id", ev.MemberID), slog.String("event_domain", clip(p.Domain)), slog.String("oauth_domain", u.Host))
		return v, &eventError{http.StatusForbidden, "the event's domain is not the portal's"}
	}
	if !a.cfg.AllowInternalPortals && internalHost(u.Hostname()) {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install of a portal at an internal address refused (see AppConfig.AllowInternalPortals)",
			slog.String("member_id", ev.MemberID), slog.String("domain", u.Host))
		return v, &eventError{http.StatusForbidden, "the portal is at a loopback, link-local or unspecified address"}
	}
	p.Domain = u.Host
	p.ClientEndpoint = u.Scheme + "://" + u.Host + "/rest/"
	if info.Install.Version > 0 {
		// The OAuth server's word, not the event's: a replayed event cannot roll it back.
		v.inst.Version = strconv.FormatInt(int64(info.Install.Version), 10)
	}
	if info.Scope != "" {
		p.Scope = clipScope(info.Scope)
	}
	if validStatus(info.Install.Status) && info.Install.Status != "" {
		p.Status = info.Install.Status
	}
	if info.UserID > 0 {
		p.UserID = int64(info.UserID)
	}
	if t, err := time.Parse(time.RFC3339, info.Expires); err == nil && !v.spent {
		p.Expires = t.Unix()
	}

	admin, err := a.userIsAdmin(ctx, *p)
	switch {
	case err != nil:
		if _, ok := refusal(err); ok {
			return v, errVerifyForbidden
		}
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: asking the portal whether the installing user is an administrator failed",
			slog.String("member_id", ev.MemberID), slog.Any("error", err))
		return v, errVerifyUnavailable
	case !admin:
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event with a non-administrator's token refused",
			slog.String("member_id", ev.MemberID), slog.Int64("user_id", p.UserID))
		return v, errVerifyNotAdmin
	}
	return v, nil
}

// exchangeEventPair trades an event's refresh token at the trusted OAuth server; the reply must
// name the event's portal.
func (a *App) exchangeEventPair(ctx context.Context, p OAuthParams) (OAuthParams, error) {
	c, err := a.probeClient(p)
	if err != nil {
		return p, errVerifyForbidden
	}
	defer c.Destroy()
	r, status, err := c.requestToken(ctx, p)
	var next OAuthParams
	if err == nil && r.MemberID != p.MemberID {
		// The token was another portal's (a doctored event): it is spent now, and its
		// successor belongs to that portal.
		if ValidMemberID(r.MemberID) {
			q := p
			q.MemberID = r.MemberID
			if n, aerr := c.applyReply(q, r.handler(), int64(r.UserID), status); aerr == nil {
				next = n
			}
		}
		err = &RefreshTokenError{Code: "invalid_response", Description: "the reply names another portal", MemberID: p.MemberID, Status: status}
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event's refresh token belongs to another portal",
			slog.String("member_id", p.MemberID), slog.String("oauth_member_id", clip(r.MemberID)))
		return next, errVerifyForbidden
	}
	if err == nil {
		next, err = c.applyReply(p, r.handler(), int64(r.UserID), status)
	}
	if err != nil {
		var rte *RefreshTokenError
		if errors.As(err, &rte) && rte.Code != "" && rte.Status < 500 {
			a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event's refresh token refused",
				slog.String("member_id", p.MemberID), slog.Any("error", err))
			return p, errVerifyForbidden
		}
		return OAuthParams{}, errVerifyUnavailable
	}
	return next, nil
}

// rescueSpent stores next, the successor of the spent refresh token from, for the portal next
// names, if its stored installation still holds from. Bounded by EventTimeout, whatever the
// request does.
func (a *App) rescueSpent(ctx context.Context, from string, next OAuthParams) {
	if from == "" || !ValidMemberID(next.MemberID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.EventTimeout)
	defer cancel()
	err := a.storeUpdate(ctx, next.MemberID, func(inst Installation) (Installation, error) {
		if inst.RefreshToken != from {
			return inst, errNoWrite // the spent token was not the stored one: nothing lost
		}
		inst.OAuthParams.AccessToken, inst.OAuthParams.RefreshToken = next.AccessToken, next.RefreshToken
		inst.Expires, inst.ExpiresIn = next.Expires, next.ExpiresIn
		inst.State = StateActive
		inst.RefreshingSince = time.Time{}
		inst.UpdatedAt = a.now().UTC()
		return inst, nil
	})
	switch {
	case err == nil:
		a.forget(next.MemberID)
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: a refused install event had spent the stored refresh token; its successor was stored",
			slog.String("member_id", next.MemberID))
	case errors.Is(err, errNoWrite), errors.Is(err, ErrNotInstalled):
	default:
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing the successor of a spent refresh token failed",
			slog.String("member_id", next.MemberID), slog.Any("error", err))
	}
}

// userIsAdmin asks the portal (user.admin) whether p's token belongs to an administrator.
func (a *App) userIsAdmin(ctx context.Context, p OAuthParams) (bool, error) {
	c, err := a.probeClient(p)
	if err != nil {
		return false, err
	}
	defer c.Destroy()
	r, err := c.Call(ctx, "user.admin", nil)
	if err != nil {
		return false, err
	}
	var admin bool
	if err := r.Decode(&admin); err != nil {
		return false, fmt.Errorf("b24oauth: user.admin: %w", err)
	}
	return admin, nil
}

// probeClient is a client of p that never refreshes (a probe must not spend the event's
// refresh token) and shares the portal's rate limiter.
func (a *App) probeClient(p OAuthParams) (*B24OAuth, error) {
	opts := append(append([]Option{}, a.clientOpts...),
		withLimiter(a.portalLimiter(p.MemberID)), withRefresher(noRefresh{}), WithExpiryMargin(0),
		WithMaxResponseBytes(maxOAuthReplyBytes)) // user.admin answers a boolean
	return New(p, a.secret, opts...)
}

// noRefresh refuses every refresh.
type noRefresh struct{}

var errProbeNoRefresh = errors.New("b24oauth: verification does not refresh tokens")

func (noRefresh) refresh(_ context.Context, cur OAuthParams, _ exchangeFunc) (OAuthParams, error) {
	return cur, &RefreshTokenError{MemberID: cur.MemberID, Err: errProbeNoRefresh}
}

func (noRefresh) persist(context.Context, OAuthParams, OAuthParams) error { return nil }

// withSuccessor returns cur with next, the pair a check exchanged cur's refresh token for: the
// only live one from then on.
func (a *App) withSuccessor(cur Installation, next OAuthParams) Installation {
	cur.OAuthParams = next
	cur.State = StateActive
	cur.RefreshingSince = time.Time{}
	cur.UpdatedAt = a.now().UTC()
	return cur
}

// pairState is what the OAuth server says of a stored pair.
type pairState int

const (
	pairDead  pairState = iota // refused: the app was uninstalled (or the pair lost)
	pairAlive                  // accepted: the installation is in use
)

// storedPairState asks the OAuth server whether cur's pair still works, without spending its
// refresh token where the access token can tell. When only the refresh token can tell, it is
// exchanged and the new pair returned in next (the caller must store it). A refusal while
// another process's refresh is in flight proves nothing: errVerifyUnavailable.
func (a *App) storedPairState(ctx context.Context, cur Installation) (pairState, *OAuthParams, error) {
	if cur.State == StateRevoked || (cur.AccessToken == "" && cur.RefreshToken == "") {
		return pairDead, nil, nil
	}
	if cur.AccessToken != "" && (cur.Expires == 0 || a.now().Before(time.Unix(cur.Expires, 0))) {
		info, err := a.appInfoAt(ctx, cur.ServerEndpoint, cur.AccessToken)
		if err == nil {
			if info.ClientID == a.secret.ClientID && info.Install.MemberID == cur.MemberID {
				return pairAlive, nil, nil
			}
			return pairDead, nil, nil
		}
		ae, ok := refusal(err)
		if !ok {
			return pairDead, nil, errVerifyUnavailable
		}
		if ae.Code != "expired_token" {
			return pairDead, nil, nil
		}
	}
	if cur.RefreshToken == "" {
		return pairDead, nil, nil
	}
	c, err := a.probeClient(cur.OAuthParams)
	if err != nil {
		return pairDead, nil, nil
	}
	defer c.Destroy()
	r, status, err := c.requestToken(ctx, cur.OAuthParams)
	if err != nil {
		var rte *RefreshTokenError
		if errors.As(err, &rte) && rte.Revoked() {
			if since := cur.RefreshingSince; !since.IsZero() && a.now().Sub(since) <= a.cfg.StaleRefreshAfter {
				return pairDead, nil, errVerifyUnavailable
			}
			return pairDead, nil, nil
		}
		return pairDead, nil, errVerifyUnavailable
	}
	next, err := c.applyReply(cur.OAuthParams, r.handler(), int64(r.UserID), status)
	if err != nil {
		// The pair was exchanged but the reply is unusable: the stored pair is spent either way.
		return pairDead, nil, nil
	}
	return pairAlive, &next, nil
}

// verifyGate bounds the verification requests forged events can cause: per portal a small
// burst then one every few seconds, at most two at a time, and per App a rate and a number in
// flight. Events that carry the stored installation's application token (which an outsider
// does not know) have budgets of their own, so forged events cannot use up the ones Bitrix24's
// genuine events need.
type verifyGate struct {
	perApp, perAppTrusted *rate.Limiter
	inFlight              chan struct{}

	mu        sync.Mutex
	perMember map[string]*memberBudget
	every     rate.Limit
	burst     int
}

type memberBudget struct {
	lim     *rate.Limiter
	running int
}

// Default bounds of install verification.
const (
	defaultVerifyPerMemberBurst = 10
	defaultVerifyPerMemberEvery = 2 * time.Second
	defaultVerifyRate           = 20 // verifications per second per App
	defaultVerifyBurst          = 40
	defaultVerifyInFlight       = 16
	maxVerifyPerMember          = 2     // verifications of one portal at a time
	maxVerifyMembers            = 10000 // per-portal budgets kept; the map restarts past it
	maxVerifyWait               = 2 * time.Second
	verifyRequestTimeout        = 10 * time.Second // one verification, whatever EventTimeout says
)

func newVerifyGate() *verifyGate {
	return &verifyGate{
		perApp:        rate.NewLimiter(defaultVerifyRate, defaultVerifyBurst),
		perAppTrusted: rate.NewLimiter(defaultVerifyRate, defaultVerifyBurst),
		inFlight:      make(chan struct{}, defaultVerifyInFlight),
		perMember:     make(map[string]*memberBudget),
		every:         rate.Every(defaultVerifyPerMemberEvery),
		burst:         defaultVerifyPerMemberBurst,
	}
}

// enter admits one verification for memberID, or refuses it: 429 when that portal has had too
// many lately or has two under way, 503 when the App as a whole is busier than the wait it
// allows. trusted: the event carries the stored application token.
func (g *verifyGate) enter(ctx context.Context, memberID string, trusted bool) (release func(), err error) {
	key := memberID
	perApp := g.perApp
	if trusted {
		key, perApp = "t:"+memberID, g.perAppTrusted
	}
	g.mu.Lock()
	b := g.perMember[key]
	if b == nil {
		if len(g.perMember) >= maxVerifyMembers {
			g.perMember = make(map[string]*memberBudget)
		}
		b = &memberBudget{lim: rate.NewLimiter(g.every, g.burst)}
		g.perMember[key] = b
	}
	ok := b.running < maxVerifyPerMember && b.lim.Allow()
	if ok {
		b.running++
	}
	g.mu.Unlock()
	if !ok {
		return nil, errVerifyThrottled
	}
	done := func() {
		g.mu.Lock()
		b.running--
		g.mu.Unlock()
	}
	r := perApp.Reserve()
	if d := r.Delay(); d > maxVerifyWait {
		r.Cancel()
		done()
		return nil, errVerifyBusy
	} else if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			done()
			return nil, errVerifyBusy
		}
	}
	wait := time.NewTimer(maxVerifyWait)
	defer wait.Stop()
	select {
	case g.inFlight <- struct{}{}:
		return func() { <-g.inFlight; done() }, nil
	case <-wait.C:
	case <-ctx.Done():
	}
	done()
	return nil, errVerifyBusy
}

// internalHost reports whether host (no port) is one the App must not send a token to unless
// told so: localhost, or a loopback, link-local or unspecified address.
func internalHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && (ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsUnspecified())
}

// clipScope bounds a scope list taken from a reply.
func clipScope(s string) string {
	if len(s) > 1024 {
		return s[:1024]
	}
	return s
}

// validStatus reports whether s is an app status letter (or empty).
func validStatus(s AppStatus) bool {
	switch s {
	case "", StatusFree, StatusDemo, StatusTrial, StatusPaid, StatusLocal, StatusSubscription:
		return true
	}
	return false
}

// validHost accepts a portal host as Bitrix24 names it: a DNS name or IP address of at most 253
// characters, with an optional port (on-premise portals may use any host and port).
func validHost(h string) bool {
	name, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		name, port = h[:i], h[i+1:]
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || port[0] == '0' {
			return false
		}
	}
	if name == "" || len(name) > 253 {
		return false
	}
	if name[0] == '[' { // IPv6 literal
		return len(name) > 2 && name[len(name)-1] == ']' && strings.Trim(name[1:len(name)-1], "0123456789abcdefABCDEF:.") == ""
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
