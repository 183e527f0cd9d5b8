package b24test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// phpArray is an ordered PHP array: keys are strings (PHP integer keys are
// kept in their decimal form), insertion order is preserved.
type phpArray struct {
	keys []string
	m    map[string]any
	next int // next automatic integer key, as PHP's $a[] = x
}

func newPHPArray() *phpArray { return &phpArray{m: map[string]any{}} }

func (a *phpArray) set(k string, v any) {
	if _, ok := a.m[k]; !ok {
		a.keys = append(a.keys, k)
	}
	a.m[k] = v
	if n, err := strconv.Atoi(k); err == nil && n >= a.next && strconv.Itoa(n) == k {
		a.next = n + 1
	}
}

func (a *phpArray) push(v any) string {
	k := strconv.Itoa(a.next)
	a.set(k, v)
	return k
}

func (a *phpArray) get(k string) (any, bool) {
	v, ok := a.m[k]
	return v, ok
}

func (a *phpArray) del(k string) {
	if _, ok := a.m[k]; !ok {
		return
	}
	delete(a.m, k)
	for i, kk := range a.keys {
		if kk == k {
			a.keys = append(a.keys[:i:i], a.keys[i+1:]...)
			break
		}
	}
}

// isList reports whether the keys are exactly 0..n-1 in order (what PHP's
// json_encode serializes as a JSON array).
func (a *phpArray) isList() bool {
	for i, k := range a.keys {
		if k != strconv.Itoa(i) {
			return false
		}
	}
	return true
}

// parseStr parses a raw query string with PHP parse_str semantics:
// a[b][c]=1, a[]=x, a[0]=y. Later values override earlier ones.
func parseStr(raw string, into *phpArray) {
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			continue
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			continue
		}
		setBracketKey(into, key, val)
	}
}

// setBracketKey stores val under a PHP bracket key such as "a[b][]".
func setBracketKey(root *phpArray, key string, val string) {
	base := key
	var segs []string
	if i := strings.IndexByte(key, '['); i > 0 {
		rest := key[i:]
		base = key[:i]
		for len(rest) > 0 && rest[0] == '[' {
			j := strings.IndexByte(rest, ']')
			if j < 0 {
				break
			}
			segs = append(segs, rest[1:j])
			rest = rest[j+1:]
		}
		if len(segs) == 0 {
			// Unbalanced bracket: PHP keeps the key literally (with '[' turned to '_').
			base = strings.Replace(key, "[", "_", 1)
		}
	}
	if base == "" {
		return
	}
	if len(segs) == 0 {
		root.set(base, val)
		return
	}
	cur := root
	path := append([]string{base}, segs...)
	for i, seg := range path {
		last := i == len(path)-1
		if last {
			if seg == "" {
				cur.push(val)
			} else {
				cur.set(seg, val)
			}
			return
		}
		var child *phpArray
		if seg != "" {
			if existing, ok := cur.get(seg); ok {
				if arr, ok := existing.(*phpArray); ok {
					child = arr
				}
			}
		}
		if child == nil {
			child = newPHPArray()
			if seg == "" {
				cur.push(child)
			} else {
				cur.set(seg, child)
			}
		}
		cur = child
	}
}

// decodeJSONOrdered decodes JSON into PHP-like values: objects and arrays
// become *phpArray (order kept), numbers float64, plus string, bool and nil.
func decodeJSONOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		arr := newPHPArray()
		switch t {
		case '{':
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				arr.set(k, v)
			}
		case '[':
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				arr.push(v)
			}
		default:
			return nil, fmt.Errorf("unexpected delimiter %v", t)
		}
		if _, err := dec.Token(); err != nil { // closing delimiter
			return nil, err
		}
		return arr, nil
	default:
		return tok, nil
	}
}

// plain converts PHP-like values to plain Go values: a *phpArray whose keys
// are 0..n-1 becomes []any, any other becomes map[string]any.
func plain(v any) any {
	switch t := v.(type) {
	case *phpArray:
		if len(t.keys) > 0 && t.isList() {
			out := make([]any, len(t.keys))
			for i, k := range t.keys {
				out[i] = plain(t.m[k])
			}
			return out
		}
		out := make(map[string]any, len(t.keys))
		for _, k := range t.keys {
			out[k] = plain(t.m[k])
		}
		return out
	case json.Number:
		return t.String()
	default:
		return v
	}
}

// phpJSON is an ordered map serialized the way PHP's json_encode serializes
// an array: [] when empty, a JSON array when the keys are 0..n-1, an object
// otherwise.
type phpJSON struct {
	keys []string
	m    map[string]any
}

func newPHPJSON() *phpJSON { return &phpJSON{m: map[string]any{}} }

func (o *phpJSON) set(k string, v any) {
	if _, ok := o.m[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.m[k] = v
}

// MarshalJSON implements json.Marshaler.
func (o *phpJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	list := true
	for i, k := range o.keys {
		if k != strconv.Itoa(i) {
			list = false
			break
		}
	}
	if list {
		b.WriteByte('[')
		for i, k := range o.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			vb, err := json.Marshal(o.m[k])
			if err != nil {
				return nil, err
			}
			b.Write(vb)
		}
		b.WriteByte(']')
		return b.Bytes(), nil
	}
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		vb, err := json.Marshal(o.m[k])
		if err != nil {
			return nil, err
		}
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// EncodePHPQuery encodes v as a PHP bracket query string (http_build_query
// style), handy for building batch commands in tests: maps become a[b]=..,
// slices a[0]=... Keys of maps are sorted for a stable result.
func EncodePHPQuery(v map[string]any) string {
	var parts []string
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = appendPHPQuery(parts, k, v[k])
	}
	return strings.Join(parts, "&")
}

func appendPHPQuery(parts []string, prefix string, v any) []string {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = appendPHPQuery(parts, prefix+"["+k+"]", t[k])
		}
	case map[string]string:
		m := make(map[string]any, len(t))
		for k, s := range t {
			m[k] = s
		}
		parts = appendPHPQuery(parts, prefix, m)
	case []any:
		for i, e := range t {
			parts = appendPHPQuery(parts, prefix+"["+strconv.Itoa(i)+"]", e)
		}
	case []string:
		for i, e := range t {
			parts = appendPHPQuery(parts, prefix+"["+strconv.Itoa(i)+"]", e)
		}
	case nil:
		parts = append(parts, url.QueryEscape(prefix)+"=")
	case bool:
		s := "0"
		if t {
			s = "1"
		}
		parts = append(parts, url.QueryEscape(prefix)+"="+s)
	default:
		parts = append(parts, url.QueryEscape(prefix)+"="+url.QueryEscape(fmt.Sprint(t)))
	}
	return parts
}
