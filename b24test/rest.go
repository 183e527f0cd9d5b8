package b24test

import (
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strings"
	"time"
)

const maxBody = 32 << 20

// timeBlock is the "time" object of REST replies, fields in the real order.
type timeBlock struct {
	Start            float64 `json:"start"`
	Finish           float64 `json:"finish"`
	Duration         float64 `json:"duration"`
	Processing       float64 `json:"processing"`
	DateStart        string  `json:"date_start"`
	DateFinish       string  `json:"date_finish"`
	OperatingResetAt int64   `json:"operating_reset_at"`
	Operating        float64 `json:"operating"`
}

type envelope struct {
	Result any       `json:"result"`
	Next   *int      `json:"next,omitempty"`
	Total  *int      `json:"total,omitempty"`
	Time   timeBlock `json:"time"`
}

// phpDate formats t like PHP's date('c').
func phpDate(t time.Time) string { return t.Format("2006-01-02T15:04:05-07:00") }

func unixFloat(t time.Time) float64 {
	return math.Round(float64(t.UnixNano())/1e3) / 1e6
}

func makeTime(start time.Time, d time.Duration, operating time.Duration, resetAt time.Time) timeBlock {
	finish := start.Add(d)
	return timeBlock{
		Start:            unixFloat(start),
		Finish:           unixFloat(finish),
		Duration:         d.Seconds(),
		Processing:       d.Seconds(),
		DateStart:        phpDate(start),
		DateFinish:       phpDate(finish),
		OperatingResetAt: resetAt.Unix(),
		Operating:        operating.Seconds(),
	}
}

// callOutcome is the outcome of one method call (top level or in a batch).
type callOutcome struct {
	result any
	next   *int
	total  *int
	err    *Error
	time   timeBlock
}

func errOutcome(code, desc string, status int) callOutcome {
	return callOutcome{err: &Error{Code: code, Description: desc, Status: status}}
}

var (
	errNoAuth         = &Error{Code: "NO_AUTH_FOUND", Description: "Wrong authorization data", Status: http.StatusUnauthorized}
	errInvalidToken   = &Error{Code: "invalid_token", Description: "The access token provided is invalid", Status: http.StatusUnauthorized}
	errExpiredToken   = &Error{Code: "expired_token", Description: "The access token provided has expired", Status: http.StatusUnauthorized}
	errQueryLimit     = &Error{Code: "QUERY_LIMIT_EXCEEDED", Description: "Too many requests", Status: http.StatusServiceUnavailable}
	errOperationLimit = &Error{Code: "OPERATION_TIME_LIMIT", Description: "Method is blocked due to operation time limit.", Status: http.StatusTooManyRequests}
	errMethodNotFound = &Error{Code: "ERROR_METHOD_NOT_FOUND", Description: "Method not found!", Status: http.StatusNotFound}
)

func (p *Portal) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	path := r.URL.Path
	switch {
	case path == "/oauth/authorize/" || path == "/oauth/authorize":
		p.serveAuthorize(w, r)
	case strings.HasPrefix(path, "/rest/api/"):
		p.serveV3(w, r, strings.TrimPrefix(path, "/rest/api/"))
	case strings.HasPrefix(path, "/rest/"):
		p.serveV2(w, r, strings.TrimPrefix(path, "/rest/"))
	default:
		http.Error(w, "b24test: not found", http.StatusNotFound)
	}
}

// countRequest counts an incoming REST request and applies the rate limit.
func (p *Portal) countRequest(method string) *Error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p.total++
	p.requests[method]++
	if s.cfg.rateBurst <= 0 {
		return nil
	}
	now := s.now()
	if el := now.Sub(p.bucketAt).Seconds(); el > 0 {
		p.bucket = math.Max(0, p.bucket-el*s.cfg.rateDrain)
		p.bucketAt = now
	}
	if p.bucket+1 > s.cfg.rateBurst {
		p.rejections++
		return errQueryLimit
	}
	p.bucket++
	return nil
}

// authenticate checks an access token for this portal and returns its user.
func (p *Portal) authenticate(tok string) (int, *Error) {
	if tok == "" {
		return 0, errNoAuth
	}
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.access[tok]
	if rec == nil || rec.p != p || rec.revoked || !p.installed {
		return 0, errInvalidToken
	}
	if !s.now().Before(rec.expires) {
		return 0, errExpiredToken
	}
	return rec.user, nil
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// takeToken extracts (and removes) the token: Bearer header, else auth,
// else access_token. Non-scalar values are ignored.
func takeToken(r *http.Request, params *phpArray) string {
	tok := bearer(r)
	for _, k := range []string{"auth", "access_token"} {
		v, ok := params.get(k)
		if !ok {
			continue
		}
		params.del(k)
		if s, isStr := v.(string); isStr && tok == "" {
			tok = s
		}
	}
	return tok
}

// readV2Params merges the query string and the body (form, multipart or
// JSON) with PHP semantics; body keys override query keys.
func readV2Params(r *http.Request) *phpArray {
	params := newPHPArray()
	parseStr(r.URL.RawQuery, params)
	if r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return params
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
		if err := r.ParseMultipartForm(maxBody); err == nil && r.MultipartForm != nil {
			for k, vs := range r.MultipartForm.Value {
				for _, v := range vs {
					setBracketKey(params, k, v)
				}
			}
		}
	case "application/json":
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
		v, err := decodeJSONOrdered(body)
		if err != nil {
			return params // invalid JSON silently becomes {}
		}
		if obj, ok := v.(*phpArray); ok {
			for _, k := range obj.keys {
				params.set(k, obj.m[k])
			}
		}
	default: // form-urlencoded or unknown: parse as a form, like PHP's $_POST
		if ct == "application/x-www-form-urlencoded" || ct == "" {
			body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
			parseStr(string(body), params)
		}
	}
	return params
}

