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

// profileReply is what the loopback portal of BenchmarkCall answers.
var profileReply = []byte(`{"result":{"ID":"1","ADMIN":true,"NAME":"Test"},"time":{"start":1767225600.1,"finish":1767225600.2,"duration":0.1,"processing":0.05,"date_start":"2026-01-01T00:00:00+00:00","date_finish":"2026-01-01T00:00:00+00:00","operating":0,"operating_reset_at":1767226200}}`)

// BenchmarkCall is Call over loopback (a plain HTTP server answering as a portal) without an
// Observer, with b24oauth.NopObserver (the core's own cost of reporting), and with the otelb24
// Observer on an SDK MeterProvider and an SDK TracerProvider
// that samples and records every span (exported in batches to a no-op exporter), or samples
// none. Target: the Observer costs at most 5% of a call's time. The client's rate limiter is
// off: its pace, not the call's cost, would be measured otherwise. cpu-ns/op (the process's CPU
// time, client and server together) is steadier than wall time on a shared machine.
func BenchmarkCall(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(profileReply)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	params := map[string]any{"fields": map[string]any{"TITLE": "Deal"}}

	for _, bc := range []struct {
		name    string
		nop     bool             // b24oauth.NopObserver: what reporting costs the core itself
		sampler sdktrace.Sampler // nil: no Observer
	}{
		{"no-observer", false, nil},
		{"nop-observer", true, nil},
		{"otelb24", false, sdktrace.AlwaysSample()},
		{"otelb24-unsampled", false, sdktrace.NeverSample()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := []b24oauth.Option{
				b24oauth.WithHTTPClient(hc), b24oauth.WithInsecureHTTP(),
				b24oauth.WithRestrictionParams(b24oauth.RestrictionParams{
					RateLimit: b24oauth.RateLimitParams{DrainRate: -1}, MaxRetries: 3, RetryDelay: time.Millisecond,
				}),
			}
			if bc.nop {
				opts = append(opts, b24oauth.WithObserver(b24oauth.NopObserver{}))
			}
			if bc.sampler != nil {
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(bc.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				defer func() {
					_ = mp.Shutdown(context.Background())
					_ = tp.Shutdown(context.Background())
				}()
				opts = append(opts, b24oauth.WithObserver(otelb24.NewObserver(otelb24.WithMeterProvider(mp), otelb24.WithTracerProvider(tp))))
			}
			c, err := b24oauth.New(benchParams(srv.URL), b24oauth.OAuthSecret{ClientID: "local.bench", ClientSecret: "bench-secret"}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := c.Call(ctx, "profile", params); err != nil { // the connection, the caches
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				resp, err := c.Call(ctx, "profile", params)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.Result) == 0 {
					b.Fatal("empty result")
				}
			}
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkCallOverhead alternates calls of a client without an Observer and of one with the
// otelb24 Observer, timing each call: both see the same machine at the same moments, so the
// overhead it reports (overhead-%: how much longer the observed calls took) is steadier than
// the difference of two BenchmarkCall runs on a shared machine. The Observer records metrics
// into an SDK MeterProvider, and spans into a no-op TracerProvider ("metrics"), an SDK one that
// samples none ("metrics+unsampled") or every one, exported in batches to a no-op exporter
// ("metrics+sampled"). Target: at most 5%.
func BenchmarkCallOverhead(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(profileReply)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	newClient := func(opts ...b24oauth.Option) *b24oauth.B24OAuth {
		c, err := b24oauth.New(benchParams(srv.URL), b24oauth.OAuthSecret{ClientID: "local.bench", ClientSecret: "bench-secret"},
			append([]b24oauth.Option{
				b24oauth.WithHTTPClient(hc), b24oauth.WithInsecureHTTP(),
				b24oauth.WithRestrictionParams(b24oauth.RestrictionParams{
					RateLimit: b24oauth.RateLimitParams{DrainRate: -1}, MaxRetries: 3, RetryDelay: time.Millisecond,
				}),
			}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, bc := range []struct {
		name   string
		tracer func() (trace.TracerProvider, func())
	}{
		{"metrics", func() (trace.TracerProvider, func()) { return noop.NewTracerProvider(), func() {} }},
		{"metrics+unsampled", func() (trace.TracerProvider, func()) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			return tp, func() { _ = tp.Shutdown(context.Background()) }
		}},
		{"metrics+sampled", func() (trace.TracerProvider, func()) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			return tp, func() { _ = tp.Shutdown(context.Background()) }
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			defer func() { _ = mp.Shutdown(context.Background()) }()
			tp, stop := bc.tracer()
			defer stop()
			plain := newClient()
			observed := newClient(b24oauth.WithObserver(otelb24.NewObserver(otelb24.WithMeterProvider(mp), otelb24.WithTracerProvider(tp))))
			ctx := context.Background()
			params := map[string]any{"fields": map[string]any{"TITLE": "Deal"}}
			call := func(c *b24oauth.B24OAuth) time.Duration {
				start := time.Now()
				if _, err := c.Call(ctx, "profile", params); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			call(plain)
			call(observed)
			var base, with time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%2 == 0 { // neither goes first every time
					base += call(plain)
					with += call(observed)
				} else {
					with += call(observed)
					base += call(plain)
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
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(bc.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			defer func() {
				_ = mp.Shutdown(context.Background())
				_ = tp.Shutdown(context.Background())
			}()
			obs := otelb24.NewObserver(otelb24.WithMeterProvider(mp), otelb24.WithTracerProvider(tp))
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

func benchParams(url string) b24oauth.OAuthParams {
	host := strings.TrimPrefix(url, "http://")
	return b24oauth.OAuthParams{
		ApplicationToken: "bench-application-token", UserID: 1, MemberID: testMember,
		AccessToken: "bench-access-token", RefreshToken: "bench-refresh-token",
		Expires: time.Now().Add(time.Hour).Unix(), ExpiresIn: 3600, Scope: "crm",
		Domain: host, ClientEndpoint: url + "/rest/", ServerEndpoint: "https://oauth.bitrix.info/rest/",
		Status: b24oauth.StatusLocal,
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
