package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// This file holds the OAuth authorization-code flow, for an external service that a portal's
// user connects (rather than a marketplace install):
//
//  1. The service sends the user's browser to the portal's authorize URL (OAuth2Config's
//     AuthCodeURL) with a state it can check later.
//  2. The portal logs the user in and redirects to the application's redirect URI (set in the
//     application's settings in Bitrix24, not in the request) with code, state, domain,
//     member_id, scope and server_domain.
//  3. The service checks the state and calls Connect within 30 seconds: the code is single-use
//     and expires 30 seconds after it was issued.

// ErrInstallationInUse reports a Connect that found another installation of the portal stored
// (one with an application token, from an install event, or one of another domain) whose tokens
// still work at the OAuth server: a connection does not replace it, and nothing was stored.
var ErrInstallationInUse = errors.New("b24oauth: another installation of this portal is stored and its tokens still work")

// ConnectError reports a Connect (or an OAuth2Config) that stored nothing because of the
// domain, the code, or what the OAuth server answered for it. Match it with errors.As; Is
// matches a target *ConnectError by Code (any ConnectError when the target's Code is empty).
//
// Whatever the cause, the code is spent or dead: the user must connect again.
type ConnectError struct {
	// Domain is the portal Connect was asked to connect.
	Domain string
	// MemberID is the portal the OAuth server's reply named; "" when there was no reply.
	MemberID string
	// Code says what failed:
	//   - "invalid_request": the domain or the code is malformed; nothing was sent anywhere;
	//   - an OAuth error code of the OAuth server: "invalid_grant" for a code that was used
	//     already, is unknown, or was revoked, "expired_token" for a code older than 30 seconds,
	//     "invalid_client" for wrong application credentials, ...;
	//   - "invalid_response": the reply does not name the portal at Domain (a code of another
	//     portal), is malformed, or the OAuth server's app.info does not vouch for its token;
	//   - "": the OAuth server could not be asked (see Err): retry with a new code later.
	Code string
	// Description is the OAuth server's error_description, or what was wrong with the reply.
	Description string
	// Status is the HTTP status of the OAuth server's reply; 0 when there was none.
	Status int
	// Err is the underlying cause (a network error, ErrUntrustedEndpoint, ...), if any.
	Err error
}

// Error describes the failure: domain, code, HTTP status, description and cause. It never holds
// the authorization code, a token or the client secret.
func (e *ConnectError) Error() string {
	var b strings.Builder
	b.WriteString("b24oauth: connecting portal ")
	b.WriteString(strconv.Quote(e.Domain))
	b.WriteString(" failed")
	if e.MemberID != "" {
		b.WriteString(" (member ")
		b.WriteString(e.MemberID)
		b.WriteString(")")
	}
	writeOAuthFailure(&b, e.Code, e.Status, e.Description, e.Err)
	return b.String()
}

// Unwrap returns the underlying cause.
func (e *ConnectError) Unwrap() error { return e.Err }

// Is matches another *ConnectError by Code (any ConnectError when the target's Code is empty).
func (e *ConnectError) Is(target error) bool {
	t, ok := target.(*ConnectError)
	if !ok {
		return false
	}
	return t.Code == "" || t.Code == e.Code
}

// portalHost validates a portal's domain as a user or a redirect gives it and returns it in
// lower case.
func portalHost(domain string) (string, error) {
	if !validHost(domain) {
		return "", &ConnectError{Domain: clip(domain), Code: "invalid_request",
			Description: "invalid portal domain: want a host name such as acme.bitrix24.com, without scheme or path"}
	}
	return strings.ToLower(domain), nil
}

