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
// or forged request, and 503 when the store fails; a rejected request writes nothing.
//
// A new member_id is stored. A known member_id is updated when the event's application_token
// matches the stored one (compared in constant time). With a different application_token the
// event is accepted only after its refresh token was exchanged at a trusted OAuth server and the
// reply names the same member_id (a reinstall whose uninstall event was lost); the exchanged pair
// is stored. Otherwise the answer is 403 and the stored installation is untouched.
func (a *App) InstallHandler() http.Handler { return http.HandlerFunc(a.serveInstall) }

// UninstallHandler returns the handler for ONAPPUNINSTALL events. When the event's
// application_token matches the stored one (constant-time), the installation is deleted, its
// cached client evicted (a client handed out earlier fails with ErrNotInstalled from then on),
// and OnUninstall runs. A missing or different token is 403 and deletes nothing; an unknown
// member_id is 200 with nothing to do.
func (a *App) UninstallHandler() http.Handler { return http.HandlerFunc(a.serveUninstall) }

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

func (a *App) reject(w http.ResponseWriter, r *http.Request, e *eventError) {
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

func (a *App) serveInstall(w http.ResponseWriter, r *http.Request) {
	form, e := a.readForm(w, r)
	if e != nil {
		a.reject(w, r, e)
		return
	}
	page := form.Get("event") == "" && form.Has("AUTH_ID")
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
		a.reject(w, r, asEventError(err))
		return
	}
	stored, err := a.storeInstall(r.Context(), inst)
	if err != nil {
		a.reject(w, r, asEventError(err))
		return
	}
	a.forget(stored.MemberID)
	a.log.LogAttrs(r.Context(), slog.LevelInfo, "b24oauth: installation stored",
		slog.String("member_id", stored.MemberID), slog.String("domain", stored.Domain), slog.String("version", stored.Version))
	if a.cfg.OnInstall != nil {
		a.cfg.OnInstall(r.Context(), stored)
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

// storeInstall writes inst (see InstallHandler for the rules) and returns what was stored.
func (a *App) storeInstall(ctx context.Context, inst Installation) (Installation, error) {
	store := a.cfg.Store
	var stored Installation
	err := store.Update(ctx, inst.MemberID, func(cur Installation) (Installation, error) {
		if !tokensEqual(cur.ApplicationToken, inst.ApplicationToken) {
			return cur, ErrAppTokenMismatch
		}
		stored = merge(cur, inst)
		return stored, nil
	})
	switch {
	case err == nil:
		return stored, nil
	case errors.Is(err, ErrNotInstalled):
		if err := store.Save(ctx, inst); err != nil {
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing an installation failed",
				slog.String("member_id", inst.MemberID), slog.Any("error", err))
			return inst, err
		}
		return inst, nil
	case errors.Is(err, ErrAppTokenMismatch):
		return a.verifiedReinstall(ctx, inst)
	default:
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: storing an installation failed",
			slog.String("member_id", inst.MemberID), slog.Any("error", err))
		return inst, err
	}
}

// verifiedReinstall accepts an event for a known member_id with another application_token only
// if the OAuth server, given the event's refresh token, answers for that very member_id.
func (a *App) verifiedReinstall(ctx context.Context, inst Installation) (Installation, error) {
	forbidden := &eventError{http.StatusForbidden, "application_token does not match the installation"}
	if inst.RefreshToken == "" {
		return inst, forbidden
	}
	c, err := New(inst.OAuthParams, a.secret, a.clientOpts...)
	if err != nil {
		return inst, forbidden
	}
	// The OAuth server's reply must name the event's portal itself: a reply without a
	// member_id proves nothing.
	r, status, err := c.requestToken(ctx, inst.OAuthParams)
	if err == nil && r.MemberID != inst.MemberID {
		err = fmt.Errorf("the OAuth server answered for member_id %q", clip(r.MemberID))
	}
	var p OAuthParams
	if err == nil {
		p, err = c.applyReply(inst.OAuthParams, r.handler(), int64(r.UserID), status)
	}
	if err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: an event with another application_token failed verification",
			slog.String("member_id", inst.MemberID), slog.Any("error", err))
		return inst, forbidden
	}
	inst.OAuthParams = p
	var stored Installation
	err = a.cfg.Store.Update(ctx, inst.MemberID, func(cur Installation) (Installation, error) {
		stored = merge(cur, inst)
		return stored, nil
	})
	if errors.Is(err, ErrNotInstalled) { // uninstalled meanwhile: store it as new
		stored, err = inst, a.cfg.Store.Save(ctx, inst)
	}
	return stored, err
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

