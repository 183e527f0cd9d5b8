package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The replies decodeReply is tried on: success (plain and tolerant time blocks, list fields)
// and errors of both versions.
var decodeCases = []struct {
	name   string
	status int
	body   string
}{
	{"v2", 200, `{"result":{"ID":"1","TITLE":"Deal"},"time":{"start":1796238000.12,"finish":1796238000.15,"duration":0.03,"processing":0.01,"date_start":"2026-12-02T19:00:00+03:00","date_finish":"2026-12-02T19:00:01+03:00","operating":1.5,"operating_reset_at":1796238600}}`},
	{"list", 200, `{"result":[{"ID":"1"},{"ID":"2"}],"next":50,"total":"120","time":{"start":1,"finish":2,"duration":1,"processing":1,"date_start":"2026-12-02T19:00:00+00:00","date_finish":"2026-12-02T19:00:00+00:00","operating":0,"operating_reset_at":0}}`},
	{"tolerant time", 200, `{"result":true,"time":{"start":"1796238000.5","finish":1796238001,"duration":"0.5","date_start":"not a date","operating":"2","operating_reset_at":"1796238600"}}`},
	{"escaped date", 200, `{"result":1,"time":{"date_start":"2026\u002d12-02T19:00:00+00:00","date_finish":null}}`},
	{"v2 error", 400, `{"error":"ERROR_CORE","error_description":"Not found","argument":"id"}`},
	{"v3 error", 400, `{"error":{"code":"BITRIX_REST_V3_EXCEPTION_VALIDATION","message":"Invalid","validation":[{"field":"title","message":"Required"}]}}`},
	{"not JSON", 502, `<html>Bad gateway</html>`},
}

// TestDecodeReplyKeepsNothingOfBody: what decodeReply returns holds copies, never body's bytes,
// since post reads replies into pooled buffers and hands them to the next call once decoded.
func TestDecodeReplyKeepsNothingOfBody(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) {
			body := []byte(c.body)
			r, apiErr := decodeReply(c.status, body)
			want, wantErr := decodeReply(c.status, []byte(c.body))
			for i := range body {
				body[i] = 'x' // the buffer's next reply
			}
			if r == nil && apiErr == nil {
				t.Fatal("neither a Response nor an *APIError")
			}
			if diff := cmp.Diff(want, r); diff != "" {
				t.Errorf("Response changed with the buffer (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(wantErr, apiErr); diff != "" {
				t.Errorf("*APIError changed with the buffer (-before +after):\n%s", diff)
			}
		})
	}
}

// TestDecodeReplyPoolsNoResult: a Response's Result is its own, whatever later replies go
// through the pooled envelopes.
func TestDecodeReplyPoolsNoResult(t *testing.T) {
	first, apiErr := decodeReply(200, []byte(`{"result":{"ID":"1"}}`))
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	for i := 0; i < 100; i++ {
		if _, apiErr := decodeReply(200, []byte(`{"result":{"ID":"22222222"}}`)); apiErr != nil {
			t.Fatal(apiErr)
		}
	}
	if string(first.Result) != `{"ID":"1"}` {
		t.Errorf("first Result = %s after later replies, want {\"ID\":\"1\"}", first.Result)
	}
}

// stringTime is the time block as decodeReply decoded it before jsonDate: dates as strings, then
// parseDate.
type stringTime struct {
	Start            float64 `json:"start"`
	Finish           float64 `json:"finish"`
	Duration         float64 `json:"duration"`
	Processing       float64 `json:"processing"`
	DateStart        string  `json:"date_start"`
	DateFinish       string  `json:"date_finish"`
	Operating        float64 `json:"operating"`
	OperatingResetAt float64 `json:"operating_reset_at"`
}

// TestJSONDateDecodesAsAString: a time block decodes to the ResponseTime the string fields and
// parseDate gave, and fails where they failed (the tolerant decoding then takes over).
func TestJSONDateDecodesAsAString(t *testing.T) {
	dates := []string{
		`"2026-12-02T19:00:00+00:00"`, `"2026-12-02T19:00:00+03:00"`, `"2026-12-02T19:00:00-05:30"`,
		`"2026-12-02T19:00:00Z"`, `"2026-12-02T19:00:00.123+02:00"`, `"2026-12-02"`, `""`, `null`,
		`"2026\u002d12-02T19:00:00+00:00"`, `"2026-12-02T19:00:00\u002b01:00"`, `"not a date"`,
		`"2026-13-45T99:00:00+00:00"`, `1796238000`, `true`, `{}`, `[]`, `"\"quoted\""`,
	}
	for _, d := range dates {
		block := fmt.Sprintf(`{"start":1,"finish":2,"date_start":%s,"date_finish":%s,"operating":3}`, d, d)
		var old stringTime
		oldErr := json.Unmarshal([]byte(block), &old)
		var got plainTime
		err := json.Unmarshal([]byte(block), &got)
		if (err != nil) != (oldErr != nil) {
			t.Errorf("date %s: err = %v, want an error: %v", d, err, oldErr != nil)
			continue
		}
		if err != nil {
			continue
		}
		r := got.responseTime()
		for _, pair := range [][2]time.Time{{r.DateStart, parseDate(old.DateStart)}, {r.DateFinish, parseDate(old.DateFinish)}} {
			// Equal instants in the same zone offset (a *Location is made per parse).
			if !pair[0].Equal(pair[1]) || pair[0].String() != pair[1].String() {
				t.Errorf("date %s: decoded as %v, want %v", d, pair[0], pair[1])
			}
		}
		r.DateStart, r.DateFinish = time.Time{}, time.Time{}
		if want := (ResponseTime{Start: 1, Finish: 2, Operating: 3}); r != want {
			t.Errorf("date %s: %+v, want %+v", d, r, want)
		}
	}
}