// OAuth2Config returns an x/oauth2 Config for the portal at domain (a host name, optionally with
// a port, as Bitrix24 sends it in the redirect's domain parameter): AuthURL
// https://<domain>/oauth/authorize/, TokenURL on the App's first trusted OAuth server
// (AppConfig.OAuthServers), the App's client id and secret sent in the form
// (oauth2.AuthStyleInParams, as Bitrix24 expects). A malformed domain is a *ConnectError with
// Code "invalid_request".
//
// Send the user's browser to AuthCodeURL(state), with a state your redirect handler checks
// (oauth2.GenerateVerifier makes a good random one), then pass the code of the redirect to
// Connect. Bitrix24 takes the redirect URI from the application's settings and documents no
// scopes and no PKCE parameters for this flow, so RedirectURL and Scopes are left empty; extra
// parameters such as response_type=code or a code_challenge are ignored by the portal. The
// domain decides only where the browser goes: the client secret is sent to TokenURL alone.
// The Config holds the client secret (x/oauth2 does not redact it): do not log or print it.
//
// An application of the Russian region (portals whose server_domain is oauth.bitrix24.tech)
// lists https://oauth.bitrix24.tech first in AppConfig.OAuthServers.
func (a *App) OAuth2Config(domain string) (*oauth2.Config, error) {
	host, err := portalHost(domain)
	if err != nil {
		return nil, err
	}
	return &oauth2.Config{
		ClientID:     a.secret.ClientID,
		ClientSecret: a.secret.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   "https://" + host + "/oauth/authorize/",
			TokenURL:  a.oauthServers[0] + "/oauth/token/",
			AuthStyle: oauth2.AuthStyleInParams,
		},
	}, nil
}

// Connect exchanges code, an authorization code that the portal at domain gave the user's
// browser, at the App's first trusted OAuth server (never at a host the domain or a reply
// names, and refusing redirects), checks that the reply names that portal (a 32-hex member_id,
// a client endpoint on domain) and that the OAuth server's app.info vouches for the new token
// (our client_id, the same member_id), and stores the installation. OnInstall then runs, with
// InstallKindFrom(ctx) reporting InstallNew, InstallAgain (the portal was connected before) or
// InstallReinstall (it replaced a dead installation).
//
// Codes are single-use and live 30 seconds: call Connect from the redirect handler at once.
// A code that was used already, belongs to another portal than domain, or has expired fails
// with a *ConnectError (Code "invalid_grant", "invalid_response", "expired_token") and stores
// nothing. The connected installation has no application token: the portal's ONAPPUNINSTALL
// removes it once the OAuth server refuses its tokens (see UninstallHandler), and Disconnect
// removes it on the application's own decision.
//
// The stored installation is replaced by the same rules as an install event's: a connection
// never replaces a newer pair (the stored installation is returned and OnInstall does not run),
// and replaces an installation with an application token, or one of another domain, only when
// the OAuth server no longer accepts its tokens; otherwise Connect fails with an error matching
// ErrInstallationInUse. Every portal user the application is open to may connect it: the
// stored pair acts as the user who connected last.
//
// Connect counts against the same bounds as install verification (per portal and per App);
// once the code is exchanged, the rest runs to its end (bounded by AppConfig.EventTimeout) even
// if ctx ends, so that a spent code's pair is not lost to a browser that went away.
func (a *App) Connect(ctx context.Context, domain, code string) (Installation, error) {
	host, err := portalHost(domain)
	if err != nil {
		return Installation{}, err
	}
	if checkToken("code", code) != nil {
		return Installation{}, &ConnectError{Domain: host, Code: "invalid_request", Description: "invalid authorization code"}
	}
	release, err := a.verifyGate.enter(ctx, "connect:"+host, false)
	if err != nil {
		return Installation{}, &ConnectError{Domain: host, Description: "too many connections of this portal, or of the App, at once; retry later"}
	}
	defer release()

	form := url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {a.secret.ClientID},
		"client_secret": {a.secret.ClientSecret},
		"code":          {code},
	}
	r, status, err := postToken(ctx, a.noRedirectClient(), a.oauthServers[0], form, "")
	if err != nil {
		ce := &ConnectError{Domain: host, Status: status, Err: err}
		var rte *RefreshTokenError
		if errors.As(err, &rte) {
			ce.Code, ce.Description, ce.Err = rte.Code, rte.Description, rte.Err
		}
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: authorization code refused",
			slog.String("domain", host), slog.Any("error", ce))
		return Installation{}, ce
	}

	hookCtx := context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(hookCtx, a.cfg.EventTimeout)
	defer cancel()
	inst, err := a.connectedInstallation(ctx, host, r, status)
	if err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: connection refused",
			slog.String("domain", host), slog.String("member_id", clip(r.MemberID)), slog.Any("error", err))
		return Installation{}, err
	}
	stored, kind, err := a.storeConnection(ctx, inst)
	if err != nil {
		return Installation{}, err
	}
	if kind != 0 {
		a.forget(stored.MemberID)
		a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: portal connected",
			slog.String("member_id", stored.MemberID), slog.String("domain", stored.Domain), slog.String("kind", kind.String()))
		if a.cfg.OnInstall != nil {
			a.cfg.OnInstall(context.WithValue(hookCtx, installKindKey{}, kind), stored)
		}
	}
	return stored, nil
}

