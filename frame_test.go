package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// frameRequest is the request the app's page handler receives for ev.
func frameRequest(ev b24test.Event) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/app?"+ev.Query.Encode(), strings.NewReader(ev.Form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// A page opened by a user who is not an administrator gives a Frame whose client calls as that
// user, with the portal's rate limiter.
func TestFrameOfAUser(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.install()
	user := p.AddUser(false)
	appInfo := env.fake.AppInfoRequests()
	f, err := env.app.Frame(frameRequest(p.OpenPlacement(user, "CRM_DEAL_DETAIL_TAB", map[string]any{"ID": "42"})))
	if err != nil {
		t.Fatalf("Frame: %v", err)
	}
	defer f.Client.Destroy()
	if f.MemberID != p.MemberID() || f.Domain != p.Domain() || f.UserID != int64(user) || f.Placement != "CRM_DEAL_DETAIL_TAB" ||
		string(f.PlacementOptions) != `{"ID":"42"}` || f.Lang != "en" {
		t.Fatalf("Frame: %+v", f)
	}
	if n := env.fake.AppInfoRequests() - appInfo; n != 1 {
		t.Errorf("verification asked app.info %d times", n)
	}
	ctx := context.Background()
	r, err := f.Client.Call(ctx, "profile", nil)
	if err != nil {
		t.Fatal(err)
	}
	var profile struct {
		ID    string
		ADMIN bool
	}
	if err := r.Decode(&profile); err != nil || profile.ID != "2" || profile.ADMIN {
		t.Fatalf("profile through the frame's client = %+v (%v), want the user", profile, err)
	}
	if b24oauth.ClientLimiter(f.Client) != b24oauth.PortalLimiter(env.app, p.MemberID()) {
		t.Error("the frame's client does not share the portal's rate limiter")
	}
	// The installation is untouched: the app's own client still calls as the installing admin.
	mustCallProfile(t, env.client(p.MemberID()))

	main, err := env.app.Frame(frameRequest(p.OpenPage(1)))
	if err != nil || main.Placement != "DEFAULT" || string(main.PlacementOptions) != "{}" || main.UserID != 1 {
		t.Fatalf("main page: %+v, %v", main, err)
	}
}

func TestFrameRejects(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.install()
	other := env.install()
	stranger := env.fake.AddPortal() // the app is not installed there (in our store)
	edit := func(ev b24test.Event, fn func(ev b24test.Event)) b24test.Event {
		fn(ev)
		return ev
	}
	forged := []struct {
		name string
		ev   b24test.Event
	}{
		{"AUTH_ID never issued", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Set("AUTH_ID", randomHex(35)) })},
		{"another portal's AUTH_ID", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Set("AUTH_ID", other.IssueTokens().AccessToken) })},
		{"another portal's DOMAIN", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Query.Set("DOMAIN", other.Domain()) })},
		{"another portal's member_id", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Set("member_id", other.MemberID()) })},
		{"no AUTH_ID", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Del("AUTH_ID") })},
		{"bad member_id", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Set("member_id", "x") })},
		{"bad PLACEMENT_OPTIONS", edit(p.OpenPage(1), func(ev b24test.Event) { ev.Form.Set("PLACEMENT_OPTIONS", "{") })},
	}
	for _, c := range forged {
		t.Run(c.name, func(t *testing.T) {
			f, err := env.app.Frame(frameRequest(c.ev))
			if !errors.Is(err, b24oauth.ErrForgedFrame) || f != nil {
				t.Fatalf("Frame = %+v, %v; want ErrForgedFrame", f, err)
			}
		})
	}
	expired := p.OpenPage(1)
	p.ExpireAccessToken()
	if _, err := env.app.Frame(frameRequest(expired)); !errors.Is(err, b24oauth.ErrForgedFrame) {
		t.Errorf("expired AUTH_ID: %v", err)
	}
	if _, err := env.app.Frame(frameRequest(stranger.OpenPage(1))); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("portal without an installation: %v", err)
	}
	get := httptest.NewRequest(http.MethodGet, "/app", nil)
	if _, err := env.app.Frame(get); !errors.Is(err, b24oauth.ErrForgedFrame) {
		t.Errorf("GET: %v", err)
	}
	// The OAuth server down is not a forgery.
	env.fake.Close()
	if _, err := env.app.Frame(frameRequest(other.OpenPage(1))); err == nil || errors.Is(err, b24oauth.ErrForgedFrame) {
		t.Errorf("OAuth server down: %v", err)
	}
}