// TestCachedDateConcurrent: replies of different dates decoded at once each get their own.
func TestCachedDateConcurrent(t *testing.T) {
	base := time.Date(2026, 12, 2, 19, 0, 0, 0, time.FixedZone("", 3*3600))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				want := base.Add(time.Duration(g*1000+i%7) * time.Second)
				body := fmt.Sprintf(`{"result":1,"time":{"date_start":%q,"date_finish":%q}}`, want.Format(time.RFC3339), want.Format(time.RFC3339))
				r, apiErr := decodeReply(200, []byte(body))
				if apiErr != nil {
					t.Error(apiErr)
					return
				}
				if !r.Time.DateStart.Equal(want) || !r.Time.DateFinish.Equal(want) {
					t.Errorf("dates %v, %v; want %v", r.Time.DateStart, r.Time.DateFinish, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestWithAuthQuotesAnyToken: the table that lets plain tokens skip json.Marshal marks exactly
// the bytes JSON keeps as they are, and every token comes out as the auth key's value.
func TestWithAuthQuotesAnyToken(t *testing.T) {
	for c := 0; c < 256; c++ {
		if plain := c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; jsonPlain[c] != plain {
			t.Errorf("jsonPlain[%#x] = %v, want %v", c, jsonPlain[c], plain)
		}
	}
	for _, token := range []string{"abc123.DEF", `with "quotes"`, `back\slash`, "tab\there", "ümlaut", "<script>", "\x7f\x00", ""} {
		for _, payload := range []string{"", "{}", `{"id":1}`, `{ "id" : 1 }`} { // as encodeParams gives it
			out := withAuth([]byte(payload), token)
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Errorf("withAuth(%q, %q) = %s: %v", payload, token, out, err)
				continue
			}
			if got["auth"] != token {
				t.Errorf("withAuth(%q, %q) = %s: auth is %q", payload, token, out, got["auth"])
			}
		}
	}
}

// marshalsWithSpace is a value whose MarshalJSON puts space around its object.
type marshalsWithSpace struct{}

func (marshalsWithSpace) MarshalJSON() ([]byte, error) { return []byte(" {\"a\": 1} "), nil }

// TestEncodeParams: what json.Marshal made is taken as it is (valid, no surrounding space);
// bytes given as they are are trimmed and checked.
func TestEncodeParams(t *testing.T) {
	for _, c := range []struct {
		params any
		want   string // "" for nil; "error" for an error
	}{
		{nil, ""},
		{map[string]any{"id": 1}, `{"id":1}`},
		{map[string]any(nil), ""},
		{struct {
			ID int `json:"id"`
		}{7}, `{"id":7}`},
		{marshalsWithSpace{}, `{"a":1}`},
		{json.RawMessage(` {"id": 1} `), `{"id": 1}`},
		{[]byte("null"), ""},
		{json.RawMessage(`{"id":`), "error"},
		{[]byte(`{"a":1}{`), "error"},
		{[]int{1}, "error"},
		{"{}", "error"},
		{42, "error"},
	} {
		got, err := encodeParams(c.params)
		switch {
		case c.want == "error":
			if err == nil {
				t.Errorf("encodeParams(%#v) = %s, want an error", c.params, got)
			}
		case err != nil || !bytes.Equal(got, []byte(c.want)) || (c.want == "") != (got == nil):
			t.Errorf("encodeParams(%#v) = %q, %v; want %q", c.params, got, err, c.want)
		}
	}
}

// TestReadReplyInto: a reply that fits is read into the scratch buffer, one that does not (or
// of unknown length and longer) into its own; the bound holds either way.
func TestReadReplyInto(t *testing.T) {
	scratch := make([]byte, 0, 64)
	for _, c := range []struct {
		name      string
		size      int
		known     bool
		limit     int64
		inScratch bool
		tooLarge  bool
	}{
		{"fits", 40, true, 1 << 20, true, false},
		{"fits exactly", 63, true, 1 << 20, true, false},
		{"longer", 64, true, 1 << 20, false, false},
		{"unknown length, short", 40, false, 1 << 20, true, false},
		{"unknown length, longer", 1000, false, 1 << 20, false, false},
		{"over the bound", 40, true, 30, false, true},
		{"unknown length, over the bound", 40, false, 30, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("y"), c.size)
			resp := &http.Response{ContentLength: -1, Body: readCloser{bytes.NewReader(data)}}
			if c.known {
				resp.ContentLength = int64(c.size)
			}
			body, held, err := readReplyInto(context.Background(), resp, c.limit, NewResponseBudget(1<<20), scratch)
			if held != 0 {
				t.Errorf("held %d of the budget, want 0", held)
			}
			if c.tooLarge {
				if err == nil {
					t.Errorf("read %d bytes past a bound of %d", len(body), c.limit)
				}
				return
			}
			if err != nil || !bytes.Equal(body, data) {
				t.Fatalf("read %d bytes, %v; want %d", len(body), err, c.size)
			}
			if in := cap(body) > 0 && &body[:cap(body)][cap(body)-1] == &scratch[:cap(scratch)][cap(scratch)-1]; in != c.inScratch {
				t.Errorf("read into scratch: %v, want %v", in, c.inScratch)
			}
		})
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
