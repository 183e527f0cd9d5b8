package b24test

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// IdempotencyTTL is how long a v3 portal keeps the reply to a request with an Idempotency-Key.
const IdempotencyTTL = 24 * time.Hour

const (
	v3IdempotencyReused  = "BITRIX_REST_V3_EXCEPTION_IDEMPOTENCYKEYREUSEDEXCEPTION"
	v3IdempotencyInvalid = "BITRIX_REST_V3_EXCEPTION_INVALIDIDEMPOTENCYKEYEXCEPTION"
)

// idemReply is a stored reply to a request with an Idempotency-Key.
type idemReply struct {
	method string
	status int
	body   []byte
	at     time.Time
}

// validIdempotencyKey: 1 to 255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// replayIdempotent answers a v3 request whose Idempotency-Key has a stored reply (the header
// Idempotent-Replayed: true, nothing executed) and reports whether it did. A key that is
// invalid, or stored for another method, is an error reply.
func (p *Portal) replayIdempotent(w http.ResponseWriter, key, method string) bool {
	if !validIdempotencyKey(key) {
		writeV3Error(w, &v3Error{Code: v3IdempotencyInvalid, Message: "Invalid Idempotency-Key", status: http.StatusBadRequest})
		return true
	}
	s := p.s
	s.mu.Lock()
	rec := p.idem[key]
	if rec != nil && !s.now().Before(rec.at.Add(IdempotencyTTL)) {
		delete(p.idem, key)
		rec = nil
	}
	s.mu.Unlock()
	if rec == nil {
		return false
	}
	if rec.method != method {
		writeV3Error(w, &v3Error{Code: v3IdempotencyReused, Message: "Idempotency-Key used for another request", status: http.StatusUnprocessableEntity})
		return true
	}
	w.Header().Set("Idempotency-Key", key)
	w.Header().Set("Idempotent-Replayed", "true")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body)
	return true
}

// storeIdempotent counts an execution under key and, when it succeeded (ok), keeps its reply
// for replays.
func (p *Portal) storeIdempotent(key, method string, reply any, ok bool) []byte {
	if !ok {
		p.s.mu.Lock()
		p.idemExec[key]++
		p.s.mu.Unlock()
		return nil
	}
	body, err := json.Marshal(reply)
	if err != nil {
		body = []byte(`{"error":{"code":"INTERNAL_SERVER_ERROR","message":"encoding"}}`)
	}
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	p.idemExec[key]++
	p.idem[key] = &idemReply{method: method, status: http.StatusOK, body: body, at: s.now()}
	return body
}

// IdempotentExecutions returns how many times a v3 request with that Idempotency-Key was
// executed (replays not counted).
func (p *Portal) IdempotentExecutions(key string) int {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.idemExec[key]
}

// IdempotencyKeys returns the Idempotency-Keys the portal has executed requests with.
func (p *Portal) IdempotencyKeys() []string {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	keys := make([]string, 0, len(p.idemExec))
	for k := range p.idemExec {
		keys = append(keys, k)
	}
	return keys
}

// LoseV3Replies makes the next n v3 requests for method execute and then lose their reply:
// the connection is broken before any byte of it is written, so the client cannot know
// whether the call ran.
func (p *Portal) LoseV3Replies(method string, n int) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.loseV3[strings.ToLower(method)] += n
}

// takeLostReply reports (and counts down) whether this reply to method is to be lost.
func (p *Portal) takeLostReply(method string) bool {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if p.loseV3[method] > 0 {
		p.loseV3[method]--
		return true
	}
	return false
}

// v3DealAdd: body {fields: {title, stageId, opportunity, ...}}; result {"item": <deal>}.
func v3DealAdd(c *callCtx, body *phpArray) (any, *v3Error) {
	id := c.p.addDealLocked(c.now)
	_, d := c.p.findDeal(id)
	d["TITLE"] = ""
	if f := pArray(body, "fields"); f != nil {
		for _, k := range f.keys {
			up, ok := v3DealKeys[k]
			if !ok || k == "id" {
				c.p.deals = c.p.deals[:len(c.p.deals)-1]
				return nil, &v3Error{Code: v3UnknownProp, Message: "Unknown property: " + k, status: http.StatusBadRequest}
			}
			if s, ok := scalarString(f.m[k]); ok {
				d[up] = s
			}
		}
	}
	return map[string]any{"item": v3DealItem(d, nil)}, nil
}
