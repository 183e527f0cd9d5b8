package b24oauth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The lifecycle events Bitrix24 sends to an application's handlers.
const (
	EventAppInstall   = "ONAPPINSTALL"
	EventAppUpdate    = "ONAPPUPDATE"
	EventAppUninstall = "ONAPPUNINSTALL"
)

// InstallHandler returns the handler for ONAPPINSTALL and ONAPPUPDATE events, and for the
// install page POST of an application with a user interface (AUTH_ID, REFRESH_ID, member_id...).
// Mount it at the application's install URL.
//
// It answers 200 once the installation is durably stored (for the install page, with a small
// HTML page that calls BX24.installFinish()), 4xx with a short plain-text reason for a malformed
// (400), forged (403) or too frequent (429) request, and 503 when the store, the OAuth server or
// the portal cannot be reached; a rejected request writes nothing.
//
// Nothing in the event is trusted before Bitrix24 confirms it:
//   - the trusted OAuth server's app.info must vouch for the event's access token: issued to this
//     application (client_id) for the event's member_id. The portal's domain and client endpoint
//     are taken from that reply, and must be the event's;
//   - the portal must say that the token's user is an administrator (user.admin);
//   - an event with another application_token than the stored installation's (a reinstall whose
//     uninstall event was lost) replaces it only when the stored pair no longer works at the
//     OAuth server, which is what an uninstall leaves behind;
//   - an event whose pair is older than the stored one (a replay) does not replace it;
//   - a first install is created only where none is stored (CreateInstallation): of two first
//     installs arriving together (the ONAPPINSTALL event and the install page POST), the
//     second is merged with the first by the rules above.
//
// Verification costs one app.info request to the OAuth server and one user.admin request to
// the portal per event (and, for a reinstall, one more app.info with the stored token). It is
// bounded per portal and per App, so forged events cannot flood the OAuth server. The handler
// gives up after AppConfig.EventTimeout, but a write of a pair that cost a single-use refresh
// token always completes.
func (a *App) InstallHandler() http.Handler { return a.eventEndpoint(a.serveInstall) }

// UninstallHandler returns the handler for ONAPPUNINSTALL events. When the event's
// application_token matches the stored one (constant-time), and the OAuth server no longer
// accepts the stored tokens (an uninstall revokes them all: a user who learnt the application
// token from an app page cannot pass for Bitrix24), the installation is deleted, its cached
// client evicted (a client handed out earlier fails with ErrNotInstalled from then on), and
// OnUninstall runs. A missing or different token is 403 and deletes nothing; a malformed event
// is 400; a well-formed event for an unknown member_id is 200 with nothing to do. An
// installation stored without an application token (older install pages, portals connected by
// authorization code) is removed only when the OAuth server refuses its tokens (503 when it
// cannot be asked).
//
// The check at the OAuth server comes first; the delete then compares the application token
// again against the installation as it is at that moment, and deletes it only if it still holds
// the pair that was checked (DeleteInstallationIf): a reinstall stored meanwhile is not deleted
// (403), and a pair stored meanwhile with the same application token is checked once more (a
// second change is 503).
func (a *App) UninstallHandler() http.Handler { return a.eventEndpoint(a.serveUninstall) }

// eventError is a rejected request: its HTTP status and a short reason for the sender.
type eventError struct {
	status int
	reason string
}

func (e *eventError) Error() string { return e.reason }

func badRequest(format string, args ...any) *eventError {
	return &eventError{status: http.StatusBadRequest, reason: fmt.Sprintf(format, args...)}
}

// readForm checks the request's method, content type and size, and parses its form.
func (a *App) readForm(w http.ResponseWriter, r *http.Request) (url.Values, *eventError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &eventError{http.StatusMethodNotAllowed, "method not allowed: POST an event"}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, &eventError{http.StatusUnsupportedMediaType, "content type must be application/x-www-form-urlencoded"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxEventBytes)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &eventError{http.StatusRequestEntityTooLarge, "event body too large"}
		}
		return nil, badRequest("malformed form body")
	}
	return r.PostForm, nil
}

