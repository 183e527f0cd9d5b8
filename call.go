package b24oauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Call calls a REST v2 method: a JSON POST to <client_endpoint><method>, with the access token in
// the body's auth field. params is anything that encodes to a JSON object (a map, a struct) or
// nil.
//
// Before the call, the client waits for the portal's rate limiter and refreshes a token that
// has expired or is about to. A 401 expired_token or invalid_token refreshes the token and retries
// the call once; a 503 QUERY_LIMIT_EXCEEDED (the portal did not run the call) is retried with
// backoff up to RestrictionParams.MaxRetries times, and a 429 OPERATION_TIME_LIMIT waits until the
// method is unblocked. A request whose fate is unknown (the connection broke after it was sent)
// is re-sent only for methods that only read (*.get, *.list, profile, ...).
//
// A REST error reply is an *APIError; a failed refresh is a *RefreshTokenError. A redirect is
// never followed: a 3xx reply is an *APIError with its Status (a renamed portal answers 302). A
// reply longer than the client's bound (WithMaxResponseBytes) is an error matching
// ErrResponseTooLarge.
func (b *B24OAuth) Call(ctx context.Context, method string, params any) (*Response, error) {
	return b.call(ctx, APIVersionV2, method, params, isReadOnly(method))
}

// CallV3 calls a REST v3 method: a JSON POST to https://<domain>/rest/api/<method>. It behaves as
// Call; v3 error replies ({"error":{"code","message","validation"}}) are *APIError too.
//
// A method that may write (any but *.get, *.list and the like) is sent with an Idempotency-Key
// header: a random key, or the context's (ContextWithIdempotencyKey). So unlike Call, CallV3
// re-sends a write whose fate is unknown (the connection broke after the request was sent, a
// gateway error), always with the same key: the portal, which keeps the reply to a key for 24
// hours, replays it rather than running the write again. A replayed reply is returned like the
// original, with Response.Replayed set.
func (b *B24OAuth) CallV3(ctx context.Context, method string, params any) (*Response, error) {
	return b.call(ctx, APIVersionV3, method, params, isReadOnly(method))
}

func (b *B24OAuth) call(ctx context.Context, ver APIVersion, method string, params any, readOnly bool) (*Response, error) {
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	payload, err := encodeParams(params)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: %s: %w", method, err)
	}
	return b.send(ctx, ver, method, payload, readOnly, 1)
}

// send runs one REST call with its refreshes and retries. payload is a JSON object without auth;
// cost is how many requests the portal's bucket counts it as (a batch: its commands).
func (b *B24OAuth) send(ctx context.Context, ver APIVersion, method string, payload []byte, readOnly bool, cost int) (*Response, error) {
	if b.observer == nil {
		return b.sendAttempts(ctx, ver, method, payload, readOnly, cost, nil)
	}
	return b.sendObserved(ctx, ver, method, payload, readOnly, cost)
}

// sendObserved is send reporting to the client's Observer.
func (b *B24OAuth) sendObserved(ctx context.Context, ver APIVersion, method string, payload []byte, readOnly bool, cost int) (*Response, error) {
	p := b.params()
	co := &callObservation{o: b.observer, info: CallInfo{
		Method: method, APIVersion: ver, MemberID: p.MemberID, Domain: p.Domain, Commands: max(cost, 1),
	}}
	start := time.Now()
	ctx = co.o.CallStart(ctx, co.info)
	ended := false
	defer func() {
		if !ended {
			// A panic (the user's RoundTripper, a hook): the call still ends, once, so that an
			// Observer's span ends and its count of calls in flight goes down; the panic goes on.
			co.o.CallEnd(ctx, co.info, CallResult{Outcome: OutcomeTransport, Retries: co.retries,
				Duration: time.Since(start), Err: errCallPanicked})
		}
	}()
	resp, err := b.sendAttempts(ctx, ver, method, payload, readOnly, cost, co)
	ended = true
	outcome, status, code := callOutcome(ctx, err, co.waitErr != nil)
	if resp != nil {
		status = resp.Status
	} else if status == 0 {
		status = co.status // the last reply, e.g. the 401 before a refresh that failed
	}
	co.o.CallEnd(ctx, co.info, CallResult{
		Outcome: outcome, Status: status, Code: code, Retries: co.retries, Duration: time.Since(start), Err: err,
	})
	return resp, err
}

