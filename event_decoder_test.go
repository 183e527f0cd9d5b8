package b24oauth

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeData parses body and returns its data[...] as JSON (the parse error, if any).
func decodeData(body string) (string, error) {
	f, err := parseEventForm([]byte(body))
	if err != nil {
		return "", err
	}
	return string(f.data.appendJSON(nil, true)), nil
}

func TestParseEventFormData(t *testing.T) {
	cases := []struct{ body, want string }{
		{"data%5BFIELDS%5D%5BID%5D=42", `{"FIELDS":{"ID":"42"}}`},
		{"data[FIELDS][ID]=42&data[FIELDS][TITLE]=A+b%26c", `{"FIELDS":{"ID":"42","TITLE":"A b&c"}}`},
		{"data[L][0]=a&data[L][1]=b", `{"L":["a","b"]}`},
		{"data[L][]=a&data[L][]=b&data[L][]=c", `{"L":["a","b","c"]}`},
		{"data[L][1]=a&data[L][0]=b", `{"L":{"1":"a","0":"b"}}`}, // not 0..n-1 in order: PHP writes an object
		{"data[L][0]=a&data[L][2]=b", `{"L":{"0":"a","2":"b"}}`},
		{"data[L][5]=a&data[L][]=b", `{"L":{"5":"a","6":"b"}}`},
		{"data[0]=a&data[1]=b", `{"0":"a","1":"b"}`}, // Data itself is always an object
		{"data[A]=1&data[A]=2", `{"A":"2"}`},
		{"data[A]=1&data[A][B]=2", `{"A":{"B":"2"}}`},
		{"data[A][B]=2&data[A]=1", `{"A":"1"}`},
		{"data[A][B]=1&data=x&data[C]=2", `{"C":"2"}`},
		{"event=ONAPPTEST", `{}`},
		{"data[T]=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82", `{"T":"Привет"}`},
		{"data[Q]=%22%5C%3C%0A", `{"Q":"\"\\\u003c\n"}`},
		{"data[a[b]=1", `{"a[b":"1"}`},
		{"&&data[A]=1&", `{"A":"1"}`},
	}
	for _, c := range cases {
		got, err := decodeData(c.body)
		if err != nil || got != c.want {
			t.Errorf("%s:\n got %s %v\nwant %s", c.body, got, err, c.want)
		}
	}
	for _, bad := range []string{"data[A=1", "data[A]x=1", "data[A]=%zz", "event[0]=X", "ts[]=1", "%=1",
		"data" + strings.Repeat("[a]", phpMaxNesting+1) + "=1"} {
		if _, err := parseEventForm([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", bad)
		}
	}
	f, err := parseEventForm([]byte("event=onCrmDealAdd&auth[member_id]=m&auth[application_token]=t&auth[access_token]=a&auth[user_id]=7&auth[nested][x]=1&auth[domain]=d"))
	if err != nil || f.name != "onCrmDealAdd" || f.memberID != "m" || f.appToken != "t" || f.accessToken != "a" || f.userID != "7" {
		t.Fatalf("fields: %+v %v", f, err)
	}
	f, _ = parseEventForm([]byte("auth[member_id]=m&auth=x"))
	if f.memberID != "" {
		t.Fatal("auth=x kept auth[member_id]")
	}
	// A node past the index threshold finds its keys.
	var b strings.Builder
	for i := 0; i < 3*phpNodeIndexAt; i++ {
		fmt.Fprintf(&b, "data[K%d]=%d&", i%(2*phpNodeIndexAt), i)
	}
	got, err := decodeData(b.String())
	var m map[string]string
	if err != nil || json.Unmarshal([]byte(got), &m) != nil || len(m) != 2*phpNodeIndexAt || m["K0"] != strconv.Itoa(2*phpNodeIndexAt) {
		t.Fatalf("large node: %s %v", got, err)
	}
}

// normalized unmarshals JSON data, with lists turned into objects keyed by index: the same
// PHP array whatever json_encode chose.
func normalized(t *testing.T, data []byte) any {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("invalid JSON %q: %v", data, err)
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case []any:
			m := make(map[string]any, len(x))
			for i, e := range x {
				m[strconv.Itoa(i)] = walk(e)
			}
			return m
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
			return x
		case string:
			return x
		}
		t.Fatalf("leaf %T (%v) in %s: want strings only", v, v, data)
		return nil
	}
	return walk(v)
}

