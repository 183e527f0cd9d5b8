package b24oauth

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Observer receives what an App and its clients do: REST calls and their retries, waits for
// the portal's rate limits, token refreshes, store operations, and lifecycle and ordinary
// events. Set it in AppConfig.Observer, or with WithObserver for a client on its own; nil (the
// default) records nothing and costs nothing. The otelb24 module turns it into OpenTelemetry
// metrics and spans.
//
// Methods are called synchronously, on the goroutine doing the work, possibly from many
// goroutines at once: they must be safe for concurrent use, quick, and must not block. The
// values they receive never hold a token, an application token or the client secret; an Err
// prints as the SDK's errors do, redacted. Values of string fields meant for grouping
// (CallInfo.Method, the Outcomes, RetryInfo.Reason, StoreOpInfo.Op, EventInfo.Event) come from
// small fixed sets, from the caller's own code, or (EventInfo.Event) from a bounded set of
// verified names, never from an unverified request, so they are safe as metric attributes.
// The portal's and the sender's words (CallResult.Code, EventInfo.Reason, an Err's message)
// are bounded in size but not in number of values: span attributes, not metric attributes.
//
// The methods may grow: embed NopObserver in an implementation to keep it compiling when they
// do.
type Observer interface {
	// CallStart is called when a REST request (Call, CallV3, one request of Batch, BatchV3, List
	// or ListV3) begins, before the limiter and any refresh. The context it returns is the call's:
	// the refresh, the HTTP request and CallEnd get it (an Observer puts its span there).
	CallStart(ctx context.Context, c CallInfo) context.Context
	// CallEnd is called once per CallStart, with the call's outcome; also when the call panics
	// (OutcomeTransport), before the panic goes on.
	CallEnd(ctx context.Context, c CallInfo, r CallResult)
	// Retry is called each time a call's request is sent again, before the backoff.
	Retry(ctx context.Context, c CallInfo, r RetryInfo)
	// LimiterWait is called after each wait for the portal's limits (the rate limiter, a
	// method's operating-time pacing), however short, with how long it took.
	LimiterWait(ctx context.Context, c CallInfo, w LimiterWaitInfo)
	// RefreshStart is called when a token refresh begins: one per refresh, however many calls
	// wait for it; a refresh by KeepAlive too. The context it returns is the refresh's. The
	// exchanges an install or uninstall handler makes to verify an event are part of that
	// event, not refreshes.
	RefreshStart(ctx context.Context, r RefreshInfo) context.Context
	// RefreshEnd is called once per RefreshStart, with the refresh's outcome.
	RefreshEnd(ctx context.Context, r RefreshInfo, res RefreshResult)
	// StoreOp is called after each operation of an App on its TokenStore.
	StoreOp(ctx context.Context, s StoreOpInfo)
	// Event is called after an App's handler answered an event (install, update, uninstall,
	// an ordinary event of EventHandler) and after each offline event PullOfflineEvents handed
	// to its function.
	Event(ctx context.Context, e EventInfo)
}

// NopObserver is an Observer that does nothing. Embed it in an Observer that implements only
// some of the methods, and to keep compiling when the interface grows.
type NopObserver struct{}

// CallStart returns ctx.
func (NopObserver) CallStart(ctx context.Context, _ CallInfo) context.Context { return ctx }

// CallEnd does nothing.
func (NopObserver) CallEnd(context.Context, CallInfo, CallResult) {}

// Retry does nothing.
func (NopObserver) Retry(context.Context, CallInfo, RetryInfo) {}

// LimiterWait does nothing.
func (NopObserver) LimiterWait(context.Context, CallInfo, LimiterWaitInfo) {}

// RefreshStart returns ctx.
func (NopObserver) RefreshStart(ctx context.Context, _ RefreshInfo) context.Context { return ctx }

// RefreshEnd does nothing.
func (NopObserver) RefreshEnd(context.Context, RefreshInfo, RefreshResult) {}

// StoreOp does nothing.
func (NopObserver) StoreOp(context.Context, StoreOpInfo) {}

// Event does nothing.
func (NopObserver) Event(context.Context, EventInfo) {}

// WithObserver makes the client report its calls, retries, limiter waits and refreshes to o.
// nil: nothing is reported. The clients of an App report to AppConfig.Observer.
func WithObserver(o Observer) Option {
	return func(opts *options) { opts.observer = o }
}

// CallInfo describes a REST request.
type CallInfo struct {
	Method     string     // the REST method ("crm.deal.get"; "batch" for a batch)
	APIVersion APIVersion // APIVersionV2 or APIVersionV3
	MemberID   string     // the portal's member_id
	Domain     string     // the portal's domain
	Commands   int        // how many requests the portal counts it as: a batch's commands, else 1
}

