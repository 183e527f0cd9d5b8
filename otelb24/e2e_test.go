package otelb24_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// plantedSecret is the client secret of the e2e App: distinctive, so that a leak is found.
const plantedSecret = "PlantedClientSecretOtelb24E2eQ7x9Zk2Lm4Np6Rs8Tv0Wy3"

// secretBook collects every token, application token and secret a run used.
type secretBook struct {
	mu  sync.Mutex
	all map[string]bool
}

func (b *secretBook) add(values ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.all == nil {
		b.all = map[string]bool{}
	}
	for _, v := range values {
		if v != "" {
			b.all[v] = true
		}
	}
}

// portal records the portal's current pair and application token.
func (b *secretBook) portal(p *b24test.Portal) {
	tok := p.Tokens()
	b.add(tok.AccessToken, tok.RefreshToken, p.ApplicationToken())
}

// event records the tokens an event carries (auth[access_token], auth[application_token],
// AUTH_ID, REFRESH_ID...).
func (b *secretBook) event(ev b24test.Event) b24test.Event {
	for _, vals := range []map[string][]string{ev.Form, ev.Query} {
		for k, vs := range vals {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "token") || strings.Contains(lk, "auth_id") || strings.Contains(lk, "refresh_id") {
				b.add(vs...)
			}
		}
	}
	return ev
}

func (b *secretBook) list() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.all))
	for s := range b.all {
		out = append(out, s)
	}
	return out
}

