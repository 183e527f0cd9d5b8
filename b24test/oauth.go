package b24test

import (
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// tokenReply is the token endpoint's success body, fields in the real order.
type tokenReply struct {
	AccessToken    string `json:"access_token"`
	Expires        int64  `json:"expires"`
	ExpiresIn      int64  `json:"expires_in"`
	Scope          string `json:"scope"`
	Domain         string `json:"domain"`
	ServerEndpoint string `json:"server_endpoint"`
	Status         string `json:"status"`
	ClientEndpoint string `json:"client_endpoint"`
	MemberID       string `json:"member_id"`
	UserID         int    `json:"user_id"`
	RefreshToken   string `json:"refresh_token"`
}

func (s *Server) serveOAuth(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/rest/app.info" || r.URL.Path == "/rest/app.info.json" {
		s.serveOAuthAppInfo(w, r)
		return
	}
	if r.URL.Path != "/oauth/token/" && r.URL.Path != "/oauth/token" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "error_description": "Not found"})
		return
	}
	s.mu.Lock()
	s.tokenRequests++
	s.mu.Unlock()

	vals, ok := oauthParams(r)
	if !ok {
		s.oauthError(w, "invalid_request", "Unsupported request")
		return
	}
	grant := vals.Get("grant_type")
	clientID, secret := vals.Get("client_id"), vals.Get("client_secret")
	if grant == "" || clientID == "" || secret == "" {
		s.oauthError(w, "invalid_request", "Missing required parameter")
		return
	}
	if grant != "refresh_token" && grant != "authorization_code" {
		s.oauthError(w, "invalid_request", "Unsupported grant_type")
		return
	}
	if clientID != s.cfg.clientID || secret != s.cfg.clientSecret {
		s.oauthError(w, "invalid_client", "Invalid client credentials")
		return
	}

	status, body := s.grant(grant, vals)
	writeJSON(w, status, body)
}

// grant runs a validated grant and returns the reply.
func (s *Server) grant(grant string, vals url.Values) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var p *Portal
	var user int
	switch grant {
	case "refresh_token":
		rt := vals.Get("refresh_token")
		if rt == "" {
			return s.oauthErr("invalid_request", "Missing refresh_token")
		}
		rec := s.refresh[rt]
		if rec == nil || rec.revoked || !rec.p.installed || !now.Before(rec.expires) ||
			(rec.used && !s.cfg.refreshReuse) {
			return s.oauthErr("invalid_grant", "Invalid refresh token")
		}
		rec.used = true
		if !s.cfg.oldAccessValid {
			if a := s.access[rec.access]; a != nil {
				a.revoked = true
			}
		}
		p, user = rec.p, rec.user
		s.refreshes++
		p.refreshes++
	default: // authorization_code
		code := vals.Get("code")
		if code == "" {
			return s.oauthErr("invalid_request", "Missing code")
		}
		rec := s.codes[code]
		if rec == nil || rec.used || !rec.p.installed {
			return s.oauthErr("invalid_grant", "Invalid authorization code")
		}
		rec.used = true
		if !now.Before(rec.expires) {
			return s.oauthErr("expired_token", "The authorization token provided has expired.")
		}
		p, user = rec.p, rec.user
	}
	t := p.issueLocked(user)
	scope := p.scope
	if s.cfg.tokenScope != "" {
		scope = s.cfg.tokenScope
	}
	return http.StatusOK, tokenReply{
		AccessToken:    t.AccessToken,
		Expires:        t.Expires.Unix(),
		ExpiresIn:      int64(s.cfg.accessTTL.Seconds()),
		Scope:          scope,
		Domain:         OAuthHost,
		ServerEndpoint: s.OAuthServerEndpoint(),
		Status:         p.status,
		ClientEndpoint: p.ClientEndpoint(),
		MemberID:       p.memberID,
		UserID:         user,
		RefreshToken:   t.RefreshToken,
	}
}

// oauthParams reads the query (GET) or the query plus an
// application/x-www-form-urlencoded body (POST). Other bodies are refused.
func oauthParams(r *http.Request) (url.Values, bool) {
	switch r.Method {
	case http.MethodGet:
		return r.URL.Query(), true
	case http.MethodPost:
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "" && ct != "application/x-www-form-urlencoded" {
			return nil, false
		}
		if err := r.ParseForm(); err != nil {
			return nil, false
		}
		return r.Form, true
	default:
		return nil, false
	}
}

func (s *Server) oauthError(w http.ResponseWriter, code, desc string) {
	status, body := s.oauthErr(code, desc)
	writeJSON(w, status, body)
}

// oauthErr returns an OAuth error reply; cfg is read-only, no lock needed.
func (s *Server) oauthErr(code, desc string) (int, any) {
	status, ok := s.cfg.oauthStatus[code]
	if !ok {
		status = http.StatusBadRequest
	}
	return status, map[string]string{"error": code, "error_description": desc}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"INTERNAL_SERVER_ERROR","error_description":` + strings.ReplaceAll(jsonString(err.Error()), "\n", " ") + `}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// appInfoReply is the OAuth server's app.info result: it vouches for a token it issued (b24pysdk's
// B24AppInfoResult: client_id, scope, expires as ISO 8601, install{...}, user_id).
type appInfoReply struct {
	ClientID string         `json:"client_id"`
	Scope    string         `json:"scope"`
	Expires  string         `json:"expires"`
	Install  appInfoInstall `json:"install"`
	UserID   int            `json:"user_id"`
}

type appInfoInstall struct {
	Installed      bool   `json:"installed"`
	Version        int    `json:"version"`
	Status         string `json:"status"`
	Scope          string `json:"scope"`
	Domain         string `json:"domain"`
	URI            string `json:"uri"`
	ClientEndpoint string `json:"client_endpoint"`
	MemberID       string `json:"member_id"`
	MemberType     string `json:"member_type"`
}

// serveOAuthAppInfo answers {server_endpoint}app.info?auth=<access token>: only for an access
// token the OAuth server issued and that is still valid (401 expired_token, 401 invalid_token
// otherwise), with the installation the token belongs to. It says nothing about the user's role.
func (s *Server) serveOAuthAppInfo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.appInfoRequests++
	s.mu.Unlock()
	vals, ok := oauthParams(r)
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Unsupported request"})
		return
	}
	tok := bearer(r)
	if tok == "" {
		tok = vals.Get("auth")
	}
	if tok == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	rec := s.access[tok]
	if rec == nil || rec.revoked || !rec.p.installed {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "The access token provided is invalid"})
		return
	}
	if !now.Before(rec.expires) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "expired_token", "error_description": "The access token provided has expired"})
		return
	}
	p := rec.p
	writeJSON(w, http.StatusOK, map[string]any{
		"result": appInfoReply{
			ClientID: s.cfg.clientID,
			Scope:    p.scope,
			Expires:  rec.expires.UTC().Format(time.RFC3339),
			UserID:   rec.user,
			Install: appInfoInstall{
				Installed:      true,
				Version:        p.appVersionInt(),
				Status:         p.status,
				Scope:          p.scope,
				Domain:         p.domain,
				URI:            "https://" + p.domain,
				ClientEndpoint: p.ClientEndpoint(),
				MemberID:       p.memberID,
				MemberType:     "portal",
			},
		},
		"time": makeTime(now, 0, 0, now.Add(10*time.Minute)),
	})
}
