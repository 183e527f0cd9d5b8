package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Events, offline pulls and frames at debug level, with every kind of rejection and failure
// they log: no token and no application token appears in the log.
func TestEventsLogNoSecrets(t *testing.T) {
	var logs lockedBuffer
	env := newEventEnv(t, nil, nil, func(url string) []b24oauth.EventBinding {
		return []b24oauth.EventBinding{
			{Event: "ONCRMDEALADD", Handler: url}, {Event: "ONCRMDEALUPDATE"},
			{Event: "ONOFFLINEEVENT", Handler: url}, {Event: "ONTASKADD", Handler: url}, // ONTASKADD: refused, outside the scope
		}
	}, func(c *b24oauth.AppConfig) { c.Logger = newTextLogger(&logs) })
	fake := env.fake
	secrets := []string{fake.ClientSecret()}
	remember := func(ev b24test.Event) b24test.Event {
		for _, k := range []string{"auth[access_token]", "auth[refresh_token]", "auth[application_token]", "AUTH_ID", "REFRESH_ID", "APPLICATION_TOKEN"} {
			if v := ev.Form.Get(k); v != "" {
				secrets = append(secrets, v)
			}
		}
		return ev
	}
	p := fake.AddPortal(b24test.PortalScope("crm,user_brief"))
	env.mustPost("/install", remember(p.InstallEvent()))
	ctx := context.Background()

	// Delivered events: accepted, then refused by fn.
	p.AddDeal(1, nil)
	waitDelivered(t, fake)
	env.rec.setFail(func(ev b24oauth.Event) error {
		if !ev.Offline {
			return errRefused
		}
		return nil
	})
	p.AddDeal(0, nil)
	p.UpdateDeal(1, 1, nil) // offline, and an ONOFFLINEEVENT with a refresh token
	waitDelivered(t, fake)
	for _, d := range p.Deliveries() {
		remember(b24test.Event{Form: d.Form})
	}
	// Forged and malformed events.
	for _, ev := range []b24test.Event{p.ForgedEvent("ONCRMDEALADD", nil), p.NewEvent("ONAPPINSTALL", nil, 1)} {
		if code := env.postEvent(remember(ev)); code == http.StatusOK {
			t.Fatalf("a bad event got %d", code)
		}
	}
	// Offline: a refusal, then an interrupted pull.
	env.rec.setFail(func(ev b24oauth.Event) error { return errRefused })
	if _, err := env.app.PullOfflineEvents(ctx, p.MemberID(), env.rec.handle); !errors.Is(err, errRefused) {
		t.Fatalf("pull: %v", err)
	}
	p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 5}})
	p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 6}})
	cctx, cancel := context.WithCancel(ctx)
	if _, err := env.app.PullOfflineEvents(cctx, p.MemberID(), func(context.Context, b24oauth.Event, *b24oauth.B24OAuth) error {
		cancel()
		return nil
	}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pull: %v", err)
	}
	// Frames: genuine, forged, expired.
	if f, err := env.app.Frame(frameRequest(remember(p.OpenPage(p.AddUser(false))))); err != nil {
		t.Fatalf("Frame: %v", err)
	} else {
		mustCallProfileOf(t, f.Client)
	}
	forged := p.OpenPage(1)
	forged.Form.Set("AUTH_ID", randomHex(35))
	if _, err := env.app.Frame(frameRequest(remember(forged))); err == nil {
		t.Fatal("a forged frame passed")
	}
	tok := p.Tokens()
	secrets = append(secrets, tok.AccessToken, tok.RefreshToken, p.ApplicationToken())

	out := logs.String()
	for _, want := range []string{"event handled", "event handler failed", "event rejected", "binding events failed",
		"offline events pulled", "offline pull interrupted", "page request verified", "b24oauth: call"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log has no %q: the run did not log what it should have\n%s", want, out)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("the log contains the secret %.6s…", s)
		}
	}
}

// mustCallProfileOf calls profile with c and fails the test unless it works.
func mustCallProfileOf(t testing.TB, c *b24oauth.B24OAuth) {
	t.Helper()
	if _, err := c.Call(context.Background(), "profile", nil); err != nil {
		t.Fatalf("Call(profile): %v", err)
	}
}
