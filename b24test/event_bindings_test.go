package b24test_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth/b24test"
)

// inbox is an app's event handler that records the forms it received and answers status.
type inbox struct {
	mu     sync.Mutex
	forms  []url.Values
	status int
}

func (b *inbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	b.mu.Lock()
	b.forms = append(b.forms, r.PostForm)
	status := b.status
	b.mu.Unlock()
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
}

func (b *inbox) received() []url.Values {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]url.Values(nil), b.forms...)
}

func newInbox(t *testing.T) (*inbox, string) {
	t.Helper()
	b := &inbox{}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	return b, srv.URL + "/events"
}

func waitDeliveries(t *testing.T, s *b24test.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitForDeliveries(ctx); err != nil {
		t.Fatalf("WaitForDeliveries: %v", err)
	}
}

// callAs invokes a REST v2 method with the token of user.
func callAs(t *testing.T, s *b24test.Server, p *b24test.Portal, user int, method string, params url.Values) reply {
	t.Helper()
	if params == nil {
		params = url.Values{}
	}
	params.Set("auth", p.IssueTokensFor(user).AccessToken)
	return postForm(t, s.Client(), p.ClientEndpoint()+method, params)
}

func TestEventBindGetUnbind(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	_, handler := newInbox(t)

	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"onCrmDealAdd"}, "handler": {handler}}))
	// The real portal's answer to a second identical binding.
	r := call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALADD"}, "handler": {handler}})
	wantError(t, r, http.StatusBadRequest, "ERROR_CORE")
	if r.Body["error_description"] != "Unable to set event handler: Handler already binded" {
		t.Fatalf("duplicate binding: %s", r.Raw)
	}
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALUPDATE"}, "event_type": {"offline"}}))

	got := call(t, s, p, "event.get", nil)
	list, _ := got.Body["result"].([]any)
	if len(list) != 2 {
		t.Fatalf("event.get: %s", got.Raw)
	}
	online, offline := list[0].(map[string]any), list[1].(map[string]any)
	if online["event"] != "ONCRMDEALADD" || online["handler"] != handler || online["auth_type"] != "0" || online["offline"] != float64(0) {
		t.Errorf("online binding: %v", online)
	}
	if offline["event"] != "ONCRMDEALUPDATE" || offline["connector_id"] != "" || offline["offline"] != float64(1) {
		t.Errorf("offline binding: %v", offline)
	}

	r = call(t, s, p, "event.unbind", url.Values{"event": {"ONCRMDEALADD"}, "handler": {handler}})
	if res, _ := r.Body["result"].(map[string]any); res["count"] != float64(1) {
		t.Fatalf("event.unbind: %s", r.Raw)
	}
	if b := p.Bindings(); len(b) != 1 || !b[0].Offline {
		t.Fatalf("bindings after unbind: %+v", b)
	}
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALADD"}, "handler": {handler}}))
}

func TestEventBindErrors(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal(b24test.PortalScope("user_brief"))
	user := p.AddUser(false)
	_, handler := newInbox(t)
	cases := []struct {
		name   string
		user   int
		params url.Values
		status int
		code   string
	}{
		{"no event", 1, url.Values{"handler": {handler}}, 400, "ERROR_ARGUMENT"},
		{"no handler", 1, url.Values{"event": {"ONAPPTEST"}}, 400, "ERROR_ARGUMENT"},
		{"bad event type", 1, url.Values{"event": {"ONAPPTEST"}, "handler": {handler}, "event_type": {"sometimes"}}, 400, "ERROR_ARGUMENT"},
		{"unknown event", 1, url.Values{"event": {"ONNOTHING"}, "handler": {handler}}, 400, "ERROR_EVENT_NOT_FOUND"},
		{"event outside the scope", 1, url.Values{"event": {"ONCRMDEALADD"}, "handler": {handler}}, 400, "ERROR_EVENT_NOT_FOUND"},
		{"localhost", 1, url.Values{"event": {"ONAPPTEST"}, "handler": {"http://localhost/x"}}, 400, "ERROR_WRONG_HANDLER_URL"},
		{"ftp", 1, url.Values{"event": {"ONAPPTEST"}, "handler": {"ftp://files.example.org/x"}}, 400, "ERROR_UNSUPPORTED_PROTOCOL"},
		{"offline ONOFFLINEEVENT", 1, url.Values{"event": {"ONOFFLINEEVENT"}, "event_type": {"offline"}}, 400, "ERROR_ARGUMENT"},
		{"offline by a user", user, url.Values{"event": {"ONAPPTEST"}, "event_type": {"offline"}}, 403, "ACCESS_DENIED"},
		{"another user's auth_type", user, url.Values{"event": {"ONAPPTEST"}, "handler": {handler}, "auth_type": {"1"}}, 403, "ACCESS_DENIED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, callAs(t, s, p, c.user, "event.bind", c.params), c.status, c.code)
		})
	}
	if b := p.Bindings(); len(b) != 0 {
		t.Fatalf("a refused event.bind bound: %+v", b)
	}

	// A user binds for itself only and sees only its own bindings.
	wantOK(t, callAs(t, s, p, user, "event.bind", url.Values{"event": {"ONAPPTEST"}, "handler": {handler}}))
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONAPPTEST"}, "handler": {handler + "/admin"}}))
	r := callAs(t, s, p, user, "event.get", nil)
	if list, _ := r.Body["result"].([]any); len(list) != 1 || list[0].(map[string]any)["auth_type"] != strconv.Itoa(user) {
		t.Fatalf("a user's event.get: %s", r.Raw)
	}
	wantError(t, callAs(t, s, p, user, "event.unbind", url.Values{"event_type": {"offline"}}), 403, "ACCESS_DENIED")
}