func (a *App) reject(w http.ResponseWriter, r *http.Request, rep *eventReport, e *eventError) {
	rep.rejected(e)
	level := slog.LevelInfo
	if e.status == http.StatusForbidden || e.status >= 500 {
		level = slog.LevelWarn
	}
	a.log.LogAttrs(r.Context(), level, "b24oauth: event rejected",
		slog.String("path", r.URL.Path), slog.Int("status", e.status), slog.String("reason", e.reason))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	_, _ = w.Write([]byte(e.reason + "\n"))
}

func (a *App) serveInstall(w http.ResponseWriter, r *http.Request, rep *eventReport) {
	form, e := a.readForm(w, r)
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	page := !form.Has("event") && form.Has("AUTH_ID")
	var inst Installation
	var err error
	if page {
		inst, err = parseInstallPage(r.URL.Query(), form, a.now())
	} else {
		inst, err = parseInstallEvent(form, a.now())
	}
	if err == nil {
		err = a.checkEndpoints(&inst.OAuthParams)
	}
	if err != nil {
		a.reject(w, r, rep, asEventError(err))
		return
	}
	if page {
		rep.named(eventInstallPage)
	} else {
		rep.named(form.Get("event")) // one of the two: parseInstallEvent checked it
	}
	// The work outlives a sender that hangs up (a verification may spend a single-use refresh
	// token, whose successor must be stored), but not EventTimeout.
	hookCtx := context.WithoutCancel(r.Context())
	ctx, cancel := context.WithTimeout(hookCtx, a.cfg.EventTimeout)
	defer cancel()
	stored, kind, err := a.storeInstall(ctx, inst, form.Get("event") == EventAppUpdate)
	if err != nil {
		a.reject(w, r, rep, asEventError(err))
		return
	}
	rep.verified(stored.MemberID)
	if kind != 0 {
		a.forget(stored.MemberID)
		a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: installation stored",
			slog.String("member_id", stored.MemberID), slog.String("domain", stored.Domain), slog.String("version", stored.Version))
		a.bindEvents(ctx, stored) // AppConfig.Events; a failure is reported, never fails the install
		if a.cfg.OnInstall != nil {
			a.cfg.OnInstall(context.WithValue(hookCtx, installKindKey{}, kind), stored)
		}
	}
	if page {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		body := a.cfg.InstallPageHTML
		if body == nil {
			body = installFinishPage
		}
		_, _ = w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// InstallKind says what the install event an OnInstall call reports did; InstallKindFrom reads
// it from the hook's context.
type InstallKind int

// The kinds of install events.
const (
	InstallNew       InstallKind = iota + 1 // a portal not stored before
	InstallUpdate                           // ONAPPUPDATE: a new version of the app
	InstallReinstall                        // another installation replaced a dead one (its uninstall event was lost)
	InstallAgain                            // ONAPPINSTALL or the install page again, with a newer pair
)

// String returns the kind's name: "new", "update", "reinstall", "again".
func (k InstallKind) String() string {
	switch k {
	case InstallNew:
		return "new"
	case InstallUpdate:
		return "update"
	case InstallReinstall:
		return "reinstall"
	case InstallAgain:
		return "again"
	}
	return "unknown"
}

type installKindKey struct{}

// InstallKindFrom returns what the install event reported to OnInstall did, from the context
// OnInstall receives; 0 for any other context.
func InstallKindFrom(ctx context.Context) InstallKind {
	k, _ := ctx.Value(installKindKey{}).(InstallKind)
	return k
}

// installFinishPage tells Bitrix24 that the installation of an app with a UI is complete.
var installFinishPage = []byte(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Installation</title>
<script src="https://api.bitrix24.com/api/v1/"></script></head>
<body><p>The application is installed.</p>
<script>BX24.init(function () { BX24.installFinish(); });</script>
</body></html>
`)

func asEventError(err error) *eventError {
	var e *eventError
	if errors.As(err, &e) {
		return e
	}
	return &eventError{http.StatusServiceUnavailable, "installation store unavailable"}
}

// storeInstall verifies ev (see InstallHandler for the rules) and writes it; update says ev is
// an ONAPPUPDATE. It returns what is stored, and what the event did: 0 when it changed nothing
// (a replay of an older event).
func (a *App) storeInstall(ctx context.Context, ev Installation, update bool) (Installation, InstallKind, error) {
	cur, lerr := a.storeLoad(ctx, ev.MemberID)
	if lerr != nil && !errors.Is(lerr, ErrNotInstalled) {
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: loading an installation failed",
			slog.String("member_id", ev.MemberID), slog.Any("error", lerr))
		return ev, 0, lerr
	}
	trusted := lerr == nil && tokensEqual(cur.ApplicationToken, ev.ApplicationToken)
	if trusted && cur.State != StateRevoked && cur.AccessToken == ev.AccessToken && cur.RefreshToken == ev.RefreshToken {
		// The stored pair itself (a replay, or the event repeated): nothing to change, nothing
		// to verify.
		return cur, 0, nil
	}
	v, err := a.verifyInstall(ctx, ev, trusted)
	if err != nil {
		if v.spent {
			// Verification exchanged a refresh token and then refused the event. The successor
			// is the only live pair of the portal the OAuth server named: if that portal's
			// stored installation held the spent token (a replayed or doctored event), store
			// it there, so the refusal costs the portal nothing.
			a.rescueSpent(ctx, v.spentFrom, v.inst.OAuthParams)
		}
		return ev, 0, err
	}
	if v.spent {
		// The only live pair is v.inst's now: its write must not depend on the request.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.EventTimeout)
		defer cancel()
		ctx = wctx
	}
	inst := v.inst
	var stored Installation
	var kind InstallKind
	var after error // refuse the event, though fn wrote (a stored pair it had to refresh)
	apply := func(cur Installation) (Installation, error) {
		stored, after = Installation{}, nil
		kind = InstallAgain
		if update {
			kind = InstallUpdate
		}
		if cur.State != StateRevoked && olderPair(inst.OAuthParams, cur.OAuthParams) {
			// A replayed or late event: the stored pair is newer. Keep it; a late update still
			// brings its version, language and (rotated) application token, which the OAuth
			// server and the portal have just confirmed.
			stored = cur
			if !update {
				kind = 0
				return cur, errNoWrite
			}
			if inst.Version != "" {
				stored.Version = inst.Version
			}
			if inst.LanguageID != "" {
				stored.LanguageID = inst.LanguageID
			}
			if inst.ApplicationToken != "" {
				stored.ApplicationToken = inst.ApplicationToken
			}
			if stored.Version == cur.Version && stored.LanguageID == cur.LanguageID && stored.ApplicationToken == cur.ApplicationToken {
				kind = 0
				return cur, errNoWrite
			}
			stored.UpdatedAt = inst.UpdatedAt
			return stored, nil
		}
		// Another installation is stored (another application_token) and the event is not an
		// update (which may rotate the token): a reinstall, so the stored pair must be dead. An
		// event without an application token (an older install page) claims no other
		// installation, and a stored installation without one takes the verified event's.
		if cur.ApplicationToken != "" && inst.ApplicationToken != "" && !update && !tokensEqual(cur.ApplicationToken, inst.ApplicationToken) {
			state, next, err := a.storedPairState(ctx, cur)
			if err != nil {
				return cur, err
			}
			if state == pairAlive {
				a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: install event with another application_token refused: the installed tokens still work",
					slog.String("member_id", inst.MemberID))
				if next != nil { // the check spent the stored refresh token: keep its successor
					cur = a.withSuccessor(cur, *next)
					after = errStoredPairAlive
					return cur, nil
				}
				return cur, errStoredPairAlive
			}
			kind = InstallReinstall
		}
		stored = merge(cur, inst)
		return stored, nil
	}
	err = a.lifecycleUpdate(ctx, inst.MemberID, apply)
	if errors.Is(err, ErrNotInstalled) {
		// A first install, created only where none is stored: another first install of the
		// portal that got there first (the ONAPPINSTALL event and the install page POST arrive
		// together) is merged with by the rules above, once, instead of overwritten.
		if err = a.storeCreate(ctx, inst); err == nil {
			return inst, InstallNew, nil
		} else if errors.Is(err, ErrAlreadyInstalled) {
			err = a.lifecycleUpdate(ctx, inst.MemberID, apply)
		}
	}
	switch {
	case err == nil && after != nil:
		return stored, 0, after
	case err == nil:
		return stored, kind, nil
	case errors.Is(err, errNoWrite):
		return stored, kind, nil
	default:
		var ee *eventError
		if !errors.As(err, &ee) {
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing an installation failed",
				slog.String("member_id", inst.MemberID), slog.Any("error", err))
		}
		return inst, 0, err
	}
}

// olderPair reports whether ev's pair was issued before cur's: its access token is another and
// expires earlier.
func olderPair(ev, cur OAuthParams) bool {
	return ev.AccessToken != cur.AccessToken && ev.Expires > 0 && cur.Expires > 0 && ev.Expires < cur.Expires
}

// merge returns the stored installation updated by an install or update event.
func merge(cur, ev Installation) Installation {
	out := ev
	if !cur.InstalledAt.IsZero() {
		out.InstalledAt = cur.InstalledAt
	}
	if out.Version == "" {
		out.Version = cur.Version
	}
	if out.LanguageID == "" {
		out.LanguageID = cur.LanguageID
	}
	if out.ApplicationToken == "" {
		out.ApplicationToken = cur.ApplicationToken
	}
	return out
}

// tokensEqual compares application tokens in constant time; an empty token matches nothing.
func tokensEqual(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (a *App) serveUninstall(w http.ResponseWriter, r *http.Request, rep *eventReport) {
	form, e := a.readForm(w, r)
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	memberID, appToken, e := a.parseUninstall(form)
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	rep.named(EventAppUninstall)
	hookCtx := context.WithoutCancel(r.Context())
	ctx, cancel := context.WithTimeout(hookCtx, a.cfg.EventTimeout)
	defer cancel()
	notInstalled := func() {
		rep.ignored("not installed")
		a.evict(memberID)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("not installed\n"))
	}
	var inst Installation
	for attempt := 1; ; attempt++ {
		var err error
		inst, err = a.storeLoad(ctx, memberID)
		switch {
		case errors.Is(err, ErrNotInstalled):
			notInstalled()
			return
		case err != nil:
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: loading an installation failed", slog.String("member_id", memberID), slog.Any("error", err))
			a.reject(w, r, rep, &eventError{http.StatusServiceUnavailable, "installation store unavailable"})
			return
		}
		// An installation stored without an application token (an older install page, a portal
		// connected by authorization code) has nothing to compare: the dead stored pair below is
		// then the only proof, and it must be certain.
		noToken := inst.ApplicationToken == ""
		if !noToken && !tokensEqual(inst.ApplicationToken, appToken) {
			a.reject(w, r, rep, errUninstallTokenMismatch)
			return
		}
		// An uninstall revokes every token of the app on the portal: stored tokens that still
		// work mean the event is not Bitrix24's (the application token is shown to every user who
		// opens an app page). The check runs under the member's lock (it may exchange the stored
		// refresh token, which must not race a refresh) against the record as it is then; a check
		// that cannot be made refuses the uninstall (503): deleting on a guess would let anyone
		// holding the leaked application token remove a live installation whenever the OAuth
		// server is slow.
		release, err := a.verifyGate.enter(ctx, memberID, !noToken)
		if err != nil {
			a.reject(w, r, rep, asEventError(err))
			return
		}
		var checked Installation
		alive := false
		err = a.storeUpdate(ctx, memberID, func(cur Installation) (Installation, error) {
			if cur.ApplicationToken != "" && !tokensEqual(cur.ApplicationToken, appToken) {
				return cur, errUninstallTokenMismatch
			}
			state, next, err := a.storedPairState(ctx, cur)
			if err != nil {
				return cur, err
			}
			checked, alive = cur, state == pairAlive
			if next != nil { // the check spent the stored refresh token: keep its successor
				return a.withSuccessor(cur, *next), nil
			}
			return cur, errNoWrite
		})
		release()
		switch {
		case errors.Is(err, ErrNotInstalled):
			notInstalled()
			return
		case err != nil && !errors.Is(err, errNoWrite):
			var ee *eventError
			if !errors.As(err, &ee) {
				a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: checking an uninstalled portal's tokens failed", slog.String("member_id", memberID), slog.Any("error", err))
			}
			a.reject(w, r, rep, asEventError(err))
			return
		case alive:
			a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: uninstall event refused: the installed tokens still work",
				slog.String("member_id", memberID))
			a.reject(w, r, rep, &eventError{http.StatusForbidden, "the installation's tokens still work: not an uninstall"})
			return
		}
		// The installation is deleted only as it is at the delete, compared again, and only if
		// it still holds the pair that was checked. A reinstall stored meanwhile has another
		// application token: not this event's to delete.
		checkedRefresh := checked.RefreshToken
		err = a.storeDeleteIf(ctx, memberID, func(cur Installation) error {
			if cur.ApplicationToken != "" && !tokensEqual(cur.ApplicationToken, appToken) {
				return errUninstallTokenMismatch
			}
			if cur.RefreshToken != checkedRefresh {
				return errUninstallPairChanged
			}
			inst = cur
			return nil
		})
		if errors.Is(err, errUninstallPairChanged) && attempt == 1 {
			// Another pair was stored since the check (an install event, a refresh): check
			// that one, once.
			continue
		}
		var ee *eventError
		switch {
		case err == nil:
		case errors.Is(err, ErrNotInstalled):
			notInstalled() // removed meanwhile (by another uninstall)
			return
		case errors.As(err, &ee):
			a.reject(w, r, rep, ee)
			return
		default:
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: deleting an installation failed", slog.String("member_id", memberID), slog.Any("error", err))
			a.reject(w, r, rep, &eventError{http.StatusServiceUnavailable, "installation store unavailable"})
			return
		}
		break
	}
	a.evict(memberID)
	rep.verified(memberID)
	clean := form.Get("data[CLEAN]") == "1"
	a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: installation removed", slog.String("member_id", memberID), slog.Bool("clean", clean))
	if a.cfg.OnUninstall != nil {
		a.cfg.OnUninstall(hookCtx, inst, clean)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// Why an uninstall deletes nothing, found at the moment of the delete.
var (
	errUninstallTokenMismatch = &eventError{http.StatusForbidden, "application_token does not match the installation"}
	errUninstallPairChanged   = &eventError{http.StatusServiceUnavailable, "the installation changed while the uninstall was checked; retry"}
)

// parseUninstall validates an ONAPPUNINSTALL event in full before the store is consulted.
func (a *App) parseUninstall(form url.Values) (memberID, appToken string, e *eventError) {
	if ev := form.Get("event"); ev != EventAppUninstall {
		if ev == "" {
			return "", "", badRequest("missing event")
		}
		return "", "", badRequest("event %q is not handled here; want %s", clip(ev), EventAppUninstall)
	}
	memberID, appToken = form.Get("auth[member_id]"), form.Get("auth[application_token]")
	if e := checkEventMemberID("auth[member_id]", memberID); e != nil {
		return "", "", e
	}
	if appToken == "" {
		return "", "", &eventError{http.StatusForbidden, "missing auth[application_token]"}
	}
	if e := checkAppToken("auth[application_token]", appToken); e != nil {
		return "", "", e
	}
	p := OAuthParams{
		Domain:         form.Get("auth[domain]"),
		ClientEndpoint: form.Get("auth[client_endpoint]"),
		ServerEndpoint: form.Get("auth[server_endpoint]"),
	}
	if p.Domain != "" || p.ClientEndpoint != "" {
		if !validHost(p.Domain) {
			return "", "", badRequest("invalid auth[domain]")
		}
		if err := a.checkEndpoints(&p); err != nil {
			return "", "", asEventError(err)
		}
	} else if p.ServerEndpoint != "" {
		if _, err := a.trustedOAuthOrigin(p.ServerEndpoint); err != nil {
			return "", "", badRequest("auth[server_endpoint] is not a trusted OAuth server")
		}
	}
	if v := form.Get("data[CLEAN]"); v != "" && v != "0" && v != "1" {
		return "", "", badRequest("invalid data[CLEAN]")
	}
	return memberID, appToken, nil
}

// checkEndpoints enforces that client_endpoint is https://<domain>/rest/ and that the OAuth
// server is trusted, so an event can neither point our calls elsewhere nor make us send the
// client secret to a host of its choosing.
func (a *App) checkEndpoints(p *OAuthParams) error {
	scheme := "https"
	if a.cfg.InsecureHTTP && strings.HasPrefix(p.ClientEndpoint, "http://") {
		scheme = "http"
	}
	want := scheme + "://" + p.Domain + "/rest/"
	if p.ClientEndpoint == "" {
		p.ClientEndpoint = want
	}
	if !strings.EqualFold(p.ClientEndpoint, want) {
		return badRequest("auth[client_endpoint] must be %s", want)
	}
	p.ClientEndpoint = strings.ToLower(p.ClientEndpoint)
	p.Domain = strings.ToLower(p.Domain)
	if _, err := parseEndpoint(p.ClientEndpoint, a.cfg.InsecureHTTP); err != nil {
		return badRequest("auth[client_endpoint] is not a valid endpoint")
	}
	if p.ServerEndpoint == "" {
		p.ServerEndpoint = a.oauthServers[0] + "/rest/"
	}
	// The same rules as New's, so that a stored installation always builds a client.
	u, err := parseEndpoint(p.ServerEndpoint, a.cfg.InsecureHTTP)
	if err != nil {
		return badRequest("auth[server_endpoint] is not a valid endpoint")
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, s := range a.oauthServers {
		if s == origin {
			return nil
		}
	}
	return badRequest("auth[server_endpoint] is not a trusted OAuth server")
}

// parseInstallEvent reads an ONAPPINSTALL or ONAPPUPDATE event: all values are strings under
// PHP bracket keys (auth[access_token], data[VERSION]). Unknown keys are ignored.
func parseInstallEvent(form url.Values, now time.Time) (Installation, error) {
	ev := form.Get("event")
	if ev != EventAppInstall && ev != EventAppUpdate {
		if ev == "" {
			return Installation{}, badRequest("missing event")
		}
		return Installation{}, badRequest("event %q is not handled here; want %s or %s", clip(ev), EventAppInstall, EventAppUpdate)
	}
	get := func(k string) string { return strings.TrimSpace(form.Get("auth[" + k + "]")) }
	p := OAuthParams{
		ApplicationToken: get("application_token"),
		MemberID:         get("member_id"),
		AccessToken:      get("access_token"),
		RefreshToken:     get("refresh_token"),
		Scope:            get("scope"),
		Domain:           get("domain"),
		ClientEndpoint:   get("client_endpoint"),
		ServerEndpoint:   get("server_endpoint"),
		Status:           AppStatus(get("status")),
	}
	var err error
	if p.Expires, err = optInt(form, "auth[expires]"); err != nil {
		return Installation{}, err
	}
	if p.ExpiresIn, err = optInt(form, "auth[expires_in]"); err != nil {
		return Installation{}, err
	}
	if p.UserID, err = optInt(form, "auth[user_id]"); err != nil {
		return Installation{}, err
	}
	inst := Installation{
		OAuthParams: p,
		State:       StateActive,
		Version:     clip(form.Get("data[VERSION]")),
		LanguageID:  clip(form.Get("data[LANGUAGE_ID]")),
	}
	return finishInstall(inst, now, "auth[")
}

// parseInstallPage reads the install page POST of an application with a UI: the token pair in
// the form (AUTH_ID, AUTH_EXPIRES is a lifetime in seconds, REFRESH_ID, member_id, ...) and the
// portal in the query string (DOMAIN, PROTOCOL).
func parseInstallPage(query, form url.Values, now time.Time) (Installation, error) {
	domain := strings.TrimSpace(query.Get("DOMAIN"))
	if domain == "" {
		domain = strings.TrimSpace(form.Get("DOMAIN"))
	}
	scheme := "https"
	if proto := query.Get("PROTOCOL"); proto == "0" {
		scheme = "http"
	}
	p := OAuthParams{
		ApplicationToken: strings.TrimSpace(form.Get("APPLICATION_TOKEN")),
		MemberID:         strings.TrimSpace(form.Get("member_id")),
		AccessToken:      strings.TrimSpace(form.Get("AUTH_ID")),
		RefreshToken:     strings.TrimSpace(form.Get("REFRESH_ID")),
		Scope:            strings.TrimSpace(form.Get("APPLICATION_SCOPE")),
		Domain:           domain,
		ServerEndpoint:   strings.TrimSpace(form.Get("SERVER_ENDPOINT")),
		Status:           AppStatus(strings.TrimSpace(form.Get("status"))),
	}
	if domain != "" {
		p.ClientEndpoint = scheme + "://" + domain + "/rest/"
	}
	lifetime, err := optInt(form, "AUTH_EXPIRES")
	if err != nil {
		return Installation{}, err
	}
	p.ExpiresIn = lifetime
	inst := Installation{OAuthParams: p, State: StateActive, LanguageID: clip(query.Get("LANG"))}
	return finishInstall(inst, now, "")
}

// finishInstall validates what every install carries and fills the derived fields.
func finishInstall(inst Installation, now time.Time, prefix string) (Installation, error) {
	name := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + k + "]"
	}
	p := &inst.OAuthParams
	if err := checkEventMemberID(name("member_id"), p.MemberID); err != nil {
		return inst, err
	}
	if prefix != "" || p.ApplicationToken != "" {
		if err := checkAppToken(name("application_token"), p.ApplicationToken); err != nil {
			return inst, err
		}
	}
	if err := checkToken(name("access_token"), p.AccessToken); err != nil {
		return inst, err
	}
	if err := checkToken(name("refresh_token"), p.RefreshToken); err != nil {
		return inst, err
	}
	if p.Domain == "" {
		return inst, badRequest("missing %s", name("domain"))
	}
	if !validHost(p.Domain) {
		return inst, badRequest("invalid %s", name("domain"))
	}
	if !validStatus(p.Status) {
		return inst, badRequest("invalid %s", name("status"))
	}
	if len(p.Scope) > 1024 {
		return inst, badRequest("%s too long", name("scope"))
	}
	if p.Expires <= 0 && p.ExpiresIn > 0 {
		p.Expires = now.Unix() + p.ExpiresIn
	}
	t := now.UTC().Truncate(time.Microsecond)
	inst.InstalledAt, inst.UpdatedAt = t, t
	return inst, nil
}

// checkEventMemberID accepts a member_id as Bitrix24 sends it: 32 lowercase hex.
func checkEventMemberID(name, v string) *eventError {
	if v == "" {
		return badRequest("missing %s", name)
	}
	if !ValidMemberID(v) {
		return badRequest("invalid %s: want 32 lowercase hex digits", name)
	}
	return nil
}

// checkAppToken accepts an application_token: 32 hex digits.
func checkAppToken(name, v string) *eventError {
	if v == "" {
		return badRequest("missing %s", name)
	}
	if len(v) != 32 || !isHex(v, true) {
		return badRequest("invalid %s: want 32 hex digits", name)
	}
	return nil
}

func isHex(s string, upperOK bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || upperOK && c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// checkToken accepts an OAuth token: opaque, but printable ASCII of a sane length.
func checkToken(name, v string) *eventError {
	if v == "" {
		return badRequest("missing %s", name)
	}
	if len(v) > 512 {
		return badRequest("invalid %s", name)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f {
			return badRequest("invalid %s", name)
		}
	}
	return nil
}

func optInt(form url.Values, key string) (int64, error) {
	s := strings.TrimSpace(form.Get(key))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("invalid %s", key)
	}
	return n, nil
}

// clip bounds a value echoed in a reason or stored as metadata.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.ToValidUTF8(s, "")
}
