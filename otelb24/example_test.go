package otelb24_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/otelb24"
)

// An App whose clients report to OpenTelemetry. In a service, leave out the options to use the
// global providers (otel.SetMeterProvider, otel.SetTracerProvider), and give the MeterProvider
// an exporter's reader (Prometheus, OTLP) instead of a ManualReader.
func Example() {
	reader := sdkmetric.NewManualReader()
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tracers := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer meters.Shutdown(context.Background())
	defer tracers.Shutdown(context.Background())

	fake := b24test.NewServer() // a fake Bitrix24 for the example; your App talks to the real one
	defer fake.Close()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: b24oauth.NewMemoryStore(),
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observer: otelb24.NewObserver(otelb24.WithMeterProvider(meters), otelb24.WithTracerProvider(tracers)),
	})
	if err != nil {
		panic(err)
	}
	defer app.Close()

	portal := fake.AddPortal()
	if rec := portal.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		panic(rec.Body.String())
	}
	ctx := context.Background()
	client, err := app.ClientForMember(ctx, portal.MemberID())
	if err != nil {
		panic(err)
	}
	// The install checked its token with user.admin; the token expires, and the next call
	// refreshes it (a span of its own, inside the call's) and is sent again.
	portal.ExpireAccessToken()
	if _, err := client.Call(ctx, "profile", nil); err != nil {
		panic(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Value))
				}
			}
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	for _, s := range spans.Ended() {
		fmt.Println("span", s.Name())
	}
	// Output:
	// b24oauth.calls{api_version=v2,method=profile,outcome=ok} 1
	// b24oauth.calls{api_version=v2,method=user.admin,outcome=ok} 1
	// b24oauth.events{event=ONAPPINSTALL,http.response.status_code=200,offline=false,outcome=accepted} 1
	// b24oauth.refreshes{outcome=ok,trigger=rejected} 1
	// b24oauth.retries{api_version=v2,method=profile,reason=expired_token} 1
	// span b24oauth.call
	// span b24oauth.refresh
	// span b24oauth.call
}
