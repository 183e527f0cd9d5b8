// Command multitenant is a Bitrix24 application backend serving many portals with b24oauth.
//
// It mounts the install and uninstall handlers, the event handler, the authorization-code flow
// (a portal's user connects the service; see connect.go) and one business endpoint:
//
//	POST /install                    ONAPPINSTALL, ONAPPUPDATE, and the install page POST
//	POST /uninstall                  ONAPPUNINSTALL
//	POST /events                     ONCRMDEALADD (each new deal is logged) and ONOFFLINEEVENT
//	GET  /connect?domain=...         sends the browser to the portal's authorize URL
//	GET  /oauth/callback             the redirect URI: checks the state, calls App.Connect
//	GET  /portal/{memberID}/profile  calls the portal's REST method "profile"
//	GET  /metrics                    Prometheus metrics: the App's calls, refreshes, events... (otelb24)
//	GET  /healthz                    200 "ok" when the token store answers, else 503
//
// Every portal that installs the app gets ONCRMDEALADD bound to /events (when B24_PUBLIC_URL
// says where the server is reachable) and ONCRMDEALUPDATE bound offline: changed deals wait in
// the portal's queue, which the server drains every five minutes and whenever the portal
// signals new entries (ONOFFLINEEVENT).
//
// Configuration comes from the environment: PORT (default 3001), B24_CLIENT_ID and
// B24_CLIENT_SECRET (the application's credentials), B24_STORE_DIR (the file store's directory,
// default .b24oauth), B24_STATE_KEY (the key signing the flow's states, base64 of 32 bytes or
// more; default a random key of this process), B24_PUBLIC_URL (the server's public base URL,
// e.g. https://app.example.com). It shuts down gracefully on SIGINT or SIGTERM.
//
// With -demo it runs the whole mission against the b24test fake Bitrix24 and exits:
//
//	go run ./examples/multitenant -demo
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/b24go/b24oauth"
)

func main() {
	demo := flag.Bool("demo", false, "run against a built-in fake Bitrix24, print what happens, and exit")
	flag.Parse()
	var err error
	if *demo {
		err = runDemo(context.Background(), os.Stdout)
	} else {
		err = serve()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "multitenant:", err)
		os.Exit(1)
	}
}

// newMux mounts the application's routes; st issues and takes the connect flow's states, events
// receives the portals' events.
func newMux(app *b24oauth.App, st *states, events b24oauth.EventFunc) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /install", app.InstallHandler())
	mux.Handle("POST /uninstall", app.UninstallHandler())
	mux.Handle("POST /events", app.EventHandler(events))
	mux.HandleFunc("GET /connect", func(w http.ResponseWriter, r *http.Request) { connectStart(app, st, w, r) })
	mux.HandleFunc("GET /oauth/callback", func(w http.ResponseWriter, r *http.Request) { connectCallback(app, st, w, r) })
	mux.HandleFunc("GET /portal/{memberID}/profile", func(w http.ResponseWriter, r *http.Request) {
		profile(app, w, r)
	})
	return mux
}

