package b24test_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/b24go/b24oauth/b24test"
)

type reply struct {
	Status int
	Body   map[string]any
	Raw    string
}

func do(t *testing.T, c *http.Client, req *http.Request) reply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Raw: string(b)}
	if err := json.Unmarshal(b, &r.Body); err != nil {
		t.Fatalf("%s %s: non-object JSON %q: %v", req.Method, req.URL, b, err)
	}
	return r
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, c, req)
}

func postRaw(t *testing.T, c *http.Client, u, contentType, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	return do(t, c, req)
}

func postJSON(t *testing.T, c *http.Client, u string, v any) reply {
	t.Helper()
	b, _ := json.Marshal(v)
	return postRaw(t, c, u, "application/json", string(b))
}

func get(t *testing.T, c *http.Client, u string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return do(t, c, req)
}

// call invokes a REST v2 method with auth in the form body.
func call(t *testing.T, s *b24test.Server, p *b24test.Portal, method string, params url.Values) reply {
	t.Helper()
	if params == nil {
		params = url.Values{}
	}
	params.Set("auth", p.Tokens().AccessToken)
	return postForm(t, s.Client(), p.ClientEndpoint()+method, params)
}

func refresh(t *testing.T, s *b24test.Server, rt string) reply {
	t.Helper()
	return postForm(t, s.Client(), s.OAuthOrigin()+"/oauth/token/", url.Values{
		"grant_type": {"refresh_token"}, "client_id": {s.ClientID()},
		"client_secret": {s.ClientSecret()}, "refresh_token": {rt},
	})
}

func wantError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.Status != status || r.Body["error"] != code {
		t.Fatalf("got %d %s, want %d error %q", r.Status, r.Raw, status, code)
	}
}

func wantOK(t *testing.T, r reply) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", r.Status, r.Raw)
	}
}

func newServer(t *testing.T, opts ...b24test.Option) *b24test.Server {
	t.Helper()
	s := b24test.NewServer(opts...)
	t.Cleanup(s.Close)
	return s
}