// connectedInstallation checks a code grant's reply for the portal at host, has the OAuth
// server's app.info vouch for its access token, and returns the installation it makes.
func (a *App) connectedInstallation(ctx context.Context, host string, r tokenReply, status int) (Installation, error) {
	bad := func(desc string) (Installation, error) {
		return Installation{}, &ConnectError{Domain: host, MemberID: clip(r.MemberID), Code: "invalid_response", Description: desc, Status: status}
	}
	if !ValidMemberID(r.MemberID) {
		return bad("the reply has no valid member_id")
	}
	u, err := parseEndpoint(r.ClientEndpoint, a.cfg.InsecureHTTP)
	if err != nil || (u.Path != "/rest/" && u.Path != "/rest") || !validHost(u.Host) {
		return bad("the reply has no valid client_endpoint")
	}
	if u.Host != host {
		return bad("the code was issued by another portal (" + clip(u.Host) + ")")
	}
	if checkToken("access_token", r.AccessToken) != nil || checkToken("refresh_token", r.RefreshToken) != nil {
		return bad("the reply has no valid token pair")
	}
	if !validStatus(r.Status) {
		return bad("the reply has an invalid status")
	}
	now := a.now()
	p := OAuthParams{
		MemberID:       r.MemberID,
		AccessToken:    r.AccessToken,
		RefreshToken:   r.RefreshToken,
		Expires:        int64(r.Expires),
		ExpiresIn:      int64(r.ExpiresIn),
		Scope:          clipScope(r.Scope),
		Domain:         host,
		ClientEndpoint: u.Scheme + "://" + host + "/rest/",
		ServerEndpoint: r.ServerEndpoint,
		Status:         r.Status,
		UserID:         int64(r.UserID),
	}
	if p.Expires <= 0 && p.ExpiresIn > 0 {
		p.Expires = now.Unix() + p.ExpiresIn
	}
	// The server endpoint must be a trusted OAuth server (none: the first one), so that app.info
	// below, and every later refresh, goes to a trusted server only.
	if p.ServerEndpoint == "" {
		p.ServerEndpoint = a.oauthServers[0] + "/rest/"
	} else if _, err := a.trustedOAuthOrigin(p.ServerEndpoint); err != nil {
		return bad("the reply's server_endpoint is not a trusted OAuth server")
	}

	info, err := a.appInfoAt(ctx, p.ServerEndpoint, p.AccessToken)
	if err != nil {
		if ae, ok := refusal(err); ok {
			return bad("the OAuth server's app.info refuses the new token: " + ae.Code)
		}
		return Installation{}, &ConnectError{Domain: host, MemberID: p.MemberID, Description: "cannot verify the new token at the OAuth server", Err: err}
	}
	if info.ClientID != a.secret.ClientID || info.Install.MemberID != p.MemberID {
		return bad("the OAuth server's app.info names another application or portal")
	}
	if iu, err := parseEndpoint(info.Install.ClientEndpoint, a.cfg.InsecureHTTP); err != nil || iu.Host != host {
		return bad("the OAuth server's app.info names another portal")
	}
	if info.Scope != "" {
		p.Scope = clipScope(info.Scope)
	}
	if s := info.Install.Status; s != "" && validStatus(s) {
		p.Status = s
	}
	if info.UserID > 0 {
		p.UserID = int64(info.UserID)
	}
	t := now.UTC().Truncate(time.Microsecond)
	return Installation{OAuthParams: p, State: StateActive, InstalledAt: t, UpdatedAt: t}, nil
}

