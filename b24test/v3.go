package b24test

import (
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// V3 error codes used by the fake.
const (
	v3InvalidJSON    = "BITRIX_REST_V3_EXCEPTION_INVALIDJSONEXCEPTION"
	v3Validation     = "BITRIX_REST_V3_EXCEPTION_VALIDATION_REQUESTVALIDATIONEXCEPTION"
	v3NotFound       = "BITRIX_REST_V3_EXCEPTION_ENTITYNOTFOUNDEXCEPTION"
	v3MethodNotFound = "BITRIX_REST_V3_EXCEPTION_METHODNOTFOUNDEXCEPTION"
	v3UnknownProp    = "BITRIX_REST_V3_EXCEPTION_UNKNOWNDTOPROPERTYEXCEPTION"
	v3UnknownOp      = "BITRIX_REST_V3_EXCEPTION_UNKNOWNFILTEROPERATOREXCEPTION"
	v3InvalidSelect  = "BITRIX_REST_V3_EXCEPTION_INVALIDSELECTEXCEPTION"
)

// v3Error is a REST v3 error with optional validation entries.
type v3Error struct {
	Code       string            `json:"code"`
	Message    string            `json:"message"`
	Validation []v3ValidationErr `json:"validation,omitempty"`
	status     int
}

type v3ValidationErr struct {
	Message string `json:"message"`
	Field   string `json:"field"`
}

func writeV3Error(w http.ResponseWriter, e *v3Error) {
	writeJSON(w, e.status, map[string]any{"error": e})
}

type v3Envelope struct {
	Result any       `json:"result"`
	Time   timeBlock `json:"time"`
}

type v3Builtin struct {
	scope string
	fn    func(c *callCtx, body *phpArray) (any, *v3Error)
}

var v3Builtins = map[string]v3Builtin{
	"crm.deal.get":  {"crm", v3DealGet},
	"crm.deal.list": {"crm", v3DealList},
	"crm.deal.add":  {"crm", v3DealAdd},
	"profile":       {"", v3Profile},
}

// preEngineError writes auth/limit errors of v3 requests in the configured shape.
func (p *Portal) preEngineError(w http.ResponseWriter, e *Error) {
	if p.s.cfg.v3AuthShape == "v3" {
		writeV3Error(w, &v3Error{Code: e.Code, Message: e.Description, status: e.status()})
		return
	}
	writeError(w, e)
}

func (p *Portal) serveV3(w http.ResponseWriter, r *http.Request, name string) {
	method := strings.ToLower(strings.TrimSuffix(name, "/"))
	if e := p.countRequest(method); e != nil {
		p.preEngineError(w, e)
		return
	}
	if strings.Contains(method, "/") { // webhook URLs are not supported
		p.preEngineError(w, errNoAuth)
		return
	}
	var raw []byte
	if r.Body != nil {
		raw, _ = io.ReadAll(io.LimitReader(r.Body, maxBody))
	}
	isJSON := func() bool {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		return ct == "application/json"
	}
	if method == "batch" {
		p.serveV3Batch(w, r, raw, isJSON())
		return
	}
	body := newPHPArray()
	if len(strings.TrimSpace(string(raw))) > 0 {
		v, err := decodeJSONOrdered(raw)
		obj, isObj := v.(*phpArray)
		if !isJSON() || err != nil || !isObj || (len(obj.keys) > 0 && obj.isList()) {
			writeV3Error(w, &v3Error{Code: v3InvalidJSON, Message: "Request body must be valid JSON", status: http.StatusBadRequest})
			return
		}
		body = obj
	}
	user, ok := p.v3Auth(w, r, body)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" && p.replayIdempotent(w, key, method) {
		return
	}
	res, tb, ve := p.runV3(user, method, body, false)
	var reply []byte
	if key != "" {
		// Stored as executed, whether or not the reply then reaches the client.
		reply = p.storeIdempotent(key, method, v3Envelope{Result: res, Time: tb}, ve == nil)
	}
	if p.takeLostReply(method) {
		panic(http.ErrAbortHandler) // executed, and the connection breaks before the reply
	}
	if ve != nil {
		writeV3Error(w, ve)
		return
	}
	if key == "" {
		writeJSON(w, http.StatusOK, v3Envelope{Result: res, Time: tb})
		return
	}
	w.Header().Set("Idempotency-Key", key)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply)
}

// v3Auth authenticates a v3 request (Bearer, else the body's auth, which it removes), writing
// the error reply when that fails.
func (p *Portal) v3Auth(w http.ResponseWriter, r *http.Request, body *phpArray) (int, bool) {
	tok := bearer(r)
	if v, ok := body.get("auth"); ok {
		body.del("auth")
		if s, isStr := v.(string); isStr && tok == "" {
			tok = s
		}
	}
	user, e := p.authenticate(tok)
	if e != nil {
		p.preEngineError(w, e)
		return 0, false
	}
	w.Header().Set("X-Bitrix-Rest-Application", p.s.cfg.clientID)
	return user, true
}

