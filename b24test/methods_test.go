package b24test_test

import (
	"net/url"
	"strconv"
	"testing"

	"github.com/b24go/b24oauth/b24test"
)

func ids(t *testing.T, rows any, key string) []string {
	t.Helper()
	var out []string
	for _, r := range rows.([]any) {
		out = append(out, r.(map[string]any)[key].(string))
	}
	return out
}

func TestDealListPaging(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedDeals(120)
	if p.Deals() != 120 {
		t.Fatal(p.Deals())
	}
	// Offset mode.
	var all []string
	start := "0"
	for pages := 0; ; pages++ {
		r := call(t, s, p, "crm.deal.list", url.Values{"start": {start}, "select[]": {"ID", "TITLE"}})
		wantOK(t, r)
		if r.Body["total"] != float64(120) {
			t.Fatalf("total %s", r.Raw)
		}
		rows := r.Body["result"].([]any)
		if row := rows[0].(map[string]any); len(row) != 2 || row["TITLE"] != "Deal "+row["ID"].(string) {
			t.Fatalf("select: %v", row)
		}
		all = append(all, ids(t, rows, "ID")...)
		next, ok := r.Body["next"]
		if !ok {
			break
		}
		start = formatNum(next.(float64))
		if pages > 5 {
			t.Fatal("runaway")
		}
	}
	if len(all) != 120 || all[0] != "1" || all[119] != "120" {
		t.Fatalf("got %d rows %v..", len(all), all[:3])
	}
	// Keyset mode: start=-1, no next, total 0.
	last, n := "0", 0
	for {
		r := call(t, s, p, "crm.deal.list", url.Values{"start": {"-1"}, "order[ID]": {"ASC"}, "filter[>ID]": {last}})
		wantOK(t, r)
		if _, ok := r.Body["next"]; ok || r.Body["total"] != float64(0) {
			t.Fatalf("keyset mode reply: next %v total %v", r.Body["next"], r.Body["total"])
		}
		got := ids(t, r.Body["result"], "ID")
		if len(got) == 0 {
			break
		}
		n += len(got)
		last = got[len(got)-1]
	}
	if n != 120 {
		t.Fatalf("keyset rows %d", n)
	}
	// DESC, <ID, =ID, ID.
	r := call(t, s, p, "crm.deal.list", url.Values{"order[ID]": {"DESC"}, "filter[<ID]": {"4"}})
	if got := ids(t, r.Body["result"], "ID"); len(got) != 3 || got[0] != "3" || r.Body["total"] != float64(3) {
		t.Fatalf("desc: %v", got)
	}
	if _, ok := r.Body["next"]; ok {
		t.Fatal("next on the last page")
	}
	r = call(t, s, p, "crm.deal.list", url.Values{"filter[=ID]": {"7"}})
	if got := ids(t, r.Body["result"], "ID"); len(got) != 1 || got[0] != "7" {
		t.Fatalf("=ID: %v", got)
	}
	r = call(t, s, p, "crm.deal.list", url.Values{"filter[ID]": {"8"}})
	if got := ids(t, r.Body["result"], "ID"); len(got) != 1 || got[0] != "8" {
		t.Fatalf("ID: %v", got)
	}
	// Empty result is a JSON array.
	r = call(t, s, p, "crm.deal.list", url.Values{"filter[>ID]": {"1000"}})
	if len(r.Body["result"].([]any)) != 0 {
		t.Fatalf("empty: %s", r.Raw)
	}
}

func formatNum(f float64) string { return strconv.Itoa(int(f)) }

