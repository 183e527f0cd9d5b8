package otelb24_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/otelb24"
)

const (
	testMember = "0123456789abcdef0123456789abcdef"
	testDomain = "acme.bitrix24.com"
)

var dealGet = b24oauth.CallInfo{Method: "crm.deal.get", APIVersion: b24oauth.APIVersionV2, MemberID: testMember, Domain: testDomain, Commands: 1}

func TestCallOK(t *testing.T) {
	h := newHarness(t)
	ctx := h.obs.CallStart(context.Background(), dealGet)
	if !trace.SpanFromContext(ctx).IsRecording() {
		t.Fatal("CallStart's context carries no recording span")
	}
	h.obs.CallEnd(ctx, dealGet, b24oauth.CallResult{Outcome: b24oauth.OutcomeOK, Status: 200, Duration: 120 * time.Millisecond})
	h.obs.CallEnd(h.obs.CallStart(context.Background(), dealGet), dealGet,
		b24oauth.CallResult{Outcome: b24oauth.OutcomeOK, Status: 200, Duration: 30 * time.Millisecond})

	ms := h.collect(t)
	key := "api_version=v2,method=crm.deal.get,outcome=ok"
	if got := counts(t, ms, "b24oauth.calls"); len(got) != 1 || got[key] != 2 {
		t.Errorf("b24oauth.calls = %v, want {%s: 2}", got, key)
	}
	dp, ok := histograms(t, ms, "b24oauth.call.duration")[key]
	if !ok || dp.Count != 2 || dp.Sum < 0.1499 || dp.Sum > 0.1501 {
		t.Errorf("b24oauth.call.duration[%s] = count %d sum %v, want 2 and 0.15 s", key, dp.Count, dp.Sum)
	}
	wantBounds := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}
	if !slices.Equal(dp.Bounds, wantBounds) {
		t.Errorf("call.duration bounds = %v, want %v", dp.Bounds, wantBounds)
	}
	// 120 ms falls in (0.1, 0.25], 30 ms in (0.025, 0.05].
	if dp.BucketCounts[6] != 1 || dp.BucketCounts[3] != 1 {
		t.Errorf("bucket counts = %v", dp.BucketCounts)
	}
	for name, unit := range map[string]string{"b24oauth.calls": "{call}", "b24oauth.call.duration": "s"} {
		if ms[name].Unit != unit || ms[name].Description == "" {
			t.Errorf("%s: unit %q description %q, want unit %q and a description", name, ms[name].Unit, ms[name].Description, unit)
		}
	}

	spans := h.spans.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans ended, want 2", len(spans))
	}
	s := spans[0]
	if s.Name() != "b24oauth.call" || s.SpanKind() != trace.SpanKindClient {
		t.Errorf("span %q kind %v, want b24oauth.call client", s.Name(), s.SpanKind())
	}
	if s.InstrumentationScope().Name != otelb24.ScopeName {
		t.Errorf("span scope %q", s.InstrumentationScope().Name)
	}
	checkMap(t, "call span", spanAttrs(s), map[string]string{
		"server.address": testDomain, "b24oauth.method": "crm.deal.get", "b24oauth.api_version": "v2",
		"b24oauth.member_id": testMember, "b24oauth.commands": "1", "b24oauth.outcome": "ok",
		"b24oauth.retries": "0", "http.response.status_code": "200", "error.type": "",
	})
	if s.Status().Code != codes.Unset {
		t.Errorf("status %v %q, want unset", s.Status().Code, s.Status().Description)
	}
}

