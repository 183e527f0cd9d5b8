package b24test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
)

// Event is a request Bitrix24 would send to the app: the query string and
// the application/x-www-form-urlencoded body (PHP bracket keys such as
// auth[access_token], all values strings). It is plain data: edit Query or
// Form to forge a tampered event before sending it.
type Event struct {
	Query url.Values
	Form  url.Values
}

// Event handler ids the fake uses in event_handler_id.
const (
	InstallHandlerID   = "1"
	UpdateHandlerID    = "2"
	UninstallHandlerID = "3"
)

// Send POSTs the event to an in-process handler (path "/" plus the query)
// and returns the recorded response.
func (e Event) Send(h http.Handler) *httptest.ResponseRecorder {
	target := "/"
	if len(e.Query) > 0 {
		target += "?" + e.Query.Encode()
	}
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(e.Form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Post POSTs the event over real HTTP (http.DefaultClient) to rawURL, adding
// the event's query to the URL's own. The caller closes the response body.
func (e Event) Post(ctx context.Context, rawURL string) (*http.Response, error) {
	return e.PostWith(ctx, http.DefaultClient, rawURL)
}

// PostWith is Post with a chosen client.
func (e Event) PostWith(ctx context.Context, c *http.Client, rawURL string) (*http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if len(e.Query) > 0 {
		q := u.Query()
		for k, vs := range e.Query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(e.Form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req)
}

// fullAuthLocked fills the full auth block of §1.2 with t, a pair of user; the refresh token
// only when withRefresh.
func (p *Portal) fullAuthLocked(f url.Values, t Tokens, user int, withRefresh bool) {
	s := p.s
	f.Set("auth[access_token]", t.AccessToken)
	f.Set("auth[expires]", strconv.FormatInt(t.Expires.Unix(), 10))
	f.Set("auth[expires_in]", strconv.FormatInt(int64(s.cfg.accessTTL.Seconds()), 10))
	f.Set("auth[scope]", p.scope)
	f.Set("auth[domain]", p.domain)
	f.Set("auth[server_endpoint]", s.OAuthServerEndpoint())
	f.Set("auth[status]", p.status)
	f.Set("auth[client_endpoint]", p.ClientEndpoint())
	f.Set("auth[member_id]", p.memberID)
	f.Set("auth[user_id]", strconv.Itoa(user))
	if withRefresh {
		f.Set("auth[refresh_token]", t.RefreshToken)
	}
	f.Set("auth[application_token]", p.appToken)
}

// InstallEvent returns an ONAPPINSTALL event: it issues a fresh token pair
// (earlier pairs stay valid) and carries the full auth block,
// event_handler_id, ts and data[VERSION], data[ACTIVE], data[INSTALLED],
// data[LANGUAGE_ID]. On an uninstalled portal it acts as Reinstall.
func (p *Portal) InstallEvent() Event {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !p.installed {
		p.reinstallLocked()
	}
	return p.installEventLocked()
}

func (p *Portal) installEventLocked() Event {
	t := p.issueLocked(1)
	f := url.Values{}
	f.Set("event", "ONAPPINSTALL")
	f.Set("event_handler_id", InstallHandlerID)
	f.Set("data[VERSION]", p.version)
	f.Set("data[ACTIVE]", "Y")
	f.Set("data[INSTALLED]", "Y")
	f.Set("data[LANGUAGE_ID]", p.language)
	f.Set("ts", strconv.FormatInt(p.s.now().Unix(), 10))
	p.fullAuthLocked(f, t, 1, true)
	return Event{Query: url.Values{}, Form: f}
}

func (p *Portal) reinstallLocked() {
	p.installed = true
	p.appToken = randHex(16)
}

// Reinstall simulates removing and installing the app again: the app is
// marked installed, the application_token is rotated, earlier tokens are
// revoked, its event bindings and offline queue are gone, and the ONAPPINSTALL
// event (with a fresh pair and the new application_token) is returned.
func (p *Portal) Reinstall() Event {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p.revokeAllLocked()
	p.dropAppDataLocked()
	p.reinstallLocked()
	return p.installEventLocked()
}

// UpdateEvent returns an ONAPPUPDATE event for the new app version: fresh
// token pair, full auth block, data[VERSION], data[PREVIOUS_VERSION],
// data[LANGUAGE_ID]. The portal's app version becomes version.
func (p *Portal) UpdateEvent(version string) Event {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := p.version
	p.version = version
	t := p.issueLocked(1)
	f := url.Values{}
	f.Set("event", "ONAPPUPDATE")
	f.Set("event_handler_id", UpdateHandlerID)
	f.Set("data[VERSION]", version)
	f.Set("data[PREVIOUS_VERSION]", prev)
	f.Set("data[LANGUAGE_ID]", p.language)
	f.Set("ts", strconv.FormatInt(s.now().Unix(), 10))
	p.fullAuthLocked(f, t, 1, true)
	return Event{Query: url.Values{}, Form: f}
}

// UninstallEvent marks the app uninstalled on the portal, revokes every
// token (REST → 401 invalid_token, refresh → 400 invalid_grant), removes the
// app's event bindings and offline queue, and returns
// the ONAPPUNINSTALL event: auth has only domain, server_endpoint,
// client_endpoint, member_id and application_token; data[CLEAN] is "1" or
// "0".
func (p *Portal) UninstallEvent(clean bool) Event {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p.installed = false
	p.revokeAllLocked()
	p.dropAppDataLocked()
	f := url.Values{}
	f.Set("event", "ONAPPUNINSTALL")
	f.Set("event_handler_id", UninstallHandlerID)
	f.Set("data[LANGUAGE_ID]", p.language)
	if clean {
		f.Set("data[CLEAN]", "1")
	} else {
		f.Set("data[CLEAN]", "0")
	}
	f.Set("ts", strconv.FormatInt(s.now().Unix(), 10))
	f.Set("auth[domain]", p.domain)
	f.Set("auth[server_endpoint]", s.OAuthServerEndpoint())
	f.Set("auth[client_endpoint]", p.ClientEndpoint())
	f.Set("auth[member_id]", p.memberID)
	f.Set("auth[application_token]", p.appToken)
	return Event{Query: url.Values{}, Form: f}
}

// InstallPage returns the POST a UI app's install page (or main page)
// receives in its iframe: query DOMAIN, PROTOCOL=1, LANG, APP_SID; form
// AUTH_ID, AUTH_EXPIRES (a lifetime in seconds, not a timestamp),
// REFRESH_ID, SERVER_ENDPOINT, APPLICATION_TOKEN, APPLICATION_SCOPE,
// member_id, status, PLACEMENT=DEFAULT. It issues a fresh token pair for
// user 1, the administrator who installs the app.
func (p *Portal) InstallPage() Event { return p.OpenPage(1) }

// OpenPage returns the POST the app's main page receives in its iframe when
// user opens it (the same shape as InstallPage): a fresh token pair of that
// user, who may or may not be an administrator (AddUser). The
// APPLICATION_TOKEN it carries is the portal's real one, as current portals
// send it to every user: a test of a handler can use it to check that a
// user's page POST cannot pass for Bitrix24.
func (p *Portal) OpenPage(user int) Event {
	s := p.s
	t := p.IssueTokensFor(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	q := url.Values{}
	q.Set("DOMAIN", p.domain)
	q.Set("PROTOCOL", "1")
	q.Set("LANG", p.language)
	q.Set("APP_SID", randHex(16))
	f := url.Values{}
	f.Set("AUTH_ID", t.AccessToken)
	f.Set("AUTH_EXPIRES", strconv.FormatInt(int64(s.cfg.accessTTL.Seconds()), 10))
	f.Set("REFRESH_ID", t.RefreshToken)
	f.Set("SERVER_ENDPOINT", s.OAuthServerEndpoint())
	f.Set("APPLICATION_TOKEN", p.appToken)
	f.Set("APPLICATION_SCOPE", p.scope)
	f.Set("member_id", p.memberID)
	f.Set("status", p.status)
	f.Set("PLACEMENT", "DEFAULT")
	return Event{Query: q, Form: f}
}

// InstallEventAs returns an ONAPPINSTALL event like InstallEvent, but with a
// fresh pair of user (for example a user who is not an administrator), as a
// forger holding that user's tokens and the application token could build it.
func (p *Portal) InstallEventAs(user int) Event {
	ev := p.InstallEvent()
	t := p.IssueTokensFor(user)
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	ev.Form.Set("auth[access_token]", t.AccessToken)
	ev.Form.Set("auth[refresh_token]", t.RefreshToken)
	ev.Form.Set("auth[expires]", strconv.FormatInt(t.Expires.Unix(), 10))
	ev.Form.Set("auth[user_id]", strconv.Itoa(user))
	return ev
}

// OpenPlacement returns the POST a widget of the app receives in its iframe
// when user opens it: OpenPage's shape with PLACEMENT=placement and
// PLACEMENT_OPTIONS=options as a JSON string (left out when options is nil).
func (p *Portal) OpenPlacement(user int, placement string, options map[string]any) Event {
	ev := p.OpenPage(user)
	ev.Form.Set("PLACEMENT", placement)
	if options != nil {
		b, err := json.Marshal(options)
		if err != nil {
			panic("b24test: PLACEMENT_OPTIONS: " + err.Error())
		}
		ev.Form.Set("PLACEMENT_OPTIONS", string(b))
	}
	return ev
}
