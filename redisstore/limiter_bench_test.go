package redisstore_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// The cost of the shared limiter per request: one Take (one EVALSHA round trip) on a bucket
// that never makes the caller wait, with its p50 and p99 latency.
// Sequential: the latency of one Take. Parallel: its throughput under GOMAXPROCS callers.
func BenchmarkLimiterTake(b *testing.B) {
	b.Run("Sequential", func(b *testing.B) { benchmarkTake(b, false) })
	b.Run("Parallel", func(b *testing.B) { benchmarkTake(b, true) })
}

func benchmarkTake(b *testing.B, parallel bool) {
	l, _ := newTestLimiter(b)
	ctx := context.Background()
	bucket := b24oauth.Bucket{Burst: 1 << 20, Rate: 1e6}
	if _, err := l.Take(ctx, m1, bucket, 1); err != nil { // loads the script
		b.Fatal(err)
	}
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := l.Take(ctx, m1, bucket, 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
		return
	}
	lat := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := l.Take(ctx, m1, bucket, 1); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}