// errCallPanicked is CallResult.Err of a call that panicked.
var errCallPanicked = errors.New("b24oauth: the call panicked")

// callObservation is what sendAttempts reports to an Observer; nil without one (its methods
// then do nothing).
type callObservation struct {
	o       Observer
	info    CallInfo
	retries int
	waitErr error // the limiter's refusal, which ends the call
	status  int   // the HTTP status of the last reply
}

// retry reports a re-send.
func (co *callObservation) retry(ctx context.Context, reason string, delay time.Duration) {
	if co == nil {
		return
	}
	co.retries++
	co.o.Retry(ctx, co.info, RetryInfo{Attempt: co.retries, Reason: reason, Delay: delay})
}

// sendAttempts runs send's attempts; co, when not nil, is told of the retries and limiter waits.
func (b *B24OAuth) sendAttempts(ctx context.Context, ver APIVersion, method string, payload []byte, readOnly bool, cost int, co *callObservation) (*Response, error) {
	start := time.Now()
	rp := b.restriction.Load()
	retries, refreshed := 0, false
	var key string // the Idempotency-Key of a v3 write: every attempt sends the same
	if ver == APIVersionV3 && !readOnly && method != "batch" {
		var err error
		if key, err = idempotencyKey(ctx); err != nil {
			return nil, err
		}
	}
	for {
		if err := b.failFastErr(); err != nil {
			return nil, err
		}
		b.flushPending(ctx)
		p := b.params()
		if b.expiring(p, b.expiryMargin) {
			var err error
			if p, _, err = b.refreshAfter(ctx, p.AccessToken, TriggerExpiring); err != nil {
				return nil, err
			}
		}
		var err error
		if co == nil {
			err = b.limiter.wait(ctx, method, cost)
		} else {
			var rep waitReport
			waitStart := time.Now()
			err = b.limiter.waitReporting(ctx, method, cost, &rep)
			co.o.LimiterWait(ctx, co.info, LimiterWaitInfo{Wait: time.Since(waitStart), Limit: rep.limit(), Fallback: rep.fallback, Err: err})
			co.waitErr = err
		}
		if err != nil {
			return nil, err
		}
		resp, apiErr, wrote, err := b.post(ctx, ver, p, method, payload, key, !readOnly && key == "")
		if co != nil && apiErr != nil {
			co.status = apiErr.Status
		}
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, ErrResponseTooLarge) {
				// The portal ran the call; asking again would read as much again.
				b.logCall(ctx, method, 0, start, retries, err)
				return nil, fmt.Errorf("b24oauth: %s: %w", method, err)
			}
			// A write whose fate is unknown is re-sent only under its Idempotency-Key: the portal
			// then replays the reply of a run instead of running it again.
			if (!wrote || readOnly || key != "") && retries < rp.MaxRetries {
				retries++
				delay := backoff(retries, rp.RetryDelay)
				co.retry(ctx, RetryTransport, delay)
				if werr := sleepContext(ctx, delay); werr != nil {
					return nil, werr
				}
				continue
			}
			b.logCall(ctx, method, 0, start, retries, err)
			if wrote && !readOnly && key == "" {
				return nil, fmt.Errorf("b24oauth: %s: the request may have been executed and is not re-sent: %w", method, err)
			}
			return nil, fmt.Errorf("b24oauth: %s: %w", method, err)
		case apiErr == nil:
			b.limiter.observe(method, resp.Time.Operating, resp.Time.OperatingResetAt)
			b.logCall(ctx, method, resp.Status, start, retries, nil)
			return resp, nil
		case apiErr.Status == http.StatusUnauthorized && (apiErr.Code == "expired_token" || apiErr.Code == "invalid_token") && !refreshed:
			refreshed = true
			if _, _, err := b.refreshAfter(ctx, p.AccessToken, TriggerRejected); err != nil {
				return nil, err
			}
			co.retry(ctx, RetryExpiredToken, 0)
			continue
		case apiErr.Code == "QUERY_LIMIT_EXCEEDED" && retries < rp.MaxRetries:
			b.limiter.queryLimitExceeded()
			retries++
			delay := backoff(retries, rp.RetryDelay)
			co.retry(ctx, RetryQueryLimit, delay)
			if err := sleepContext(ctx, delay); err != nil {
				return nil, err
			}
			continue
		case apiErr.Code == "OPERATION_TIME_LIMIT" && retries < rp.MaxRetries:
			b.limiter.operationTimeLimit(method, time.Time{})
			retries++
			co.retry(ctx, RetryOperationTime, 0)
			continue
		case (readOnly || key != "") && apiErr.Code == "" && apiErr.Status >= 500 && retries < rp.MaxRetries:
			// A gateway error without a Bitrix24 reply: safe to retry only a read.
			retries++
			delay := backoff(retries, rp.RetryDelay)
			co.retry(ctx, RetryGateway, delay)
			if err := sleepContext(ctx, delay); err != nil {
				return nil, err
			}
			continue
		default:
			b.logCall(ctx, method, apiErr.Status, start, retries, apiErr)
			return nil, apiErr
		}
	}
}

