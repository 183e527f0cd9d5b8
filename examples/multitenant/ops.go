package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/otelb24"
)

// metrics is what the operator scrapes: the App's Observer records into an OpenTelemetry
// MeterProvider whose reader is the Prometheus exporter, and Handler serves its registry (with
// the Go runtime's and the process's metrics) in the Prometheus format.
type metrics struct {
	Observer b24oauth.Observer
	Handler  http.Handler
	provider *sdkmetric.MeterProvider
}

// newMetrics sets up the metrics of one App.
func newMetrics() (*metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// One instrumentation scope only: its otel_scope_* labels on every series would say nothing.
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return &metrics{
		Observer: otelb24.NewObserver(otelb24.WithMeterProvider(mp)),
		Handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{}}),
		provider: mp,
	}, nil
}

// Shutdown stops the MeterProvider.
func (m *metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }

// slogPrinter logs promhttp's errors with slog.
type slogPrinter struct{}

func (slogPrinter) Println(v ...any) { slog.Error("serving /metrics", "error", fmt.Sprint(v...)) }

// healthMemberID is a well-formed member_id no portal has: /healthz loads it.
var healthMemberID = strings.Repeat("0", 32)

// healthTimeout bounds /healthz's store request (a variable for the tests).
var healthTimeout = 2 * time.Second

// healthz answers 200 "ok" when the store answers a Load (ErrNotInstalled is an answer) within
// healthTimeout, else 503: a replica whose store is down cannot serve portals.
func healthz(store b24oauth.TokenStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		_, err := store.Load(ctx, healthMemberID)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err != nil && !errors.Is(err, b24oauth.ErrNotInstalled) {
			slog.WarnContext(r.Context(), "health check: the store does not answer", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("store unavailable\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}

// mountOps adds the operator's endpoints to mux: GET /metrics (when m is not nil) and
// GET /healthz.
func mountOps(mux *http.ServeMux, m *metrics, store b24oauth.TokenStore) {
	if m != nil {
		mux.Handle("GET /metrics", m.Handler)
	}
	mux.Handle("GET /healthz", healthz(store))
}
