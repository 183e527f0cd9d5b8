package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// runDemo walks the whole mission over real HTTP: a fake Bitrix24 installs the app on a portal
// (which binds its events), business code calls the portal, a deal added in the portal reaches
// the event handler, a changed deal is pulled from the offline queue, the token expires and is
// refreshed and persisted, the portal uninstalls the app; then a user of another portal connects
// the service by authorization code, and the service disconnects it. Last, the operator's view:
// /healthz, and the b24oauth metrics of /metrics.
func runDemo(ctx context.Context, out io.Writer) error {
	_, err := demo(ctx, out)
	return err
}

// demoRun is what a demo leaves for its test to check.
type demoRun struct {
	metrics string   // the body of GET /metrics after the flow
	secrets []string // every token, application token and client secret the run used
}

// demo is runDemo, returning what it saw.
func demo(ctx context.Context, out io.Writer) (*demoRun, error) {
	run := &demoRun{}
	fake := b24test.NewServer()
	defer fake.Close()
	run.secrets = append(run.secrets, fake.ClientSecret())
	seen := func(p *b24test.Portal) {
		tok := p.Tokens()
		run.secrets = append(run.secrets, tok.AccessToken, tok.RefreshToken, p.ApplicationToken())
	}
	dir, err := os.MkdirTemp("", "b24oauth-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	store, err := b24oauth.NewFileStore(dir)
	if err != nil {
		return nil, err
	}
	step := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	reported := make(chan struct{}, 1)
	deals := dealEvents(func(_ context.Context, what string, ev b24oauth.Event, title string) {
		how := map[bool]string{false: "delivered to /events", true: "pulled from the offline queue"}[ev.Offline]
		step("   handler: %s %q on %s (%s)", what, title, ev.Domain, how)
		reported <- struct{}{}
	})
	var handler muxHandler // the App's config needs the server's URL, the server the App
	base, stop, err := listen(&handler)
	if err != nil {
		return nil, err
	}
	defer stop()
	m, err := newMetrics()
	if err != nil {
		return nil, err
	}
	defer func() { _ = m.Shutdown(context.Background()) }()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        store,
		HTTPClient:   fake.Client(),                // trusts the fake's TLS certificate
		OAuthServers: []string{fake.OAuthOrigin()}, // the fake's OAuth server, instead of Bitrix24's
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Events:       bindings(base),
		Observer:     m.Observer, // the operator's view at the end: /metrics
	})
	if err != nil {
		return nil, err
	}
	defer app.Close()
	st, err := newStates(nil)
	if err != nil {
		return nil, err
	}
	mux := newMux(app, st, deals)
	mountOps(mux, m, store)
	handler.set(mux)
	// The redirect URI of the application's settings in Bitrix24.
	fake.SetRedirectURI(base + "/oauth/callback")
	waitReport := func() error {
		select {
		case <-reported:
			return nil
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the event never reached the handler: %+v", fake.Deliveries())
		}
	}

	portal := fake.AddPortal(b24test.PortalName("acme"))
	seen(portal)
	step("1. Bitrix24 portal %s (member_id %s) installs the app: POST %s/install", portal.Domain(), portal.MemberID(), base)
	if err := post(ctx, portal.InstallEvent(), base+"/install"); err != nil {
		return nil, err
	}
	inst, err := store.Load(ctx, portal.MemberID())
	if err != nil {
		return nil, err
	}
	seen(portal)
	step("   stored in %s: %v; events bound: %s", dir, inst.State, boundEvents(portal))

	profileURL := base + "/portal/" + portal.MemberID() + "/profile"
	step("2. Business code calls the portal: GET %s", profileURL)
	status, body, err := get(ctx, http.DefaultClient, profileURL)
	if err != nil {
		return nil, err
	}
	step("   %d %s", status, body)
	if status != http.StatusOK {
		return nil, fmt.Errorf("profile: HTTP %d", status)
	}

	step("3. A user adds a deal in the portal; Bitrix24 POSTs ONCRMDEALADD to %s/events", base)
	id := portal.AddDeal(1, map[string]string{"TITLE": "Big deal"})
	if err := waitReport(); err != nil {
		return nil, err
	}

	step("4. The deal changes; ONCRMDEALUPDATE waits in the portal's offline queue until the app pulls it")
	portal.UpdateDeal(1, id, map[string]string{"TITLE": "Bigger deal"})
	n, err := app.PullOfflineEvents(ctx, portal.MemberID(), deals)
	if err != nil {
		return nil, err
	}
	if err := waitReport(); err != nil {
		return nil, err
	}
	step("   pulled %d event(s); left in the queue: %d", n, len(portal.OfflineEvents()))

	portal.ExpireAccessToken()
	step("5. The access token expires; the next call refreshes it and writes the new pair to the store")
	if status, body, err = get(ctx, http.DefaultClient, profileURL); err != nil {
		return nil, err
	}
	step("   %d %s", status, body)
	after, err := store.Load(ctx, portal.MemberID())
	if err != nil {
		return nil, err
	}
	current := portal.Tokens()
	seen(portal)
	step("   refreshes seen by Bitrix24: %d; stored pair is the current one: %v; old refresh token replaced: %v",
		portal.Refreshes(), after.RefreshToken == current.RefreshToken && after.AccessToken == current.AccessToken,
		after.RefreshToken != inst.RefreshToken)
	if status != http.StatusOK || portal.Refreshes() != 1 || after.RefreshToken != current.RefreshToken {
		return nil, fmt.Errorf("the refresh was not persisted")
	}

	step("6. The portal uninstalls the app: POST %s/uninstall", base)
	if err := post(ctx, portal.UninstallEvent(false), base+"/uninstall"); err != nil {
		return nil, err
	}
	if status, body, err = get(ctx, http.DefaultClient, profileURL); err != nil {
		return nil, err
	}
	step("   GET %s -> %d %s", profileURL, status, body)
	if status != http.StatusNotFound {
		return nil, fmt.Errorf("after uninstall: HTTP %d, want 404", status)
	}

	globex := fake.AddPortal(b24test.PortalName("globex"))
	connectURL := base + "/connect?domain=" + globex.Domain()
	step("7. A user of %s connects the service by authorization code: GET %s", globex.Domain(), connectURL)
	// The user's browser follows the redirects: to the portal's authorize page (the fake logs the
	// user in at once), and back to /oauth/callback with the code.
	browser := &http.Client{Transport: fake.Client().Transport}
	if status, body, err = get(ctx, browser, connectURL); err != nil {
		return nil, err
	}
	seen(globex)
	step("   portal %s/oauth/authorize/ -> %s/oauth/callback -> %d %s", globex.Domain(), base, status, body)
	if status != http.StatusOK {
		return nil, fmt.Errorf("connect: HTTP %d, want 200", status)
	}
	globexURL := base + "/portal/" + globex.MemberID() + "/profile"
	if status, body, err = get(ctx, http.DefaultClient, globexURL); err != nil {
		return nil, err
	}
	step("   GET %s -> %d %s", globexURL, status, body)
	if status != http.StatusOK {
		return nil, fmt.Errorf("profile of the connected portal: HTTP %d", status)
	}

	step("8. The service disconnects %s (App.Disconnect)", globex.Domain())
	if err := app.Disconnect(ctx, globex.MemberID()); err != nil {
		return nil, err
	}
	if status, body, err = get(ctx, http.DefaultClient, globexURL); err != nil {
		return nil, err
	}
	step("   GET %s -> %d %s", globexURL, status, body)
	if status != http.StatusNotFound {
		return nil, fmt.Errorf("after disconnect: HTTP %d, want 404", status)
	}

	// Every event the portals fired has been answered (and counted) before the metrics are read.
	if err := fake.WaitForDeliveries(ctx); err != nil {
		return nil, err
	}
	step("9. The operator's view: GET %s/healthz, and the b24oauth metrics of GET %s/metrics", base, base)
	if status, body, err = get(ctx, http.DefaultClient, base+"/healthz"); err != nil {
		return nil, err
	}
	step("   /healthz -> %d %s", status, body)
	if status != http.StatusOK {
		return nil, fmt.Errorf("/healthz: HTTP %d, want 200", status)
	}
	if status, run.metrics, err = get(ctx, http.DefaultClient, base+"/metrics"); err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", status)
	}
	for _, line := range strings.Split(run.metrics, "\n") {
		for _, name := range demoMetrics {
			if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
				step("   %s", line)
			}
		}
	}
	step("Done: install, call, event delivered, offline event pulled, refresh persisted, uninstall; connect by authorization code, disconnect; health and metrics.")
	return run, nil
}

// demoMetrics are the series of /metrics the demo prints.
var demoMetrics = []string{"b24oauth_calls_total", "b24oauth_retries_total", "b24oauth_refreshes_total", "b24oauth_events_total"}

// boundEvents lists the portal's event bindings.
func boundEvents(p *b24test.Portal) string {
	var out []string
	for _, b := range p.Bindings() {
		if b.Offline {
			out = append(out, b.Event+" (offline)")
		} else {
			out = append(out, b.Event)
		}
	}
	return strings.Join(out, ", ")
}

// muxHandler serves a mux set after the server started.
type muxHandler struct{ h atomic.Pointer[http.ServeMux] }

func (m *muxHandler) set(mux *http.ServeMux) { m.h.Store(mux) }

func (m *muxHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if mux := m.h.Load(); mux != nil {
		mux.ServeHTTP(w, r)
		return
	}
	http.Error(w, "starting", http.StatusServiceUnavailable)
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