// runV3 runs one v3 method for user, alone or (inBatch) as a batch command.
func (p *Portal) runV3(user int, method string, body *phpArray, inBatch bool) (any, timeBlock, *v3Error) {
	s := p.s
	s.mu.Lock()
	if inBatch {
		p.subcalls[method]++
	}
	fn := s.methodsV3[method]
	b, isBuiltin := v3Builtins[method]
	if fn == nil && (!isBuiltin || !p.hasScope(b.scope)) {
		s.mu.Unlock()
		return nil, timeBlock{}, &v3Error{Code: v3MethodNotFound, Message: "Method not found", status: http.StatusNotFound}
	}
	now := s.now()
	d := s.durations[method]
	used, resetAt, oe := p.operatingLocked(method, now, d)
	if oe != nil {
		s.mu.Unlock()
		return nil, timeBlock{}, &v3Error{Code: oe.Code, Message: oe.Description, status: oe.status()}
	}
	tb := makeTime(now, d, used, resetAt)
	if fn != nil {
		s.mu.Unlock()
		res, err := safeCall(fn, p, plainMap(body))
		if err != nil {
			ae := asError(err)
			return nil, tb, &v3Error{Code: ae.Code, Message: ae.Description, status: ae.status()}
		}
		return res, tb, nil
	}
	c := &callCtx{p: p, user: user, now: now}
	res, ve := b.fn(c, body)
	s.mu.Unlock()
	return res, tb, ve
}

// Behaviours of a v3 batch whose command fails (WithV3BatchFailure). What the real portal does
// is not documented.
const (
	// V3BatchFailWhole fails the whole batch with the failing command's error (its HTTP status
	// and body); the commands after it are not run. The default, as the official JS SDK expects.
	V3BatchFailWhole = "whole"
	// V3BatchFailSlot puts {"error": {...}} in the failing command's slot of result and runs
	// the others.
	V3BatchFailSlot = "slot"
)

// serveV3Batch answers POST /rest/api/batch: a JSON array of {method, query}, or (as the JS SDK
// sends it) an object keyed "0", "1", ... beside auth. result is an array in command order.
func (p *Portal) serveV3Batch(w http.ResponseWriter, r *http.Request, raw []byte, isJSON bool) {
	v, err := decodeJSONOrdered(raw)
	all, isArr := v.(*phpArray)
	if !isJSON || err != nil || !isArr {
		writeV3Error(w, &v3Error{Code: v3InvalidJSON, Message: "Request body must be valid JSON", status: http.StatusBadRequest})
		return
	}
	user, ok := p.v3Auth(w, r, all)
	if !ok {
		return
	}
	if _, old := all.get("cmd"); old || !all.isList() {
		writeV3Error(w, &v3Error{Code: v3InvalidSelect, Message: "Batch must be a list of {method, query}", status: http.StatusBadRequest})
		return
	}
	if len(all.keys) > MaxBatch {
		writeV3Error(w, validation("batch", "Max batch length exceeded"))
		return
	}
	p.s.mu.Lock()
	mode, start := p.s.cfg.v3BatchFail, p.s.now()
	window := p.s.cfg.opWindow
	p.s.mu.Unlock()
	results := make([]any, 0, len(all.keys))
	for _, k := range all.keys {
		cmd, isObj := all.m[k].(*phpArray)
		name := ""
		if isObj {
			name, _ = pString(cmd, "method")
		}
		name = strings.ToLower(strings.TrimSpace(name))
		var res any
		var ve *v3Error
		switch {
		case name == "":
			ve = validation("method", "Required field")
		case name == "batch":
			ve = &v3Error{Code: v3MethodNotFound, Message: "Method is not allowed for batch usage", status: http.StatusBadRequest}
		default:
			query := pArray(cmd, "query")
			if query == nil {
				query = newPHPArray()
			}
			res, _, ve = p.runV3(user, name, query, true)
		}
		if ve != nil {
			if mode != V3BatchFailSlot {
				writeV3Error(w, ve)
				return
			}
			res = map[string]any{"error": ve}
		}
		results = append(results, res)
	}
	writeJSON(w, http.StatusOK, v3Envelope{Result: results, Time: makeTime(start, 0, 0, start.Add(window))})
}

// v3 deal DTO: camelCase names mapped to the stored upper-case fields.
var v3DealKeys = map[string]string{
	"id": "ID", "title": "TITLE", "typeId": "TYPE_ID", "stageId": "STAGE_ID", "opportunity": "OPPORTUNITY",
	"currencyId": "CURRENCY_ID", "assignedById": "ASSIGNED_BY_ID", "createdBy": "CREATED_BY_ID",
	"createdTime": "DATE_CREATE", "updatedTime": "DATE_MODIFY", "closed": "CLOSED",
}

func v3DealItem(d deal, sel []string) map[string]any {
	out := map[string]any{}
	for camel, up := range v3DealKeys {
		if len(sel) > 0 && !contains(sel, camel) {
			continue
		}
		v := d[up]
		switch camel {
		case "id", "assignedById", "createdBy":
			n, _ := strconv.Atoi(v)
			out[camel] = n
		case "opportunity":
			f, _ := strconv.ParseFloat(v, 64)
			out[camel] = f
		case "closed":
			out[camel] = v == "Y"
		default:
			out[camel] = v
		}
	}
	return out
}

