package b24test_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/b24go/b24oauth/b24test"
)

// capture is an app handler that records what it received.
type capture struct {
	query, form url.Values
	ct          string
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.ct = r.Header.Get("Content-Type")
	c.query = r.URL.Query()
	_ = r.ParseForm()
	c.form = r.PostForm
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func keys(v url.Values) []string {
	var out []string
	for k := range v {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameKeys(t *testing.T, got url.Values, want ...string) {
	t.Helper()
	sort.Strings(want)
	g := keys(got)
	if len(g) != len(want) {
		t.Fatalf("keys %v, want %v", g, want)
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("keys %v, want %v", g, want)
		}
	}
}

var fullAuth = []string{"auth[access_token]", "auth[expires]", "auth[expires_in]", "auth[scope]", "auth[domain]",
	"auth[server_endpoint]", "auth[status]", "auth[client_endpoint]", "auth[member_id]", "auth[user_id]",
	"auth[refresh_token]", "auth[application_token]"}

func TestInstallEvent(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	before := p.Tokens()
	ev := p.InstallEvent()
	h := &capture{}
	rec := ev.Send(h)
	if rec.Code != 200 || h.ct != "application/x-www-form-urlencoded" {
		t.Fatalf("send: %d %q", rec.Code, h.ct)
	}
	f := h.form
	sameKeys(t, f, append([]string{"event", "event_handler_id", "ts", "data[VERSION]", "data[ACTIVE]", "data[INSTALLED]", "data[LANGUAGE_ID]"}, fullAuth...)...)
	want := map[string]string{
		"event": "ONAPPINSTALL", "data[VERSION]": "1", "data[ACTIVE]": "Y", "data[INSTALLED]": "Y", "data[LANGUAGE_ID]": "en",
		"ts": strconv.FormatInt(clk.Now().Unix(), 10), "auth[expires]": strconv.FormatInt(clk.Now().Add(time.Hour).Unix(), 10),
		"auth[expires_in]": "3600", "auth[scope]": b24test.DefaultScope, "auth[domain]": p.Domain(),
		"auth[server_endpoint]": "https://oauth.example.com/rest/", "auth[status]": "L", "auth[client_endpoint]": p.ClientEndpoint(),
		"auth[member_id]": p.MemberID(), "auth[user_id]": "1", "auth[application_token]": p.ApplicationToken(),
		"auth[access_token]": p.Tokens().AccessToken, "auth[refresh_token]": p.Tokens().RefreshToken,
	}
	for k, v := range want {
		if f.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, f.Get(k), v)
		}
	}
	if f.Get("auth[access_token]") == before.AccessToken {
		t.Error("install must issue a fresh pair")
	}
	// Both the new and the previous pair work.
	wantOK(t, get(t, s.Client(), p.ClientEndpoint()+"profile?auth="+f.Get("auth[access_token]")))
	wantOK(t, get(t, s.Client(), p.ClientEndpoint()+"profile?auth="+before.AccessToken))
	wantOK(t, refresh(t, s, f.Get("auth[refresh_token]")))

	// Post over real HTTP.
	app := httptest.NewServer(h)
	defer app.Close()
	resp, err := p.UpdateEvent("2").Post(context.Background(), app.URL+"/install?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sameKeys(t, h.form, append([]string{"event", "event_handler_id", "ts", "data[VERSION]", "data[PREVIOUS_VERSION]", "data[LANGUAGE_ID]"}, fullAuth...)...)
	if h.form.Get("event") != "ONAPPUPDATE" || h.form.Get("data[VERSION]") != "2" || h.form.Get("data[PREVIOUS_VERSION]") != "1" || h.query.Get("x") != "1" {
		t.Fatalf("update: %v %v", h.form, h.query)
	}
}

func TestUninstallEvent(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	tk := p.Tokens()
	ev := p.UninstallEvent(true)
	sameKeys(t, ev.Form, "event", "event_handler_id", "ts", "data[LANGUAGE_ID]", "data[CLEAN]",
		"auth[domain]", "auth[server_endpoint]", "auth[client_endpoint]", "auth[member_id]", "auth[application_token]")
	if ev.Form.Get("event") != "ONAPPUNINSTALL" || ev.Form.Get("data[CLEAN]") != "1" || ev.Form.Get("auth[application_token]") != p.ApplicationToken() {
		t.Fatal(ev.Form)
	}
	if p.UninstallEvent(false).Form.Get("data[CLEAN]") != "0" {
		t.Fatal("clean=0")
	}
	if p.Installed() {
		t.Fatal("still installed")
	}
	wantError(t, get(t, s.Client(), p.ClientEndpoint()+"profile?auth="+tk.AccessToken), 401, "invalid_token")
	wantError(t, refresh(t, s, tk.RefreshToken), 400, "invalid_grant")

	// Reinstall: new application_token, new working pair.
	oldApp := p.ApplicationToken()
	ev = p.Reinstall()
	if !p.Installed() || ev.Form.Get("auth[application_token]") == oldApp || ev.Form.Get("auth[application_token]") != p.ApplicationToken() {
		t.Fatal("reinstall")
	}
	wantOK(t, call(t, s, p, "profile", nil))
}

func TestInstallPage(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	ev := p.InstallPage()
	sameKeys(t, ev.Query, "DOMAIN", "PROTOCOL", "LANG", "APP_SID")
	sameKeys(t, ev.Form, "AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "SERVER_ENDPOINT", "APPLICATION_TOKEN", "APPLICATION_SCOPE", "member_id", "status", "PLACEMENT")
	if ev.Query.Get("DOMAIN") != p.Domain() || ev.Query.Get("PROTOCOL") != "1" || len(ev.Query.Get("APP_SID")) != 32 ||
		ev.Form.Get("AUTH_EXPIRES") != "3600" || ev.Form.Get("AUTH_ID") != p.Tokens().AccessToken || ev.Form.Get("PLACEMENT") != "DEFAULT" ||
		ev.Form.Get("member_id") != p.MemberID() || ev.Form.Get("status") != "L" {
		t.Fatal(ev)
	}
	h := &capture{}
	ev.Send(h)
	if h.query.Get("DOMAIN") != p.Domain() || h.form.Get("REFRESH_ID") != p.Tokens().RefreshToken {
		t.Fatal("send with query")
	}
}
