package b24test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// MaxBatch is the maximum number of commands in one batch.
const MaxBatch = 50

var refRe = regexp.MustCompile(`\$(result|next|total|time|error)((?:\[[^\]]*\])+)`)
var segRe = regexp.MustCompile(`\[([^\]]*)\]`)

// batchAcc accumulates sub-call outcomes, both for the reply and (as plain
// JSON values) for $result[...] references.
type batchAcc struct {
	result, resultError, resultTotal, resultNext, resultTime *phpJSON
	refs                                                     map[string]map[string]any
	missingRef                                               string // WithMissingReference's mode
	missing                                                  bool   // a reference of the current command did not resolve
	hadRef                                                   bool   // the current command holds a reference
}

func truthy(v any) bool {
	switch t := v.(type) {
	case bool:
		return t
	case float64:
		return t != 0
	case string:
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "", "0", "false", "n", "no":
			return false
		}
		return true
	}
	return false
}

// runBatch executes a batch request and returns its result object and
// outer time block.
func (p *Portal) runBatch(user int, params *phpArray) (any, timeBlock) {
	s := p.s
	s.mu.Lock()
	start := s.now()
	s.mu.Unlock()

	acc := &batchAcc{
		result: newPHPJSON(), resultError: newPHPJSON(), resultTotal: newPHPJSON(),
		resultNext: newPHPJSON(), resultTime: newPHPJSON(),
		refs: map[string]map[string]any{"result": {}, "next": {}, "total": {}, "time": {}, "error": {}},
	}
	s.mu.Lock()
	acc.missingRef = s.cfg.missingRef
	s.mu.Unlock()
	halt := false
	if v, ok := params.get("halt"); ok {
		halt = truthy(v)
	}
	cmds := pArray(params, "cmd")
	if cmds != nil {
		for i, key := range cmds.keys {
			if i >= MaxBatch {
				acc.fail(key, &Error{Code: "ERROR_BATCH_LENGTH_EXCEEDED", Description: "Max batch length exceeded"})
				if halt {
					break
				}
				continue
			}
			cmd, ok := cmds.m[key].(string)
			if !ok {
				continue
			}
			name, q, _ := strings.Cut(cmd, "?")
			method := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), ".json"))
			if method == "batch" {
				s.mu.Lock()
				p.subcalls[method]++
				s.mu.Unlock()
				acc.fail(key, &Error{Code: "ERROR_BATCH_METHOD_NOT_ALLOWED", Description: "Method is not allowed for batch usage"})
				if halt {
					break
				}
				continue
			}
			sub := newPHPArray()
			parseStr(q, sub)
			acc.missing, acc.hadRef = false, false
			sub = acc.substitute(sub)
			if (acc.missing && acc.missingRef == MissingRefError) || (acc.hadRef && acc.missingRef == RefsRejected) {
				acc.fail(key, &Error{Code: "BATCH_REFERENCE_NOT_FOUND", Description: "A batch reference does not resolve"})
				if halt {
					break
				}
				continue
			}
			sub.del("auth")
			sub.del("access_token")
			out := p.call(user, method, sub, true)
			if out.err != nil {
				acc.fail(key, out.err)
				if halt {
					break
				}
				continue
			}
			acc.result.set(key, out.result)
			acc.refs["result"][key] = normalize(out.result)
			if out.next != nil {
				acc.resultNext.set(key, *out.next)
				acc.refs["next"][key] = strconv.Itoa(*out.next)
			}
			if out.total != nil {
				acc.resultTotal.set(key, *out.total)
				acc.refs["total"][key] = strconv.Itoa(*out.total)
			}
			acc.resultTime.set(key, out.time)
			acc.refs["time"][key] = normalize(out.time)
		}
	}
	res := newPHPJSON()
	res.set("result", acc.result)
	res.set("result_error", acc.resultError)
	res.set("result_total", acc.resultTotal)
	res.set("result_next", acc.resultNext)
	res.set("result_time", acc.resultTime)

	s.mu.Lock()
	window := s.cfg.opWindow
	s.mu.Unlock()
	return res, makeTime(start, 0, 0, start.Add(window))
}

func (acc *batchAcc) fail(key string, e *Error) {
	body := map[string]string{"error": e.Code, "error_description": e.Description}
	acc.resultError.set(key, body)
	acc.refs["error"][key] = map[string]any{"error": e.Code, "error_description": e.Description}
}

// normalize round-trips v through JSON so references can walk it.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if dec.Decode(&out) != nil {
		return nil
	}
	return out
}

// resolve looks up a reference like $result[key][FIELD][0].
func (acc *batchAcc) resolve(kind, path string) (any, bool) {
	segs := segRe.FindAllStringSubmatch(path, -1)
	if len(segs) == 0 {
		return nil, false
	}
	cur, ok := acc.refs[kind][segs[0][1]]
	if !ok {
		return nil, false
	}
	for _, sg := range segs[1:] {
		switch t := cur.(type) {
		case map[string]any:
			cur, ok = t[sg[1]]
			if !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(sg[1])
			if err != nil || i < 0 || i >= len(t) {
				return nil, false
			}
			cur = t[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// substitute replaces references in every string leaf of a.
func (acc *batchAcc) substitute(a *phpArray) *phpArray {
	for _, k := range a.keys {
		switch v := a.m[k].(type) {
		case *phpArray:
			a.m[k] = acc.substitute(v)
		case string:
			a.m[k] = acc.substituteString(v)
		}
	}
	return a
}

func (acc *batchAcc) substituteString(v string) any {
	if !strings.Contains(v, "$") {
		return v
	}
	if refRe.MatchString(v) {
		acc.hadRef = true
	}
	if m := refRe.FindStringSubmatchIndex(v); m != nil && m[0] == 0 && m[1] == len(v) {
		// Whole value: replaced by the referenced value, arrays included.
		if r, ok := acc.resolve(v[m[2]:m[3]], v[m[4]:m[5]]); ok {
			return toParam(r)
		}
		return acc.unresolved(v)
	}
	return refRe.ReplaceAllStringFunc(v, func(ref string) string {
		sm := refRe.FindStringSubmatch(ref)
		r, ok := acc.resolve(sm[1], sm[2])
		if !ok {
			if s, ok := acc.unresolved(ref).(string); ok {
				return s
			}
			return ref
		}
		if s, ok := scalarText(r); ok {
			return s
		}
		return ref // non-scalar values are not substituted into strings
	})
}

// unresolved is what a reference that does not resolve becomes, by the
// server's WithMissingReference mode; it notes the miss for MissingRefError.
func (acc *batchAcc) unresolved(ref string) any {
	acc.missing = true
	if acc.missingRef == MissingRefEmpty {
		return ""
	}
	return ref
}

func scalarText(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case json.Number:
		return t.String(), true
	case bool:
		if t {
			return "1", true
		}
		return "", true
	case nil:
		return "", true
	}
	return "", false
}

// toParam converts a normalized JSON value to a parameter value.
func toParam(v any) any {
	switch t := v.(type) {
	case map[string]any:
		a := newPHPArray()
		for _, k := range sortedKeys(t) {
			a.set(k, toParam(t[k]))
		}
		return a
	case []any:
		a := newPHPArray()
		for _, e := range t {
			a.push(toParam(e))
		}
		return a
	case json.Number:
		return t.String()
	case bool:
		if t {
			return "1"
		}
		return ""
	case nil:
		return ""
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
