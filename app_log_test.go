package b24oauth_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A whole life cycle, with every kind of failure the App logs, at debug level: no token, no
// application_token and not the client secret may appear in the log.
func TestAppLogsNoSecrets(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	env := newAppEnv(t, nil, b24oauth.NewMemoryStore(), func(c *b24oauth.AppConfig) { c.Logger = logger })
	fake := env.fake
	secrets := []string{fake.ClientSecret()}
	remember := func(ev b24test.Event) b24test.Event {
		for _, k := range []string{"auth[access_token]", "auth[refresh_token]", "auth[application_token]",
			"AUTH_ID", "REFRESH_ID", "APPLICATION_TOKEN"} {
			if v := ev.Form.Get(k); v != "" {
				secrets = append(secrets, v)
			}
		}
		return ev
	}
	rememberPair := func(p *b24test.Portal) {
		tok := p.Tokens()
		secrets = append(secrets, tok.AccessToken, tok.RefreshToken, p.ApplicationToken())
	}
	ctx := context.Background()

	p := env.fake.AddPortal()
	env.mustPost("/install", remember(p.InstallEvent()))
	page := env.fake.AddPortal()
	env.mustPost("/install", remember(page.InstallPage()))
	c := env.client(p.MemberID())
	mustCallProfile(t, c)
	p.ExpireAccessToken()
	mustCallProfile(t, c) // refresh
	rememberPair(p)

	// Rejected and forged events.
	forged := remember(forge(env, p, randomHex(35), randomHex(35)))
	if code, _ := env.post("/install", forged); code != http.StatusForbidden {
		t.Fatalf("forged install: %d", code)
	}
	bad := remember(p.UpdateEvent("2"))
	bad.Form.Set("auth[server_endpoint]", "https://evil.example.com/rest/")
	if code, _ := env.post("/install", bad); code != http.StatusBadRequest {
		t.Fatalf("untrusted server: %d", code)
	}
	if code, _ := env.post("/uninstall", uninstallEvent(fake, p, randomHex(16), false)); code != http.StatusForbidden {
		t.Fatalf("forged uninstall: %d", code)
	}

	// A refresh whose store write fails, then succeeds.
	env.store.setFailWrite(newPairWrite)
	p.ExpireAccessToken()
	mustCallProfile(t, c)
	rememberPair(p)
	env.store.setFailWrite(nil)
	mustCallProfile(t, c)

	// A genuine reinstall (verified by an exchange), a revocation, and the uninstall.
	env.mustPost("/install", remember(p.Reinstall()))
	rememberPair(p)
	c = env.client(p.MemberID())
	mustCallProfile(t, c)
	p.ExpireRefreshToken()
	p.ExpireAccessToken()
	if _, err := c.Call(ctx, "profile", nil); err == nil {
		t.Fatal("a call with a refused refresh token succeeded")
	}
	env.mustPost("/install", remember(p.InstallEvent()))
	mustCallProfile(t, env.client(p.MemberID()))
	rememberPair(p)
	env.mustPost("/uninstall", remember(p.UninstallEvent(true)))
	if _, err := c.Call(ctx, "profile", nil); err == nil {
		t.Fatal("a call after the uninstall succeeded")
	}

	out := logs.String()
	for _, want := range []string{"level=DEBUG", "b24oauth: call", "b24oauth: refreshed", "event rejected",
		"could not be stored", "marked revoked", "installation removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log has no %q: the cycle did not log what it should have\n%s", want, out)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("the log contains the secret %.6s…", s)
		}
	}
}