// CallResult is how a REST request ended.
type CallResult struct {
	Outcome string // one of the Outcome constants
	Status  int    // the portal's last HTTP status; 0 when none was received
	// Code is the portal's error code (an *APIError's Code), if any: at most 128 bytes, any byte
	// but a letter, a digit or "_.:-" replaced by '_'.
	Code     string
	Retries  int           // how many times the request was sent again
	Duration time.Duration // from CallStart, waits, refreshes and retries included
	Err      error         // what the call returned; nil for OutcomeOK
}

// The outcomes of a call (CallResult.Outcome). An *APIError without a Code (a gateway's error
// page, a redirect, a reply that is not JSON) is not the REST API's answer: OutcomeTransport,
// with its Status.
const (
	OutcomeOK        = "ok"         // the portal ran the call
	OutcomeAPIError  = "api_error"  // the portal answered an error code (an *APIError with a Code)
	OutcomeLimited   = "limited"    // the portal's limits: QUERY_LIMIT_EXCEEDED or OPERATION_TIME_LIMIT after the retries, or a wait past the deadline
	OutcomeAuthError = "auth_error" // no usable token: a failed refresh, a revoked or removed installation
	OutcomeTransport = "transport"  // no REST reply: the network, TLS, a timeout, a reply too large or not Bitrix24's (see below)
	OutcomeCanceled  = "canceled"   // the caller's context ended
)

// RetryInfo is one re-send of a call.
type RetryInfo struct {
	Attempt int           // 1 for the first re-send
	Reason  string        // one of the Retry constants
	Delay   time.Duration // the backoff before the re-send (0: none)
}

// The reasons for a re-send (RetryInfo.Reason).
const (
	RetryQueryLimit    = "query_limit"          // 503 QUERY_LIMIT_EXCEEDED
	RetryOperationTime = "operation_time_limit" // 429 OPERATION_TIME_LIMIT: the method was blocked
	RetryExpiredToken  = "expired_token"        // 401 expired_token or invalid_token: refreshed, sent again
	RetryTransport     = "transport"            // the connection failed (a read, or a v3 write under its Idempotency-Key)
	RetryGateway       = "gateway"              // a 5xx without a Bitrix24 reply
)

// LimiterWaitInfo is one wait for the portal's limits before a request.
type LimiterWaitInfo struct {
	Wait time.Duration // how long the request was held
	// Limit is the limit that held the request longest (its holds added up): LimitBucket,
	// LimitShared or LimitOperating; "" when none held it (Wait is then the limiter's own
	// cost). For a wait that failed, the limit it was waiting for when it failed.
	Limit string
	// Fallback reports that the shared RateLimiter (AppConfig.RateLimiter) failed or is
	// resting after a failure, and the in-process bucket paced the request in its place.
	Fallback bool
	Err      error // why the wait ended without the request being allowed (a deadline, a cancellation)
}

// The limits that hold a request back (LimiterWaitInfo.Limit).
const (
	LimitBucket    = "bucket"    // the portal's request bucket, kept in this process
	LimitShared    = "shared"    // the portal's request bucket, kept by AppConfig.RateLimiter across replicas
	LimitOperating = "operating" // the method's operating-time budget: paced, or blocked after OPERATION_TIME_LIMIT
)

// RefreshInfo describes a token refresh.
type RefreshInfo struct {
	MemberID string // the portal's member_id
	Domain   string // the portal's domain
	Trigger  string // why the refresh runs: one of the Trigger constants
}

// Why a refresh runs (RefreshInfo.Trigger).
const (
	TriggerExpiring  = "expiring"  // the access token expires within the client's margin (before a call, or in TokenSource)
	TriggerRejected  = "rejected"  // the portal refused the access token (401 expired_token or invalid_token)
	TriggerRequested = "requested" // the caller asked for it: AuthManager.RefreshAuth
	TriggerKeepAlive = "keepalive" // App.KeepAlive, for a portal idle long enough to risk its refresh token
	TriggerRecheck   = "recheck"   // the App re-checks a portal whose refresh another process marked and did not finish
)

// RefreshResult is how a refresh ended.
type RefreshResult struct {
	Outcome  string        // one of the Refresh constants
	Duration time.Duration // from RefreshStart
	// Err is the failure for RefreshRevoked and RefreshError; for RefreshOK, an error when the
	// new pair is in use but could not be stored yet (the App retries the write) or the
	// CallbackRefreshAuth failed (the pair is offered to it again).
	Err error
}

