package b24test

import (
	"html"
	"net/http"
	"net/url"
)

// WithRedirectURI sets the application's redirect URI, as its settings in Bitrix24 hold it:
// where a portal's authorize endpoint sends the browser with the code. Default "": the
// authorize endpoint shows the code on a page instead (as Bitrix24 does for an application
// registered without one). See Portal's authorize endpoint in the package doc.
func WithRedirectURI(uri string) Option {
	return func(c *config) { c.redirectURI = uri }
}

// SetRedirectURI replaces the application's redirect URI (see WithRedirectURI), for a test
// that learns its server's address after starting the fake.
func (s *Server) SetRedirectURI(uri string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redirectURI = uri
}

// Authorizations returns how many authorization codes the portals' authorize endpoints issued.
func (s *Server) Authorizations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authorizations
}

// serveAuthorize is the portal's https://<portal>/oauth/authorize/?client_id=...&state=...: a
// test fake of the login, it "logs in" user 1 at once and redirects (302) to the application's
// redirect URI with code (single-use, 30 s), state (when given), domain, member_id, scope and
// server_domain. The redirect URI comes from the server's settings, never from the request
// (a redirect_uri parameter is ignored, like response_type, scope and PKCE parameters). An
// unknown client_id, or a portal where the app is not installed, gets an error page and no
// redirect, as the real portal does.
func (p *Portal) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		authorizePage(w, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	q := r.URL.Query()
	s := p.s
	switch clientID := q.Get("client_id"); {
	case clientID == "":
		authorizePage(w, http.StatusBadRequest, "The client_id parameter is missing.")
		return
	case clientID != s.cfg.clientID:
		authorizePage(w, http.StatusBadRequest, "Application not found.")
		return
	case !p.Installed():
		authorizePage(w, http.StatusForbidden, "The application is not installed on this portal.")
		return
	}
	code := p.AuthCode()
	s.mu.Lock()
	s.authorizations++
	redirect, scope := s.redirectURI, p.scope
	s.mu.Unlock()
	if redirect == "" {
		authorizePage(w, http.StatusOK, "Your authorization code (valid 30 seconds): "+code)
		return
	}
	u, err := url.Parse(redirect)
	if err != nil {
		authorizePage(w, http.StatusInternalServerError, "The application's redirect URI is invalid.")
		return
	}
	v := u.Query()
	v.Set("code", code)
	if q.Has("state") {
		v.Set("state", q.Get("state"))
	}
	v.Set("domain", p.domain)
	v.Set("member_id", p.memberID)
	v.Set("scope", scope)
	v.Set("server_domain", OAuthHost)
	u.RawQuery = v.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// authorizePage answers with a small HTML page holding msg.
func authorizePage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Bitrix24</title></head><body><p>" +
		html.EscapeString(msg) + "</p></body></html>\n"))
}
