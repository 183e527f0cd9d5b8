package main

import (
	"bytes"
	"context"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// series is one line of the Prometheus text format: name{labels} value.
var seriesLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)

// scrape parses a /metrics body into "name{k=v,...}" (labels sorted) → value.
func scrape(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := seriesLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("not a Prometheus series line: %q", line)
		}
		var labels []string
		for _, kv := range regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, kv[1]+"="+kv[2])
		}
		sort.Strings(labels)
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out[m[1]+"{"+strings.Join(labels, ",")+"}"] = v
	}
	return out
}

// After the demo's flow /metrics has the App's calls, refreshes and events with the counts the
// flow made, and not one of the tokens, application tokens or the client secret it used.
func TestDemoMetrics(t *testing.T) {
	var out bytes.Buffer
	run, err := demo(context.Background(), &out)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	got := scrape(t, run.metrics)
	for series, want := range map[string]float64{
		// The profile calls of steps 2 and 5 and of the connected portal.
		`b24oauth_calls_total{api_version=v2,method=profile,outcome=ok}`:                                           3,
		`b24oauth_calls_total{api_version=v2,method=crm.deal.get,outcome=ok}`:                                      2,
		`b24oauth_retries_total{api_version=v2,method=profile,reason=expired_token}`:                               1,
		`b24oauth_refreshes_total{outcome=ok,trigger=rejected}`:                                                    1,
		`b24oauth_events_total{event=ONAPPINSTALL,http_response_status_code=200,offline=false,outcome=accepted}`:   1,
		`b24oauth_events_total{event=ONCRMDEALADD,http_response_status_code=200,offline=false,outcome=accepted}`:   1,
		`b24oauth_events_total{event=ONCRMDEALUPDATE,http_response_status_code=200,offline=true,outcome=accepted}`: 1,
		`b24oauth_events_total{event=ONAPPUNINSTALL,http_response_status_code=200,offline=false,outcome=accepted}`: 1,
		`b24oauth_refresh_duration_seconds_count{outcome=ok,trigger=rejected}`:                                     1,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	var calls, callDurations float64
	for series, v := range got {
		switch {
		case strings.HasPrefix(series, "b24oauth_calls_total{"):
			calls += v
		case strings.HasPrefix(series, "b24oauth_call_duration_seconds_count{"):
			callDurations += v
		}
		if strings.HasPrefix(series, "b24oauth_") && (strings.Contains(series, "member_id") || strings.Contains(series, "example.com")) {
			t.Errorf("a series names a portal: %s", series)
		}
	}
	if calls < 6 || callDurations != calls {
		t.Errorf("%v calls counted, %v call durations: want the same, and at least the demo's 6", calls, callDurations)
	}
	if got[`b24oauth_store_duration_seconds_count{op=load,outcome=ok}`] < 1 {
		t.Error("no store load recorded")
	}
	if !strings.Contains(out.String(), "b24oauth_calls_total{") || !strings.Contains(out.String(), "b24oauth_refreshes_total{") {
		t.Errorf("the demo printed no metrics:\n%s", out.String())
	}

	// No secret, and no part of one (16 characters in a row), in the body.
	if len(run.secrets) < 7 {
		t.Fatalf("only %d secrets collected", len(run.secrets))
	}
	for _, secret := range run.secrets {
		if len(secret) < 16 {
			t.Fatalf("a secret of %d characters: too short to look for", len(secret))
		}
		for i := 0; i+16 <= len(secret); i++ {
			if strings.Contains(run.metrics, secret[i:i+16]) {
				t.Errorf("/metrics shows (part of) a secret: %q", secret[i:i+16])
				break
			}
		}
		if strings.Contains(out.String(), secret) {
			t.Error("the demo's output shows a secret")
		}
	}
}
