package b24oauth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Deals added and changed at the fake portal (through the App's own client, and by an
// automation rule) reach fn once each, over real HTTP, verified, with the right fields.
func TestEventHandlerGenuineEvents(t *testing.T) {
	env := newEventEnv(t, nil, nil, dealBindings)
	p := env.install()
	if b := p.Bindings(); len(b) != 2 || b[0].Event != "ONCRMDEALADD" || b[0].Handler != env.eventsURL || b[1].Event != "ONCRMDEALUPDATE" {
		t.Fatalf("bindings after the install: %+v", b)
	}
	c := env.client(p.MemberID())
	ctx := context.Background()
	r, err := c.Call(ctx, "crm.deal.add", map[string]any{"fields": map[string]any{"TITLE": "Through the SDK"}})
	if err != nil {
		t.Fatal(err)
	}
	var id int
	if err := r.Decode(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, "crm.deal.update", map[string]any{"id": id, "fields": map[string]any{"STAGE_ID": "WON"}}); err != nil {
		t.Fatal(err)
	}
	robot := p.AddDeal(0, map[string]string{"TITLE": "By a rule"})
	waitDelivered(t, env.fake)

	for _, d := range p.Deliveries() {
		if d.Status != http.StatusOK {
			t.Errorf("delivery of %s: %d %q %v", d.Event, d.Status, d.Body, d.Err)
		}
	}
	got := env.rec.got()
	if len(got) != 3 {
		t.Fatalf("fn got %d events, want 3: %+v", len(got), got)
	}
	loadsBefore := env.store.loads.Load()
	add, upd, auto := got[0], got[1], got[2]
	deliveries := p.Deliveries()
	ts, _ := strconv.ParseInt(deliveries[0].Form.Get("ts"), 10, 64)
	want := b24oauth.Event{
		Name: "ONCRMDEALADD", HandlerID: strconv.Itoa(p.Bindings()[0].ID), Time: time.Unix(ts, 0),
		MemberID: p.MemberID(), Domain: p.Domain(), UserID: 1,
		Data: []byte(fmt.Sprintf(`{"FIELDS":{"ID":"%d"}}`, id)),
	}
	if add.Name != want.Name || add.HandlerID != want.HandlerID || !add.Time.Equal(want.Time) || add.MemberID != want.MemberID ||
		add.Domain != want.Domain || add.UserID != want.UserID || string(add.Data) != string(want.Data) || add.Offline || add.Automated {
		t.Errorf("ONCRMDEALADD:\n got %+v\nwant %+v", add, want)
	}
	var fields struct {
		FIELDS struct{ ID string }
	}
	if err := add.Decode(&fields); err != nil || fields.FIELDS.ID != strconv.Itoa(id) {
		t.Errorf("Decode: %+v %v", fields, err)
	}
	if upd.Name != "ONCRMDEALUPDATE" || string(upd.Data) != string(want.Data) {
		t.Errorf("ONCRMDEALUPDATE: %+v", upd)
	}
	if auto.Name != "ONCRMDEALADD" || !auto.Automated || auto.UserID != 0 || string(auto.Data) != fmt.Sprintf(`{"FIELDS":{"ID":"%d"}}`, robot) {
		t.Errorf("automation rule's event: %+v", auto)
	}
	for i, cl := range env.rec.clients {
		if cl != c {
			t.Errorf("event %d: fn got another client than ClientForMember's", i)
		}
	}

	// A hot portal's events cost no store read.
	for i := 0; i < 20; i++ {
		p.UpdateDeal(1, id, nil)
	}
	waitDelivered(t, env.fake)
	if n := len(env.rec.got()); n != 23 {
		t.Fatalf("fn got %d events, want 23", n)
	}
	if loads := env.store.loads.Load() - loadsBefore; loads != 0 {
		t.Errorf("20 events of a cached portal cost %d store reads", loads)
	}
}

// Forged events get 403 and malformed ones 400; none reaches fn, whether the portal is cached
// or not.
func TestEventHandlerRejects(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.install()
	other := env.install()
	deal := map[string]any{"FIELDS": map[string]any{"ID": 1}}
	withForm := func(ev b24test.Event, edit func(f url.Values)) b24test.Event {
		edit(ev.Form)
		return ev
	}
	cases := []struct {
		name   string
		ev     b24test.Event
		status int
	}{
		{"wrong application_token", p.ForgedEvent("ONCRMDEALADD", deal), http.StatusForbidden},
		{"no application_token", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Del("auth[application_token]") }), http.StatusForbidden},
		{"another portal's application_token", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("auth[application_token]", other.ApplicationToken()) }), http.StatusForbidden},
		{"unknown member_id", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("auth[member_id]", randomHex(16)) }), http.StatusForbidden},
		{"automation event with a wrong token", withForm(p.NewEvent("ONCRMDEALADD", deal, 0), func(f url.Values) { f.Set("auth[application_token]", randomHex(16)) }), http.StatusForbidden},
		{"no event", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Del("event") }), http.StatusBadRequest},
		{"lifecycle event", p.UpdateEvent("2"), http.StatusBadRequest},
		{"uninstall event", uninstallEvent(env.fake, p, p.ApplicationToken(), false), http.StatusBadRequest},
		{"bad member_id", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("auth[member_id]", "x") }), http.StatusBadRequest},
		{"bad ts", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("ts", "yesterday") }), http.StatusBadRequest},
		{"bad event name", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("event", "ON CRM") }), http.StatusBadRequest},
		{"event as an array", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Del("event"); f.Set("event[0]", "ONCRMDEALADD") }), http.StatusBadRequest},
		{"unbalanced bracket", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("data[FIELDS][ID", "1") }), http.StatusBadRequest},
		{"too deep", withForm(p.NewEvent("ONCRMDEALADD", deal, 1), func(f url.Values) { f.Set("data"+strings.Repeat("[a]", 70), "1") }), http.StatusBadRequest},
	}
	check := func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if got := env.postEvent(c.ev); got != c.status {
					t.Errorf("status %d, want %d", got, c.status)
				}
			})
		}
	}
	t.Run("uncached", check)
	env.client(p.MemberID())
	env.client(other.MemberID())
	t.Run("cached", check)
	if got := env.rec.got(); len(got) != 0 {
		t.Fatalf("fn got rejected events: %+v", got)
	}

	// The request itself.
	for _, c := range []struct {
		method, ct, body string
		status           int
	}{
		{http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "application/json", "{}", http.StatusUnsupportedMediaType},
		{http.MethodPost, "application/x-www-form-urlencoded", "event=ONCRMDEALADD&auth%5Bmember_id%5D=" + p.MemberID() +
			"&auth%5Bapplication_token%5D=" + p.ApplicationToken() + "&data%5BX%5D=%zz", http.StatusBadRequest},
		{http.MethodPost, "application/x-www-form-urlencoded", "data[x]=" + strings.Repeat("a", 70<<10), http.StatusRequestEntityTooLarge},
	} {
		req, _ := http.NewRequest(c.method, env.eventsURL, strings.NewReader(c.body))
		if c.ct != "" {
			req.Header.Set("Content-Type", c.ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.ct, resp.StatusCode, c.status)
		}
	}
	// And a genuine event still passes.
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", deal, 1)); got != http.StatusOK || len(env.rec.got()) != 1 {
		t.Fatalf("genuine event: %d, fn got %d", got, len(env.rec.got()))
	}
}