// The outcomes of a refresh (RefreshResult.Outcome).
const (
	RefreshOK      = "ok"      // the OAuth server issued a new pair
	RefreshAdopted = "adopted" // a newer pair was already stored (by another client or replica), and taken
	RefreshRevoked = "revoked" // the refresh token was refused: the portal must reinstall the app
	RefreshError   = "error"   // the refresh failed and may work later (the network, the store)
)

// StoreOpInfo is one operation of an App on its TokenStore.
type StoreOpInfo struct {
	Op       string        // one of the StoreOp constants
	MemberID string        // the installation's member_id; "" for a list
	Duration time.Duration // how long the store took
	// Err is the store's failure. It is nil when the store answered: ErrNotInstalled,
	// ErrAlreadyInstalled, and an update or conditional delete the App called off (its function
	// returned an error on purpose) are answers.
	Err error
}

// The operations of StoreOpInfo.Op.
const (
	StoreLoad     = "load"
	StoreUpdate   = "update"
	StoreCreate   = "create"
	StoreDelete   = "delete"
	StoreDeleteIf = "delete_if"
	StoreList     = "list"
)

// EventInfo is an event an App answered.
type EventInfo struct {
	// Event is the event's name (ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL, ONCRMDEALADD...;
	// "install_page" for the install page POST). An ordinary event's name is given only once
	// the event was verified: a rejected one has "" (its name, being the sender's word, would
	// let anyone add names). Even verified, a name is the word of whoever holds the portal's
	// application token (on current portals, any of its users): only the names
	// AppConfig.Events binds and the first 64 others an App sees are given, the rest have "".
	Event    string
	MemberID string // the portal's member_id, once the event was verified; else ""
	// Outcome is EventAccepted or EventRejected. An uninstall of a portal not installed is
	// answered 200 (so that Bitrix24 does not send it again) but, having changed nothing and
	// proved nothing, is rejected, Reason "not installed".
	Outcome string
	// Status is the HTTP status the handler answered (200 for an offline event handled, 500
	// when the function failed); Reason says why a rejected event was refused, as told to the
	// sender (at most a few hundred bytes; it may quote a part of the request, clipped to 64
	// bytes and escaped).
	Status   int
	Reason   string
	Offline  bool          // an offline event (PullOfflineEvents)
	Duration time.Duration // how long the handler took
}

// The outcomes of an event (EventInfo.Outcome).
const (
	EventAccepted = "accepted"
	EventRejected = "rejected"
)

// callOutcome classifies what send returned; limiterRefused: the limiter's wait ended it.
func callOutcome(ctx context.Context, err error, limiterRefused bool) (outcome string, status int, code string) {
	if err == nil {
		return OutcomeOK, http.StatusOK, ""
	}
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Code {
		case "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT":
			return OutcomeLimited, ae.Status, ae.Code
		case "":
			// No REST error code: a gateway's error page, a redirect, a reply that is not JSON.
			return OutcomeTransport, ae.Status, ""
		}
		return OutcomeAPIError, ae.Status, reportedCode(ae.Code)
	}
	var rte *RefreshTokenError
	switch {
	case errors.As(err, &rte), errors.Is(err, ErrNotInstalled), errors.Is(err, ErrDestroyed):
		return OutcomeAuthError, 0, ""
	case limiterRefused && ctx.Err() == nil:
		// A wait past the deadline fails before the deadline itself. (Only the limiter's: a
		// transport's own timeout matches context.DeadlineExceeded too.)
		return OutcomeLimited, 0, ""
	case ctx.Err() != nil:
		return OutcomeCanceled, 0, ""
	}
	return OutcomeTransport, 0, ""
}

// maxReportedCode bounds CallResult.Code (Bitrix24's longest codes are about 64 bytes).
const maxReportedCode = 128

// reportedCode is an error code as CallResult.Code gives it: at most maxReportedCode bytes,
// each byte that is not a letter, a digit or one of "_.:-" replaced by '_'. The code is the
// portal's word, so that a span attribute made of it has a bounded size and no control
// characters.
func reportedCode(c string) string {
	clean := len(c) <= maxReportedCode
	for i := 0; clean && i < len(c); i++ {
		clean = codeByte(c[i])
	}
	if clean {
		return c // the usual case: no allocation
	}
	b := []byte(c[:min(len(c), maxReportedCode)])
	for i, x := range b {
		if !codeByte(x) {
			b[i] = '_'
		}
	}
	return string(b)
}

func codeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-'
}
