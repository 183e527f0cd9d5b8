package b24oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"time"
)

// Response is a successful REST reply.
type Response struct {
	Result json.RawMessage // the method's "result", undecoded
	Next   int             // offset of the next page of a list method; 0 when there is none
	Total  int             // total rows of a list method; 0 when absent
	Time   ResponseTime    // the portal's timing block
	Status int             // HTTP status (200)
	// Replayed is set when the portal answered a v3 write from its store of replies to an
	// Idempotency-Key (Idempotent-Replayed: true): the write ran once, earlier.
	Replayed bool
}

// Decode unmarshals Result into v.
func (r *Response) Decode(v any) error {
	if len(r.Result) == 0 {
		return errors.New("b24oauth: the reply has no result")
	}
	return json.Unmarshal(r.Result, v)
}

// ResponseTime is the "time" block of a REST reply. Operating and OperatingResetAt feed the
// client's operating-limit tracking.
type ResponseTime struct {
	Start            float64   // unix seconds, with fraction
	Finish           float64   // unix seconds, with fraction
	Duration         float64   // seconds
	Processing       float64   // seconds
	DateStart        time.Time // zero if absent or unparsable
	DateFinish       time.Time // zero if absent or unparsable
	Operating        float64   // seconds this method used in the current operating-limit window
	OperatingResetAt int64     // unix seconds when that window's usage resets; 0 if absent
}

// UnmarshalJSON accepts the portal's time block, tolerating integer or fractional numbers and
// dates it cannot parse.
func (t *ResponseTime) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) || bytes.Equal(data, []byte("[]")) {
		*t = ResponseTime{}
		return nil
	}
	var raw struct {
		Start            flexFloat `json:"start"`
		Finish           flexFloat `json:"finish"`
		Duration         flexFloat `json:"duration"`
		Processing       flexFloat `json:"processing"`
		DateStart        string    `json:"date_start"`
		DateFinish       string    `json:"date_finish"`
		Operating        flexFloat `json:"operating"`
		OperatingResetAt flexFloat `json:"operating_reset_at"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*t = ResponseTime{
		Start: float64(raw.Start), Finish: float64(raw.Finish),
		Duration: float64(raw.Duration), Processing: float64(raw.Processing),
		DateStart: parseDate(raw.DateStart), DateFinish: parseDate(raw.DateFinish),
		Operating: float64(raw.Operating), OperatingResetAt: int64(raw.OperatingResetAt),
	}
	return nil
}

// MarshalJSON writes the block with the portal's names.
func (t ResponseTime) MarshalJSON() ([]byte, error) {
	out := map[string]any{
		"start": t.Start, "finish": t.Finish, "duration": t.Duration, "processing": t.Processing,
		"operating": t.Operating, "operating_reset_at": t.OperatingResetAt,
	}
	if !t.DateStart.IsZero() {
		out["date_start"] = t.DateStart.Format(time.RFC3339)
	}
	if !t.DateFinish.IsZero() {
		out["date_finish"] = t.DateFinish.Format(time.RFC3339)
	}
	return json.Marshal(out)
}

// jsonDate is a date of the time block (date_start, date_finish) decoded straight into a
// time.Time, as parseDate would from the JSON string: zero if null, empty or unparsable. Any
// other JSON value is an error, as it is for a string field.
type jsonDate time.Time

func (d *jsonDate) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil // as for a string field: left as it is
	}
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' || bytes.IndexByte(data, '\\') >= 0 {
		var s string // not a plain string: escapes to decode, or not a string at all
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*d = jsonDate(parseDate(s))
		return nil
	}
	*d = jsonDate(cachedDate(data[1 : len(data)-1]))
	return nil
}

// lastDate is the date cachedDate parsed last. Replies within a second carry the same dates
// (date_start and date_finish mostly the same one too), so most calls find theirs there.
var lastDate atomic.Pointer[parsedDate]

type parsedDate struct {
	s string
	t time.Time
}

// cachedDate is parseDate(string(s)), from lastDate when s is the date it holds.
func cachedDate(s []byte) time.Time {
	if last := lastDate.Load(); last != nil && last.s == string(s) {
		return last.t
	}
	d := &parsedDate{s: string(s)}
	d.t = parseDate(d.s)
	lastDate.Store(d)
	return d.t
}

func parseDate(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// flexInt decodes a JSON number or numeric string (PHP backends send either).
type flexInt int64

func (n *flexInt) UnmarshalJSON(data []byte) error {
	var f flexFloat
	if err := f.UnmarshalJSON(data); err != nil {
		return err
	}
	*n = flexInt(f)
	return nil
}

// flexFloat decodes a JSON number or numeric string; null, "" and false are 0.
type flexFloat float64

func (n *flexFloat) UnmarshalJSON(data []byte) error {
	s := string(data)
	if len(s) >= 2 && s[0] == '"' {
		var err error
		if s, err = strconv.Unquote(s); err != nil {
			return err
		}
	}
	switch s {
	case "", "null", "false":
		*n = 0
		return nil
	case "true":
		*n = 1
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return errors.New("b24oauth: not a number: " + strconv.Quote(s))
	}
	*n = flexFloat(f)
	return nil
}