func TestDealCRUD(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedDeals(2)
	r := call(t, s, p, "crm.deal.add", url.Values{"fields[TITLE]": {"Big one"}, "fields[OPPORTUNITY]": {"5000"}})
	wantOK(t, r)
	if r.Body["result"] != float64(3) {
		t.Fatalf("add: %s", r.Raw)
	}
	r = call(t, s, p, "crm.deal.get", url.Values{"id": {"3"}})
	if res := r.Body["result"].(map[string]any); res["TITLE"] != "Big one" || res["ID"] != "3" {
		t.Fatalf("get: %s", r.Raw)
	}
	wantError(t, call(t, s, p, "crm.deal.get", url.Values{"id": {"99"}}), 400, "")
	wantError(t, call(t, s, p, "crm.deal.get", nil), 400, "")
	wantOK(t, call(t, s, p, "crm.deal.update", url.Values{"id": {"3"}, "fields[TITLE]": {"Renamed"}}))
	if d, _ := p.Deal(3); d["TITLE"] != "Renamed" {
		t.Fatal(d)
	}
	wantOK(t, call(t, s, p, "crm.deal.delete", url.Values{"id": {"1"}}))
	if p.Deals() != 2 {
		t.Fatal(p.Deals())
	}
}

func TestTaskList(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedTasks(60)
	r := call(t, s, p, "tasks.task.list", url.Values{"filter[>ID]": {"5"}, "order[ID]": {"ASC"}})
	wantOK(t, r)
	tasks := r.Body["result"].(map[string]any)["tasks"].([]any)
	first := tasks[0].(map[string]any)
	if len(tasks) != 50 || first["id"] != "6" || first["title"] != "Task 6" || r.Body["total"] != float64(55) || r.Body["next"] != float64(50) {
		t.Fatalf("tasks: %d %v total %v next %v", len(tasks), first, r.Body["total"], r.Body["next"])
	}
	if _, upper := first["ID"]; upper {
		t.Fatal("rows must use lowercase keys")
	}
	r = call(t, s, p, "tasks.task.list", url.Values{"start": {"-1"}, "filter[>ID]": {"40"}, "select[]": {"ID", "TITLE"}})
	tasks = r.Body["result"].(map[string]any)["tasks"].([]any)
	if len(tasks) != 20 || r.Body["total"] != float64(0) || len(tasks[0].(map[string]any)) != 2 {
		t.Fatalf("keyset tasks: %s", r.Raw)
	}
	if _, ok := r.Body["next"]; ok {
		t.Fatal("next with start=-1")
	}
	if p.Tasks() != 60 {
		t.Fatal(p.Tasks())
	}
}

func TestInfoMethods(t *testing.T) {
	s := newServer(t, b24test.WithApp("local.0123456789abcd.12345678", "secret"))
	p := s.AddPortal(b24test.PortalStatus("P"), b24test.PortalAppVersion("4"))
	r := call(t, s, p, "app.info", nil)
	res := r.Body["result"].(map[string]any)
	if res["CODE"] != "local.0123456789abcd.12345678" || res["STATUS"] != "P" || res["VERSION"] != float64(4) || res["INSTALLED"] != true {
		t.Fatalf("app.info: %s", r.Raw)
	}
	r = call(t, s, p, "server.time", nil)
	if _, ok := r.Body["result"].(string); !ok {
		t.Fatalf("server.time %s", r.Raw)
	}
}

func TestHandleMethod(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	s.HandleMethod("my.echo", func(pp *b24test.Portal, params map[string]any) (any, error) {
		if pp != p {
			t.Error("wrong portal")
		}
		if _, leaked := params["auth"]; leaked {
			t.Error("auth not stripped")
		}
		return params, nil
	})
	s.HandleMethod("my.fail", func(*b24test.Portal, map[string]any) (any, error) {
		return nil, &b24test.Error{Code: "ERROR_CUSTOM", Description: "nope", Status: 403}
	})
	r := call(t, s, p, "my.echo", url.Values{"a[b][]": {"x", "y"}, "c": {"d"}})
	wantOK(t, r)
	res := r.Body["result"].(map[string]any)
	if res["c"] != "d" || len(res["a"].(map[string]any)["b"].([]any)) != 2 {
		t.Fatalf("echo: %s", r.Raw)
	}
	wantError(t, call(t, s, p, "my.fail", nil), 403, "ERROR_CUSTOM")
}
