package b24oauth

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parsePHPQuery reads a query string as PHP's parse_str does (php_default_treat_data and
// php_register_variable_ex, with the default "&" separator and max_input_nesting_level), into
// nested maps of strings. List indexes are map keys, as in a PHP array.
func parsePHPQuery(q string) map[string]any {
	out := map[string]any{}
	for _, pair := range strings.Split(q, "&") {
		if pair == "" {
			continue
		}
		name, val, _ := strings.Cut(pair, "=")
		phpRegister(out, phpURLDecode(name), phpURLDecode(val))
	}
	return out
}

// phpRegister stores val under the variable name in arr as php_register_variable_ex does.
func phpRegister(arr map[string]any, name, val string) {
	if i := strings.IndexByte(name, 0); i >= 0 { // names are C strings
		name = name[:i]
	}
	name = strings.TrimLeft(name, " ")
	b := []byte(name)
	p := 0
	isArray := false
	for ; p < len(b); p++ {
		if b[p] == ' ' || b[p] == '.' {
			b[p] = '_'
		} else if b[p] == '[' {
			isArray = true
			break
		}
	}
	if p == 0 {
		return
	}
	sym := arr
	index, hasIndex := string(b[:p]), true // hasIndex false: append ("[]")
	if isArray {
		ip := p
		for nest := 1; ; nest++ {
			if nest > phpMaxNesting {
				return
			}
			ip++
			start := ip
			if ip < len(b) && b[ip] == ' ' {
				ip++
			}
			newIndex, newHas := "", false
			if ip >= len(b) || b[ip] != ']' {
				end := bytes.IndexByte(b[ip:], ']')
				if end < 0 {
					// Not an index. At the first level the name takes the rest, with the
					// characters a PHP name cannot hold replaced; deeper, the rest is ignored.
					if nest == 1 {
						rest := b[start:]
						for i, c := range rest {
							if c == ' ' || c == '.' || c == '[' {
								rest[i] = '_'
							}
						}
						index += "_" + string(rest)
					}
					break
				}
				ip += end
				newIndex, newHas = string(b[start:ip]), true
			}
			var child map[string]any
			if hasIndex {
				if c, ok := sym[index].(map[string]any); ok {
					child = c
				} else {
					child = map[string]any{}
					sym[index] = child
				}
			} else {
				child = map[string]any{}
				sym[phpNextIndex(sym)] = child
			}
			sym = child
			index, hasIndex = newIndex, newHas
			ip++
			if ip >= len(b) || b[ip] != '[' {
				break
			}
		}
	}
	if hasIndex {
		sym[index] = val
	} else {
		sym[phpNextIndex(sym)] = val
	}
}

// phpNextIndex is the key PHP's $a[] = v uses: one more than the largest integer key, or 0.
func phpNextIndex(m map[string]any) string {
	next := int64(0)
	for k := range m {
		if n, err := strconv.ParseInt(k, 10, 64); err == nil && strconv.FormatInt(n, 10) == k && n >= next {
			next = n + 1
		}
	}
	return strconv.FormatInt(next, 10)
}

// phpURLDecode is PHP's urldecode: "+" is a space, a malformed escape stays as is.
func phpURLDecode(s string) string {
	unhex := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'a' <= c && c <= 'f':
			return c - 'a' + 10, true
		case 'A' <= c && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '+' {
			b.WriteByte(' ')
			continue
		}
		if c == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// phpNormalize is what PHP holds after parse_str(http_build_query(v)) for v decoded from JSON
// with UseNumber: scalars as strings, lists as maps keyed by index, nulls and empty containers
// gone. ok is false when nothing is left.
func phpNormalize(v any) (norm any, ok bool) {
	switch v := v.(type) {
	case nil:
		return nil, false
	case bool:
		if v {
			return "1", true
		}
		return "0", true
	case json.Number:
		return v.String(), true
	case string:
		return v, true
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			if n, ok := phpNormalize(e); ok {
				out[k] = n
			}
		}
		return out, len(out) > 0
	case []any:
		out := map[string]any{}
		for i, e := range v {
			if n, ok := phpNormalize(e); ok {
				out[strconv.Itoa(i)] = n
			}
		}
		return out, len(out) > 0
	}
	panic("unexpected JSON value")
}

