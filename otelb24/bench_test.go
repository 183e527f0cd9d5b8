package otelb24_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/otelb24"
)

// profileReply is what the loopback portal of the benchmarks answers.
var profileReply = []byte(`{"result":{"ID":"1","ADMIN":true,"NAME":"Test"},"time":{"start":1767225600.1,"finish":1767225600.2,"duration":0.1,"processing":0.05,"date_start":"2026-01-01T00:00:00+00:00","date_finish":"2026-01-01T00:00:00+00:00","operating":0,"operating_reset_at":1767226200}}`)

var benchCallParams = map[string]any{"fields": map[string]any{"TITLE": "Deal"}}

// loopbackPortal is a plain HTTP server answering every call as a portal would, and the
// clients of the benchmarks for it.
type loopbackPortal struct {
	b   *testing.B
	url string
	hc  *http.Client
}

func newLoopbackPortal(b *testing.B) *loopbackPortal {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(profileReply)
	}))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(func() {
		hc.CloseIdleConnections()
		srv.Close()
	})
	return &loopbackPortal{b: b, url: srv.URL, hc: hc}
}

// client returns a client of the portal with obs (nil: none) whose rate limiter is off (its
// pace, not the call's cost, would be measured otherwise), after one call (the connection,
// the caches).
func (lp *loopbackPortal) client(obs b24oauth.Observer) *b24oauth.B24OAuth {
	host := strings.TrimPrefix(lp.url, "http://")
	params := b24oauth.OAuthParams{
		ApplicationToken: "bench-application-token", UserID: 1, MemberID: testMember,
		AccessToken: "bench-access-token", RefreshToken: "bench-refresh-token",
		Expires: time.Now().Add(time.Hour).Unix(), ExpiresIn: 3600, Scope: "crm",
		Domain: host, ClientEndpoint: lp.url + "/rest/", ServerEndpoint: "https://oauth.bitrix.info/rest/",
		Status: b24oauth.StatusLocal,
	}
	c, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: "local.bench", ClientSecret: "bench-secret"},
		b24oauth.WithHTTPClient(lp.hc), b24oauth.WithInsecureHTTP(), b24oauth.WithObserver(obs),
		b24oauth.WithRestrictionParams(b24oauth.RestrictionParams{
			RateLimit: b24oauth.RateLimitParams{DrainRate: -1}, MaxRetries: 3, RetryDelay: time.Millisecond,
		}))
	if err != nil {
		lp.b.Fatal(err)
	}
	lp.call(c)
	return c
}

// call makes one call and returns how long it took.
func (lp *loopbackPortal) call(c *b24oauth.B24OAuth) time.Duration {
	start := time.Now()
	resp, err := c.Call(context.Background(), "profile", benchCallParams)
	if err != nil {
		lp.b.Fatal(err)
	}
	if len(resp.Result) == 0 {
		lp.b.Fatal("empty result")
	}
	return time.Since(start)
}

// benchObserver returns the otelb24 Observer on an SDK MeterProvider (a ManualReader never
// read) and the TracerProvider tracers makes: nil, a no-op one; else an SDK one with that
// sampler, exporting in batches to a no-op exporter.
func benchObserver(b *testing.B, tracers sdktrace.Sampler) b24oauth.Observer {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	var tp trace.TracerProvider = noop.NewTracerProvider()
	if tracers != nil {
		sdk := sdktrace.NewTracerProvider(sdktrace.WithSampler(tracers), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = sdk.Shutdown(context.Background()) })
		tp = sdk
	}
	return otelb24.NewObserver(otelb24.WithMeterProvider(mp), otelb24.WithTracerProvider(tp))
}

// BenchmarkCall is Call over loopback without an Observer, with b24oauth.NopObserver (the
// core's own cost of reporting), and with the otelb24 Observer on an SDK MeterProvider and an
// SDK TracerProvider that samples and records every span (exported in batches to a no-op
// exporter) or samples none. cpu-ns/op is the process's CPU time (client and server together).
// On a shared machine the difference of two runs is mostly noise: BenchmarkCallOverhead
// measures the Observer's share.
func BenchmarkCall(b *testing.B) {
	lp := newLoopbackPortal(b)
	for _, bc := range []struct {
		name string
		obs  func(b *testing.B) b24oauth.Observer
	}{
		{"no-observer", func(*testing.B) b24oauth.Observer { return nil }},
		{"nop-observer", func(*testing.B) b24oauth.Observer { return b24oauth.NopObserver{} }},
		{"otelb24", func(b *testing.B) b24oauth.Observer { return benchObserver(b, sdktrace.AlwaysSample()) }},
		{"otelb24-unsampled", func(b *testing.B) b24oauth.Observer { return benchObserver(b, sdktrace.NeverSample()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lp.b = b
			c := lp.client(bc.obs(b))
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				lp.call(c)
			}
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkCallOverhead alternates calls of a client without an Observer and of one with the
// otelb24 Observer, timing each call: both see the same machine at the same moments, so the
// overhead it reports (overhead-%: how much longer the observed calls took) is steadier than
// the difference of two BenchmarkCall runs on a shared machine. "nop" is b24oauth.NopObserver:
// the core's own cost of reporting. The otelb24 Observer records metrics into an SDK
// MeterProvider, and spans into a no-op TracerProvider ("metrics"), an SDK one that
// samples none ("metrics+unsampled") or every one, exported in batches to a no-op exporter
// ("metrics+sampled"). Target: at most 5%.
func BenchmarkCallOverhead(b *testing.B) {
	lp := newLoopbackPortal(b)
	for _, bc := range []struct {
		name string
		obs  func(b *testing.B) b24oauth.Observer
	}{
		{"nop", func(*testing.B) b24oauth.Observer { return b24oauth.NopObserver{} }},
		{"metrics", func(b *testing.B) b24oauth.Observer { return benchObserver(b, nil) }},
		{"metrics+unsampled", func(b *testing.B) b24oauth.Observer { return benchObserver(b, sdktrace.NeverSample()) }},
		{"metrics+sampled", func(b *testing.B) b24oauth.Observer { return benchObserver(b, sdktrace.AlwaysSample()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lp.b = b
			plain, observed := lp.client(nil), lp.client(bc.obs(b))
			var base, with time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%2 == 0 { // neither goes first every time
					base += lp.call(plain)
					with += lp.call(observed)
				} else {
					with += lp.call(observed)
					base += lp.call(plain)
				}
			}
			b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "base-ns/call")
			b.ReportMetric(float64(with.Nanoseconds())/float64(b.N), "otel-ns/call")
			b.ReportMetric(100*(float64(with)-float64(base))/float64(base), "overhead-%")
		})
	}
}

// BenchmarkObserver is the Observer alone: one call's CallStart, LimiterWait and CallEnd, with
// a span that records and one that does not.
func BenchmarkObserver(b *testing.B) {
	for _, bc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{{"sampled", sdktrace.AlwaysSample()}, {"unsampled", sdktrace.NeverSample()}} {
		b.Run(bc.name, func(b *testing.B) {
			obs := benchObserver(b, bc.sampler)
			ctx := context.Background()
			res := b24oauth.CallResult{Outcome: b24oauth.OutcomeOK, Status: 200, Duration: time.Millisecond}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cctx := obs.CallStart(ctx, dealGet)
				obs.LimiterWait(cctx, dealGet, b24oauth.LimiterWaitInfo{})
				obs.CallEnd(cctx, dealGet, res)
			}
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