// Deals added or changed through REST, a batch or the portal itself reach the bound handlers
// over HTTP, with the real form fields and auth block, once, whatever the handler answers.
func TestDealEventsDelivered(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	box, handler := newInbox(t)
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALADD"}, "handler": {handler}}))
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALUPDATE"}, "handler": {handler}}))
	before := p.Tokens()

	user := p.AddUser(false)
	r := callAs(t, s, p, user, "crm.deal.add", url.Values{"fields[TITLE]": {"From REST"}})
	id := strconv.Itoa(int(r.Body["result"].(float64)))
	wantOK(t, call(t, s, p, "crm.deal.update", url.Values{"id": {id}, "fields[STAGE_ID]": {"WON"}}))
	wantOK(t, call(t, s, p, "batch", url.Values{"cmd[a]": {"crm.deal.add?fields[TITLE]=batched"}}))
	robot := p.AddDeal(0, map[string]string{"TITLE": "By a rule"})
	waitDeliveries(t, s)

	got := box.received()
	if len(got) != 4 {
		t.Fatalf("handler received %d events, want 4: %v", len(got), got)
	}
	add := got[0]
	sameKeys(t, add, "event", "event_handler_id", "data[FIELDS][ID]", "ts", "auth[access_token]", "auth[expires]",
		"auth[expires_in]", "auth[scope]", "auth[domain]", "auth[server_endpoint]", "auth[status]",
		"auth[client_endpoint]", "auth[member_id]", "auth[user_id]", "auth[application_token]")
	if add.Get("event") != "ONCRMDEALADD" || add.Get("data[FIELDS][ID]") != id || add.Get("auth[member_id]") != p.MemberID() ||
		add.Get("auth[application_token]") != p.ApplicationToken() || add.Get("auth[user_id]") != strconv.Itoa(user) ||
		add.Get("ts") != strconv.FormatInt(clk.Now().Unix(), 10) || add.Get("event_handler_id") != strconv.Itoa(p.Bindings()[0].ID) {
		t.Errorf("ONCRMDEALADD: %v", add)
	}
	// The event's token is the acting user's and works.
	wantOK(t, postForm(t, s.Client(), p.ClientEndpoint()+"profile", url.Values{"auth": {add.Get("auth[access_token]")}}))
	if got[1].Get("event") != "ONCRMDEALUPDATE" || got[1].Get("data[FIELDS][ID]") != id || got[1].Get("auth[user_id]") != "1" {
		t.Errorf("ONCRMDEALUPDATE: %v", got[1])
	}
	if got[2].Get("event") != "ONCRMDEALADD" || got[2].Get("data[FIELDS][ID]") == id {
		t.Errorf("the batch's deal: %v", got[2])
	}
	sameKeys(t, got[3], "event", "event_handler_id", "data[FIELDS][ID]", "ts", "auth[domain]", "auth[client_endpoint]",
		"auth[server_endpoint]", "auth[member_id]", "auth[application_token]")
	if got[3].Get("data[FIELDS][ID]") != strconv.Itoa(robot) {
		t.Errorf("automation event: %v", got[3])
	}
	if p.Tokens() != before {
		t.Error("issuing the events' tokens changed the app's own pair")
	}
	ds := p.Deliveries()
	if len(ds) != 4 || ds[0].Status != http.StatusOK || ds[0].URL != handler || ds[0].Err != nil {
		t.Fatalf("deliveries: %+v", ds)
	}

	// A failing handler is recorded, and the event is not sent again.
	box.mu.Lock()
	box.status = http.StatusInternalServerError
	box.mu.Unlock()
	p.UpdateDeal(1, robot, map[string]string{"TITLE": "again"})
	waitDeliveries(t, s)
	if ds := s.Deliveries(); len(ds) != 5 || ds[4].Status != http.StatusInternalServerError || ds[4].Event != "ONCRMDEALUPDATE" {
		t.Fatalf("failed delivery: %+v", ds)
	}
	if n := len(box.received()); n != 5 {
		t.Fatalf("handler received %d events, want 5 (no retry)", n)
	}

	// An uninstall removes the bindings: nothing more is delivered.
	p.UninstallEvent(false)
	if len(p.Bindings()) != 0 {
		t.Fatal("bindings survived the uninstall")
	}
}

func TestNewAndForgedEvent(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	ev := p.NewEvent("onCrmDealAdd", map[string]any{"FIELDS": map[string]any{"ID": 7, "TAGS": []string{"a", "b"}}}, 1)
	f := ev.Form
	if f.Get("event") != "ONCRMDEALADD" || f.Get("data[FIELDS][ID]") != "7" || f.Get("data[FIELDS][TAGS][1]") != "b" ||
		f.Get("auth[application_token]") != p.ApplicationToken() || f.Has("event_handler_id") {
		t.Fatalf("NewEvent: %v", f)
	}
	wantOK(t, postForm(t, s.Client(), p.ClientEndpoint()+"profile", url.Values{"auth": {f.Get("auth[access_token]")}}))
	if robot := p.NewEvent("ONCRMDEALADD", nil, 0).Form; robot.Has("auth[access_token]") || robot.Get("auth[application_token]") != p.ApplicationToken() {
		t.Fatalf("NewEvent for an automation rule: %v", robot)
	}
	forged := p.ForgedEvent("ONCRMDEALADD", nil).Form
	if forged.Get("auth[application_token]") == p.ApplicationToken() || len(forged.Get("auth[application_token]")) != 32 ||
		forged.Get("auth[member_id]") != p.MemberID() {
		t.Fatalf("ForgedEvent: %v", forged)
	}
	wantError(t, postForm(t, s.Client(), p.ClientEndpoint()+"profile", url.Values{"auth": {forged.Get("auth[access_token]")}}), 401, "invalid_token")
}