// decodeJSON returns the JSON form of v, decoded with UseNumber.
func decodeJSON(t testing.TB, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPHPRoundTrip asserts that parse_str reads the encoding of v back as http_build_query's
// would be.
func checkPHPRoundTrip(t testing.TB, v any, encoded string) {
	t.Helper()
	want := map[string]any{}
	if n, ok := phpNormalize(decodeJSON(t, v)); ok {
		want = n.(map[string]any)
	}
	if diff := cmp.Diff(want, parsePHPQuery(encoded)); diff != "" {
		t.Errorf("parse_str(%q) mismatch (-want +got):\n%s", encoded, diff)
	}
}

// nested returns {"a": {"a": ... {"a": leaf}}}, encoded with depth brackets: a[a]...[a]=leaf.
func nested(depth int, leaf any) map[string]any {
	v := leaf
	for range depth {
		v = map[string]any{"a": v}
	}
	return map[string]any{"a": v}
}

// roundTripOnly marks a case whose exact encoding is not checked, only its round trip.
const roundTripOnly = "\x00"

type testDeal struct {
	ID      int64           `json:"ID"`
	Title   string          `json:"TITLE"`
	Contact *int            `json:"CONTACT_ID"`
	Note    string          `json:"NOTE,omitempty"`
	Fields  map[string]bool `json:"FIELDS"`
}

func TestEncodePHPQuery(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string // or roundTripOnly
	}{
		{"nil", nil, ""},
		{"null struct pointer", (*testDeal)(nil), ""},
		{"empty map", map[string]any{}, ""},
		{"flat", map[string]any{"id": 5, "name": "Deal"}, "id=5&name=Deal"},
		{
			"list filter",
			map[string]any{
				"filter": map[string]any{">ID": 10, "STAGE_ID": "WON"},
				"select": []string{"ID", "TITLE"},
				"order":  map[string]string{"ID": "ASC"},
				"start":  -1,
			},
			"filter[%3EID]=10&filter[STAGE_ID]=WON&order[ID]=ASC&select[0]=ID&select[1]=TITLE&start=-1",
		},
		{
			"list of maps",
			map[string]any{"fields": map[string]any{"PHONE": []map[string]string{
				{"VALUE": "+7 999", "VALUE_TYPE": "WORK"},
				{"VALUE": "8 800"},
			}}},
			"fields[PHONE][0][VALUE]=%2B7+999&fields[PHONE][0][VALUE_TYPE]=WORK&fields[PHONE][1][VALUE]=8+800",
		},
		{
			"unicode",
			map[string]any{"TITLE": "Сделка №1 — 😀", "ключ": map[string]any{"名前": "値"}},
			"TITLE=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0+%E2%84%961+%E2%80%94+%F0%9F%98%80" +
				"&%D0%BA%D0%BB%D1%8E%D1%87[%E5%90%8D%E5%89%8D]=%E5%80%A4",
		},
		{
			"special characters",
			map[string]any{
				"q":   "a&b=c+d%e[f]g h?#/\\\"'<>",
				"a&b": map[string]any{"c=d": "x", "e+f": "y", "%41": "z", "[x": "w", "a b.c": "v", " lead": "u", "  ": "t"},
				"a]b": 1,
				"%":   "%zz%4",
			},
			roundTripOnly,
		},
		{"brackets in values", map[string]any{"v": "[0]", "w": "]["}, "v=%5B0%5D&w=%5D%5B"},
		{"batch reference", map[string]any{"ID": "$result[deal][ID]"}, "ID=%24result%5Bdeal%5D%5BID%5D"},
		{
			"big integers",
			map[string]any{
				"u":   uint64(math.MaxUint64),
				"i":   int64(math.MinInt64),
				"n":   json.Number("123456789012345678901234567890"),
				"raw": json.RawMessage(`98765432109876543210987654321`),
			},
			"i=-9223372036854775808&n=123456789012345678901234567890&raw=98765432109876543210987654321&u=18446744073709551615",
		},
		{"floats", map[string]any{"a": 0.1, "b": 1e21, "c": -2.5, "d": 1.0, "e": 1e-7}, "a=0.1&b=1e%2B21&c=-2.5&d=1&e=1e-7"},
		{
			"bools, nulls and empty containers",
			map[string]any{
				"t": true, "f": false, "n": nil,
				"l": []any{nil, "x", nil, []any{}},
				"m": map[string]any{"a": nil, "b": map[string]any{}},
				"e": []int{}, "o": map[string]int{},
			},
			"f=0&l[1]=x&t=1",
		},
		{
			"struct",
			testDeal{ID: 7, Title: "Big & small", Fields: map[string]bool{"UF_X": true}},
			"FIELDS[UF_X]=1&ID=7&TITLE=Big+%26+small",
		},
		{"raw JSON", json.RawMessage(`{"a":{"b":[1,2.50,"x"]},"c":null}`), "a[b][0]=1&a[b][1]=2.50&a[b][2]=x"},
		{"NUL in a value", map[string]any{"a": "x\x00y"}, "a=x%00y"},
		{"empty string", map[string]any{"a": "", "b": []string{""}}, "a=&b[0]="},
		{"numeric keys", map[string]any{"0": "a", "01": "b", "-1": "c", "x": map[string]int{"10": 1, "2": 2}}, "-1=c&0=a&01=b&x[10]=1&x[2]=2"},
		{"nested keys PHP keeps", map[string]any{"x": map[string]any{"a[b": 1, "[": map[string]int{"y": 2}, "a b.c": 3}, "]": 4}, "%5D=4&x[%5B][y]=2&x[a+b.c]=3&x[a%5Bb]=1"},
		{"64 levels", nested(64, "x"), "a" + strings.Repeat("[a]", 64) + "=x"},
		{"64 levels of nulls", nested(64, nil), ""},
		{"64 levels and an empty object", nested(64, map[string]any{}), ""},
		{"empty objects in a list", map[string]any{"a": []any{map[string]any{}, nil, map[string]any{"b": []any{}}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodePHPQuery(tt.in)
			if err != nil {
				t.Fatalf("encodePHPQuery: %v", err)
			}
			if tt.want != roundTripOnly && got != tt.want {
				t.Errorf("encodePHPQuery = %q, want %q", got, tt.want)
			}
			checkPHPRoundTrip(t, tt.in, got)
		})
	}
}

func TestEncodePHPQueryErrors(t *testing.T) {
	tests := []struct {
		name string
		in   any
	}{
		{"slice", []int{1, 2}},
		{"string", "a=b"},
		{"number", 5},
		{"bool", true},
		{"raw array", json.RawMessage(`[1]`)},
		{"unencodable", map[string]any{"c": make(chan int)}},
		{"top-level dot", map[string]any{"a.b": 1}},
		{"top-level space", map[string]any{"a b": 1}},
		{"top-level leading space", map[string]any{" a": 1}},
		{"top-level bracket", map[string]any{"a[": 1}},
		{"top-level brackets", map[string]any{"a[b]": 1}},
		{"top-level empty", map[string]any{"": 1}},
		{"top-level NUL", map[string]any{"a\x00b": 1}},
		{"top-level bad key with a null value", map[string]any{"a.b": nil}},
		{"nested empty", map[string]any{"x": map[string]any{"": 1}}},
		{"nested space", map[string]any{"x": map[string]any{" ": 1}}},
		{"nested closing bracket", map[string]any{"x": map[string]any{"a]b": 1}}},
		{"nested NUL", map[string]any{"x": map[string]any{"\x00": 1}}},
		{"deep in a list", map[string]any{"x": []any{map[string]any{"y]": 1}}}},
		{"65 levels", nested(65, "x")},
		{"65 levels of nulls", nested(65, nil)},
		{"65 levels in a list", map[string]any{"a": []any{nested(64, 1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := encodePHPQuery(tt.in)
			if err == nil {
				t.Fatalf("encodePHPQuery = %q, want an error", got)
			}
			if !strings.HasPrefix(err.Error(), "b24oauth: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// TestPHPQueryDecoder pins the test decoder to what PHP's parse_str is documented and known to
// do, so that the round trips above prove something.
func TestPHPQueryDecoder(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]any
	}{
		{"a=1&b=2", map[string]any{"a": "1", "b": "2"}},
		{"a.b=1&c+d=2& e=3", map[string]any{"a_b": "1", "c_d": "2", "e": "3"}},
		{"a[b][c]=1&a[b][d]=2", map[string]any{"a": map[string]any{"b": map[string]any{"c": "1", "d": "2"}}}},
		{"a[]=x&a[]=y&a[5]=z&a[]=w", map[string]any{"a": map[string]any{"0": "x", "1": "y", "5": "z", "6": "w"}}},
		{"a[ ]=x", map[string]any{"a": map[string]any{"0": "x"}}},
		{"a[ b]=x", map[string]any{"a": map[string]any{" b": "x"}}},
		{"a[b=1", map[string]any{"a_b": "1"}},
		{"a[b.c=1", map[string]any{"a_b_c": "1"}},
		{"a[b][c=1", map[string]any{"a": map[string]any{"b": "1"}}},
		{"a[b]c=1", map[string]any{"a": map[string]any{"b": "1"}}},
		{"a[b[c]]=1", map[string]any{"a": map[string]any{"b[c": "1"}}},
		{"a%5Bb%5D=1", map[string]any{"a": map[string]any{"b": "1"}}},
		{"a=1&a[b]=2", map[string]any{"a": map[string]any{"b": "2"}}},
		{"=1&&x&%zz=%4", map[string]any{"x": "", "%zz": "%4"}},
		{"a[x.y]=1", map[string]any{"a": map[string]any{"x.y": "1"}}},
		{"a%00b=1", map[string]any{"a": "1"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, parsePHPQuery(tt.in)); diff != "" {
			t.Errorf("parsePHPQuery(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

// phpKeysOK reports, using the decoder as the oracle, whether parse_str reads back every key of
// v unchanged and no value is nested deeper than PHP allows: exactly when encodePHPQuery must
// succeed.
func phpKeysOK(v any, depth int) bool {
	keyOK := func(k string) bool {
		if depth == 0 {
			return cmp.Equal(parsePHPQuery(url.QueryEscape(k)+"=1"), map[string]any{k: "1"})
		}
		return cmp.Equal(parsePHPQuery("x["+url.QueryEscape(k)+"]=1"), map[string]any{"x": map[string]any{k: "1"}})
	}
	switch v := v.(type) {
	case map[string]any:
		if len(v) > 0 && depth > phpMaxNesting {
			return false
		}
		for k, e := range v {
			if !keyOK(k) || !phpKeysOK(e, depth+1) {
				return false
			}
		}
	case []any:
		if len(v) > 0 && depth > phpMaxNesting {
			return false
		}
		for _, e := range v {
			if !phpKeysOK(e, depth+1) {
				return false
			}
		}
	}
	return true
}

func FuzzEncodePHPQuery(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"filter":{">ID":10,"!STAGE_ID":["WON","LOSE"]},"select":["ID","TITLE"],"start":-1}`,
		`{"fields":{"PHONE":[{"VALUE":"+7 (999) 000-00-00","VALUE_TYPE":"WORK"}]}}`,
		`{"a":{"b":{"c":[1,2.5,1e400,-0,true,false,null,"x&y=z+%[]"]}}}`,
		`{"ключ":"значение 😀","a b":1}`,
		`{"x":{"":1," ":2,"a]":3,"[":4}}`,
		`{"n":123456789012345678901234567890,"e":[],"o":{}}`,
		`[1,2]`,
		`"s"`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return
		}
		got, err := encodePHPQuery(v)
		obj, isObj := v.(map[string]any)
		switch {
		case v == nil:
			if err != nil || got != "" {
				t.Fatalf("encodePHPQuery(null) = %q, %v; want \"\", nil", got, err)
			}
			return
		case !isObj:
			if err == nil {
				t.Fatalf("encodePHPQuery(%s) = %q, want an error for a non-object", data, got)
			}
			return
		}
		if wantOK := phpKeysOK(obj, 0); (err == nil) != wantOK {
			t.Fatalf("encodePHPQuery(%s) = %q, %v; want success %v", data, got, err, wantOK)
		}
		if err == nil {
			checkPHPRoundTrip(t, obj, got)
		}
	})
}
