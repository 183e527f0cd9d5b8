package storetest

import (
	"context"
	"runtime"
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

// BenchmarkList measures one whole List pass over stores of 10,000 and of 100,000
// installations (sub-benchmarks entries=10000 and entries=100000). Besides the figures per
// pass it reports ns/entry and allocs/entry, which should stay flat as the store grows.
//
//	func BenchmarkList(b *testing.B) {
//		storetest.BenchmarkList(b, func(b *testing.B, memberIDs []string) b24oauth.TokenStore {
//			return newMyStoreHolding(b, memberIDs)
//		})
//	}
//
// populate is called once per sub-benchmark with the member_ids to store; it must return a
// store (a b24oauth.Lister) holding exactly those, written in bulk if the store has a faster
// way than Save (SaveAll is the slow, generic one).
func BenchmarkList(b *testing.B, populate func(b *testing.B, memberIDs []string) b24oauth.TokenStore) {
	for _, n := range []int{10_000, 100_000} {
		b.Run("entries="+strconv.Itoa(n), func(b *testing.B) {
			ids := make([]string, n)
			for i := range ids {
				ids[i] = memberID(i)
			}
			st := populate(b, ids)
			l, ok := st.(b24oauth.Lister)
			if !ok {
				b.Fatalf("%T is not a b24oauth.Lister", st)
			}
			ctx := context.Background()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				got := 0
				for _, err := range l.List(ctx) {
					if err != nil {
						b.Fatal(err)
					}
					got++
				}
				if got != n {
					b.Fatalf("List yielded %d member_ids; want %d", got, n)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			entries := float64(b.N) * float64(n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/entries, "ns/entry")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/entries, "allocs/entry")
		})
	}
}

// SaveAll saves an installation of each of memberIDs in st, failing b on an error: the
// generic populate of BenchmarkList.
func SaveAll(b *testing.B, st b24oauth.TokenStore, memberIDs []string) {
	b.Helper()
	for _, id := range memberIDs {
		if err := st.Save(context.Background(), fullInstallation(id, 1)); err != nil {
			b.Fatal(err)
		}
	}
}