func validation(field, msg string) *v3Error {
	return &v3Error{Code: v3Validation, Message: "Request validation failed", status: http.StatusBadRequest,
		Validation: []v3ValidationErr{{Message: msg, Field: field}}}
}

func v3DealGet(c *callCtx, body *phpArray) (any, *v3Error) {
	raw, ok := body.get("id")
	if !ok {
		return nil, validation("id", "Required field")
	}
	s, _ := scalarString(raw)
	id, err := strconv.Atoi(s)
	if err != nil || id <= 0 {
		return nil, validation("id", "Must be a positive integer")
	}
	_, d := c.p.findDeal(id)
	if d == nil {
		return nil, &v3Error{Code: v3NotFound, Message: "Entity not found", status: http.StatusBadRequest}
	}
	return map[string]any{"item": v3DealItem(d, nil)}, nil
}

// MaxV3PageSize is the largest pagination.limit of a v3 list method (the default is 50).
const MaxV3PageSize = 1000

var v3Ops = map[string]string{"=": "=", "!=": "!", ">": ">", ">=": ">=", "<": "<", "<=": "<=", "in": "@"}

// v3DealList (crm.deal.list on /rest/api/, over the portal's seeded deals): body
// {select:[...], filter:[[field,op,value],...],
// order:{field:"ASC"|"DESC"}, pagination:{page:1, limit:50, offset:0}}.
func v3DealList(c *callCtx, body *phpArray) (any, *v3Error) {
	var sel []string
	if a := pArray(body, "select"); a != nil {
		for _, k := range a.keys {
			f, _ := scalarString(a.m[k])
			if _, ok := v3DealKeys[f]; !ok {
				return nil, &v3Error{Code: v3UnknownProp, Message: "Unknown property: " + f, status: http.StatusBadRequest}
			}
			sel = append(sel, f)
		}
	}
	var conds []cond
	if a := pArray(body, "filter"); a != nil {
		for _, k := range a.keys {
			t, ok := a.m[k].(*phpArray)
			if !ok || len(t.keys) != 3 || !t.isList() {
				return nil, validation("filter", "Each condition must be [field, operator, value]")
			}
			f, _ := scalarString(t.m["0"])
			op, _ := scalarString(t.m["1"])
			up, ok := v3DealKeys[f]
			if !ok {
				return nil, &v3Error{Code: v3UnknownProp, Message: "Unknown property: " + f, status: http.StatusBadRequest}
			}
			var vals []string
			if arr, isArr := t.m["2"].(*phpArray); isArr {
				for _, kk := range arr.keys {
					s, _ := scalarString(arr.m[kk])
					vals = append(vals, s)
				}
			} else {
				s, _ := scalarString(t.m["2"])
				vals = []string{s}
			}
			if op == "between" {
				if len(vals) != 2 {
					return nil, validation("filter", "between needs two values")
				}
				conds = append(conds, cond{field: up, op: ">=", vals: vals[:1]}, cond{field: up, op: "<=", vals: vals[1:]})
				continue
			}
			gop, ok := v3Ops[op]
			if !ok {
				return nil, &v3Error{Code: v3UnknownOp, Message: "Unknown filter operator: " + op, status: http.StatusBadRequest}
			}
			conds = append(conds, cond{field: up, op: gop, vals: vals})
		}
	}
	var order []orderBy
	if a := pArray(body, "order"); a != nil {
		for _, k := range a.keys {
			up, ok := v3DealKeys[k]
			if !ok {
				return nil, &v3Error{Code: v3UnknownProp, Message: "Unknown property: " + k, status: http.StatusBadRequest}
			}
			dir, _ := scalarString(a.m[k])
			order = append(order, orderBy{field: up, desc: strings.EqualFold(dir, "DESC")})
		}
	}
	limit, offset := pageSize, 0
	if a := pArray(body, "pagination"); a != nil {
		if s, ok := pString(a, "limit"); ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= MaxV3PageSize {
				limit = n
			} else {
				return nil, validation("pagination.limit", "Must be between 1 and 1000")
			}
		}
		if s, ok := pString(a, "page"); ok {
			if n, err := strconv.Atoi(s); err == nil && n >= 1 {
				offset = (n - 1) * limit
			} else {
				return nil, validation("pagination.page", "Must be a positive integer")
			}
		}
		if s, ok := pString(a, "offset"); ok {
			if n, err := strconv.Atoi(s); err == nil && n >= 0 {
				offset = n
			} else {
				return nil, validation("pagination.offset", "Must be a non-negative integer")
			}
		}
	}
	page, _, _ := query(c.p.deals, conds, order, offset, limit)
	items := make([]any, 0, len(page))
	for _, d := range page {
		items = append(items, v3DealItem(d, sel))
	}
	return map[string]any{"items": items}, nil
}

func v3Profile(c *callCtx, _ *phpArray) (any, *v3Error) {
	return map[string]any{"item": map[string]any{
		"id": c.user, "admin": c.p.users[c.user], "name": "Test", "lastName": "Admin",
	}}, nil
}
