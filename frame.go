package b24oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrForgedFrame is what Frame returns (wrapped, with the reason) for a request it cannot take
// as one of the app's pages opened in a portal: malformed, or not confirmed by Bitrix24's OAuth
// server. Answer it with 403.
var ErrForgedFrame = errors.New("b24oauth: not a page request Bitrix24 confirms")

// Frame is a verified request from one of the app's pages opened inside a portal: the iframe
// POST (AUTH_ID, AUTH_EXPIRES, REFRESH_ID, member_id, PLACEMENT, ...; DOMAIN in the query).
type Frame struct {
	MemberID, Domain string
	UserID           int64           // the user who opened the page, as the OAuth server names them
	Placement        string          // "DEFAULT" for the app's main page
	PlacementOptions json.RawMessage // "{}" when absent
	Lang             string          // LANG: the portal's interface language
	// Client acts as the user who opened the page (their token pair, their rights; ask
	// user.admin before anything only administrators may do) and shares the portal's rate
	// limiter. It refreshes its own pair, which is never stored. It is the caller's: Destroy it
	// when done.
	Client *B24OAuth
}

// String returns a summary of the frame; its client is named, never printed.
func (f *Frame) String() string {
	if f == nil {
		return "<nil>"
	}
	return fmt.Sprintf("b24oauth.Frame{MemberID: %q, Domain: %q, UserID: %d, Placement: %q, PlacementOptions: %d bytes, Lang: %q, Client: %s}",
		f.MemberID, f.Domain, f.UserID, f.Placement, len(f.PlacementOptions), f.Lang, set(f.Client != nil))
}

// Format prints String for every verb.
func (f *Frame) Format(s fmt.State, verb rune) { formatRedacted(s, verb, f.String()) }

// LogValue implements slog.LogValuer without the client.
func (f *Frame) LogValue() slog.Value {
	if f == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("member_id", f.MemberID), slog.String("domain", f.Domain),
		slog.Int64("user_id", f.UserID), slog.String("placement", f.Placement))
}

// Frame verifies r, the POST an app's page receives in its iframe when a user opens it, and
// returns who opened which page of which portal. Nothing in the request is trusted before the
// check: the OAuth server (app.info with AUTH_ID, at the installation's trusted OAuth server)
// must vouch that the token was issued to this application for that member_id, and the
// member_id and domain of the request, of the OAuth server's answer and of the stored
// installation must agree.
//
// It returns an error matching ErrNotInstalled for a portal with no installation, one matching
// ErrForgedFrame for a malformed or forged request, and another error when Bitrix24 could not
// be asked (or too many pages are being verified at once): try again later. Verification costs
// one request to the OAuth server, bounded per portal and per App.
func (a *App) Frame(r *http.Request) (*Frame, error) {
	ctx := r.Context()
	if e := checkFormPost(nil, r); e != nil {
		return nil, fmt.Errorf("%w: %s", ErrForgedFrame, e.reason)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, a.cfg.MaxEventBytes)
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("%w: malformed form body", ErrForgedFrame)
	}
	q, form := r.URL.Query(), r.PostForm
	memberID := strings.TrimSpace(form.Get("member_id"))
	authID := strings.TrimSpace(form.Get("AUTH_ID"))
	domain := strings.TrimSpace(q.Get("DOMAIN"))
	if domain == "" {
		domain = strings.TrimSpace(form.Get("DOMAIN"))
	}
	forged := func(format string, args ...any) (*Frame, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrForgedFrame}, args...)...)
	}
	if e := checkEventMemberID("member_id", memberID); e != nil {
		return forged("%s", e.reason)
	}
	if e := checkToken("AUTH_ID", authID); e != nil {
		return forged("%s", e.reason)
	}
	if !validHost(domain) {
		return forged("invalid DOMAIN")
	}
	placement := strings.TrimSpace(form.Get("PLACEMENT"))
	if placement == "" {
		placement = "DEFAULT"
	}
	if !validEventCode(placement) {
		return forged("invalid PLACEMENT")
	}
	options := json.RawMessage("{}")
	if s := strings.TrimSpace(form.Get("PLACEMENT_OPTIONS")); s != "" {
		if !json.Valid([]byte(s)) {
			return forged("PLACEMENT_OPTIONS is not JSON")
		}
		options = json.RawMessage(s)
	}
	lifetime, err := optInt(form, "AUTH_EXPIRES")
	if err != nil {
		return forged("invalid AUTH_EXPIRES")
	}

	stored, err := a.installedParams(ctx, memberID)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(stored.Domain, domain) {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: page request names another domain than the installation",
			slog.String("member_id", memberID), slog.String("domain", clip(domain)))
		return forged("DOMAIN is not the installation's")
	}
	release, err := a.frameGate().enter(ctx, memberID)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: verifying a page request: %w", err)
	}
	vctx, cancel := context.WithTimeout(ctx, frameVerifyTimeout)
	info, err := a.appInfoAt(vctx, stored.ServerEndpoint, authID)
	cancel()
	release()
	if err != nil {
		if _, ok := refusal(err); ok {
			return forged("the OAuth server refused AUTH_ID")
		}
		return nil, fmt.Errorf("b24oauth: verifying a page request at the OAuth server: %w", err)
	}
	if info.ClientID != a.secret.ClientID || info.Install.MemberID != memberID {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: page request's token belongs to another application or portal",
			slog.String("member_id", memberID))
		return forged("AUTH_ID belongs to another application or portal")
	}
	if u, err := parseEndpoint(info.Install.ClientEndpoint, a.cfg.InsecureHTTP); err != nil || !strings.EqualFold(u.Host, stored.Domain) {
		return forged("the OAuth server names another portal")
	}

	p := OAuthParams{
		MemberID:       memberID,
		AccessToken:    authID,
		UserID:         int64(info.UserID),
		Domain:         stored.Domain,
		ClientEndpoint: stored.ClientEndpoint,
		ServerEndpoint: stored.ServerEndpoint,
		Scope:          clipScope(info.Scope),
		Status:         stored.Status,
		ExpiresIn:      lifetime,
	}
	if t, err := time.Parse(time.RFC3339, info.Expires); err == nil {
		p.Expires = t.Unix()
	}
	if rt := strings.TrimSpace(form.Get("REFRESH_ID")); checkToken("REFRESH_ID", rt) == nil {
		p.RefreshToken = rt
	}
	opts := append(append([]Option{}, a.clientOpts...), withLimiter(a.portalLimiter(memberID)))
	opts = append(opts, a.cfg.ClientOptions...)
	c, err := New(p, a.secret, opts...)
	if err != nil {
		return forged("%v", err)
	}
	a.log.LogAttrs(ctx, slog.LevelDebug, "b24oauth: page request verified",
		slog.String("member_id", memberID), slog.Int64("user_id", p.UserID), slog.String("placement", placement))
	return &Frame{
		MemberID:         memberID,
		Domain:           stored.Domain,
		UserID:           p.UserID,
		Placement:        placement,
		PlacementOptions: options,
		Lang:             clip(q.Get("LANG")),
		Client:           c,
	}, nil
}

