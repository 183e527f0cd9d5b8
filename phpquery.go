package b24oauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// phpMaxNesting is PHP's default max_input_nesting_level: parse_str drops a variable with more
// bracketed levels than this.
const phpMaxNesting = 64

// encodePHPQuery encodes params as the query string of a batch command
// ("crm.deal.list?" + query): what PHP's http_build_query makes of the same array, which the
// portal reads back with parse_str.
//
// params is nil, or anything encoding/json turns into a JSON object (a map, a struct, a
// json.RawMessage, ...); a JSON null encodes as "". Other values (a slice, a string, a number)
// are an error. From the JSON form:
//   - nested objects become a[b][c]=v and arrays a[0]=x&a[1]=y;
//   - numbers are copied exactly as encoding/json writes them (big integers are not rounded);
//   - true and false become 1 and 0; null is left out, and so are empty arrays and objects
//     (and containers holding only those), as http_build_query does;
//   - object keys are sorted, so the output is deterministic.
//
// Keys and values are escaped as url.QueryEscape does; the brackets of the nesting stay literal,
// for readability (parse_str decodes the name before reading brackets, so both forms mean the
// same). A key parse_str would read back changed is an error rather than data silently sent
// elsewhere: an empty key; a top-level key with a space, a dot or "["; a nested key that is " "
// or holds "]"; any key with a NUL byte; and nesting deeper than PHP's 64 levels.
//
// Values are not escaped for Bitrix24's batch references: a value such as "$result[0][ID]" is
// one on purpose. PHP's max_input_vars (1000 by default) also bounds how many values a command
// may carry; that is not checked here.
func encodePHPQuery(params any) (string, error) {
	if params == nil {
		return "", nil
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return "", fmt.Errorf("b24oauth: encoding params: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("b24oauth: encoding params: %w", err)
	}
	var obj map[string]any
	switch v := v.(type) {
	case nil:
		return "", nil
	case map[string]any:
		obj = v
	default:
		return "", fmt.Errorf("b24oauth: params must encode to a JSON object, not %s", jsonKind(v))
	}

	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if err := checkTopKey(k); err != nil {
			return "", err
		}
		if err := appendPHPValue(&b, url.QueryEscape(k), obj[k], 0); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// appendPHPValue appends name=value pairs for v, a value decoded from JSON with UseNumber, under
// the (escaped) name prefix; depth is the number of brackets in prefix.
func appendPHPValue(b *strings.Builder, prefix string, v any, depth int) error {
	var s string
	switch v := v.(type) {
	case nil:
		return nil
	case bool:
		s = "0"
		if v {
			s = "1"
		}
	case json.Number:
		s = url.QueryEscape(v.String())
	case string:
		s = url.QueryEscape(v)
	case map[string]any:
		if len(v) == 0 {
			return nil
		}
		if depth == phpMaxNesting {
			return fmt.Errorf("b24oauth: params nested deeper than PHP's %d levels at %s", phpMaxNesting, prefix)
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if err := checkNestedKey(k); err != nil {
				return err
			}
			if err := appendPHPValue(b, prefix+"["+url.QueryEscape(k)+"]", v[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if len(v) == 0 {
			return nil
		}
		if depth == phpMaxNesting {
			return fmt.Errorf("b24oauth: params nested deeper than PHP's %d levels at %s", phpMaxNesting, prefix)
		}
		for i, e := range v {
			if err := appendPHPValue(b, prefix+"["+strconv.Itoa(i)+"]", e, depth+1); err != nil {
				return err
			}
		}
		return nil
	default: // encoding/json decodes into nothing else
		return fmt.Errorf("b24oauth: unexpected %T in params", v)
	}
	if b.Len() > 0 {
		b.WriteByte('&')
	}
	b.WriteString(prefix)
	b.WriteByte('=')
	b.WriteString(s)
	return nil
}

// checkTopKey reports a top-level key PHP's parse_str would not read back as is: it turns spaces
// and dots into underscores, starts the nesting at "[", drops a nameless variable and cuts a name
// at a NUL byte.
func checkTopKey(k string) error {
	if k == "" || strings.ContainsAny(k, " .[\x00") {
		return fmt.Errorf("b24oauth: params key %q cannot be sent in a query string: PHP would read it back changed", k)
	}
	return nil
}

// checkNestedKey reports a nested key PHP's parse_str would not read back as is: "[]" and "[ ]"
// append to a list, "]" ends the key, and a NUL byte cuts it.
func checkNestedKey(k string) error {
	if k == "" || k == " " || strings.ContainsAny(k, "]\x00") {
		return fmt.Errorf("b24oauth: params key %q cannot be sent in a query string: PHP would read it back changed", k)
	}
	return nil
}

// jsonKind names the JSON type of a value decoded with UseNumber, for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	default:
		return fmt.Sprintf("%T", v)
	}
}