// post sends one request. It returns the decoded reply or its error, whether the request was
// written to the wire (so its fate is unknown on a transport error), and a transport error.
// A non-empty idemKey is sent as the Idempotency-Key header.
//
// Only with traceWrite does post learn for sure whether a failed request was written (from an
// httptrace hook: a RoundTripper may fail after writing, e.g. one that retries on another
// connection); without it, a transport error counts as written unless it is a dial error.
// sendAttempts asks for it only where the answer decides something: a write without an
// Idempotency-Key, which is re-sent only when it never left. A read, or a write under a key,
// is re-sent either way, and skips the trace's three allocations and the transport's hooks.
func (b *B24OAuth) post(ctx context.Context, ver APIVersion, p *OAuthParams, method string, payload []byte, idemKey string, traceWrite bool) (*Response, *APIError, bool, error) {
	var u string
	if ver == APIVersionV3 {
		u = strings.TrimSuffix(p.ClientEndpoint, "/rest/") + "/rest/api/" + method
	} else {
		u = p.ClientEndpoint + method
	}
	var wrote *wroteTrace
	if traceWrite {
		wrote = new(wroteTrace)
		wrote.trace.WroteRequest = wrote.wroteRequest // before WithClientTrace composes it with the context's own
		ctx = httptrace.WithClientTrace(ctx, &wrote.trace)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(withAuth(payload, p.AccessToken)))
	if err != nil {
		return nil, nil, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := b.sender().Do(req)
	if err != nil {
		return nil, nil, wrote.written() || !isDialError(err), err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Not followed (see refuseRedirect), and its body is not read.
		return nil, &APIError{Status: resp.StatusCode, Method: method, Version: ver, Description: redirectDescription(resp)}, true, nil
	}
	// The reply is read into a pooled buffer: decodeReply keeps nothing of it, so the buffer goes
	// back to the pool (and the budget gets its share back) once the reply is decoded.
	buf := replyBufs.Get().(*[]byte)
	reply, held, err := readReplyInto(ctx, resp, b.maxReply, b.budget, *buf)
	defer func() {
		b.budget.release(held)
		replyBufs.Put(buf)
	}()
	if err != nil {
		return nil, nil, true, err
	}
	r, apiErr := decodeReply(resp.StatusCode, reply)
	if apiErr != nil {
		apiErr.Method, apiErr.Version = method, ver
		return nil, apiErr, true, nil
	}
	// resp.Header's keys are canonical: a direct lookup is Header.Get without canonicalizing.
	if v := resp.Header["Idempotent-Replayed"]; len(v) > 0 {
		r.Replayed = strings.EqualFold(v[0], "true")
	}
	return r, nil, true, nil
}

// wroteTrace learns from the transport, on its own goroutine, whether a request reached the
// wire: one allocation for the trace and its flag.
type wroteTrace struct {
	trace httptrace.ClientTrace
	wrote atomic.Bool
}

func (w *wroteTrace) wroteRequest(httptrace.WroteRequestInfo) { w.wrote.Store(true) }

// written reports whether the request was written; false for a nil w (not traced).
func (w *wroteTrace) written() bool { return w != nil && w.wrote.Load() }

// isDialError reports a failure to connect at all (DNS, dial, certificate), which leaves
// nothing sent.
func isDialError(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &dnsErr) || errors.As(err, &certErr)
}