// FuzzEventDecoder: any body either is refused or decodes to a JSON object of strings,
// deterministically, that PHP bracket encoding gives back unchanged; an accepted event has a
// valid name and member_id.
func FuzzEventDecoder(f *testing.F) {
	f.Add("event=ONCRMDEALADD&event_handler_id=11&data%5BFIELDS%5D%5BID%5D=42&ts=1767225600&auth%5Bmember_id%5D=5f0c2a9e1b7d4c3a8e6f9b2d1a0c4e7f&auth%5Bapplication_token%5D=9d3b7e1f0a2c4b6d8e0f1a3c5b7d9e2f")
	f.Add("data[L][]=a&data[L][]=b&data[M][1]=x&data[M][0]=y&data[N][a[b]=c")
	f.Add("data[A]=1&data[A][B]=2&data=&data[%FF]=%FE&data[+]=+")
	f.Add("event=onofflineevent&auth[member_id]=5f0c2a9e1b7d4c3a8e6f9b2d1a0c4e7f&auth[application_token]=X&ts=-1")
	f.Add("data" + strings.Repeat("[0]", 64) + "=deep")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := parseEventForm([]byte(body))
		if err != nil {
			return
		}
		data := form.data.appendJSON(nil, true)
		if !json.Valid(data) || data[0] != '{' {
			t.Fatalf("data of %q is not a JSON object: %s", body, data)
		}
		again, _ := parseEventForm([]byte(body))
		if string(again.data.appendJSON(nil, true)) != string(data) {
			t.Fatalf("not deterministic: %q", body)
		}
		norm := normalized(t, data)
		if q, err := encodePHPQuery(map[string]any{"data": json.RawMessage(data)}); err == nil {
			back, err := parseEventForm([]byte(q))
			if err != nil {
				t.Fatalf("re-encoded %q (from %q) does not parse: %v", q, body, err)
			}
			if got := normalized(t, back.data.appendJSON(nil, true)); !reflect.DeepEqual(got, norm) {
				t.Fatalf("round trip of %q through %q: got %v, want %v", body, q, got, norm)
			}
		}
		ev, e := form.event()
		if e != nil {
			return
		}
		if !validEventCode(ev.Name) || ev.Name != strings.ToUpper(ev.Name) || !ValidMemberID(ev.MemberID) || !utf8.ValidString(ev.Name) {
			t.Fatalf("accepted %q as %+v", body, ev)
		}
		if string(ev.Data) != string(data) {
			t.Fatalf("Event.Data %s, decoded %s", ev.Data, data)
		}
	})
}

// event2KiB is a realistic event body of about 2 KiB: a deal's fields and a full auth block.
func event2KiB() string {
	f := url.Values{}
	f.Set("event", "ONCRMDEALUPDATE")
	f.Set("event_handler_id", "185")
	f.Set("ts", "1767225600")
	for i := 0; i < 20; i++ {
		f.Set(fmt.Sprintf("data[FIELDS][UF_CRM_%d]", 1000+i), strings.Repeat("v", 20+i))
	}
	f.Set("data[FIELDS][ID]", "6641")
	for i := 0; i < 8; i++ {
		f.Set(fmt.Sprintf("data[FIELDS][CONTACTS][%d]", i), strconv.Itoa(100+i))
	}
	for k, v := range map[string]string{
		"access_token": strings.Repeat("a", 70), "expires": "1767229200", "expires_in": "3600",
		"scope": "crm,user_brief,placement", "domain": "acme.bitrix24.com", "server_endpoint": "https://oauth.bitrix.info/rest/",
		"status": "L", "client_endpoint": "https://acme.bitrix24.com/rest/", "member_id": "5f0c2a9e1b7d4c3a8e6f9b2d1a0c4e7f",
		"user_id": "1", "application_token": "9d3b7e1f0a2c4b6d8e0f1a3c5b7d9e2f",
	} {
		f.Set("auth["+k+"]", v)
	}
	return f.Encode()
}

func BenchmarkDecodeEvent2KiB(b *testing.B) {
	body := []byte(event2KiB())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f, err := parseEventForm(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, e := f.event(); e != nil {
			b.Fatal(e)
		}
	}
}
