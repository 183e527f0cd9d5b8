package otelb24

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/b24go/b24oauth"
)

// ScopeName is the instrumentation scope of the meter and the tracer the Observer uses.
const ScopeName = "github.com/b24go/b24oauth/otelb24"

// Option configures NewObserver.
type Option func(*config)

type config struct {
	meters  metric.MeterProvider
	tracers trace.TracerProvider
}

// WithMeterProvider sets the MeterProvider the metrics are recorded with. nil, or without this
// option: otel.GetMeterProvider() (the global one, which forwards to the provider set later
// with otel.SetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meters = mp }
}

// WithTracerProvider sets the TracerProvider the spans are started with. nil, or without this
// option: otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracers = tp }
}

// The buckets of the duration histograms, in seconds (see the package doc).
var (
	// The semantic conventions' HTTP duration buckets, plus 30 s and 60 s: a call includes the
	// waits for the portal's limits, its refresh and its retries.
	callBuckets    = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60}
	limiterBuckets = []float64{0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	storeBuckets   = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
)

// NewObserver returns an Observer that records what an App and its clients do as metrics and
// spans (the package doc lists them). It is safe for concurrent use; one Observer serves any
// number of Apps and clients.
//
// An instrument the MeterProvider refuses is reported to otel.Handle and left out.
func NewObserver(opts ...Option) b24oauth.Observer {
	var cfg config
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.meters == nil {
		cfg.meters = otel.GetMeterProvider()
	}
	if cfg.tracers == nil {
		cfg.tracers = otel.GetTracerProvider()
	}
	scope := []metric.MeterOption{metric.WithInstrumentationVersion(b24oauth.Version)}
	m := cfg.meters.Meter(ScopeName, scope...)
	o := &observer{
		tracer: cfg.tracers.Tracer(ScopeName, trace.WithInstrumentationVersion(b24oauth.Version)),
	}
	o.calls = counter(m, "b24oauth.calls", "{call}", "REST requests made to the portals (Call, CallV3, each request of a batch or a list)")
	o.callDuration = histogram(m, "b24oauth.call.duration", "Duration of REST requests, their limiter waits, refreshes and retries included", callBuckets)
	o.retries = counter(m, "b24oauth.retries", "{retry}", "Re-sends of REST requests")
	o.limiterWait = histogram(m, "b24oauth.limiter.wait", "How long REST requests waited for the portal's rate and operating limits", limiterBuckets)
	o.refreshes = counter(m, "b24oauth.refreshes", "{refresh}", "Token refreshes")
	o.refreshDuration = histogram(m, "b24oauth.refresh.duration", "Duration of token refreshes", callBuckets)
	o.storeDuration = histogram(m, "b24oauth.store.duration", "Duration of the App's token store operations", storeBuckets)
	o.events = counter(m, "b24oauth.events", "{event}", "Events the App answered (install, update, uninstall, ordinary and offline events)")
	o.eventDuration = histogram(m, "b24oauth.event.duration", "How long the App's handlers took to answer events", callBuckets)

	o.callAttrs.build = func(k callKey) attribute.Set {
		return attribute.NewSet(attrMethod.String(k.method), attrAPIVersion.String(string(k.version)), attrOutcome.String(k.what))
	}
	o.retryAttrs.build = func(k callKey) attribute.Set {
		return attribute.NewSet(attrMethod.String(k.method), attrAPIVersion.String(string(k.version)), attrReason.String(k.what))
	}
	o.waitAttrs.build = func(k waitKey) attribute.Set {
		return attribute.NewSet(attrMethod.String(k.method), attrAPIVersion.String(string(k.version)), attrOutcome.String(k.outcome),
			attrLimit.String(k.limit), attrFallback.Bool(k.fallback))
	}
	o.refreshAttrs.build = func(k refreshKey) attribute.Set {
		return attribute.NewSet(attrOutcome.String(k.outcome), attrTrigger.String(k.trigger))
	}
	o.storeAttrs.build = func(k storeKey) attribute.Set {
		return attribute.NewSet(attrOp.String(k.op), attrOutcome.String(k.outcome))
	}
	o.eventAttrs.build = func(k eventKey) attribute.Set {
		return attribute.NewSet(attrEvent.String(k.event), attrOutcome.String(k.outcome),
			semconv.HTTPResponseStatusCode(k.status), attrOffline.Bool(k.offline))
	}
	return o
}

// counter creates an Int64Counter, or a no-op one when the meter refuses.
func counter(m metric.Meter, name, unit, desc string) metric.Int64Counter {
	c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	if err != nil {
		otel.Handle(err)
	}
	if c == nil {
		c = noop.Int64Counter{}
	}
	return c
}

// histogram creates a Float64Histogram in seconds, or a no-op one when the meter refuses.
func histogram(m metric.Meter, name, desc string, buckets []float64) metric.Float64Histogram {
	h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(buckets...))
	if err != nil {
		otel.Handle(err)
	}
	if h == nil {
		h = noop.Float64Histogram{}
	}
	return h
}