// TestAppLife runs an App with the Observer through a portal's whole life against the fake
// Bitrix24 (install, calls v2 and v3, a batch, lists, a rate-limit retry, failures, a token
// expiry and its refresh, ordinary, rejected and offline events, a revoked portal, an
// uninstall), then checks the metrics and spans it produced, and that none of their strings
// holds any token, application token or the client secret the run used.
func TestAppLife(t *testing.T) {
	h := newHarness(t)
	fake := b24test.NewServer(b24test.WithApp("local.0123456789abcd.12345678", plantedSecret))
	t.Cleanup(fake.Close)
	var book secretBook
	book.add(plantedSecret)
	// test.flaky is refused by the portal's rate limit on every other request.
	var flaky sync.Mutex
	refuse := true
	fake.HandleMethod("test.flaky", func(p *b24test.Portal, _ map[string]any) (any, error) {
		flaky.Lock()
		defer flaky.Unlock()
		refuse = !refuse
		if !refuse {
			return nil, &b24test.Error{Code: "QUERY_LIMIT_EXCEEDED", Description: "Too many requests", Status: http.StatusServiceUnavailable}
		}
		return "ok", nil
	})
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: "local.0123456789abcd.12345678", ClientSecret: plantedSecret,
		Store:        b24oauth.NewMemoryStore(),
		HTTPClient:   fake.Client(),
		OAuthServers: []string{fake.OAuthOrigin()},
		Restriction: &b24oauth.RestrictionParams{
			RateLimit: b24oauth.RateLimitParams{DrainRate: -1}, MaxRetries: 3, RetryDelay: time.Millisecond,
		},
		Observer: h.obs,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	ctx := context.Background()
	send := func(what string, hd http.Handler, ev b24test.Event, want int) {
		t.Helper()
		if rec := book.event(ev).Send(hd); rec.Code != want {
			t.Fatalf("%s: %d %s, want %d", what, rec.Code, rec.Body, want)
		}
	}

	// Install.
	p := fake.AddPortal()
	book.portal(p)
	send("install", app.InstallHandler(), p.InstallEvent(), http.StatusOK)
	book.portal(p)
	p.SeedDeals(120)
	c, err := app.ClientForMember(ctx, p.MemberID())
	if err != nil {
		t.Fatal(err)
	}

	// Calls v2 and v3, a batch, lists.
	if _, err := c.Call(ctx, "profile", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CallV3(ctx, "crm.deal.get", map[string]any{"id": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Batch(ctx, []b24oauth.BatchCommand{
		{Key: "a", Method: "crm.deal.get", Params: map[string]any{"id": 1}},
		{Key: "b", Method: "crm.deal.get", Params: map[string]any{"id": 2}},
	}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, err := range c.List(ctx, "crm.deal.list", map[string]any{"select": []string{"ID"}}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	for _, err := range c.ListV3(ctx, "crm.deal.list", nil) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 240 {
		t.Fatalf("lists gave %d deals, want 240", n)
	}

	// A rate-limit retry, and failures.
	if _, err := c.Call(ctx, "test.flaky", nil); err != nil {
		t.Fatalf("test.flaky: %v", err)
	}
	if _, err := c.Call(ctx, "no.such.method", nil); !errors.Is(err, &b24oauth.APIError{Code: "ERROR_METHOD_NOT_FOUND"}) {
		t.Fatalf("no.such.method: %v", err)
	}
	var apiErr *b24oauth.APIError
	if _, err := c.CallV3(ctx, "crm.deal.get", map[string]any{"id": 99999}); !errors.As(err, &apiErr) {
		t.Fatalf("a missing deal: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Call(canceled, "profile", nil); err == nil {
		t.Fatal("a call with a canceled context succeeded")
	}

	// The token expires: the next call refreshes it.
	p.ExpireAccessToken()
	if _, err := c.Call(ctx, "profile", nil); err != nil {
		t.Fatal(err)
	}
	book.portal(p)

	// An ordinary event, a forged one, an offline one.
	var handled []string
	var hmu sync.Mutex
	fn := func(_ context.Context, ev b24oauth.Event, _ *b24oauth.B24OAuth) error {
		hmu.Lock()
		handled = append(handled, ev.Name)
		hmu.Unlock()
		return nil
	}
	events := app.EventHandler(fn)
	deal := map[string]any{"FIELDS": map[string]any{"ID": "1"}}
	send("event", events, p.NewEvent("ONCRMDEALADD", deal, 1), http.StatusOK)
	send("forged event", events, p.ForgedEvent("ONCRMDEALADD", deal), http.StatusForbidden)
	p.QueueOfflineEvent("ONCRMDEALUPDATE", map[string]any{"FIELDS": map[string]any{"ID": 1}})
	if got, err := app.PullOfflineEvents(ctx, p.MemberID(), fn); err != nil || got != 1 {
		t.Fatalf("PullOfflineEvents: %d, %v", got, err)
	}

	// Another portal loses its refresh token: the refresh is revoked.
	lost := fake.AddPortal()
	book.portal(lost)
	send("install of the second portal", app.InstallHandler(), lost.InstallEvent(), http.StatusOK)
	book.portal(lost)
	lc, err := app.ClientForMember(ctx, lost.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	lost.ExpireAccessToken()
	lost.ExpireRefreshToken()
	var rte *b24oauth.RefreshTokenError
	if _, err := lc.Call(ctx, "profile", nil); !errors.As(err, &rte) {
		t.Fatalf("a call of the portal whose refresh token expired: %v", err)
	}

	// Uninstall; the client then has no installation.
	send("uninstall", app.UninstallHandler(), p.UninstallEvent(false), http.StatusOK)
	if _, err := c.Call(ctx, "profile", nil); err == nil {
		t.Fatal("a call after the uninstall succeeded")
	}
	book.portal(p)
	book.portal(lost)
	for _, portal := range []*b24test.Portal{p, lost} {
		book.add(portal.ApplicationToken())
	}

	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	ms := h.collect(t)
	spans := h.spans.Ended()
	t.Logf("%d spans", len(spans))

	// Every metric is there, with only its own attribute keys.
	keys := map[string][]string{
		"b24oauth.calls":            {"api_version", "method", "outcome"},
		"b24oauth.call.duration":    {"api_version", "method", "outcome"},
		"b24oauth.retries":          {"api_version", "method", "reason"},
		"b24oauth.limiter.wait":     {"api_version", "fallback", "limit", "method", "outcome"},
		"b24oauth.refreshes":        {"outcome", "trigger"},
		"b24oauth.refresh.duration": {"outcome", "trigger"},
		"b24oauth.store.duration":   {"op", "outcome"},
		"b24oauth.events":           {"event", "http.response.status_code", "offline", "outcome"},
		"b24oauth.event.duration":   {"event", "http.response.status_code", "offline", "outcome"},
	}
	if len(ms) != len(keys) {
		t.Errorf("metrics %v, want %d", names(ms), len(keys))
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			want := strings.Join(keys[m.Name], ",")
			for _, set := range dataPointSets(m) {
				var got []string
				for _, kv := range set.ToSlice() {
					got = append(got, string(kv.Key))
					if v := kv.Value.Emit(); v == p.MemberID() || v == lost.MemberID() || strings.Contains(v, p.Domain()) || strings.Contains(v, lost.Domain()) {
						t.Errorf("%s: attribute %s=%s names a portal", m.Name, kv.Key, v)
					}
				}
				if strings.Join(got, ",") != want {
					t.Errorf("%s: attributes %v, want the keys %s", m.Name, got, want)
				}
			}
		}
	}

	calls := counts(t, ms, "b24oauth.calls")
	t.Logf("b24oauth.calls: %v", calls)
	for key, min := range map[string]int64{
		"api_version=v2,method=profile,outcome=ok":               2,
		"api_version=v3,method=crm.deal.get,outcome=ok":          1,
		"api_version=v3,method=crm.deal.get,outcome=api_error":   1,
		"api_version=v2,method=no.such.method,outcome=api_error": 1,
		"api_version=v2,method=test.flaky,outcome=ok":            1,
		"api_version=v2,method=profile,outcome=canceled":         1,
		"api_version=v2,method=profile,outcome=auth_error":       2,
		// Batch, and the offline events' event.offline.get and event.offline.clear in batches.
		"api_version=v2,method=batch,outcome=ok":         3,
		"api_version=v2,method=crm.deal.list,outcome=ok": 1,
		"api_version=v3,method=crm.deal.list,outcome=ok": 1,
		// The installs check that their tokens are an administrator's.
		"api_version=v2,method=user.admin,outcome=ok": 2,
	} {
		if calls[key] < min {
			t.Errorf("b24oauth.calls[%s] = %d, want at least %d", key, calls[key], min)
		}
	}
	var totalCalls int64
	for _, v := range calls {
		totalCalls += v
	}
	durations := histograms(t, ms, "b24oauth.call.duration")
	for key, n := range calls {
		if dp := durations[key]; dp.Count != uint64(n) || (strings.HasSuffix(key, "outcome=ok") && dp.Sum <= 0) {
			t.Errorf("call.duration[%s]: count %d sum %v, want %d calls taking time", key, dp.Count, dp.Sum, n)
		}
	}

	retries := counts(t, ms, "b24oauth.retries")
	t.Logf("b24oauth.retries: %v", retries)
	if retries["api_version=v2,method=test.flaky,reason=query_limit"] != 1 {
		t.Errorf("no query_limit retry of test.flaky: %v", retries)
	}
	if retries["api_version=v2,method=profile,reason=expired_token"] < 1 {
		t.Errorf("no expired_token retry of profile: %v", retries)
	}

	refreshes := counts(t, ms, "b24oauth.refreshes")
	t.Logf("b24oauth.refreshes: %v", refreshes)
	// Both refreshes follow a 401: the portal refused an access token the client thought valid.
	if refreshes["outcome=ok,trigger=rejected"] != 1 || refreshes["outcome=revoked,trigger=rejected"] != 1 || len(refreshes) != 2 {
		t.Errorf("b24oauth.refreshes = %v, want one ok and one revoked, both after a rejected token", refreshes)
	}
	if dp := histograms(t, ms, "b24oauth.refresh.duration")["outcome=ok,trigger=rejected"]; dp.Count != 1 || dp.Sum <= 0 {
		t.Errorf("refresh.duration[ok]: %+v", dp)
	}

	evs := counts(t, ms, "b24oauth.events")
	t.Logf("b24oauth.events: %v", evs)
	for key, want := range map[string]int64{
		"event=ONAPPINSTALL,http.response.status_code=200,offline=false,outcome=accepted":   2,
		"event=ONCRMDEALADD,http.response.status_code=200,offline=false,outcome=accepted":   1,
		"event=,http.response.status_code=403,offline=false,outcome=rejected":               1,
		"event=ONCRMDEALUPDATE,http.response.status_code=200,offline=true,outcome=accepted": 1,
		"event=ONAPPUNINSTALL,http.response.status_code=200,offline=false,outcome=accepted": 1,
	} {
		if evs[key] != want {
			t.Errorf("b24oauth.events[%s] = %d, want %d", key, evs[key], want)
		}
	}
	stores := histograms(t, ms, "b24oauth.store.duration")
	for _, op := range []string{"load", "create", "update", "delete_if"} {
		if stores["op="+op+",outcome=ok"].Count == 0 {
			t.Errorf("no store operation %s recorded: %v", op, keysOf(stores))
		}
	}
	waits := histograms(t, ms, "b24oauth.limiter.wait")
	var waited uint64
	for _, dp := range waits {
		waited += dp.Count
	}
	if waited == 0 {
		t.Error("no limiter wait recorded")
	}

	// One call span per call; refreshes are children of the calls that waited for them.
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	if got := int64(len(byName["b24oauth.call"])); got != totalCalls {
		t.Errorf("%d call spans, %d calls counted", got, totalCalls)
	}
	if got := len(byName["b24oauth.refresh"]); got != 2 {
		t.Errorf("%d refresh spans, want 2", got)
	}
	callSpans := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range byName["b24oauth.call"] {
		callSpans[s.SpanContext().SpanID()] = s
		a := spanAttrs(s)
		if s.SpanKind() != trace.SpanKindClient || a["b24oauth.method"] == "" || a["b24oauth.outcome"] == "" {
			t.Errorf("call span %v: kind %v", a, s.SpanKind())
		}
		switch a["b24oauth.member_id"] {
		case p.MemberID():
			checkMap(t, "call span", a, map[string]string{"server.address": p.Domain()})
		case lost.MemberID():
			checkMap(t, "call span", a, map[string]string{"server.address": lost.Domain()})
		default:
			t.Errorf("call span of member %q", a["b24oauth.member_id"])
		}
		if a["b24oauth.outcome"] != "ok" && (s.Status().Code != codes.Error || a["error.type"] == "") {
			t.Errorf("failed call span %v: status %v", a, s.Status())
		}
	}
	for _, s := range byName["b24oauth.refresh"] {
		parent, ok := callSpans[s.Parent().SpanID()]
		if !ok {
			t.Errorf("refresh span %v is not a call's child", spanAttrs(s))
			continue
		}
		if spanAttrs(parent)["b24oauth.member_id"] != spanAttrs(s)["b24oauth.member_id"] {
			t.Errorf("refresh span of %s under a call of %s", spanAttrs(s)["b24oauth.member_id"], spanAttrs(parent)["b24oauth.member_id"])
		}
		// The refresh runs in the store's Update: its store operations are the span's events.
		updates := 0
		for _, ev := range s.Events() {
			if ev.Name == "b24oauth.store" && eventAttrs(ev)["b24oauth.store.op"] == "update" {
				updates++
			}
		}
		if updates == 0 {
			t.Errorf("refresh span %v has no store update event: %v", spanAttrs(s), s.Events())
		}
	}
	var retryEvents []string
	for _, s := range byName["b24oauth.call"] {
		for _, ev := range s.Events() {
			if ev.Name == "b24oauth.retry" {
				retryEvents = append(retryEvents, spanAttrs(s)["b24oauth.method"]+":"+eventAttrs(ev)["b24oauth.retry.reason"])
			}
		}
	}
	for _, want := range []string{"test.flaky:query_limit", "profile:expired_token"} {
		if !contains(retryEvents, want) {
			t.Errorf("no retry event %s among %v", want, retryEvents)
		}
	}

	// Not one token, application token or the client secret in any of it.
	secrets := book.list()
	if len(secrets) < 8 {
		t.Fatalf("only %d secrets collected", len(secrets))
	}
	strs := telemetryStrings(rm, spans)
	checkNoSecret(t, strs, secrets...)
	// The check can fail: a span carrying a token is found.
	_, leak := h.tp.Tracer("test").Start(ctx, "leak")
	leak.SetAttributes(attribute.String("x", "part "+p.Tokens().RefreshToken[2:20]+" of a token"))
	leak.End()
	if found := findSecrets(telemetryStrings(metricdata.ResourceMetrics{}, h.spans.Ended()[len(spans):]), secrets...); len(found) != 1 {
		t.Errorf("findSecrets found %q in a span carrying 18 characters of a token, want it once", found)
	}
}

// dataPointSets returns the attribute sets of a metric's data points.
func dataPointSets(m metricdata.Metrics) []attribute.Set {
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	}
	return out
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
