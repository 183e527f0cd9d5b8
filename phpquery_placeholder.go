package b24oauth

// TEMPORARY placeholder for the batch/list branch: the real encodePHPQuery lives in phpquery.go
// on the limiter branch and replaces this file at merge.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// encodePHPQuery encodes params as a PHP bracket query string (a[b][0]=x), keys sorted.
func encodePHPQuery(params any) (string, error) {
	data, err := json.Marshal(params)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	m, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return "", nil
		}
		return "", fmt.Errorf("params must encode to a JSON object")
	}
	var parts []string
	for _, k := range placeholderSortedKeys(m) {
		parts = placeholderAppendPHP(parts, k, m[k])
	}
	return strings.Join(parts, "&"), nil
}

func placeholderAppendPHP(parts []string, prefix string, v any) []string {
	switch t := v.(type) {
	case map[string]any:
		for _, k := range placeholderSortedKeys(t) {
			parts = placeholderAppendPHP(parts, prefix+"["+k+"]", t[k])
		}
	case []any:
		for i, e := range t {
			parts = placeholderAppendPHP(parts, prefix+"["+strconv.Itoa(i)+"]", e)
		}
	case bool:
		s := "0"
		if t {
			s = "1"
		}
		parts = append(parts, url.QueryEscape(prefix)+"="+s)
	case nil:
		parts = append(parts, url.QueryEscape(prefix)+"=")
	default:
		parts = append(parts, url.QueryEscape(prefix)+"="+url.QueryEscape(fmt.Sprint(t)))
	}
	return parts
}

func placeholderSortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