// The attribute keys of the metrics.
const (
	attrMethod     = attribute.Key("method")
	attrAPIVersion = attribute.Key("api_version")
	attrOutcome    = attribute.Key("outcome")
	attrReason     = attribute.Key("reason")
	attrOp         = attribute.Key("op")
	attrEvent      = attribute.Key("event")
	attrOffline    = attribute.Key("offline")
	attrLimit      = attribute.Key("limit")    // the limit that held a request: bucket, shared, operating, none
	attrFallback   = attribute.Key("fallback") // the in-process bucket stood in for a failed shared limiter
	attrTrigger    = attribute.Key("trigger")  // why a refresh ran
)

// The attribute keys of the spans and span events.
const (
	spanMethod          = attribute.Key("b24oauth.method")
	spanAPIVersion      = attribute.Key("b24oauth.api_version")
	spanMemberID        = attribute.Key("b24oauth.member_id")
	spanDomain          = attribute.Key("b24oauth.domain")
	spanCommands        = attribute.Key("b24oauth.commands")
	spanOutcome         = attribute.Key("b24oauth.outcome")
	spanRetries         = attribute.Key("b24oauth.retries")
	spanRetryAttempt    = attribute.Key("b24oauth.retry.attempt")
	spanRetryReason     = attribute.Key("b24oauth.retry.reason")
	spanRetryDelay      = attribute.Key("b24oauth.retry.delay")
	spanLimiterWait     = attribute.Key("b24oauth.limiter.wait")
	spanLimiterLimit    = attribute.Key("b24oauth.limiter.limit")
	spanLimiterFallback = attribute.Key("b24oauth.limiter.fallback")
	spanRefreshTrigger  = attribute.Key("b24oauth.refresh.trigger")
	spanStoreOp         = attribute.Key("b24oauth.store.op")
	spanStoreTime       = attribute.Key("b24oauth.store.duration")
)

// The outcomes of limiter waits and store operations.
const (
	outcomeOK    = "ok"
	outcomeError = "error"
)

// spanWaitMin is the shortest limiter wait that is a span event.
const spanWaitMin = time.Millisecond

var (
	callSpanKind    = trace.WithSpanKind(trace.SpanKindClient)
	refreshSpanKind = trace.WithSpanKind(trace.SpanKindInternal)
)

// observer implements b24oauth.Observer with OpenTelemetry.
type observer struct {
	b24oauth.NopObserver // a method added to the interface records nothing until written here

	tracer trace.Tracer

	calls           metric.Int64Counter
	callDuration    metric.Float64Histogram
	retries         metric.Int64Counter
	limiterWait     metric.Float64Histogram
	refreshes       metric.Int64Counter
	refreshDuration metric.Float64Histogram
	storeDuration   metric.Float64Histogram
	events          metric.Int64Counter
	eventDuration   metric.Float64Histogram

	callAttrs    attrCache[callKey]
	retryAttrs   attrCache[callKey]
	waitAttrs    attrCache[waitKey]
	refreshAttrs attrCache[refreshKey]
	storeAttrs   attrCache[storeKey]
	eventAttrs   attrCache[eventKey]
}

// callKey names the attribute set of a call's measurement; what is the outcome or the reason.
type callKey struct {
	method  string
	version b24oauth.APIVersion
	what    string
}

type storeKey struct{ op, outcome string }

type waitKey struct {
	method         string
	version        b24oauth.APIVersion
	outcome, limit string
	fallback       bool
}

type refreshKey struct{ outcome, trigger string }

// orNone is s, or "none" for an empty s: an attribute value a dashboard can show and select.
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

type eventKey struct {
	event, outcome string
	status         int
	offline        bool
}

// CallStart starts the call's span and returns the context carrying it.
func (o *observer) CallStart(ctx context.Context, c b24oauth.CallInfo) context.Context {
	// The attributes go on after the start, and only on a span that records: building them for
	// an unsampled span cost more than the rest of its measurements (a sampler sees the name,
	// the kind and the parent).
	ctx, span := o.tracer.Start(ctx, "b24oauth.call", callSpanKind)
	if span.IsRecording() {
		span.SetAttributes(
			semconv.ServerAddress(c.Domain),
			spanMethod.String(c.Method),
			spanAPIVersion.String(string(c.APIVersion)),
			spanMemberID.String(c.MemberID),
			spanCommands.Int(c.Commands),
		)
	}
	return ctx
}

// CallEnd records the call's metrics and ends its span.
func (o *observer) CallEnd(ctx context.Context, c b24oauth.CallInfo, r b24oauth.CallResult) {
	a := o.callAttrs.get(callKey{c.Method, c.APIVersion, r.Outcome})
	// ctx carries the call's span: a sampled one makes the measurement an exemplar of it.
	o.calls.Add(ctx, 1, a.add...)
	o.callDuration.Record(ctx, r.Duration.Seconds(), a.record...)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, spanOutcome.String(r.Outcome), spanRetries.Int(r.Retries))
		if r.Status != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(r.Status))
		}
		if r.Outcome != b24oauth.OutcomeOK {
			errType := r.Code
			if errType == "" {
				errType = r.Outcome
			}
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
			span.SetStatus(codes.Error, message(r.Err, r.Outcome))
		}
		span.SetAttributes(attrs...)
	}
	span.End()
}