// envelope is a REST reply of either version. Its time block is decoded into plain fields on
// the fast path; flexEnvelope takes over for a reply that needs the tolerant decoding.
type envelope struct {
	Result           json.RawMessage `json:"result"`
	Next             flexInt         `json:"next"`
	Total            flexInt         `json:"total"`
	Time             plainTime       `json:"time"`
	Error            json.RawMessage `json:"error"`
	ErrorDescription string          `json:"error_description"`
	Argument         string          `json:"argument"`
}

type flexEnvelope struct {
	envelope
	Time ResponseTime `json:"time"`
}

// plainTime is the time block as the portal normally sends it.
type plainTime struct {
	Start            float64  `json:"start"`
	Finish           float64  `json:"finish"`
	Duration         float64  `json:"duration"`
	Processing       float64  `json:"processing"`
	DateStart        jsonDate `json:"date_start"`
	DateFinish       jsonDate `json:"date_finish"`
	Operating        float64  `json:"operating"`
	OperatingResetAt float64  `json:"operating_reset_at"`
}

func (t plainTime) responseTime() ResponseTime {
	return ResponseTime{
		Start: t.Start, Finish: t.Finish, Duration: t.Duration, Processing: t.Processing,
		DateStart: time.Time(t.DateStart), DateFinish: time.Time(t.DateFinish),
		Operating: t.Operating, OperatingResetAt: int64(t.OperatingResetAt),
	}
}

// envelopes holds the envelopes decodeReply decodes into, each zero.
var envelopes = sync.Pool{New: func() any { return new(envelope) }}

// decodeReply turns a reply into a Response, or an *APIError for an error reply (v2:
// {"error":"CODE","error_description":"..."}; v3: {"error":{"code","message","validation"}}).
// Nothing it returns refers to body, which the caller reuses.
func decodeReply(status int, body []byte) (*Response, *APIError) {
	env := envelopes.Get().(*envelope)
	defer func() {
		*env = envelope{} // drops the Result the caller now holds
		envelopes.Put(env)
	}()
	var rt ResponseTime
	if err := json.Unmarshal(body, env); err == nil {
		rt = env.Time.responseTime()
	} else if fe := (flexEnvelope{}); json.Unmarshal(body, &fe) == nil {
		*env, rt = fe.envelope, fe.Time
	} else {
		return nil, &APIError{Status: status, Description: "the portal's reply is not JSON"}
	}
	if len(env.Error) > 0 && !bytes.Equal(env.Error, []byte("null")) {
		e := &APIError{Status: status, Description: env.ErrorDescription, Argument: env.Argument}
		if env.Error[0] == '{' {
			var v3 struct {
				Code       string          `json:"code"`
				Message    string          `json:"message"`
				Validation json.RawMessage `json:"validation"`
			}
			if json.Unmarshal(env.Error, &v3) == nil {
				e.Code = v3.Code
				e.Validation, v3.Message = decodeValidation(v3.Validation, v3.Message)
				if e.Description == "" {
					e.Description = v3.Message
				}
			}
		} else {
			_ = json.Unmarshal(env.Error, &e.Code)
		}
		return nil, e
	}
	if status != http.StatusOK {
		return nil, &APIError{Status: status, Description: "unexpected HTTP status without an error code"}
	}
	return &Response{Result: env.Result, Next: int(env.Next), Total: int(env.Total), Time: rt, Status: status}, nil
}

// decodeValidation decodes a v3 error's field errors. A list longer than maxValidationErrors is
// not decoded (each element would cost more memory than its bytes): message says so instead.
func decodeValidation(raw json.RawMessage, message string) ([]ValidationError, string) {
	if raw = bytes.TrimSpace(raw); len(raw) == 0 || raw[0] != '[' {
		return nil, message
	}
	if jsonCount(raw, maxValidationErrors) > maxValidationErrors {
		return nil, joinDesc(message, fmt.Sprintf("more than %d field errors, not decoded", maxValidationErrors))
	}
	var v []ValidationError
	_ = json.Unmarshal(raw, &v)
	return v, message
}

