package b24oauth_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Installs, updates, reinstalls and replicas bind each configured event once: event.get first,
// event.bind only for what is missing.
func TestBindEventsOnce(t *testing.T) {
	store := b24oauth.NewMemoryStore()
	bindings := func(url string) []b24oauth.EventBinding {
		return append(dealBindings(url), b24oauth.EventBinding{Event: "ONCRMDEALDELETE"})
	}
	env := newEventEnv(t, nil, store, bindings)
	p := env.install()
	want := []b24test.Binding{
		{Event: "ONCRMDEALADD", Handler: env.eventsURL},
		{Event: "ONCRMDEALUPDATE", Handler: env.eventsURL},
		{Event: "ONCRMDEALDELETE", Offline: true},
	}
	check := func(when string) {
		t.Helper()
		got := p.Bindings()
		if len(got) != len(want) {
			t.Fatalf("%s: bindings %+v", when, got)
		}
		for i, b := range got {
			if b.Event != want[i].Event || b.Handler != want[i].Handler || b.Offline != want[i].Offline || b.AuthType != 0 {
				t.Fatalf("%s: binding %d = %+v, want %+v", when, i, b, want[i])
			}
		}
	}
	check("first install")
	if n := p.Calls("event.bind"); n != 3 {
		t.Fatalf("event.bind ran %d times, want 3", n)
	}
	batches := p.Requests("batch")

	env.mustPost("/install", p.InstallEvent())
	env.mustPost("/install", p.UpdateEvent("2"))
	replica := newEventEnv(t, env.fake, store, func(string) []b24oauth.EventBinding { return bindings(env.eventsURL) })
	replica.mustPost("/install", p.UpdateEvent("3"))
	check("after an install again, an update and a replica's update")
	if n := p.Calls("event.bind"); n != 3 {
		t.Fatalf("event.bind ran %d times, want still 3", n)
	}
	if p.Requests("batch") != batches {
		t.Fatal("a batch was sent with nothing to bind")
	}
	if n := p.Calls("event.get"); n != 4 {
		t.Fatalf("event.get ran %d times, want once per accepted install (4)", n)
	}

	// A reinstall removed the bindings with the app: all are bound again.
	env.mustPost("/install", p.Reinstall())
	check("after a reinstall")
	if n := p.Calls("event.bind"); n != 6 {
		t.Fatalf("event.bind ran %d times, want 6", n)
	}
}

// A binding that another replica made between event.get and event.bind ("Handler already
// binded") counts as bound.
func TestBindEventsAlreadyBound(t *testing.T) {
	fake := newFake(t)
	var mu sync.Mutex
	stale := true
	fake.HandleMethod("event.get", func(p *b24test.Portal, _ map[string]any) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		if stale { // as if read before a replica bound
			return []any{}, nil
		}
		out := []any{}
		for _, b := range p.Bindings() {
			out = append(out, map[string]any{"event": b.Event, "handler": b.Handler, "auth_type": "0", "offline": 0})
		}
		return out, nil
	})
	var bindErrs []error
	env := newEventEnv(t, fake, nil, dealBindings, func(c *b24oauth.AppConfig) {
		c.OnBindError = func(_ context.Context, _ b24oauth.Installation, err error) { bindErrs = append(bindErrs, err) }
	})
	p := env.install()
	env.mustPost("/install", p.InstallEvent())
	if len(bindErrs) != 0 {
		t.Fatalf("OnBindError: %v", bindErrs)
	}
	if n := p.Calls("event.bind"); n != 4 || len(p.Bindings()) != 2 {
		t.Fatalf("event.bind ran %d times; bindings %+v", n, p.Bindings())
	}
	n, err := env.app.BindEvents(context.Background(), p.MemberID())
	if err != nil || n != 2 {
		t.Fatalf("BindEvents = %d, %v", n, err)
	}
}

// A binding the portal refuses is reported and logged; the installation is stored all the same.
func TestBindEventsFailure(t *testing.T) {
	var logs lockedBuffer
	type report struct {
		inst b24oauth.Installation
		err  error
	}
	var mu sync.Mutex
	var reports []report
	env := newEventEnv(t, nil, nil, func(url string) []b24oauth.EventBinding {
		return []b24oauth.EventBinding{{Event: "ONCRMDEALADD", Handler: url}, {Event: "ONTASKADD", Handler: url}}
	}, func(c *b24oauth.AppConfig) {
		c.Logger = newTextLogger(&logs)
		c.OnBindError = func(_ context.Context, inst b24oauth.Installation, err error) {
			mu.Lock()
			reports = append(reports, report{inst, err})
			mu.Unlock()
		}
	})
	p := env.fake.AddPortal(b24test.PortalScope("crm,user_brief"))
	env.mustPost("/install", p.InstallEvent())
	env.load(p.MemberID())
	if b := p.Bindings(); len(b) != 1 || b[0].Event != "ONCRMDEALADD" {
		t.Fatalf("bindings: %+v", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0].inst.MemberID != p.MemberID() {
		t.Fatalf("OnBindError calls: %+v", reports)
	}
	var be *b24oauth.BindError
	if !errors.As(reports[0].err, &be) || len(be.Failed) != 1 || be.Failed[0].Binding.Event != "ONTASKADD" {
		t.Fatalf("error: %v", reports[0].err)
	}
	if !errors.Is(reports[0].err, &b24oauth.APIError{Code: "ERROR_EVENT_NOT_FOUND"}) {
		t.Fatalf("error does not carry the portal's reason: %v", reports[0].err)
	}
	if !strings.Contains(logs.String(), "binding events failed") {
		t.Fatalf("not logged:\n%s", logs.String())
	}
}

// A non-administrator's install never binds: it is refused before anything is stored.
func TestBindEventsNeedsAnAcceptedInstall(t *testing.T) {
	env := newEventEnv(t, nil, nil, dealBindings)
	p := env.fake.AddPortal()
	user := p.AddUser(false)
	if code, _ := env.post("/install", p.InstallEventAs(user)); code != http.StatusForbidden {
		t.Fatalf("a user's install: %d", code)
	}
	if n := p.Calls("event.bind") + p.Calls("event.get"); n != 0 || len(p.Bindings()) != 0 {
		t.Fatalf("a refused install bound events: %d calls, %+v", n, p.Bindings())
	}
}

func TestNewAppChecksEvents(t *testing.T) {
	fake := newFake(t)
	for _, bad := range [][]b24oauth.EventBinding{
		{{Event: ""}},
		{{Event: "onCrmDealAdd"}},
		{{Event: "ONCRMDEALADD", Handler: "/relative"}},
		{{Event: "ONCRMDEALADD", Handler: "ftp://x.example.com/"}},
		{{Event: "ONCRMDEALADD"}, {Event: "ONCRMDEALADD"}},
	} {
		cfg := appConfig(fake, b24oauth.NewMemoryStore())
		cfg.Events = bad
		if _, err := b24oauth.NewApp(cfg); err == nil {
			t.Errorf("NewApp accepted Events %+v", bad)
		}
	}
	cfg := appConfig(fake, b24oauth.NewMemoryStore())
	cfg.Events = []b24oauth.EventBinding{{Event: "ONAPPUNINSTALL", Handler: "https://app.example.org/uninstall"}, {Event: "ONCRMDEALADD"}}
	if _, err := b24oauth.NewApp(cfg); err != nil {
		t.Fatalf("NewApp: %v", err)
	}
}
