//go:build unix

package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestClientsMakeTheSameCalls runs both clients for a handful of calls against the server's
// handler (in this process) and checks that they send the same requests and report their
// figures. No timing is checked.
func TestClientsMakeTheSameCalls(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // method path and decoded body
	addr, certFile := serveInProcess(t, func(r *http.Request, body []byte) {
		var params map[string]any
		if err := json.Unmarshal(body, &params); err != nil {
			t.Errorf("request body %q: %v", body, err)
		}
		mu.Lock()
		seen[r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type")+" "+mustJSON(t, params)]++
		mu.Unlock()
	})

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

// serveInProcess serves the benchmark's handler over HTTPS on loopback in this process; each
// request is shown to seen first (nil: none). It returns the address and the certificate file.
func serveInProcess(t *testing.T, seen func(r *http.Request, body []byte)) (addr, certFile string) {
	t.Helper()
	certFile, keyFile, err := writeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	handler := newHandler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if seen != nil {
			seen(r, body)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), certFile
}

// TestSyncedClient drives a client through the -sync protocol the driver's -together mode
// uses: "ready" after the warm-up, its result only after "go", calls on after the result until
// "stop", then a clean exit. A client that started measuring before "go", or that stopped
// calling once it had its result, fails here.
func TestSyncedClient(t *testing.T) {
	var calls atomic.Int64
	addr, certFile := serveInProcess(t, func(*http.Request, []byte) { calls.Add(1) })
	for _, kind := range []string{"raw", "sdk"} {
		t.Run(kind, func(t *testing.T) {
			calls.Store(0)
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			cfg := clientConfig{kind: kind, addr: addr, caFile: certFile, n: 20, warmup: 5, conc: 2, sync: true, in: inR}
			done := make(chan error, 1)
			go func() {
				err := runClient(cfg, outW)
				outW.CloseWithError(err)
				done <- err
			}()
			lines := bufio.NewScanner(outR)
			if !lines.Scan() || lines.Text() != "ready" {
				t.Fatalf("first line %q (%v), want ready", lines.Text(), lines.Err())
			}
			// Before "go" the client waits: only the warm-up's calls have been made.
			if got := calls.Load(); got != 5 {
				t.Errorf("%d calls before go, want the 5 of the warm-up", got)
			}
			if _, err := io.WriteString(inW, "go\n"); err != nil {
				t.Fatal(err)
			}
			if !lines.Scan() {
				t.Fatalf("no result: %v", lines.Err())
			}
			var r result
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil || r.Kind != kind || r.Calls != 20 || r.CPUNsPerCall <= 0 {
				t.Fatalf("result %q: %+v, %v", lines.Text(), r, err)
			}
			// After its result the client keeps the load on until "stop".
			for at := calls.Load(); calls.Load() < at+10; {
				runtime.Gosched()
			}
			if _, err := io.WriteString(inW, "stop\n"); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, outR)
			if err := <-done; err != nil {
				t.Errorf("runClient: %v", err)
			}
			inW.Close()
		})
	}
}