// profile is business code: it gets the portal's client and calls the REST API.
func profile(app *b24oauth.App, w http.ResponseWriter, r *http.Request) {
	client, err := app.ClientForMember(r.Context(), r.PathValue("memberID"))
	var refreshErr *b24oauth.RefreshTokenError
	switch {
	case errors.Is(err, b24oauth.ErrNotInstalled):
		http.Error(w, "the application is not installed on this portal", http.StatusNotFound)
		return
	case errors.As(err, &refreshErr):
		http.Error(w, "the portal must reinstall the application", http.StatusConflict)
		return
	case err != nil:
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	resp, err := client.Call(r.Context(), "profile", nil)
	if err != nil {
		slog.ErrorContext(r.Context(), "profile failed", "member_id", r.PathValue("memberID"), "error", err)
		http.Error(w, "the portal call failed", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp.Result)
}

// dealEvents is the app's business code for deal events: it reads the deal with the portal's
// client and reports it. ONCRMDEALADD arrives at /events; ONCRMDEALUPDATE comes from the offline
// queue.
func dealEvents(report func(ctx context.Context, what string, ev b24oauth.Event, title string)) b24oauth.EventFunc {
	return func(ctx context.Context, ev b24oauth.Event, client *b24oauth.B24OAuth) error {
		what := ""
		switch {
		case ev.Name == "ONCRMDEALADD" && !ev.Offline:
			what = "new deal"
		case ev.Name == "ONCRMDEALUPDATE" && ev.Offline:
			what = "deal changed"
		default:
			return nil
		}
		var data struct{ FIELDS struct{ ID json.Number } } // "42" online, 42 offline
		if err := ev.Decode(&data); err != nil {
			return err
		}
		r, err := client.Call(ctx, "crm.deal.get", map[string]any{"id": data.FIELDS.ID})
		if err != nil {
			return err
		}
		var deal struct{ TITLE string }
		if err := r.Decode(&deal); err != nil {
			return err
		}
		report(ctx, what, ev, deal.TITLE)
		return nil
	}
}

// bindings are the events bound on every portal: ONCRMDEALUPDATE offline, and ONCRMDEALADD and
// ONOFFLINEEVENT at publicURL's /events when the server is reachable ("": it is not).
func bindings(publicURL string) []b24oauth.EventBinding {
	events := []b24oauth.EventBinding{{Event: "ONCRMDEALUPDATE"}}
	if publicURL != "" {
		events = append(events,
			b24oauth.EventBinding{Event: "ONCRMDEALADD", Handler: publicURL + "/events"},
			b24oauth.EventBinding{Event: "ONOFFLINEEVENT", Handler: publicURL + "/events"})
	}
	return events
}

func serve() error {
	port := getenv("PORT", "3001")
	store, err := b24oauth.NewFileStore(getenv("B24_STORE_DIR", ".b24oauth"))
	if err != nil {
		return err
	}
	publicURL := strings.TrimSuffix(os.Getenv("B24_PUBLIC_URL"), "/")
	m, err := newMetrics()
	if err != nil {
		return err
	}
	defer func() { _ = m.Shutdown(context.Background()) }()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     os.Getenv("B24_CLIENT_ID"),
		ClientSecret: os.Getenv("B24_CLIENT_SECRET"),
		Store:        store,
		Events:       bindings(publicURL),
		Observer:     m.Observer,
		OnRevoked: func(ctx context.Context, inst b24oauth.Installation, err error) {
			slog.Warn("portal lost its tokens: its administrator must reinstall the app",
				"member_id", inst.MemberID, "domain", inst.Domain, "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("%w (set B24_CLIENT_ID and B24_CLIENT_SECRET)", err)
	}
	defer func() {
		if err := app.Close(); err != nil {
			slog.Error("closing the app", "error", err)
		}
	}()
	st, err := statesFromEnv(os.Getenv("B24_STATE_KEY"))
	if err != nil {
		return err
	}
	if publicURL == "" {
		slog.Warn("B24_PUBLIC_URL is not set: ONCRMDEALADD is not bound, changed deals are pulled every five minutes")
	}
	deals := dealEvents(func(ctx context.Context, what string, ev b24oauth.Event, title string) {
		slog.InfoContext(ctx, what, "member_id", ev.MemberID, "domain", ev.Domain, "title", title)
	})
	loop, err := app.NewOfflineLoop(deals, b24oauth.OfflineLoopOptions{})
	if err != nil {
		return err
	}
	mux := newMux(app, st, loop.Signals(deals))
	mountOps(mux, m, store)
	srv := &http.Server{
		Addr:              ":" + port,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	// Idle portals never lapse: once a day, portals nobody called for 20 days are refreshed,
	// paced; a portal whose refresh token was refused is logged by OnRevoked.
	go func() {
		_ = app.KeepAliveLoop(ctx, 24*time.Hour, b24oauth.KeepAliveOptions{}, func(r b24oauth.KeepAliveReport, err error) {
			slog.Info("keep-alive pass", "report", r.String(), "error", err)
		})
	}()
	// Offline events: every portal every five minutes, and each when it signals new entries.
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		_ = loop.Run(ctx)
	}()
	defer func() { stop(); <-loopDone }()
	slog.Info("listening", "addr", srv.Addr, "store", store.Dir())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// listen serves h on a loopback port and returns its base URL and a stop function.
func listen(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}
