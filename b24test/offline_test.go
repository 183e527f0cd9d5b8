package b24test_test

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth/b24test"
)

type offlinePage struct {
	processID string
	events    []map[string]any
}

func offlineGet(t *testing.T, s *b24test.Server, p *b24test.Portal, params url.Values) offlinePage {
	t.Helper()
	r := call(t, s, p, "event.offline.get", params)
	wantOK(t, r)
	res := r.Body["result"].(map[string]any)
	var page offlinePage
	page.processID, _ = res["process_id"].(string)
	for _, e := range res["events"].([]any) {
		page.events = append(page.events, e.(map[string]any))
	}
	return page
}

func pageIDs(page offlinePage) []string {
	var out []string
	for _, e := range page.events {
		out = append(out, e["ID"].(string))
	}
	return out
}

func TestOfflineQueue(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALUPDATE"}, "event_type": {"offline"}}))
	p.SeedDeals(5)
	for i := 0; i < 3; i++ { // the queue keeps the latest state per object
		p.UpdateDeal(1, 2, map[string]string{"TITLE": "v" + strconv.Itoa(i)})
		clk.Advance(time.Second)
	}
	for id := 3; id <= 5; id++ {
		p.UpdateDeal(1, id, nil)
		clk.Advance(time.Second)
	}
	q := p.OfflineEvents()
	if len(q) != 4 || string(q[0].Data) != `{"FIELDS":{"ID":2}}` || q[0].Event != "ONCRMDEALUPDATE" || len(q[0].MessageID) != 32 {
		t.Fatalf("queue: %+v", q)
	}

	// clear=0 reserves; a second caller gets another set.
	a := offlineGet(t, s, p, url.Values{"clear": {"0"}, "limit": {"2"}})
	b := offlineGet(t, s, p, url.Values{"clear": {"0"}, "limit": {"2"}})
	if len(a.processID) != 32 || a.processID == b.processID || len(a.events) != 2 || len(b.events) != 2 ||
		a.events[0]["ID"] == b.events[0]["ID"] || a.events[0]["ID"] != "1" {
		t.Fatalf("reservations: %v %v", a, b)
	}
	e := a.events[0]
	if e["EVENT_NAME"] != "ONCRMDEALUPDATE" || e["TIMESTAMP_X"] != "2026-03-01T12:00:02+00:00" ||
		e["EVENT_DATA"].(map[string]any)["FIELDS"].(map[string]any)["ID"] != float64(2) ||
		e["EVENT_ADDITIONAL"].(map[string]any)["user_id"] != "1" {
		t.Fatalf("event: %v", e)
	}
	if c := offlineGet(t, s, p, url.Values{"clear": {"0"}}); len(c.events) != 0 {
		t.Fatalf("everything is reserved, yet: %v", c)
	}
	// A change of a reserved object queues a new entry.
	p.UpdateDeal(1, 2, nil)
	if q := p.OfflineEvents(); len(q) != 5 || q[4].ProcessID != "" || q[4].MessageID != q[0].MessageID {
		t.Fatalf("queue after a change of a reserved object: %+v", q)
	}
	// The same process id gives back what is still reserved under it.
	if again := offlineGet(t, s, p, url.Values{"clear": {"0"}, "process_id": {a.processID}}); len(again.events) != 2 || again.processID != a.processID {
		t.Fatalf("re-reading a reservation: %v", again)
	}

	// clear by id; error by message id; list reads without changing anything.
	wantOK(t, call(t, s, p, "event.offline.clear", url.Values{"process_id": {a.processID}, "id[0]": {a.events[0]["ID"].(string)}}))
	wantOK(t, call(t, s, p, "event.offline.error", url.Values{"process_id": {a.processID}, "message_id[0]": {a.events[1]["MESSAGE_ID"].(string)}}))
	list := call(t, s, p, "event.offline.list", nil)
	rows, _ := list.Body["result"].([]any)
	if len(rows) != 4 || list.Body["total"] != float64(4) {
		t.Fatalf("event.offline.list: %s", list.Raw)
	}
	errored := rows[0].(map[string]any)
	if errored["ID"] != a.events[1]["ID"] || errored["ERROR"] != "1" || errored["PROCESS_ID"] != "" {
		t.Fatalf("the errored event: %v", errored)
	}
	if again := call(t, s, p, "event.offline.list", nil); again.Raw != list.Raw {
		t.Fatal("event.offline.list changed the queue")
	}
	if errs := offlineGet(t, s, p, url.Values{"error": {"1"}}); len(errs.events) != 1 || errs.events[0]["ID"] != a.events[1]["ID"] || errs.processID != "" {
		t.Fatalf("error=1 (clear=1): %v", errs)
	}
	// clear without ids clears the whole reservation; clear=1 takes and deletes.
	wantOK(t, call(t, s, p, "event.offline.clear", url.Values{"process_id": {b.processID}}))
	if rest := offlineGet(t, s, p, nil); len(rest.events) != 1 || rest.processID != "" {
		t.Fatalf("clear=1: %v", rest)
	}
	if q := p.OfflineEvents(); len(q) != 0 {
		t.Fatalf("queue at the end: %+v", q)
	}
}