func TestCallFailures(t *testing.T) {
	apiErr := &b24oauth.APIError{Code: "ERROR_NOT_FOUND", Description: "Not found", Status: 400, Method: "crm.deal.get"}
	for _, tc := range []struct {
		name    string
		res     b24oauth.CallResult
		errType string
		status  string
	}{
		{"api error", b24oauth.CallResult{Outcome: b24oauth.OutcomeAPIError, Status: 400, Code: "ERROR_NOT_FOUND", Err: apiErr}, "ERROR_NOT_FOUND", "400"},
		{"limited", b24oauth.CallResult{Outcome: b24oauth.OutcomeLimited, Status: 503, Code: "QUERY_LIMIT_EXCEEDED", Retries: 3, Err: errors.New("limited")}, "QUERY_LIMIT_EXCEEDED", "503"},
		{"transport", b24oauth.CallResult{Outcome: b24oauth.OutcomeTransport, Err: errors.New("dial tcp: refused")}, "transport", ""},
		{"canceled", b24oauth.CallResult{Outcome: b24oauth.OutcomeCanceled, Err: context.Canceled}, "canceled", ""},
		{"auth without error", b24oauth.CallResult{Outcome: b24oauth.OutcomeAuthError}, "auth_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.obs.CallEnd(h.obs.CallStart(context.Background(), dealGet), dealGet, tc.res)
			key := "api_version=v2,method=crm.deal.get,outcome=" + tc.res.Outcome
			if got := counts(t, h.collect(t), "b24oauth.calls"); got[key] != 1 || len(got) != 1 {
				t.Errorf("b24oauth.calls = %v, want {%s: 1}", got, key)
			}
			s := h.spans.Ended()[0]
			checkMap(t, "span", spanAttrs(s), map[string]string{
				"error.type": tc.errType, "http.response.status_code": tc.status, "b24oauth.outcome": tc.res.Outcome,
				"b24oauth.retries": fmt.Sprint(tc.res.Retries),
			})
			want := tc.res.Outcome
			if tc.res.Err != nil {
				want = tc.res.Err.Error()
			}
			if s.Status().Code != codes.Error || s.Status().Description != want {
				t.Errorf("status %v %q, want Error %q", s.Status().Code, s.Status().Description, want)
			}
		})
	}
}

func TestRetriesAndLimiterWaits(t *testing.T) {
	h := newHarness(t)
	batch := b24oauth.CallInfo{Method: "batch", APIVersion: b24oauth.APIVersionV3, MemberID: testMember, Domain: testDomain, Commands: 50}
	ctx := h.obs.CallStart(context.Background(), batch)
	h.obs.LimiterWait(ctx, batch, b24oauth.LimiterWaitInfo{})
	h.obs.Retry(ctx, batch, b24oauth.RetryInfo{Attempt: 1, Reason: b24oauth.RetryQueryLimit, Delay: 500 * time.Millisecond})
	h.obs.LimiterWait(ctx, batch, b24oauth.LimiterWaitInfo{Wait: 2 * time.Second, Limit: b24oauth.LimitBucket, Fallback: true})
	h.obs.Retry(ctx, batch, b24oauth.RetryInfo{Attempt: 2, Reason: b24oauth.RetryExpiredToken})
	h.obs.LimiterWait(ctx, batch, b24oauth.LimiterWaitInfo{Wait: time.Second, Limit: b24oauth.LimitShared, Err: context.DeadlineExceeded})
	h.obs.CallEnd(ctx, batch, b24oauth.CallResult{Outcome: b24oauth.OutcomeLimited, Retries: 2, Err: context.DeadlineExceeded})

	ms := h.collect(t)
	wantRetries := map[string]int64{
		"api_version=v3,method=batch,reason=query_limit":   1,
		"api_version=v3,method=batch,reason=expired_token": 1,
	}
	if got := counts(t, ms, "b24oauth.retries"); fmt.Sprint(got) != fmt.Sprint(wantRetries) {
		t.Errorf("b24oauth.retries = %v, want %v", got, wantRetries)
	}
	if ms["b24oauth.retries"].Unit != "{retry}" {
		t.Errorf("retries unit %q", ms["b24oauth.retries"].Unit)
	}
	waits := histograms(t, ms, "b24oauth.limiter.wait")
	none := waits["api_version=v3,fallback=false,limit=none,method=batch,outcome=ok"]
	bucket := waits["api_version=v3,fallback=true,limit=bucket,method=batch,outcome=ok"]
	failed := waits["api_version=v3,fallback=false,limit=shared,method=batch,outcome=error"]
	if len(waits) != 3 || none.Count != 1 || none.Sum != 0 || bucket.Count != 1 || bucket.Sum != 2 || failed.Count != 1 || failed.Sum != 1 {
		t.Errorf("b24oauth.limiter.wait = %v", keysOf(waits))
	}
	if none.Bounds[0] != 0.0001 || none.BucketCounts[0] != 1 {
		t.Errorf("a zero wait is not in the first bucket (up to 0.1 ms): bounds %v counts %v", none.Bounds, none.BucketCounts)
	}
	if ms["b24oauth.limiter.wait"].Unit != "s" {
		t.Errorf("limiter.wait unit %q", ms["b24oauth.limiter.wait"].Unit)
	}

	s := h.spans.Ended()[0]
	checkMap(t, "batch span", spanAttrs(s), map[string]string{"b24oauth.commands": "50", "b24oauth.retries": "2", "b24oauth.api_version": "v3"})
	var got []string
	for _, ev := range s.Events() {
		got = append(got, ev.Name)
	}
	// The first wait, none at all, is no event.
	want := []string{"b24oauth.retry", "b24oauth.limiter.wait", "b24oauth.retry", "b24oauth.limiter.wait"}
	if !slices.Equal(got, want) {
		t.Fatalf("span events %v, want %v", got, want)
	}
	checkMap(t, "retry 1", eventAttrs(s.Events()[0]), map[string]string{
		"b24oauth.retry.attempt": "1", "b24oauth.retry.reason": "query_limit", "b24oauth.retry.delay": "0.5",
	})
	checkMap(t, "retry 2", eventAttrs(s.Events()[2]), map[string]string{"b24oauth.retry.attempt": "2", "b24oauth.retry.reason": "expired_token", "b24oauth.retry.delay": "0"})
	checkMap(t, "wait 2", eventAttrs(s.Events()[1]), map[string]string{
		"b24oauth.limiter.wait": "2", "b24oauth.limiter.limit": "bucket", "b24oauth.limiter.fallback": "true", "error.message": "",
	})
	checkMap(t, "failed wait", eventAttrs(s.Events()[3]), map[string]string{
		"b24oauth.limiter.wait": "1", "b24oauth.limiter.limit": "shared", "b24oauth.limiter.fallback": "", "error.message": context.DeadlineExceeded.Error(),
	})
}