func (p *Portal) serveV2(w http.ResponseWriter, r *http.Request, name string) {
	name = strings.TrimSuffix(name, "/")
	method := strings.ToLower(strings.TrimSuffix(name, ".json"))
	if strings.Contains(method, "/") {
		// Webhook URLs (/rest/<user>/<code>/<method>) are not supported.
		p.countRequest(method)
		writeError(w, errNoAuth)
		return
	}
	if e := p.countRequest(method); e != nil {
		writeError(w, e)
		return
	}
	params := readV2Params(r)
	user, e := p.authenticate(takeToken(r, params))
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("X-Bitrix-Rest-Application", p.s.cfg.clientID)
	if method == "batch" {
		res, tb := p.runBatch(user, params)
		writeJSON(w, http.StatusOK, envelope{Result: res, Time: tb})
		return
	}
	out := p.call(user, method, params, false)
	if out.err != nil {
		writeError(w, out.err)
		return
	}
	writeJSON(w, http.StatusOK, envelope{Result: out.result, Next: out.next, Total: out.total, Time: out.time})
}

func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, e.status(), map[string]string{"error": e.Code, "error_description": e.Description})
}

// asError converts a MethodFunc error to an *Error.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: "INTERNAL_SERVER_ERROR", Description: err.Error(), Status: http.StatusInternalServerError}
}

// operatingLocked applies the operating limit for method and records d.
func (p *Portal) operatingLocked(method string, now time.Time, d time.Duration) (used time.Duration, resetAt time.Time, e *Error) {
	s := p.s
	window := s.cfg.opWindow
	entries := p.opUsage[method]
	i := 0
	for i < len(entries) && window > 0 && !entries[i].at.After(now.Add(-window)) {
		i++
	}
	entries = entries[i:]
	for _, en := range entries {
		used += en.d
	}
	if s.cfg.opLimit > 0 && used > s.cfg.opLimit {
		p.opRejects++
		p.opUsage[method] = entries
		return used, entries[0].at.Add(window), errOperationLimit
	}
	if d > 0 {
		entries = append(entries, opEntry{at: now, d: d})
		used += d
	}
	p.opUsage[method] = entries
	if len(entries) > 0 {
		return used, entries[0].at.Add(window), nil
	}
	return used, now.Add(window), nil
}

// call runs one (non-batch) method for user.
func (p *Portal) call(user int, method string, params *phpArray, inBatch bool) callOutcome {
	s := p.s
	s.mu.Lock()
	if inBatch {
		p.subcalls[method]++
	}
	fn := s.methods[method]
	b, isBuiltin := builtins[method]
	if fn == nil && (!isBuiltin || !p.hasScope(b.scope)) {
		s.mu.Unlock()
		return callOutcome{err: errMethodNotFound}
	}
	now := s.now()
	d := s.durations[method]
	used, resetAt, e := p.operatingLocked(method, now, d)
	if e != nil {
		s.mu.Unlock()
		return callOutcome{err: e}
	}
	out := callOutcome{time: makeTime(now, d, used, resetAt)}
	if fn != nil {
		s.mu.Unlock()
		res, err := safeCall(fn, p, plainMap(params))
		if err != nil {
			out.err = asError(err)
			return out
		}
		out.result = res
		return out
	}
	defer s.mu.Unlock()
	c := &callCtx{p: p, user: user, now: now}
	res, err := b.fn(c, params)
	if err != nil {
		out.err = err
		return out
	}
	p.fireLocked(c.fired, user, connectorParam(params))
	out.result, out.next, out.total = res, c.next, c.total
	return out
}

func safeCall(fn MethodFunc, p *Portal, params map[string]any) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("b24test: method panicked: %v", r)
		}
	}()
	return fn(p, params)
}

// plainMap converts a parameter array to a map[string]any (top level always a map).
func plainMap(a *phpArray) map[string]any {
	out := make(map[string]any, len(a.keys))
	for _, k := range a.keys {
		out[k] = plain(a.m[k])
	}
	return out
}

func (p *Portal) hasScope(scope string) bool {
	if scope == "" {
		return true
	}
	for _, sc := range strings.Split(p.scope, ",") {
		if strings.TrimSpace(sc) == scope {
			return true
		}
	}
	return false
}
