package b24test_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/b24go/b24oauth/b24test"
)

func v3err(t *testing.T, r reply, status int, code string) {
	t.Helper()
	e, ok := r.Body["error"].(map[string]any)
	if r.Status != status || !ok || e["code"] != code {
		t.Fatalf("got %d %s, want %d v3 error %s", r.Status, r.Raw, status, code)
	}
}

func TestV3(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	p.SeedDeals(60)
	c := s.Client()
	api := "https://" + p.Domain() + "/rest/api/"
	tok := p.Tokens().AccessToken

	r := postJSON(t, c, api+"crm.deal.get", map[string]any{"auth": tok, "id": 5})
	wantOK(t, r)
	item := r.Body["result"].(map[string]any)["item"].(map[string]any)
	if item["id"] != float64(5) || item["title"] != "Deal 5" {
		t.Fatalf("item: %s", r.Raw)
	}
	if _, ok := r.Body["time"]; !ok {
		t.Fatal("no time")
	}
	r = postJSON(t, c, api+"crm.deal.list", map[string]any{
		"auth": tok, "select": []string{"id", "title"},
		"filter":     [][]any{{"id", ">", 10}, {"id", "<=", 20}},
		"order":      map[string]string{"id": "DESC"},
		"pagination": map[string]any{"limit": 5},
	})
	wantOK(t, r)
	items := r.Body["result"].(map[string]any)["items"].([]any)
	if len(items) != 5 || items[0].(map[string]any)["id"] != float64(20) || len(items[0].(map[string]any)) != 2 {
		t.Fatalf("items: %s", r.Raw)
	}
	v3err(t, postJSON(t, c, api+"crm.deal.get", map[string]any{"auth": tok}), 400, "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION")
	v3err(t, postJSON(t, c, api+"crm.deal.get", map[string]any{"auth": tok, "id": 999}), 400, "BITRIX_REST_V3_EXCEPTION_ENTITYNOTFOUNDEXCEPTION")
	v3err(t, postJSON(t, c, api+"crm.deal.list", map[string]any{"auth": tok, "select": []string{"bogus"}}), 400, "BITRIX_REST_V3_EXCEPTION_UNKNOWNDTOPROPERTYEXCEPTION")
	v3err(t, postRaw(t, c, api+"crm.deal.get", "application/x-www-form-urlencoded", "auth="+tok+"&id=5"), 400, "BITRIX_REST_V3_EXCEPTION_INVALIDJSONEXCEPTION")
	v3err(t, postRaw(t, c, api+"crm.deal.get", "application/json", "{broken"), 400, "BITRIX_REST_V3_EXCEPTION_INVALIDJSONEXCEPTION")
	// Query auth is not read by v3.
	wantError(t, get(t, c, api+"profile?auth="+tok), 401, "NO_AUTH_FOUND")
	// Bearer works, parameterless GET works.
	req, _ := http.NewRequest(http.MethodGet, api+"profile", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	wantOK(t, do(t, c, req))
	// Auth errors: classic shape by default.
	p.ExpireAccessToken()
	wantError(t, postJSON(t, c, api+"crm.deal.get", map[string]any{"auth": tok, "id": 5}), 401, "expired_token")
	if p.Requests("crm.deal.get") != 6 {
		t.Fatal(p.Requests("crm.deal.get"))
	}
}

func TestV3ErrorShapeKnobAndHandler(t *testing.T) {
	s := newServer(t, b24test.WithV3AuthErrorShape("v3"))
	p := s.AddPortal()
	s.HandleMethodV3("my.thing", func(*b24test.Portal, map[string]any) (any, error) {
		return map[string]any{"result": true}, nil
	})
	api := "https://" + p.Domain() + "/rest/api/"
	r := postJSON(t, s.Client(), api+"my.thing", map[string]any{"auth": p.Tokens().AccessToken})
	wantOK(t, r)
	if r.Body["result"].(map[string]any)["result"] != true {
		t.Fatal(r.Raw)
	}
	v3err(t, postJSON(t, s.Client(), api+"my.thing", map[string]any{"auth": "bad"}), 401, "invalid_token")
	v3err(t, postJSON(t, s.Client(), api+"no.such", map[string]any{"auth": p.Tokens().AccessToken}), 404, "BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION")
}

func TestRateLimit(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now), b24test.WithRateLimit(5, 2))
	p := s.AddPortal()
	other := s.AddPortal()
	for i := 0; i < 5; i++ {
		wantOK(t, call(t, s, p, "profile", nil))
	}
	r := call(t, s, p, "profile", nil)
	wantError(t, r, 503, "QUERY_LIMIT_EXCEEDED")
	if r.Body["error_description"] != "Too many requests" {
		t.Fatal(r.Raw)
	}
	// v3 shares the bucket; other portals have their own.
	wantError(t, postJSON(t, s.Client(), "https://"+p.Domain()+"/rest/api/profile", map[string]any{"auth": p.Tokens().AccessToken}), 503, "QUERY_LIMIT_EXCEEDED")
	wantOK(t, call(t, s, other, "profile", nil))
	clk.Advance(500 * time.Millisecond) // drains one
	wantOK(t, call(t, s, p, "profile", nil))
	wantError(t, call(t, s, p, "profile", nil), 503, "QUERY_LIMIT_EXCEEDED")
	clk.Advance(10 * time.Second) // fully drained
	// A batch of many commands is one request.
	v := url.Values{}
	for i := 0; i < 10; i++ {
		v.Set("cmd[k"+formatNum(float64(i))+"]", "profile")
	}
	for i := 0; i < 5; i++ {
		wantOK(t, call(t, s, p, "batch", v))
	}
	wantError(t, call(t, s, p, "batch", v), 503, "QUERY_LIMIT_EXCEEDED")
	if p.Rejections() != 4 {
		t.Fatalf("rejections %d", p.Rejections())
	}
}

func TestOperatingLimit(t *testing.T) {
	clk := b24test.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newServer(t, b24test.WithClock(clk.Now), b24test.WithOperatingLimit(10*time.Minute, 100*time.Second))
	s.SetMethodDuration("crm.deal.list", 40*time.Second)
	p := s.AddPortal()
	var last reply
	for i := 0; i < 3; i++ { // 40, 80, 120 s used
		last = call(t, s, p, "crm.deal.list", nil)
		wantOK(t, last)
	}
	tm := last.Body["time"].(map[string]any)
	if tm["operating"] != float64(120) || tm["operating_reset_at"] != float64(clk.Now().Add(10*time.Minute).Unix()) || tm["duration"] != float64(40) {
		t.Fatalf("time block: %v", tm)
	}
	r := call(t, s, p, "crm.deal.list", nil)
	wantError(t, r, 429, "OPERATION_TIME_LIMIT")
	wantOK(t, call(t, s, p, "profile", nil)) // other methods keep working
	// Inside a batch the sub-call is refused, the batch is 200.
	b := call(t, s, p, "batch", batchForm([][2]string{{"x", "crm.deal.list"}}, false))
	wantOK(t, b)
	if b.Body["result"].(map[string]any)["result_error"].(map[string]any)["x"].(map[string]any)["error"] != "OPERATION_TIME_LIMIT" {
		t.Fatal(b.Raw)
	}
	if p.OperatingRejections() != 2 {
		t.Fatal(p.OperatingRejections())
	}
	clk.Advance(10*time.Minute + time.Second)
	wantOK(t, call(t, s, p, "crm.deal.list", nil))
}