// Retry counts the re-send and adds it to the call's span.
func (o *observer) Retry(ctx context.Context, c b24oauth.CallInfo, r b24oauth.RetryInfo) {
	a := o.retryAttrs.get(callKey{c.Method, c.APIVersion, r.Reason})
	o.retries.Add(ctx, 1, a.add...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("b24oauth.retry", trace.WithAttributes(
			spanRetryAttempt.Int(r.Attempt),
			spanRetryReason.String(r.Reason),
			spanRetryDelay.Float64(r.Delay.Seconds()),
		))
	}
}

// LimiterWait records the wait and adds it to the call's span.
func (o *observer) LimiterWait(ctx context.Context, c b24oauth.CallInfo, w b24oauth.LimiterWaitInfo) {
	outcome := outcomeOK
	if w.Err != nil {
		outcome = outcomeError
	}
	a := o.waitAttrs.get(waitKey{c.Method, c.APIVersion, outcome, orNone(w.Limit), w.Fallback})
	o.limiterWait.Record(ctx, w.Wait.Seconds(), a.record...)
	// A request let through at once is no event: only a wait of spanWaitMin or more, or one
	// that failed.
	if w.Wait < spanWaitMin && w.Err == nil {
		return
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, spanLimiterWait.Float64(w.Wait.Seconds()), spanLimiterLimit.String(orNone(w.Limit)))
		if w.Fallback {
			attrs = append(attrs, spanLimiterFallback.Bool(true))
		}
		if w.Err != nil {
			attrs = append(attrs, semconv.ErrorMessageKey.String(w.Err.Error()))
		}
		span.AddEvent("b24oauth.limiter.wait", trace.WithAttributes(attrs...))
	}
}

// RefreshStart starts the refresh's span and returns the context carrying it.
func (o *observer) RefreshStart(ctx context.Context, r b24oauth.RefreshInfo) context.Context {
	ctx, span := o.tracer.Start(ctx, "b24oauth.refresh", refreshSpanKind)
	if span.IsRecording() {
		span.SetAttributes(spanMemberID.String(r.MemberID), spanDomain.String(r.Domain), spanRefreshTrigger.String(orNone(r.Trigger)))
	}
	return ctx
}

// RefreshEnd records the refresh's metrics and ends its span.
func (o *observer) RefreshEnd(ctx context.Context, r b24oauth.RefreshInfo, res b24oauth.RefreshResult) {
	a := o.refreshAttrs.get(refreshKey{res.Outcome, orNone(r.Trigger)})
	o.refreshes.Add(ctx, 1, a.add...)
	o.refreshDuration.Record(ctx, res.Duration.Seconds(), a.record...)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(spanOutcome.String(res.Outcome))
		switch res.Outcome {
		case b24oauth.RefreshOK, b24oauth.RefreshAdopted:
			if res.Err != nil {
				span.AddEvent("b24oauth.refresh.store_failed", trace.WithAttributes(semconv.ErrorMessageKey.String(res.Err.Error())))
			}
		default:
			errType := res.Outcome
			var rte *b24oauth.RefreshTokenError
			if errors.As(res.Err, &rte) && rte.Code != "" {
				errType = rte.Code
			}
			span.SetAttributes(semconv.ErrorTypeKey.String(errType))
			span.SetStatus(codes.Error, message(res.Err, res.Outcome))
		}
	}
	span.End()
}

// StoreOp records the operation's duration, and adds it to the span of ctx when that records.
func (o *observer) StoreOp(ctx context.Context, s b24oauth.StoreOpInfo) {
	outcome := outcomeOK
	if s.Err != nil {
		outcome = outcomeError
	}
	a := o.storeAttrs.get(storeKey{s.Op, outcome})
	o.storeDuration.Record(ctx, s.Duration.Seconds(), a.record...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, spanStoreOp.String(s.Op), spanStoreTime.Float64(s.Duration.Seconds()))
		if s.MemberID != "" {
			attrs = append(attrs, spanMemberID.String(s.MemberID))
		}
		if s.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(outcomeError))
		}
		span.AddEvent("b24oauth.store", trace.WithAttributes(attrs...))
	}
}

// Event counts the event and records how long its handler took.
func (o *observer) Event(ctx context.Context, e b24oauth.EventInfo) {
	a := o.eventAttrs.get(eventKey{e.Event, e.Outcome, e.Status, e.Offline})
	o.events.Add(ctx, 1, a.add...)
	o.eventDuration.Record(ctx, e.Duration.Seconds(), a.record...)
}

// message is the status description of a failure: the error's message (the SDK's errors hold
// no token), else what failed.
func message(err error, outcome string) string {
	if err != nil {
		return err.Error()
	}
	return outcome
}