// installedParams returns the endpoints of memberID's stored installation: from the cache,
// else the store. A revoked installation still names its portal.
func (a *App) installedParams(ctx context.Context, memberID string) (OAuthParams, error) {
	if c, _ := a.cachedPortal(memberID); c != nil {
		return *c.params(), nil
	}
	c, err := a.ClientForMember(ctx, memberID)
	if err == nil {
		return *c.params(), nil
	}
	if !isRevoked(err) {
		return OAuthParams{}, err
	}
	inst, err := a.storeLoad(ctx, memberID)
	return inst.OAuthParams, err
}

// Bounds of page verification: pages open far more often than apps are installed, by many
// users of a portal at once.
const (
	frameVerifyPerMemberBurst = 30
	frameVerifyPerMemberEvery = 100 * time.Millisecond
	frameVerifyRate           = 100 // per second per App
	frameVerifyInFlight       = 64
	frameVerifyMembers        = 10000 // per-portal limiters kept; the map restarts past it
	frameVerifyWait           = 2 * time.Second
	frameVerifyTimeout        = 10 * time.Second // one app.info request
)

var (
	errFrameThrottled = errors.New("b24oauth: too many page requests of this portal being verified; retry later")
	errFrameBusy      = errors.New("b24oauth: too many page requests being verified; retry later")
)

// frameGate bounds the OAuth server requests page verifications cause: per portal, per App,
// and in flight.
type frameGate struct {
	perApp   *rate.Limiter
	inFlight chan struct{}

	mu        sync.Mutex
	perMember map[string]*rate.Limiter
}

func (a *App) frameGate() *frameGate {
	in := &a.inbound
	in.frameGateOnce.Do(func() {
		in.frameGate = &frameGate{
			perApp:    rate.NewLimiter(frameVerifyRate, 2*frameVerifyRate),
			inFlight:  make(chan struct{}, frameVerifyInFlight),
			perMember: make(map[string]*rate.Limiter),
		}
	})
	return in.frameGate
}

// enter admits one verification for memberID, or refuses it.
func (g *frameGate) enter(ctx context.Context, memberID string) (release func(), err error) {
	g.mu.Lock()
	l := g.perMember[memberID]
	if l == nil {
		if len(g.perMember) >= frameVerifyMembers {
			g.perMember = make(map[string]*rate.Limiter)
		}
		l = rate.NewLimiter(rate.Every(frameVerifyPerMemberEvery), frameVerifyPerMemberBurst)
		g.perMember[memberID] = l
	}
	ok := l.Allow()
	g.mu.Unlock()
	if !ok {
		return nil, errFrameThrottled
	}
	r := g.perApp.Reserve()
	if d := r.Delay(); d > frameVerifyWait {
		r.Cancel()
		return nil, errFrameBusy
	} else if d > 0 {
		if err := sleepContext(ctx, d); err != nil {
			r.Cancel()
			return nil, errFrameBusy
		}
	}
	select {
	case g.inFlight <- struct{}{}:
		return func() { <-g.inFlight }, nil
	case <-ctx.Done():
		return nil, errFrameBusy
	}
}
