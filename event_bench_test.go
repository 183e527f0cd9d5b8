package b24oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// discardWriter is an http.ResponseWriter that keeps nothing.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// rewindBody is a request body read again from the start each time it is reset.
type rewindBody struct{ strings.Reader }

func (*rewindBody) Close() error { return nil }

func noopEvent(context.Context, b24oauth.Event, *b24oauth.B24OAuth) error { return nil }

// benchEventEnv installs a portal on an App whose cache holds it and returns a genuine event
// body for it.
func benchEventEnv(b *testing.B) (*eventEnv, string) {
	env := newEventEnv(b, nil, nil, nil)
	p := env.install()
	env.client(p.MemberID())
	return env, p.NewEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": 6641}}, 1).Form.Encode()
}

// BenchmarkEventHandlerCached: one genuine event of a cached portal through the handler, in
// process, with a no-op fn.
func BenchmarkEventHandlerCached(b *testing.B) {
	env, body := benchEventEnv(b)
	h := env.app.EventHandler(noopEvent)
	req := httptest.NewRequest(http.MethodPost, "/events", nil)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rd := &rewindBody{}
	w := &discardWriter{h: http.Header{}}
	loads := env.store.loads.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd.Reset(body)
		req.Body = rd
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != 0 {
			b.Fatalf("status %d", w.status)
		}
	}
	b.StopTimer()
	if n := env.store.loads.Load() - loads; n != 0 {
		b.Fatalf("%d store reads", n)
	}
}

// BenchmarkEventHandlerLoopback: genuine events of a cached portal POSTed over loopback HTTP by
// parallel senders, with a no-op fn; reports requests per second.
func BenchmarkEventHandlerLoopback(b *testing.B) {
	env, body := benchEventEnv(b)
	srv := httptest.NewServer(env.app.EventHandler(noopEvent))
	defer srv.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(srv.URL, "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// BenchmarkPullOffline10k: draining a queue of 10,000 offline events, page by page, against
// the fake portal over HTTPS; reports the requests made and events per second.
func BenchmarkPullOffline10k(b *testing.B) {
	const n = 10000
	env := newEventEnv(b, nil, nil, nil)
	p := env.install()
	ctx := context.Background()
	var requests int
	var elapsed time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for id := 1; id <= n; id++ {
			p.QueueOfflineEvent("ONCRMDEALADD", map[string]any{"FIELDS": map[string]any{"ID": id}})
		}
		before := p.TotalRequests()
		b.StartTimer()
		start := time.Now()
		got, err := env.app.PullOfflineEvents(ctx, p.MemberID(), noopEvent)
		elapsed += time.Since(start)
		b.StopTimer()
		if err != nil || got != n {
			b.Fatalf("PullOfflineEvents = %d, %v", got, err)
		}
		requests += p.TotalRequests() - before
	}
	b.ReportMetric(float64(requests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
}