func TestOfflineErrors(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	user := p.AddUser(false)
	for _, m := range []string{"event.offline.get", "event.offline.clear", "event.offline.error", "event.offline.list"} {
		wantError(t, callAs(t, s, p, user, m, url.Values{"process_id": {"x"}}), http.StatusForbidden, "ACCESS_DENIED")
	}
	wantError(t, call(t, s, p, "event.offline.clear", nil), 400, "ERROR_ARGUMENT")
	wantError(t, call(t, s, p, "event.offline.clear", url.Values{"process_id": {"x"}, "message_id[0]": {"short"}}), 400, "ERROR_ARGUMENT")
	wantError(t, call(t, s, p, "event.offline.error", url.Values{"process_id": {"x"}}), 400, "ERROR_ARGUMENT")
	wantError(t, call(t, s, p, "event.offline.get", url.Values{"limit": {"0"}}), 400, "ERROR_ARGUMENT")

	// A reservation is dropped after 30 days.
	p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 1}})
	p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 2}})
	offlineGet(t, s, p, url.Values{"clear": {"0"}, "limit": {"1"}})
	clk.Advance(b24test.ReservationLifetime + time.Second)
	wantOK(t, callAs(t, s, p, 1, "event.offline.list", nil))
	if q := p.OfflineEvents(); len(q) != 1 || q[0].ProcessID != "" {
		t.Fatalf("queue after 30 days: %+v", q)
	}
}

// Parallel reservations never share an event.
func TestOfflineParallelReservations(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	const n = 120
	for i := 1; i <= n; i++ {
		p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": i}})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				page := offlineGet(t, s, p, url.Values{"clear": {"0"}, "limit": {"7"}})
				if len(page.events) == 0 {
					return
				}
				mu.Lock()
				for _, id := range pageIDs(page) {
					seen[id]++
				}
				mu.Unlock()
				call(t, s, p, "event.offline.clear", url.Values{"process_id": {page.processID}})
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d events handed out, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %s handed out %d times", id, c)
		}
	}
}

// ONOFFLINEEVENT signals new entries: no data, the full auth block, at most once per
// minTimeout.
func TestOfflineSignal(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now))
	p := s.AddPortal()
	box, handler := newInbox(t)
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALADD"}, "event_type": {"offline"}}))
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONOFFLINEEVENT"}, "handler": {handler}, "options[minTimeout]": {"10"}}))
	p.AddDeal(1, nil)
	p.AddDeal(1, nil)
	clk.Advance(11 * time.Second)
	p.AddDeal(1, nil)
	waitDeliveries(t, s)
	got := box.received()
	if len(got) != 2 {
		t.Fatalf("%d signals, want 2 (minTimeout 10 s)", len(got))
	}
	sameKeys(t, got[0], append([]string{"event", "event_handler_id", "ts"}, fullAuth...)...)
	if got[0].Get("event") != "ONOFFLINEEVENT" || got[0].Get("auth[application_token]") != p.ApplicationToken() {
		t.Fatalf("signal: %v", got[0])
	}
	if len(p.OfflineEvents()) != 3 {
		t.Fatalf("queue: %+v", p.OfflineEvents())
	}
}

// Changes made with an auth_connector skip that connector's queue.
func TestOfflineConnector(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	wantOK(t, call(t, s, p, "event.bind", url.Values{"event": {"ONCRMDEALADD"}, "event_type": {"offline"}, "auth_connector": {"sync"}}))
	wantOK(t, call(t, s, p, "crm.deal.add", url.Values{"auth_connector": {"sync"}}))
	if q := p.OfflineEvents(); len(q) != 0 {
		t.Fatalf("the app's own change was queued: %+v", q)
	}
	wantOK(t, call(t, s, p, "crm.deal.add", nil))
	if q := p.OfflineEvents(); len(q) != 1 || q[0].Connector != "sync" {
		t.Fatalf("queue: %+v", q)
	}
	if page := offlineGet(t, s, p, nil); len(page.events) != 0 {
		t.Fatal("the queue without connector returned the connector's events")
	}
	if page := offlineGet(t, s, p, url.Values{"auth_connector": {"sync"}}); len(page.events) != 1 {
		t.Fatal("the connector's queue is empty")
	}
}
