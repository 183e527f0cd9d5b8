//go:build unix

package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestClientsMakeTheSameCalls runs both clients for a handful of calls against the server's
// handler (in this process) and checks that they send the same requests and report their
// figures. No timing is checked.
func TestClientsMakeTheSameCalls(t *testing.T) {
	certFile, keyFile, err := writeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{} // method path and decoded body
	handler := newHandler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var params map[string]any
		if err := json.Unmarshal(body, &params); err != nil {
			t.Errorf("request body %q: %v", body, err)
		}
		mu.Lock()
		seen[r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+mustJSON(t, params)]++
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "https://")

	for _, kind := range []string{"raw", "sdk"} {
		var out bytes.Buffer
		cfg := clientConfig{kind: kind, addr: addr, caFile: certFile, n: 20, warmup: 5, conc: 4}
		if err := runClient(cfg, &out); err != nil {
			t.Fatalf("%s client: %v", kind, err)
		}
		var r result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%s client printed %q: %v", kind, out.String(), err)
		}
		if r.Kind != kind || r.Calls != 20 || r.CPUNsPerCall <= 0 || r.AllocsPerCall <= 0 || r.CallsPerSec <= 0 {
			t.Errorf("%s client: %+v", kind, r)
		}
	}
	want := "POST /rest/crm.deal.get application/json " + mustJSON(t, map[string]any{"auth": accessToken, "id": 1})
	if len(seen) != 1 || seen[want] != 2*25 {
		t.Errorf("requests seen: %v; want %d of %q", seen, 2*25, want)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMedian(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median(3, 1, 2) = %v", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median(4, 1, 2, 3) = %v", got)
	}
	if lo, hi := medianInterval([]float64{1.1, 1.1, 1.1}); lo != 1.1 || hi != 1.1 {
		t.Errorf("medianInterval of equal ratios = %v, %v", lo, hi)
	}
}
