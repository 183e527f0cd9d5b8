// Package otelb24 reports what a b24oauth App and its clients do as OpenTelemetry metrics and
// spans: set the Observer NewObserver returns in AppConfig.Observer (or give it to a client on
// its own with b24oauth.WithObserver).
//
// It is its own module, so that the core (github.com/b24go/b24oauth) never requires
// OpenTelemetry.
//
// # Metrics
//
// Every metric is recorded through the meter named ScopeName of the MeterProvider
// (WithMeterProvider; default otel.GetMeterProvider()). No metric carries a member_id or a
// domain (one time series per portal would not scale), and none a token.
//
//	name                       instrument unit       attributes
//	b24oauth.calls             counter    {call}     method, api_version, outcome
//	b24oauth.call.duration     histogram  s          method, api_version, outcome
//	b24oauth.retries           counter    {retry}    method, api_version, reason
//	b24oauth.limiter.wait      histogram  s          method, api_version, outcome, limit, fallback
//	b24oauth.refreshes         counter    {refresh}  outcome, trigger
//	b24oauth.refresh.duration  histogram  s          outcome, trigger
//	b24oauth.store.duration    histogram  s          op, outcome
//	b24oauth.events            counter    {event}    event, outcome, http.response.status_code, offline
//	b24oauth.event.duration    histogram  s          event, outcome, http.response.status_code, offline
//
// The attributes:
//
//   - method: the REST method of the request ("crm.deal.get"; "batch" for a batch, also the
//     batches of a chained List and of PullOfflineEvents); api_version: "v2" or "v3".
//   - outcome of a call: one of b24oauth's Outcome constants (ok, api_error, limited,
//     auth_error, transport, canceled); a call's duration includes its limiter waits, refreshes
//     and retries.
//   - reason of a retry: one of b24oauth's Retry constants (query_limit, operation_time_limit,
//     expired_token, transport, gateway).
//   - outcome of a limiter wait: ok (the request was let through) or error (the wait ended
//     without it: the context's deadline or cancellation). A wait is recorded however short, so
//     the histogram's count is the number of requests that went through the limiter, and its
//     first bucket (up to 0.1 ms) those it let through at once. limit: which limit held the
//     request longest, one of b24oauth's Limit constants (bucket: the portal's bucket in this
//     process; shared: the bucket kept by AppConfig.RateLimiter; operating: the method's
//     operating-time budget), or none. fallback: true when the shared RateLimiter had failed
//     and the in-process bucket paced the request instead (a Redis outage shows here).
//   - outcome of a refresh: ok, adopted (a newer pair was already stored, by another client or
//     replica), revoked (the portal must reinstall the app), error (may work later). A refresh
//     counts once however many calls waited for it; KeepAlive's refreshes count too. trigger:
//     why it ran, one of b24oauth's Trigger constants (expiring, rejected: the portal refused
//     the access token, requested: AuthManager.RefreshAuth, keepalive, recheck: the App
//     re-checking a refresh another process marked and did not finish). Many rejected and few
//     expiring refreshes mean the clients' clocks or the stored expiries are off.
//   - op of a store operation: load, update, create, delete, delete_if, list; outcome: ok (the
//     store answered, ErrNotInstalled included) or error (the store failed).
//   - event: the event's name (ONAPPINSTALL, ONCRMDEALADD...; "install_page" for the install
//     page POST; "" for an ordinary event that was rejected, whose name the sender chose);
//     outcome: accepted or rejected; http.response.status_code: the status the handler
//     answered (200 for an offline event handled, 500 when the function failed); offline: true
//     for an event pulled by PullOfflineEvents.
//
// The duration histograms have explicit bucket boundaries: calls, refreshes and events the
// semantic conventions' HTTP duration buckets (5 ms to 10 s) plus 30 s and 60 s, for calls that
// waited for the portal's limits or were retried; limiter waits from 0.1 ms (let through at
// once) and 1 ms up to 60 s; store operations from 0.1 ms up to 5 s. A View of the
// MeterProvider can change them.
//
// # Spans
//
// Spans come from the tracer named ScopeName of the TracerProvider (WithTracerProvider; default
// otel.GetTracerProvider()).
//
//   - b24oauth.call (SpanKindClient): one per REST request, from CallStart to CallEnd; the
//     request's context carries it, so spans of an instrumented HTTP transport, and the
//     refresh the call waits for, are its children. Attributes: server.address (the portal's
//     domain), b24oauth.method, b24oauth.api_version, b24oauth.member_id, b24oauth.commands (a
//     batch's commands, else 1), and when it ends b24oauth.outcome, b24oauth.retries,
//     http.response.status_code (the portal's last status, when one was received). A failed
//     call has error.type (the portal's error code, such as ERROR_NOT_FOUND, else the outcome)
//     and the status Error with the error's message (the SDK's errors are redacted: they hold
//     no token). Each re-send is a span event b24oauth.retry (b24oauth.retry.attempt,
//     b24oauth.retry.reason, b24oauth.retry.delay in seconds); each wait for the limits of 1 ms or
//     more, and each that failed, is an event b24oauth.limiter.wait (b24oauth.limiter.wait in
//     seconds, error.message when the wait failed).
//   - b24oauth.refresh (SpanKindInternal: the store's update and the POST to the OAuth server
//     within it): one per refresh, from RefreshStart to RefreshEnd. Attributes:
//     b24oauth.member_id, b24oauth.domain, and when it ends b24oauth.outcome. A revoked or
//     failed refresh has error.type (the OAuth server's error code, such as invalid_grant,
//     else the outcome) and the status Error; a new pair that is in use but could not be stored
//     yet is an event b24oauth.refresh.store_failed.
//   - A store operation is an event b24oauth.store (b24oauth.store.op,
//     b24oauth.store.duration in seconds, b24oauth.member_id, error.type "error" when the
//     store failed) on the span of the context it ran in, when that span records: the
//     refresh's, or the span of an instrumented HTTP server for the App's handlers.
//
// member_id is an identifier, not a secret: it is on spans, never on metrics.
//
// # Cost
//
// The attribute sets of the metrics are built once per combination (method, version,
// outcome...) and cached; a measurement then allocates nothing of its own. Span attributes are
// only set on spans that record, after they started: a sampler decides on a span's name, kind
// and parent. BenchmarkCall and BenchmarkCallOverhead measure calls with and without the
// Observer; most of what it adds is the SDK's own work (a recorded span above all).
package otelb24