// fn's error is a 500; the portal does not resend.
func TestEventHandlerFnError(t *testing.T) {
	env := newEventEnv(t, nil, nil, dealBindings)
	p := env.install()
	env.rec.setFail(func(b24oauth.Event) error { return errRefused })
	p.AddDeal(1, nil)
	waitDelivered(t, env.fake)
	ds := p.Deliveries()
	if len(ds) != 1 || ds[0].Status != http.StatusInternalServerError {
		t.Fatalf("deliveries: %+v", ds)
	}
}

// An update stored by another replica rotated the application token: the cached portal's old
// token gives way to the store's.
func TestEventHandlerTokenRotatedElsewhere(t *testing.T) {
	store := b24oauth.NewMemoryStore()
	env := newEventEnv(t, nil, store, nil)
	p := env.install()
	env.client(p.MemberID()) // cached with the first token
	old := p.ApplicationToken()
	replica := newAppEnv(t, env.fake, store)
	p.SetApplicationToken(randomHex(16))
	replica.mustPost("/install", p.UpdateEvent("2"))

	deal := map[string]any{"FIELDS": map[string]any{"ID": 1}}
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", deal, 1)); got != http.StatusOK {
		t.Fatalf("event with the rotated token: %d", got)
	}
	stale := p.NewEvent("ONCRMDEALADD", deal, 1)
	stale.Form.Set("auth[application_token]", old)
	if got := env.postEvent(stale); got != http.StatusForbidden {
		t.Fatalf("event with the replaced token: %d", got)
	}
	loads := env.store.loads.Load()
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", deal, 1)); got != http.StatusOK || env.store.loads.Load() != loads {
		t.Fatalf("event after the cache learnt the new token: %d, %d store reads", got, env.store.loads.Load()-loads)
	}
}

