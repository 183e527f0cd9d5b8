package b24oauth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/b24go/b24oauth"
)

// countingTransport counts the bytes the client reads from reply bodies.
type countingTransport struct {
	read atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &t.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// endless is a portal and OAuth server whose every reply is a JSON string that never ends.
func endless(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var requests atomic.Int64
	chunk := []byte(strings.Repeat("a", 32<<10))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if _, err := io.WriteString(w, `{"result":"`); err != nil {
			return
		}
		for {
			if _, err := w.Write(chunk); err != nil {
				return // the client hung up
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

// TestEndlessReplyIsRefused: a reply that never ends fails every path with ErrResponseTooLarge
// once the bound is read, without a retry, and the client reads and allocates no more than the
// bound (a REST reply: WithMaxResponseBytes; the OAuth server's: 64 KiB).
func TestEndlessReplyIsRefused(t *testing.T) {
	const limit = 1 << 20
	for path, run := range redirectPaths {
		t.Run(path, func(t *testing.T) {
			srv, requests := endless(t)
			ct := &countingTransport{}
			c, err := b24oauth.New(paramsAt(srv), testSecretPair, b24oauth.WithHTTPClient(&http.Client{Transport: ct}),
				b24oauth.WithInsecureHTTP(), b24oauth.WithOAuthServers(srv.URL), b24oauth.WithMaxResponseBytes(limit),
				b24oauth.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), unlimited())
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err = run(context.Background(), c)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, b24oauth.ErrResponseTooLarge) {
				t.Fatalf("err = %v; want ErrResponseTooLarge", err)
			}
			bound := int64(limit)
			if path == "refresh" {
				bound = 64 << 10
				var rte *b24oauth.RefreshTokenError
				if !errors.As(err, &rte) || rte.Revoked() {
					t.Errorf("err = %v; want a *RefreshTokenError, not revoked", err)
				}
			}
			t.Logf("read %d bytes, allocated %d", ct.read.Load(), after.TotalAlloc-before.TotalAlloc)
			if n := ct.read.Load(); n > bound+1 {
				t.Errorf("read %d bytes of the reply; want at most %d", n, bound+1)
			}
			if n := requests.Load(); n != 1 {
				t.Errorf("%d requests; want 1 (an over-long reply is not retried)", n)
			}
			// Everything the call allocated, with the HTTP machinery, is a few times the bound
			// at most: reading on, as before (64 MiB), allocates far more.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*limit {
				t.Errorf("the call allocated %d bytes; want at most %d", alloc, 8*limit)
			}
		})
	}
}

// TestContentLengthOverTheBoundIsNotRead: a reply announcing more than the bound fails before a
// byte of it is read.
func TestContentLengthOverTheBoundIsNotRead(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"result":"`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ct := &countingTransport{}
	c, err := b24oauth.New(paramsAt(srv), testSecretPair, b24oauth.WithHTTPClient(&http.Client{Transport: ct}),
		b24oauth.WithInsecureHTTP(), unlimited())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(context.Background(), "profile", nil)
	if !errors.Is(err, b24oauth.ErrResponseTooLarge) {
		t.Fatalf("err = %v; want ErrResponseTooLarge", err)
	}
	if n := ct.read.Load(); n != 0 {
		t.Errorf("read %d bytes; want none", n)
	}
}

// TestReplyOfTheBoundIsRead: a reply of exactly the bound is read, with a Content-Length or
// without (chunked), past the part read without the budget.
func TestReplyOfTheBoundIsRead(t *testing.T) {
	const limit = 300 << 10
	body := `{"result":"` + strings.Repeat("b", limit-len(`{"result":""}`)) + `"}`
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if chunked {
					for i := 0; i < len(body); i += 1000 {
						_, _ = io.WriteString(w, body[i:min(i+1000, len(body))])
						w.(http.Flusher).Flush()
					}
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = io.WriteString(w, body)
			}))
			t.Cleanup(srv.Close)
			c, err := b24oauth.New(paramsAt(srv), testSecretPair, b24oauth.WithInsecureHTTP(), b24oauth.WithMaxResponseBytes(limit), unlimited())
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Call(context.Background(), "profile", nil)
			if err != nil {
				t.Fatalf("a reply of %d bytes, the bound: %v", len(body), err)
			}
			if len(resp.Result) != limit-len(`{"result":}`) {
				t.Errorf("result of %d bytes; want %d", len(resp.Result), limit-len(`{"result":}`))
			}
		})
	}
}

// TestForgedRepliesCostNoMoreThanTheirBytes: replies whose many tiny elements would each cost
// far more memory decoded than their bytes (a list page of more rows than any portal sends, a
// batch reply with more entries than commands, a v3 error with thousands of field errors) are
// refused or not decoded in full.
func TestForgedRepliesCostNoMoreThanTheirBytes(t *testing.T) {
	many := func(n int, elem string) string { return strings.TrimSuffix(strings.Repeat(elem+",", n), ",") }
	reply := map[string]string{
		"/rest/crm.deal.list":         `{"result":[` + many(5000, `{"ID":1}`) + `]}`,
		"/rest/batch":                 `{"result":{"result":{` + many(60, `"k":1`) + `}}}`,
		"/rest/api/tasks.task.update": `{"error":{"code":"INVALID","message":"bad","validation":[` + many(10000, `{}`) + `]}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		status := http.StatusOK
		if strings.Contains(r.URL.Path, "/api/") {
			status = http.StatusBadRequest
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, reply[r.URL.Path])
	}))
	t.Cleanup(srv.Close)
	c, err := b24oauth.New(paramsAt(srv), testSecretPair, b24oauth.WithInsecureHTTP(), unlimited())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, err := range c.List(ctx, "crm.deal.list", nil) {
		if !errors.Is(err, b24oauth.ErrResponseTooLarge) {
			t.Errorf("a page of 5000 rows: err = %v; want ErrResponseTooLarge", err)
		}
		break
	}
	if _, err := c.Batch(ctx, []b24oauth.BatchCommand{{Method: "profile"}}); !errors.Is(err, b24oauth.ErrResponseTooLarge) {
		t.Errorf("a batch reply of 60 entries: err = %v; want ErrResponseTooLarge", err)
	}
	_, err = c.CallV3(ctx, "tasks.task.update", nil)
	var ae *b24oauth.APIError
	if !errors.As(err, &ae) || ae.Code != "INVALID" || ae.Validation != nil || !strings.Contains(ae.Description, "not decoded") {
		t.Errorf("a v3 error with 10000 field errors: err = %v; want an *APIError INVALID without them", err)
	}
}
