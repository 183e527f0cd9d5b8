package otelb24_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/otelb24"
)

// harness is an Observer recording into an SDK MeterProvider (read with a ManualReader) and an
// SDK TracerProvider that samples every span (kept by a SpanRecorder).
type harness struct {
	obs    b24oauth.Observer
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	return &harness{
		obs:    otelb24.NewObserver(otelb24.WithMeterProvider(mp), otelb24.WithTracerProvider(tp)),
		reader: reader, spans: spans, tp: tp,
	}
}

// collect returns the metrics recorded so far, by name; it fails t on a metric of another scope
// or one named twice.
func (h *harness) collect(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelb24.ScopeName {
			t.Errorf("metrics of scope %q, want %q", sm.Scope.Name, otelb24.ScopeName)
		}
		if sm.Scope.Version != b24oauth.Version {
			t.Errorf("scope version %q, want %q", sm.Scope.Version, b24oauth.Version)
		}
		for _, m := range sm.Metrics {
			if _, dup := out[m.Name]; dup {
				t.Errorf("metric %s twice", m.Name)
			}
			out[m.Name] = m
		}
	}
	return out
}

// attrString prints an attribute set as "k=v,k=v" in key order.
func attrString(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// kvString prints attributes as attrString does.
func kvString(kvs ...attribute.KeyValue) string { return attrString(attribute.NewSet(kvs...)) }

// counts returns a counter's data points as "attributes" → value; it fails t when the metric is
// missing or not a cumulative monotonic int64 sum.
func counts(t testing.TB, ms map[string]metricdata.Metrics, name string) map[string]int64 {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no metric %s; have %v", name, names(ms))
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("%s is %T (monotonic %v), want a cumulative monotonic Sum[int64]", name, m.Data, ok && sum.IsMonotonic)
	}
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		out[attrString(dp.Attributes)] += dp.Value
	}
	return out
}

// histograms returns a histogram's data points by "attributes"; it fails t when the metric is
// missing or not a float64 histogram.
func histograms(t testing.TB, ms map[string]metricdata.Metrics, name string) map[string]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Fatalf("no metric %s; have %v", name, names(ms))
	}
	hist, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is %T, want a Histogram[float64]", name, m.Data)
	}
	out := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, dp := range hist.DataPoints {
		out[attrString(dp.Attributes)] = dp
	}
	return out
}

func names(ms map[string]metricdata.Metrics) []string {
	var out []string
	for n := range ms {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// spanAttrs returns a span's attributes as a map of printed values.
func spanAttrs(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

// eventAttrs returns a span event's attributes as a map of printed values.
func eventAttrs(e sdktrace.Event) map[string]string {
	out := map[string]string{}
	for _, kv := range e.Attributes {
		out[string(kv.Key)] = kv.Value.Emit()
	}
	return out
}

// checkMap fails t for every key of want that got lacks or holds another value ("" in want:
// the key must be absent).
func checkMap(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		g, ok := got[k]
		switch {
		case w == "" && ok:
			t.Errorf("%s: %s = %q, want none", what, k, g)
		case w != "" && g != w:
			t.Errorf("%s: %s = %q, want %q (all: %v)", what, k, g, w, got)
		}
	}
}

// telemetryStrings returns every string the telemetry holds that a backend would store: each
// metric's name, description, unit and every attribute key and value of each data point and
// exemplar; each span's name, status description, attributes, events and their attributes,
// links and resource. Each string is labelled with where it was found.
func telemetryStrings(rm metricdata.ResourceMetrics, spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	add := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			out = append(out, fmt.Sprintf("%s: %s=%s", where, kv.Key, kv.Value.Emit()))
		}
	}
	add("resource", rm.Resource.Attributes())
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			where := "metric " + m.Name
			out = append(out, where+": "+m.Description+" "+m.Unit)
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					add(where, dp.Attributes.ToSlice())
					for _, ex := range dp.Exemplars {
						add(where+" exemplar", ex.FilteredAttributes)
					}
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					add(where, dp.Attributes.ToSlice())
					for _, ex := range dp.Exemplars {
						add(where+" exemplar", ex.FilteredAttributes)
					}
				}
			default:
				out = append(out, fmt.Sprintf("%s: unexpected data %T %+v", where, d, d))
			}
		}
	}
	for _, s := range spans {
		where := "span " + s.Name()
		out = append(out, where+": status "+s.Status().Description)
		add(where, s.Attributes())
		add(where+" resource", s.Resource().Attributes())
		for _, ev := range s.Events() {
			out = append(out, where+" event: "+ev.Name)
			add(where+" event "+ev.Name, ev.Attributes)
		}
		for _, l := range s.Links() {
			add(where+" link", l.Attributes)
		}
	}
	return out
}

// checkNoSecret fails t for every telemetry string holding one of secrets, whole or a part of
// it (see findSecrets).
func checkNoSecret(t testing.TB, strs []string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) < secretWindow {
			t.Fatalf("a secret to look for of %d characters: plant longer ones", len(s))
		}
	}
	for _, leak := range findSecrets(strs, secrets...) {
		t.Errorf("telemetry shows (a part of) a secret: %s", leak)
	}
}

// secretWindow is the length of the parts of a secret findSecrets looks for.
const secretWindow = 16

// findSecrets returns the strings of strs that hold one of secrets or a part of one: any
// secretWindow characters in a row of it (a truncated or split token leaks too).
func findSecrets(strs []string, secrets ...string) []string {
	var found []string
	for _, s := range strs {
	secrets:
		for _, secret := range secrets {
			for i := 0; i+secretWindow <= len(secret); i++ {
				if strings.Contains(s, secret[i:i+secretWindow]) {
					found = append(found, s)
					break secrets
				}
			}
		}
	}
	return found
}
