package storetest

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// BenchmarkUpdate measures TokenStore.Update of one member with 1 and with 32 contending
// goroutines (sub-benchmarks contenders=1 and contenders=32), and reports the median and 99th
// percentile latency of a single Update as p50-ns and p99-ns. A token refresh is one Update; a
// storm of refreshes of one portal is many contending ones.
//
//	func BenchmarkUpdate(b *testing.B) {
//		storetest.BenchmarkUpdate(b, func(b *testing.B) b24oauth.TokenStore { return newMyStore(b) })
//	}
//
// newStore is called once per sub-benchmark and must return an empty store able to serve 32
// concurrent Updates (size connection pools accordingly).
func BenchmarkUpdate(b *testing.B, newStore func(b *testing.B) b24oauth.TokenStore) {
	for _, contenders := range []int{1, 32} {
		b.Run("contenders="+strconv.Itoa(contenders), func(b *testing.B) {
			s := newStore(b)
			member := memberID(1)
			if err := s.Save(context.Background(), fullInstallation(member, 1)); err != nil {
				b.Fatal(err)
			}
			benchUpdate(b, s, member, contenders)
		})
	}
}

func benchUpdate(b *testing.B, s b24oauth.TokenStore, member string, contenders int) {
	var (
		next atomic.Int64
		mu   sync.Mutex
		all  = make([]time.Duration, 0, b.N)
		wg   sync.WaitGroup
	)
	b.ResetTimer()
	for range contenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				err := s.Update(context.Background(), member, increment)
				mine = append(mine, time.Since(start))
				if err != nil {
					b.Error(err)
					return
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	if len(all) == 0 {
		return
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(all[(len(all)*99+99)/100-1].Nanoseconds()), "p99-ns")
}