func TestRefreshes(t *testing.T) {
	h := newHarness(t)
	refresh := func(ctx context.Context, trigger string, res b24oauth.RefreshResult) {
		info := b24oauth.RefreshInfo{MemberID: testMember, Domain: testDomain, Trigger: trigger}
		h.obs.RefreshEnd(h.obs.RefreshStart(ctx, info), info, res)
	}
	// A refresh during a call is the call's child.
	callCtx := h.obs.CallStart(context.Background(), dealGet)
	refresh(callCtx, b24oauth.TriggerRejected, b24oauth.RefreshResult{Outcome: b24oauth.RefreshOK, Duration: 80 * time.Millisecond})
	h.obs.CallEnd(callCtx, dealGet, b24oauth.CallResult{Outcome: b24oauth.OutcomeOK, Retries: 1, Status: 200})
	refresh(context.Background(), b24oauth.TriggerRejected, b24oauth.RefreshResult{Outcome: b24oauth.RefreshOK, Duration: time.Second, Err: errors.New("store down")})
	refresh(context.Background(), b24oauth.TriggerKeepAlive, b24oauth.RefreshResult{Outcome: b24oauth.RefreshAdopted})
	revoked := &b24oauth.RefreshTokenError{Code: "invalid_grant", MemberID: testMember, Err: errors.New("refused")}
	refresh(context.Background(), b24oauth.TriggerExpiring, b24oauth.RefreshResult{Outcome: b24oauth.RefreshRevoked, Err: revoked})
	refresh(context.Background(), "", b24oauth.RefreshResult{Outcome: b24oauth.RefreshError, Err: errors.New("oauth server down")})

	ms := h.collect(t)
	want := map[string]int64{
		"outcome=ok,trigger=rejected": 2, "outcome=adopted,trigger=keepalive": 1, "outcome=revoked,trigger=expiring": 1, "outcome=error,trigger=none": 1,
	}
	if got := counts(t, ms, "b24oauth.refreshes"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("b24oauth.refreshes = %v, want %v", got, want)
	}
	if dp := histograms(t, ms, "b24oauth.refresh.duration")["outcome=ok,trigger=rejected"]; dp.Count != 2 || dp.Sum != 1.08 {
		t.Errorf("refresh.duration[ok] = count %d sum %v, want 2 and 1.08", dp.Count, dp.Sum)
	}
	if ms["b24oauth.refreshes"].Unit != "{refresh}" || ms["b24oauth.refresh.duration"].Unit != "s" {
		t.Errorf("units %q %q", ms["b24oauth.refreshes"].Unit, ms["b24oauth.refresh.duration"].Unit)
	}

	spans := h.spans.Ended()
	if len(spans) != 6 {
		t.Fatalf("%d spans, want 6", len(spans))
	}
	first, call := spans[0], spans[1]
	if first.Name() != "b24oauth.refresh" || first.SpanKind() != trace.SpanKindInternal {
		t.Errorf("span %q kind %v", first.Name(), first.SpanKind())
	}
	if first.Parent().SpanID() != call.SpanContext().SpanID() || first.SpanContext().TraceID() != call.SpanContext().TraceID() {
		t.Error("the refresh during a call is not the call span's child")
	}
	checkMap(t, "refresh", spanAttrs(first), map[string]string{
		"b24oauth.member_id": testMember, "b24oauth.domain": testDomain, "b24oauth.outcome": "ok", "error.type": "",
		"b24oauth.refresh.trigger": "rejected",
	})
	if first.Status().Code != codes.Unset || len(first.Events()) != 0 {
		t.Errorf("ok refresh: status %v, events %v", first.Status(), first.Events())
	}
	unstored := spans[2]
	if len(unstored.Events()) != 1 || unstored.Events()[0].Name != "b24oauth.refresh.store_failed" || unstored.Status().Code != codes.Unset {
		t.Errorf("refresh not stored yet: events %v status %v", unstored.Events(), unstored.Status())
	} else {
		checkMap(t, "store_failed", eventAttrs(unstored.Events()[0]), map[string]string{"error.message": "store down"})
	}
	checkMap(t, "adopted", spanAttrs(spans[3]), map[string]string{"b24oauth.outcome": "adopted", "error.type": ""})
	for i, want := range []struct{ errType, desc string }{{"invalid_grant", revoked.Error()}, {"error", "oauth server down"}} {
		s := spans[4+i]
		checkMap(t, s.Name(), spanAttrs(s), map[string]string{"error.type": want.errType})
		if s.Status().Code != codes.Error || s.Status().Description != want.desc {
			t.Errorf("failed refresh status %v %q, want Error %q", s.Status().Code, s.Status().Description, want.desc)
		}
	}
}

