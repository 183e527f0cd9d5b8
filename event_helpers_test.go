package b24oauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// eventRecorder is an EventFunc that records what it was given; fail, when set, decides
// whether it refuses an event.
type eventRecorder struct {
	mu      sync.Mutex
	events  []b24oauth.Event
	clients []*b24oauth.B24OAuth
	fail    func(ev b24oauth.Event) error
	seen    chan b24oauth.Event // when set, every accepted event is sent to it
}

func (r *eventRecorder) handle(ctx context.Context, ev b24oauth.Event, c *b24oauth.B24OAuth) error {
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(ev); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.clients = append(r.clients, c)
	seen := r.seen
	r.mu.Unlock()
	if seen != nil {
		seen <- ev
	}
	return nil
}

func (r *eventRecorder) setFail(f func(ev b24oauth.Event) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *eventRecorder) got() []b24oauth.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]b24oauth.Event(nil), r.events...)
}

// eventEnv is an appEnv whose App also serves EventHandler (with rec) at eventsURL, and whose
// config may bind events at that URL.
type eventEnv struct {
	*appEnv
	rec       *eventRecorder
	eventsURL string
	handler   atomic.Pointer[http.Handler]
}

// newEventEnv starts an App against fake (new when nil) over store (a MemoryStore when nil);
// events(url) gives AppConfig.Events for the events handler's URL.
func newEventEnv(t testing.TB, fake *b24test.Server, store b24oauth.TokenStore, events func(url string) []b24oauth.EventBinding, opts ...func(*b24oauth.AppConfig)) *eventEnv {
	t.Helper()
	if store == nil {
		store = b24oauth.NewMemoryStore()
	}
	env := &eventEnv{rec: &eventRecorder{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := env.handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	env.eventsURL = srv.URL + "/events"
	opts = append([]func(*b24oauth.AppConfig){func(c *b24oauth.AppConfig) {
		if events != nil {
			c.Events = events(env.eventsURL)
		}
	}}, opts...)
	env.appEnv = newAppEnv(t, fake, store, opts...)
	env.serve(env.app.EventHandler(env.rec.handle))
	return env
}

// serve replaces what the events URL serves.
func (e *eventEnv) serve(h http.Handler) { e.handler.Store(&h) }

// dealBindings binds ONCRMDEALADD and ONCRMDEALUPDATE at url.
func dealBindings(url string) []b24oauth.EventBinding {
	return []b24oauth.EventBinding{{Event: "ONCRMDEALADD", Handler: url}, {Event: "ONCRMDEALUPDATE", Handler: url}}
}

// waitDelivered waits for the fake's deliveries under way.
func waitDelivered(t testing.TB, fake *b24test.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fake.WaitForDeliveries(ctx); err != nil {
		t.Fatalf("WaitForDeliveries: %v", err)
	}
}

// postEvent sends ev to the App's events handler over HTTP and returns the status.
func (e *eventEnv) postEvent(ev b24test.Event) int {
	e.t.Helper()
	resp, err := ev.Post(context.Background(), e.eventsURL)
	if err != nil {
		e.t.Fatalf("POST events: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

var errRefused = errors.New("test: refused")

// newTextLogger logs everything, debug included, to w.
func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
