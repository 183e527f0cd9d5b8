package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// runDemo walks the whole mission over real HTTP: a fake Bitrix24 installs the app on a portal,
// business code calls the portal, the token expires and is refreshed and persisted, the portal
// uninstalls the app; then a user of another portal connects the service by authorization code,
// and the service disconnects it.
func runDemo(ctx context.Context, out io.Writer) error {
	fake := b24test.NewServer()
	defer fake.Close()
	dir, err := os.MkdirTemp("", "b24oauth-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	store, err := b24oauth.NewFileStore(dir)
	if err != nil {
		return err
	}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        store,
		HTTPClient:   fake.Client(),                // trusts the fake's TLS certificate
		OAuthServers: []string{fake.OAuthOrigin()}, // the fake's OAuth server, instead of Bitrix24's
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	defer app.Close()
	st, err := newStates(nil)
	if err != nil {
		return err
	}
	base, stop, err := listen(newMux(app, st))
	if err != nil {
		return err
	}
	defer stop()
	// The redirect URI of the application's settings in Bitrix24.
	fake.SetRedirectURI(base + "/oauth/callback")
	step := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	portal := fake.AddPortal(b24test.PortalName("acme"))
	step("1. Bitrix24 portal %s (member_id %s) installs the app: POST %s/install", portal.Domain(), portal.MemberID(), base)
	if err := post(ctx, portal.InstallEvent(), base+"/install"); err != nil {
		return err
	}
	inst, err := store.Load(ctx, portal.MemberID())
	if err != nil {
		return err
	}
	step("   stored in %s: %v", dir, inst.State)

	profileURL := base + "/portal/" + portal.MemberID() + "/profile"
	step("2. Business code calls the portal: GET %s", profileURL)
	status, body, err := get(ctx, http.DefaultClient, profileURL)
	if err != nil {
		return err
	}
	step("   %d %s", status, body)
	if status != http.StatusOK {
		return fmt.Errorf("profile: HTTP %d", status)
	}

	portal.ExpireAccessToken()
	step("3. The access token expires; the next call refreshes it and writes the new pair to the store")
	if status, body, err = get(ctx, http.DefaultClient, profileURL); err != nil {
		return err
	}
	step("   %d %s", status, body)
	after, err := store.Load(ctx, portal.MemberID())
	if err != nil {
		return err
	}
	current := portal.Tokens()
	step("   refreshes seen by Bitrix24: %d; stored pair is the current one: %v; old refresh token replaced: %v",
		portal.Refreshes(), after.RefreshToken == current.RefreshToken && after.AccessToken == current.AccessToken,
		after.RefreshToken != inst.RefreshToken)
	if status != http.StatusOK || portal.Refreshes() != 1 || after.RefreshToken != current.RefreshToken {
		return fmt.Errorf("the refresh was not persisted")
	}

	step("4. The portal uninstalls the app: POST %s/uninstall", base)
	if err := post(ctx, portal.UninstallEvent(false), base+"/uninstall"); err != nil {
		return err
	}
	if status, body, err = get(ctx, http.DefaultClient, profileURL); err != nil {
		return err
	}
	step("   GET %s -> %d %s", profileURL, status, body)
	if status != http.StatusNotFound {
		return fmt.Errorf("after uninstall: HTTP %d, want 404", status)
	}

	globex := fake.AddPortal(b24test.PortalName("globex"))
	connectURL := base + "/connect?domain=" + globex.Domain()
	step("5. A user of %s connects the service by authorization code: GET %s", globex.Domain(), connectURL)
	// The user's browser follows the redirects: to the portal's authorize page (the fake logs the
	// user in at once), and back to /oauth/callback with the code.
	browser := &http.Client{Transport: fake.Client().Transport}
	if status, body, err = get(ctx, browser, connectURL); err != nil {
		return err
	}
	step("   portal %s/oauth/authorize/ -> %s/oauth/callback -> %d %s", globex.Domain(), base, status, body)
	if status != http.StatusOK {
		return fmt.Errorf("connect: HTTP %d, want 200", status)
	}
	globexURL := base + "/portal/" + globex.MemberID() + "/profile"
	if status, body, err = get(ctx, http.DefaultClient, globexURL); err != nil {
		return err
	}
	step("   GET %s -> %d %s", globexURL, status, body)
	if status != http.StatusOK {
		return fmt.Errorf("profile of the connected portal: HTTP %d", status)
	}

	step("6. The service disconnects %s (App.Disconnect)", globex.Domain())
	if err := app.Disconnect(ctx, globex.MemberID()); err != nil {
		return err
	}
	if status, body, err = get(ctx, http.DefaultClient, globexURL); err != nil {
		return err
	}
	step("   GET %s -> %d %s", globexURL, status, body)
	if status != http.StatusNotFound {
		return fmt.Errorf("after disconnect: HTTP %d, want 404", status)
	}
	step("Done: install, call, refresh persisted, uninstall; connect by authorization code, disconnect.")
	return nil
}

func post(ctx context.Context, ev b24test.Event, url string) error {
	resp, err := ev.Post(ctx, url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func get(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}