func TestStoreOps(t *testing.T) {
	h := newHarness(t)
	ctx, span := h.tp.Tracer("test").Start(context.Background(), "install handler")
	h.obs.StoreOp(ctx, b24oauth.StoreOpInfo{Op: b24oauth.StoreLoad, MemberID: testMember, Duration: 2 * time.Millisecond})
	h.obs.StoreOp(ctx, b24oauth.StoreOpInfo{Op: b24oauth.StoreCreate, MemberID: testMember, Duration: time.Millisecond, Err: errors.New("disk full")})
	span.End()
	h.obs.StoreOp(context.Background(), b24oauth.StoreOpInfo{Op: b24oauth.StoreList, Duration: 3 * time.Millisecond})
	h.obs.StoreOp(context.Background(), b24oauth.StoreOpInfo{Op: b24oauth.StoreLoad, Duration: 4 * time.Millisecond})

	hist := histograms(t, h.collect(t), "b24oauth.store.duration")
	want := map[string]uint64{"op=load,outcome=ok": 2, "op=create,outcome=error": 1, "op=list,outcome=ok": 1}
	if len(hist) != len(want) {
		t.Errorf("store.duration has %d series, want %d: %v", len(hist), len(want), hist)
	}
	for k, n := range want {
		if hist[k].Count != n {
			t.Errorf("store.duration[%s] count %d, want %d", k, hist[k].Count, n)
		}
	}
	if b := hist["op=load,outcome=ok"].Bounds; b[0] != 0.0001 {
		t.Errorf("store bounds %v", b)
	}
	spans := h.spans.Ended()
	if len(spans) != 1 || len(spans[0].Events()) != 2 {
		t.Fatalf("spans %v", spans)
	}
	evs := spans[0].Events()
	checkMap(t, "load event", eventAttrs(evs[0]), map[string]string{
		"b24oauth.store.op": "load", "b24oauth.store.duration": "0.002", "b24oauth.member_id": testMember, "error.type": "",
	})
	checkMap(t, "create event", eventAttrs(evs[1]), map[string]string{"b24oauth.store.op": "create", "error.type": "error"})
}