// storeConnection writes a verified connection by the rules in Connect's doc and returns what
// is stored and what the connection did (0: nothing, a newer pair is stored).
func (a *App) storeConnection(ctx context.Context, inst Installation) (Installation, InstallKind, error) {
	return a.storeConnectionOnce(ctx, inst, true)
}

// storeConnectionOnce is storeConnection; retry: a create that lost a race with another first
// write of the portal is merged by the same rules once.
func (a *App) storeConnectionOnce(ctx context.Context, inst Installation, retry bool) (Installation, InstallKind, error) {
	var stored Installation
	var kind InstallKind
	var after error // refuse the connection, though fn wrote (a stored pair it had to refresh)
	err := a.lifecycleUpdate(ctx, inst.MemberID, func(cur Installation) (Installation, error) {
		stored, after = Installation{}, nil
		if cur.ApplicationToken != "" || cur.Domain != inst.Domain {
			// Another installation: an install event's, or one of another domain. Only a dead
			// one is replaced, as a reinstall replaces one.
			state, next, err := a.storedPairState(ctx, cur)
			if err != nil {
				return cur, err
			}
			if state == pairAlive {
				if next != nil { // the check spent the stored refresh token: keep its successor
					cur = a.withSuccessor(cur, *next)
					after = ErrInstallationInUse
					return cur, nil
				}
				return cur, ErrInstallationInUse
			}
			kind, stored = InstallReinstall, inst
			return stored, nil
		}
		if cur.State != StateRevoked && olderPair(inst.OAuthParams, cur.OAuthParams) {
			kind, stored = 0, cur
			return cur, errNoWrite
		}
		kind, stored = InstallAgain, merge(cur, inst)
		return stored, nil
	})
	switch {
	case err == nil && after != nil:
		err = after
	case err == nil, errors.Is(err, errNoWrite):
		return stored, kind, nil
	case errors.Is(err, ErrNotInstalled):
		err := a.storeCreate(ctx, inst)
		if errors.Is(err, ErrAlreadyInstalled) && retry {
			return a.storeConnectionOnce(ctx, inst, false)
		}
		if err != nil {
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing a connected installation failed",
				slog.String("member_id", inst.MemberID), slog.Any("error", err))
			return Installation{}, 0, err
		}
		return inst, InstallNew, nil
	}
	var ee *eventError
	switch {
	case errors.Is(err, ErrInstallationInUse):
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: connection refused: another installation of the portal is stored and its tokens still work",
			slog.String("member_id", inst.MemberID), slog.String("domain", inst.Domain))
	case errors.As(err, &ee):
		// The stored pair could not be checked (the OAuth server is unavailable).
		return Installation{}, 0, &ConnectError{Domain: inst.Domain, MemberID: inst.MemberID, Err: err}
	default:
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing a connected installation failed",
			slog.String("member_id", inst.MemberID), slog.Any("error", err))
	}
	return Installation{}, 0, err
}

// Disconnect removes the installation of memberID on the application's own decision (a
// connected portal the service no longer serves, or any other): it deletes it from the store
// and evicts its cached client, so that a client handed out earlier fails with ErrNotInstalled
// from then on. It is not an uninstall: OnUninstall does not run, and the app stays installed
// on the portal. Bitrix24 has no endpoint to revoke tokens, so the forgotten tokens stay valid
// at Bitrix24 until they expire. A memberID with no installation is not an error.
func (a *App) Disconnect(ctx context.Context, memberID string) error {
	if err := a.storeDelete(ctx, memberID); err != nil {
		return err
	}
	a.evict(memberID)
	a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: portal disconnected", slog.String("member_id", memberID))
	return nil
}

// Format prints the error's message for every verb, so that no verb walks into its fields.
func (e *ConnectError) Format(f fmt.State, verb rune) { formatRedacted(f, verb, e.Error()) }