func (a *App) serveUninstall(w http.ResponseWriter, r *http.Request) {
	form, e := a.readForm(w, r)
	if e != nil {
		a.reject(w, r, e)
		return
	}
	if ev := form.Get("event"); !strings.EqualFold(ev, EventAppUninstall) {
		a.reject(w, r, badRequest("event %q is not handled here; want %s", clip(ev), EventAppUninstall))
		return
	}
	memberID, appToken := form.Get("auth[member_id]"), form.Get("auth[application_token]")
	if err := checkID("auth[member_id]", memberID); err != nil {
		a.reject(w, r, err)
		return
	}
	if appToken == "" {
		a.reject(w, r, &eventError{http.StatusForbidden, "missing auth[application_token]"})
		return
	}
	if err := checkID("auth[application_token]", appToken); err != nil {
		a.reject(w, r, err)
		return
	}
	ctx := r.Context()
	inst, err := a.cfg.Store.Load(ctx, memberID)
	switch {
	case errors.Is(err, ErrNotInstalled):
		a.evict(memberID)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("not installed\n"))
		return
	case err != nil:
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: loading an installation failed", slog.String("member_id", memberID), slog.Any("error", err))
		a.reject(w, r, &eventError{http.StatusServiceUnavailable, "installation store unavailable"})
		return
	}
	if !tokensEqual(inst.ApplicationToken, appToken) {
		a.reject(w, r, &eventError{http.StatusForbidden, "application_token does not match the installation"})
		return
	}
	if err := a.cfg.Store.Delete(ctx, memberID); err != nil {
		a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: deleting an installation failed", slog.String("member_id", memberID), slog.Any("error", err))
		a.reject(w, r, &eventError{http.StatusServiceUnavailable, "installation store unavailable"})
		return
	}
	a.evict(memberID)
	clean := form.Get("data[CLEAN]") == "1"
	a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: installation removed", slog.String("member_id", memberID), slog.Bool("clean", clean))
	if a.cfg.OnUninstall != nil {
		a.cfg.OnUninstall(ctx, inst, clean)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
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
	if !strings.EqualFold(ev, EventAppInstall) && !strings.EqualFold(ev, EventAppUpdate) {
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
	if err := checkID(name("member_id"), p.MemberID); err != nil {
		return inst, err
	}
	if prefix != "" || p.ApplicationToken != "" {
		if err := checkID(name("application_token"), p.ApplicationToken); err != nil {
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
	if u, err := url.Parse("https://" + p.Domain + "/"); err != nil || u.Host != p.Domain || strings.ContainsAny(p.Domain, "/\\@?#") {
		return inst, badRequest("invalid %s", name("domain"))
	}
	switch p.Status {
	case "", StatusFree, StatusDemo, StatusTrial, StatusPaid, StatusLocal, StatusSubscription:
	default:
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

// checkID accepts a member_id or application_token: real ones are 32 lowercase hex.
func checkID(name, v string) *eventError {
	if v == "" {
		return badRequest("missing %s", name)
	}
	if len(v) < 8 || len(v) > 64 {
		return badRequest("invalid %s", name)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return badRequest("invalid %s", name)
		}
	}
	return nil
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