// redirectDescription is the Description of the *APIError a 3xx reply becomes, naming the origin
// it pointed to (a renamed portal's new one), and nothing else of its Location.
func redirectDescription(resp *http.Response) string {
	desc := "the portal answered with a redirect, which is not followed; its domain may have changed"
	if u, err := resp.Location(); err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http") {
		desc += " (to " + u.Scheme + "://" + u.Host + ")"
	}
	return desc
}

// encodeParams encodes params as a JSON object (nil for no params).
func encodeParams(params any) ([]byte, error) {
	if params == nil {
		return nil, nil
	}
	var data []byte
	marshaled := false // by json.Marshal: valid and without surrounding space
	switch v := params.(type) {
	case json.RawMessage:
		data = v
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(params); err != nil {
			return nil, fmt.Errorf("encoding params: %w", err)
		}
		marshaled = true
	}
	if !marshaled {
		data = bytes.TrimSpace(data)
	}
	if bytes.Equal(data, []byte("null")) {
		return nil, nil
	}
	if len(data) < 2 || data[0] != '{' || !marshaled && !json.Valid(data) {
		return nil, errors.New("params must encode to a JSON object")
	}
	return data, nil
}

// withAuth returns payload with "auth" added as its first key.
func withAuth(payload []byte, token string) []byte {
	buf := make([]byte, 0, len(payload)+len(token)+12)
	buf = append(buf, `{"auth":`...)
	buf = appendJSONString(buf, token)
	if inner := bytes.TrimSpace(payload[min(1, len(payload)):]); len(inner) > 1 {
		buf = append(buf, ',')
		buf = append(buf, inner...)
	} else {
		buf = append(buf, '}')
	}
	return buf
}

func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain[s[i]] {
			q, _ := json.Marshal(s)
			return append(buf, q...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// jsonPlain marks the bytes a JSON string holds as they are (printable ASCII but " and \):
// a token made of them only is quoted without json.Marshal. A table, as the check runs over
// every byte of the access token on every call.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// checkMethod rejects method names that could change the URL's meaning.
func checkMethod(method string) error {
	if method == "" || len(method) > 256 {
		return errors.New("b24oauth: invalid method name")
	}
	for i := 0; i < len(method); i++ {
		c := method[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("b24oauth: invalid method name %q", method)
		}
	}
	if strings.Contains(method, "..") {
		return fmt.Errorf("b24oauth: invalid method name %q", method)
	}
	return nil
}

// readOnlyMethods are methods with no side effects whose names don't say so.
var readOnlyMethods = map[string]bool{
	"profile": true, "server.time": true, "app.info": true, "user.admin": true, "user.current": true,
	"scope": true, "methods": true, "method.get": true, "user.access": true, "access.name": true,
	"feature.get": true, "app.option.get": true, "user.option.get": true, "documentation": true,
}

// writingMethods are methods that change something although their names say they read:
// event.offline.get deletes (clear=1) or reserves (clear=0) the events it returns.
var writingMethods = map[string]bool{"event.offline.get": true}

// isReadOnly reports whether re-sending method is harmless: it only reads.
func isReadOnly(method string) bool {
	m := strings.ToLower(method)
	if readOnlyMethods[m] {
		return true
	}
	if writingMethods[m] {
		return false
	}
	last := m[strings.LastIndexByte(m, '.')+1:]
	switch last {
	case "get", "list", "fields", "search", "current", "count", "getlist", "getfields", "tail":
		return true
	}
	return false
}

func (b *B24OAuth) logCall(ctx context.Context, method string, status int, start time.Time, retries int, err error) {
	log := b.Logger()
	level := slog.LevelDebug
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method), slog.Int("status", status),
		slog.Duration("duration", time.Since(start)), slog.Int("retries", retries),
		slog.String("member_id", b.params().MemberID),
	}
	if err != nil {
		attrs = append(attrs, slog.Any("error", err))
	}
	log.LogAttrs(ctx, level, "b24oauth: call", attrs...)
}