func TestEvents(t *testing.T) {
	h := newHarness(t)
	for _, e := range []b24oauth.EventInfo{
		{Event: "ONAPPINSTALL", MemberID: testMember, Outcome: b24oauth.EventAccepted, Status: 200, Duration: 10 * time.Millisecond},
		{Event: "ONCRMDEALADD", MemberID: testMember, Outcome: b24oauth.EventAccepted, Status: 200},
		{Event: "ONCRMDEALADD", MemberID: testMember, Outcome: b24oauth.EventAccepted, Status: 200},
		{Event: "", Outcome: b24oauth.EventRejected, Status: 401, Reason: "wrong application token"},
		{Event: "ONCRMDEALUPDATE", MemberID: testMember, Outcome: b24oauth.EventAccepted, Status: 500, Offline: true},
	} {
		h.obs.Event(context.Background(), e)
	}
	ms := h.collect(t)
	want := map[string]int64{
		"event=ONAPPINSTALL,http.response.status_code=200,offline=false,outcome=accepted":   1,
		"event=ONCRMDEALADD,http.response.status_code=200,offline=false,outcome=accepted":   2,
		"event=,http.response.status_code=401,offline=false,outcome=rejected":               1,
		"event=ONCRMDEALUPDATE,http.response.status_code=500,offline=true,outcome=accepted": 1,
	}
	if got := counts(t, ms, "b24oauth.events"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("b24oauth.events =\n%v, want\n%v", got, want)
	}
	hist := histograms(t, ms, "b24oauth.event.duration")
	if dp := hist["event=ONAPPINSTALL,http.response.status_code=200,offline=false,outcome=accepted"]; dp.Count != 1 || dp.Sum != 0.01 {
		t.Errorf("event.duration of the install: %+v", dp)
	}
	if ms["b24oauth.events"].Unit != "{event}" {
		t.Errorf("events unit %q", ms["b24oauth.events"].Unit)
	}
}

// Without options the Observer records through the global providers, also when they are set
// after it was made.
func TestGlobalProviders(t *testing.T) {
	oldMP, oldTP := otel.GetMeterProvider(), otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetMeterProvider(oldMP); otel.SetTracerProvider(oldTP) })
	obs := otelb24.NewObserver(otelb24.WithMeterProvider(nil), otelb24.WithTracerProvider(nil))

	reader := sdkmetric.NewManualReader()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	spans := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))

	obs.CallEnd(obs.CallStart(context.Background(), dealGet), dealGet, b24oauth.CallResult{Outcome: b24oauth.OutcomeOK})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 || rm.ScopeMetrics[0].Scope.Name != otelb24.ScopeName {
		t.Errorf("the global MeterProvider got %+v", rm.ScopeMetrics)
	}
	if got := spans.Ended(); len(got) != 1 || got[0].Name() != "b24oauth.call" {
		t.Errorf("the global TracerProvider got %v", got)
	}
}

// A span that does not record (not sampled) gets no attributes, and CallEnd ends it without
// touching the caller's span.
func TestUnsampledCall(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	obs := otelb24.NewObserver(otelb24.WithTracerProvider(tp), otelb24.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	ctx := obs.CallStart(context.Background(), dealGet)
	obs.Retry(ctx, dealGet, b24oauth.RetryInfo{Attempt: 1, Reason: b24oauth.RetryGateway})
	obs.CallEnd(ctx, dealGet, b24oauth.CallResult{Outcome: b24oauth.OutcomeOK})
	if n := len(spans.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want none", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if len(rm.ScopeMetrics) != 1 || len(rm.ScopeMetrics[0].Metrics) != 3 { // calls, call.duration, retries
		t.Errorf("metrics of an unsampled call: %+v", rm.ScopeMetrics)
	}
}

// The Observer's measurements allocate nothing once an attribute combination was seen (the
// spans are the tracer's business: here they do not record).
func TestMeasurementsDoNotAllocate(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	obs := otelb24.NewObserver(
		otelb24.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		otelb24.WithTracerProvider(trace.NewNoopTracerProvider()))
	ctx := context.Background()
	res := b24oauth.CallResult{Outcome: b24oauth.OutcomeOK, Status: 200, Duration: time.Millisecond}
	retry := b24oauth.RetryInfo{Attempt: 1, Reason: b24oauth.RetryQueryLimit}
	store := b24oauth.StoreOpInfo{Op: b24oauth.StoreLoad, MemberID: testMember}
	refresh := b24oauth.RefreshResult{Outcome: b24oauth.RefreshOK}
	event := b24oauth.EventInfo{Event: "ONCRMDEALADD", Outcome: b24oauth.EventAccepted, Status: 200}
	measure := func() {
		obs.LimiterWait(ctx, dealGet, b24oauth.LimiterWaitInfo{})
		obs.Retry(ctx, dealGet, retry)
		obs.CallEnd(ctx, dealGet, res)
		obs.RefreshEnd(ctx, b24oauth.RefreshInfo{}, refresh)
		obs.StoreOp(ctx, store)
		obs.Event(ctx, event)
	}
	measure()
	if n := testing.AllocsPerRun(100, measure); n != 0 {
		t.Errorf("%.1f allocations per round of measurements, want 0", n)
	}
}
