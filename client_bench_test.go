package b24oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// profileReply is what the loopback server of BenchmarkCall answers.
var profileReply = []byte(`{"result":{"ID":"1","ADMIN":true,"NAME":"Test"},"time":{"start":1767225600.1,"finish":1767225600.2,"duration":0.1,"processing":0.05,"date_start":"2026-01-01T00:00:00+00:00","date_finish":"2026-01-01T00:00:00+00:00","operating":0,"operating_reset_at":1767226200}}`)

// BenchmarkCall compares Call on a valid token with a raw net/http JSON POST to the same
// loopback server (target: Call ≤ 1.10x raw). The client's rate limiter is off: its pace, not
// the client's overhead, would be measured otherwise.
func BenchmarkCall(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(profileReply)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	params := map[string]any{"fields": map[string]any{"TITLE": "Deal"}}
	type result struct {
		ID    string `json:"ID"`
		Admin bool   `json:"ADMIN"`
	}

	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for i := 0; i < b.N; i++ {
			body, _ := json.Marshal(map[string]any{"auth": testAccess, "fields": params["fields"]})
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/rest/profile", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var env struct {
				Result json.RawMessage `json:"result"`
				Time   map[string]any  `json:"time"`
			}
			if err := json.Unmarshal(raw, &env); err != nil {
				b.Fatal(err)
			}
			var r result
			if err := json.Unmarshal(env.Result, &r); err != nil || r.ID != "1" {
				b.Fatal(err)
			}
		}
	})
	b.Run("Call", func(b *testing.B) {
		p := testParams()
		p.Domain, p.ClientEndpoint = host, srv.URL+"/rest/"
		c, err := b24oauth.New(p, testSecretPair, b24oauth.WithHTTPClient(hc), b24oauth.WithInsecureHTTP(), unlimited())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		defer reportCPU(b)()
		for i := 0; i < b.N; i++ {
			resp, err := c.Call(ctx, "profile", params)
			if err != nil {
				b.Fatal(err)
			}
			var r result
			if err := resp.Decode(&r); err != nil || r.ID != "1" {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCallOverhead measures what a call costs the client itself, without network or
// server: the transport answers from memory. raw is a careful hand-written client (a JSON POST,
// the reply read with a bound and decoded into a struct with result as json.RawMessage); Call
// goes through the SDK with the limiter at its defaults except for a bucket it never empties,
// and no Observer. Both decode the result as a caller would. Its allocs/op are the client's
// alone (BenchmarkCall's include the loopback server's): Call should allocate no more than raw.
// What a whole process pays per call (GC, TLS, goroutines) is `make bench-process`.
func BenchmarkCallOverhead(b *testing.B) {
	hc := &http.Client{Transport: memoryTransport(profileReply)}
	type result struct {
		ID string `json:"ID"`
	}
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			body, err := json.Marshal(map[string]any{"auth": testAccess, "id": 1})
			if err != nil {
				b.Fatal(err)
			}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://acme.bitrix24.com/rest/crm.deal.get", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			raw, err := io.ReadAll(io.LimitReader(resp.Body, b24oauth.DefaultMaxResponseBytes))
			resp.Body.Close()
			if err != nil {
				b.Fatal(err)
			}
			var env struct {
				Result json.RawMessage `json:"result"`
				Error  string          `json:"error"`
				Time   struct {
					Start            float64 `json:"start"`
					Finish           float64 `json:"finish"`
					Duration         float64 `json:"duration"`
					Processing       float64 `json:"processing"`
					DateStart        string  `json:"date_start"`
					DateFinish       string  `json:"date_finish"`
					Operating        float64 `json:"operating"`
					OperatingResetAt int64   `json:"operating_reset_at"`
				} `json:"time"`
			}
			if err := json.Unmarshal(raw, &env); err != nil || resp.StatusCode != http.StatusOK || env.Error != "" {
				b.Fatal(resp.StatusCode, env.Error, err)
			}
			var r result
			if err := json.Unmarshal(env.Result, &r); err != nil || r.ID != "1" {
				b.Fatal(err)
			}
		}
	})
	b.Run("Call", func(b *testing.B) {
		rp := b24oauth.DefaultRestrictionParams()
		rp.RateLimit.BurstLimit, rp.RateLimit.DrainRate = 1e9, 1e9
		c, err := b24oauth.New(testParams(), testSecretPair, b24oauth.WithHTTPClient(hc), b24oauth.WithRestrictionParams(rp))
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			resp, err := c.Call(ctx, "crm.deal.get", map[string]any{"id": 1})
			if err != nil {
				b.Fatal(err)
			}
			var r result
			if err := resp.Decode(&r); err != nil || r.ID != "1" {
				b.Fatal(err)
			}
		}
	})
}

