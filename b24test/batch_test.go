package b24test_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/b24go/b24oauth/b24test"
)

func batchForm(cmds [][2]string, halt bool) url.Values {
	v := url.Values{}
	for _, c := range cmds {
		v.Set("cmd["+c[0]+"]", c[1])
	}
	if halt {
		v.Set("halt", "1")
	}
	return v
}

func TestBatchReferences(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedDeals(70)
	r := call(t, s, p, "batch", batchForm([][2]string{
		{"list", "crm.deal.list?" + b24test.EncodePHPQuery(map[string]any{"order": map[string]any{"ID": "DESC"}, "select": []string{"ID", "TITLE"}})},
		{"one", "crm.deal.get?id=$result[list][0][ID]"},
		{"str", "crm.deal.list?filter%5B%3DTITLE%5D=Deal%20$result[list][1][ID]"}, // keys are encoded, as http_build_query does
		{"tot", "crm.deal.list?filter[<ID]=$total[list]&start=-1"},
		{"nx", "crm.deal.list?start=$next[list]"},
	}, false))
	wantOK(t, r)
	res := r.Body["result"].(map[string]any)
	results := res["result"].(map[string]any)
	if got := results["one"].(map[string]any)["ID"]; got != "70" {
		t.Fatalf("whole-value ref: %v", got)
	}
	if got := ids(t, results["str"], "ID"); len(got) != 1 || got[0] != "69" {
		t.Fatalf("string ref: %v", got)
	}
	if got := ids(t, results["tot"], "ID"); len(got) != 50 || got[len(got)-1] != "50" {
		t.Fatalf("$total ref: %d", len(got))
	}
	if got := ids(t, results["nx"], "ID"); got[0] != "51" {
		t.Fatalf("$next ref: %v", got[0])
	}
	if res["result_total"].(map[string]any)["list"] != float64(70) || res["result_next"].(map[string]any)["list"] != float64(50) {
		t.Fatalf("totals/next: %v %v", res["result_total"], res["result_next"])
	}
	if !strings.Contains(r.Raw, `"result_error":[]`) {
		t.Fatalf("empty result_error must be []: %s", r.Raw[:200])
	}
	if _, ok := res["result_time"].(map[string]any)["one"].(map[string]any)["start"]; !ok {
		t.Fatal("result_time")
	}
	if p.Requests("batch") != 1 || p.BatchSubcalls("crm.deal.list") != 4 || p.BatchSubcalls("crm.deal.get") != 1 || p.Requests("crm.deal.list") != 0 {
		t.Fatal("counters")
	}
}

func TestBatchErrorsAndHalt(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedDeals(3)
	cmds := [][2]string{
		{"a", "crm.deal.get?id=1"},
		{"b", "nope.method"},
		{"c", "batch?cmd[x]=profile"},
		{"d", "crm.deal.get?id=2"},
	}
	r := call(t, s, p, "batch", batchForm(cmds, false))
	wantOK(t, r)
	res := r.Body["result"].(map[string]any)
	errs := res["result_error"].(map[string]any)
	if errs["b"].(map[string]any)["error"] != "ERROR_METHOD_NOT_FOUND" || errs["c"].(map[string]any)["error"] != "ERROR_BATCH_METHOD_NOT_ALLOWED" {
		t.Fatalf("errors: %v", errs)
	}
	if len(res["result"].(map[string]any)) != 2 {
		t.Fatalf("results: %v", res["result"])
	}
	if !strings.Contains(r.Raw, `"result_total":[]`) || !strings.Contains(r.Raw, `"result_next":[]`) {
		t.Fatalf("empty maps: %s", r.Raw)
	}
	// halt stops after the first failure.
	r = call(t, s, p, "batch", batchForm(cmds, true))
	res = r.Body["result"].(map[string]any)
	if len(res["result"].(map[string]any)) != 1 || len(res["result_error"].(map[string]any)) != 1 {
		t.Fatalf("halt: %s", r.Raw)
	}
}

func TestBatchLimitAndList(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	v := url.Values{}
	for i := 0; i < 52; i++ {
		v.Set(fmt.Sprintf("cmd[k%02d]", i), "user.admin")
	}
	r := call(t, s, p, "batch", v)
	res := r.Body["result"].(map[string]any)
	errs := res["result_error"].(map[string]any)
	if len(res["result"].(map[string]any)) != 50 || len(errs) != 2 || errs["k50"].(map[string]any)["error"] != "ERROR_BATCH_LENGTH_EXCEEDED" {
		t.Fatalf("51+: %d results, errors %v", len(res["result"].(map[string]any)), errs)
	}
	// cmd as a list (JSON body): results come back as JSON arrays, like PHP.
	jr := postJSON(t, s.Client(), p.ClientEndpoint()+"batch", map[string]any{
		"auth": p.Tokens().AccessToken,
		"cmd":  []string{"user.admin", "profile", "crm.deal.list?filter[>ID]=0"},
	})
	wantOK(t, jr)
	var typed struct {
		Result struct {
			Result      []json.RawMessage `json:"result"`
			ResultError []any             `json:"result_error"`
			ResultTotal map[string]int    `json:"result_total"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(jr.Raw), &typed); err != nil {
		t.Fatalf("%v: %s", err, jr.Raw)
	}
	if len(typed.Result.Result) != 3 || typed.Result.ResultTotal["2"] != 0 {
		t.Fatalf("list batch: %s", jr.Raw)
	}
}

func TestBatchUsesOuterAuth(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	r := call(t, s, p, "batch", batchForm([][2]string{{"p", "profile?auth=garbage"}}, false))
	if r.Body["result"].(map[string]any)["result"].(map[string]any)["p"].(map[string]any)["ID"] != "1" {
		t.Fatalf("%s", r.Raw)
	}
	p.ExpireAccessToken()
	wantError(t, call(t, s, p, "batch", batchForm([][2]string{{"p", "profile"}}, false)), 401, "expired_token")
}