// A revoked installation's genuine events are 503 (its client cannot work), forged ones 403.
func TestEventHandlerRevoked(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.install()
	c := env.client(p.MemberID())
	p.ExpireRefreshToken()
	p.ExpireAccessToken()
	if _, err := c.Call(context.Background(), "profile", nil); err == nil {
		t.Fatal("the call with a refused refresh token worked")
	}
	deal := map[string]any{"FIELDS": map[string]any{"ID": 1}}
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", deal, 1)); got != http.StatusServiceUnavailable {
		t.Errorf("genuine event of a revoked portal: %d", got)
	}
	if got := env.postEvent(p.ForgedEvent("ONCRMDEALADD", deal)); got != http.StatusForbidden {
		t.Errorf("forged event of a revoked portal: %d", got)
	}
	if n := len(env.rec.got()); n != 0 {
		t.Fatalf("fn got %d events", n)
	}
}

// An installation stored without an application token cannot verify events: 403.
func TestEventHandlerNoStoredToken(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.fake.AddPortal()
	page := p.InstallPage()
	page.Form.Del("APPLICATION_TOKEN")
	env.mustPost("/install", page)
	if tok := env.load(p.MemberID()).ApplicationToken; tok != "" {
		t.Fatalf("stored token %q", tok)
	}
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", nil, 1)); got != http.StatusForbidden {
		t.Fatalf("event: %d", got)
	}
}

// Forged events for a cached portal cost at most one store read per portal per second: they
// cannot flood the store. A genuine rotation is seen once that second has passed.
func TestEventHandlerForgedFloodBounded(t *testing.T) {
	env := newEventEnv(t, nil, nil, nil)
	p := env.install()
	env.client(p.MemberID())
	loads := env.store.loads.Load()
	for i := 0; i < 50; i++ {
		if got := env.postEvent(p.ForgedEvent("ONCRMDEALADD", nil)); got != http.StatusForbidden {
			t.Fatalf("forged event %d: %d", i, got)
		}
	}
	if n := env.store.loads.Load() - loads; n != 1 {
		t.Fatalf("50 forged events cost %d store reads, want 1", n)
	}
	p.SetApplicationToken(randomHex(16))
	env.mustPost("/install", p.UpdateEvent("2")) // drops the cached client: the next event rebuilds it
	env.client(p.MemberID())
	env.clock.Advance(2 * time.Second)
	if got := env.postEvent(p.NewEvent("ONCRMDEALADD", nil, 1)); got != http.StatusOK {
		t.Fatalf("genuine event after the rotation: %d", got)
	}
}