// memoryTransport answers every request with reply, after reading the request's body.
type memoryTransport []byte

func (reply memoryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(reply)), ContentLength: int64(len(reply)), Request: r,
	}, nil
}

// reportCPU reports the process's CPU time (user and system, client and loopback server
// together) per operation as cpu-ns/op: on a shared machine it is steadier than wall time.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRefreshStorm: 1,000 goroutines, v2 and v3 mixed, call a portal whose token just
// expired. It reports refreshes/op, which must be exactly 1.
func BenchmarkRefreshStorm(b *testing.B) {
	s := newFake(b)
	p := s.AddPortal()
	p.SeedDeals(1)
	c := newClient(b, s, p, unlimited())
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p.ExpireAccessToken()
		before := p.Refreshes()
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for g := 0; g < 1000; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				<-start
				var err error
				if g%2 == 0 {
					_, err = c.Call(ctx, "profile", nil)
				} else {
					_, err = c.CallV3(ctx, "crm.deal.get", map[string]any{"id": 1})
				}
				if err != nil {
					errs <- err
				}
			}(g)
		}
		b.StartTimer()
		close(start)
		wg.Wait()
		b.StopTimer()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if got := p.Refreshes() - before; got != 1 {
			b.Fatalf("refreshes = %d, want 1", got)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(p.Refreshes())/float64(b.N), "refreshes/op")
}

// BenchmarkLimiterThroughput sends requests through the client's limiter to a fake portal
// enforcing the same leaky bucket, and reports the sustained rate as a share of the drain
// rate (target ≥ 95%) and the portal's rejections (target 0). The bucket is scaled up (50
// burst, 100/s) so that a run takes seconds, not minutes.
func BenchmarkLimiterThroughput(b *testing.B) {
	const burst, drain = 50, 100.0
	s := newFake(b, b24test.WithRateLimit(burst, drain))
	p := s.AddPortal()
	rp := b24oauth.DefaultRestrictionParams()
	rp.RateLimit = b24oauth.RateLimitParams{BurstLimit: burst, DrainRate: drain, Adaptive: true}
	c := newClient(b, s, p, b24oauth.WithRestrictionParams(rp))
	ctx := context.Background()
	const total = burst + 200 // 200 requests past the burst: 2 s at the drain rate
	b.ResetTimer()
	var rate float64
	for i := 0; i < b.N; i++ {
		// Let both buckets drain between rounds.
		b.StopTimer()
		time.Sleep(time.Duration(float64(burst)/drain*float64(time.Second)) + 100*time.Millisecond)
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		work := make(chan struct{}, total)
		for j := 0; j < total; j++ {
			work <- struct{}{}
		}
		close(work)
		var firstAfterBurst time.Time
		var mu sync.Mutex
		done := 0
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					if _, err := c.Call(ctx, "server.time", nil); err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					done++
					if done == burst {
						firstAfterBurst = time.Now()
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(firstAfterBurst)
		rate = float64(total-burst) / elapsed.Seconds()
		_ = start
	}
	b.ReportMetric(rate/drain*100, "%drain")
	b.ReportMetric(float64(p.Rejections()), "rejections")
}
