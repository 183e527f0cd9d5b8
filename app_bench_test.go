package b24oauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// quietApp returns an App over store that trusts the default OAuth servers and logs nothing.
func quietApp(tb testing.TB, store b24oauth.TokenStore, cacheSize int) *b24oauth.App {
	tb.Helper()
	a, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: "local.app", ClientSecret: "secret", Store: store, CacheSize: cacheSize,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	return a
}

// appBenchMember returns the n-th made-up member_id of a benchmark series; series is hex
// digits, so the id is well formed.
func appBenchMember(series string, n int) string {
	return fmt.Sprintf("%s%0*x", series, 32-len(series), n)
}

// benchInstallation is a valid installation of a made-up portal.
func benchInstallation(memberID string) b24oauth.Installation {
	domain := "b24-" + memberID[len(memberID)-8:] + ".bitrix24.com"
	now := time.Now().UTC().Truncate(time.Second)
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			ApplicationToken: memberID, MemberID: memberID,
			AccessToken: "a" + memberID + memberID, RefreshToken: "r" + memberID + memberID,
			Expires: now.Add(time.Hour).Unix(), ExpiresIn: 3600, Scope: "crm,user_brief",
			Domain: domain, ClientEndpoint: "https://" + domain + "/rest/",
			ServerEndpoint: "https://oauth.bitrix.info/rest/", Status: b24oauth.StatusLocal, UserID: 1,
		},
		State: b24oauth.StateActive, Version: "1", LanguageID: "en", InstalledAt: now, UpdatedAt: now,
	}
}

// installForm is the ONAPPINSTALL body Bitrix24 would send for inst.
func installForm(inst b24oauth.Installation) string {
	f := url.Values{}
	f.Set("event", "ONAPPINSTALL")
	f.Set("event_handler_id", "1")
	f.Set("data[VERSION]", inst.Version)
	f.Set("data[ACTIVE]", "Y")
	f.Set("data[INSTALLED]", "Y")
	f.Set("data[LANGUAGE_ID]", inst.LanguageID)
	f.Set("ts", strconv.FormatInt(inst.InstalledAt.Unix(), 10))
	f.Set("auth[access_token]", inst.AccessToken)
	f.Set("auth[expires]", strconv.FormatInt(inst.Expires, 10))
	f.Set("auth[expires_in]", "3600")
	f.Set("auth[scope]", inst.Scope)
	f.Set("auth[domain]", inst.Domain)
	f.Set("auth[server_endpoint]", inst.ServerEndpoint)
	f.Set("auth[status]", string(inst.Status))
	f.Set("auth[client_endpoint]", inst.ClientEndpoint)
	f.Set("auth[member_id]", inst.MemberID)
	f.Set("auth[user_id]", "1")
	f.Set("auth[refresh_token]", inst.RefreshToken)
	f.Set("auth[application_token]", inst.ApplicationToken)
	return f.Encode()
}

// BenchmarkClientForMemberCached is ClientForMember for a portal already in the cache: the
// path every business call takes. Target: ≤ 1 µs and 0 allocations.
func BenchmarkClientForMemberCached(b *testing.B) {
	store := b24oauth.NewMemoryStore()
	a := quietApp(b, store, 0)
	ctx := context.Background()
	const portals = 1000
	members := make([]string, portals)
	for i := range members {
		members[i] = appBenchMember("c", i)
		if err := store.Save(ctx, benchInstallation(members[i])); err != nil {
			b.Fatal(err)
		}
		if _, err := a.ClientForMember(ctx, members[i]); err != nil {
			b.Fatal(err)
		}
	}
	member := members[portals/2]
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := a.ClientForMember(ctx, member); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := a.ClientForMember(ctx, members[i%portals]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// TestClientForMemberCachedAllocates nothing: the benchmark's 0 allocs/op as a test.
func TestClientForMemberCachedAllocatesNothing(t *testing.T) {
	store := b24oauth.NewMemoryStore()
	a := quietApp(t, store, 0)
	ctx := context.Background()
	member := appBenchMember("c", 1)
	if err := store.Save(ctx, benchInstallation(member)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ClientForMember(ctx, member); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = a.ClientForMember(ctx, member) }); n != 0 {
		t.Errorf("ClientForMember of a cached portal: %v allocations, want 0", n)
	}
}

// fillFileStore writes n records straight into dir in FileStore's format (M.json, mode 0600,
// with an empty M.lock beside it, as after a write through the store), quickly.
func fillFileStore(tb testing.TB, dir string, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m := appBenchMember("f", i)
				data, err := json.Marshal(benchInstallation(m))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, m+".json"), append(data, '\n'), 0o600)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, m+".lock"), nil, 0o600)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
}

// BenchmarkInstallEvent measures genuine ONAPPINSTALL events of new portals through the install
// handler, verification at the b24test fake included (one app.info at the OAuth server, one
// user.admin at the portal, over loopback HTTPS), into a MemoryStore and into a FileStore that
// already holds 100 or 100,000 portals. It reports the p50 and p99 of an install and the
// requests each one sent. Target for the FileStore: the cost with 100,000 at most 1.5 times the
// cost with 100.
func BenchmarkInstallEvent(b *testing.B) {
	parent := b
	fake := newFake(b)
	type storeSize struct {
		name   string
		stored int
		open   func() b24oauth.TokenStore
	}
	for _, sz := range []storeSize{
		{"memory", 0, func() b24oauth.TokenStore { return b24oauth.NewMemoryStore() }},
		{"file/stored=100", 100, nil},
		{"file/stored=100000", 100_000, nil},
	} {
		var store b24oauth.TokenStore
		var h http.Handler
		b.Run(sz.name, func(b *testing.B) {
			if store == nil { // once per size, kept across rounds (the parent removes it)
				if sz.open != nil {
					store = sz.open()
				} else {
					dir := parent.TempDir()
					fs := newFileStore(b, dir) // first: it makes the empty directory 0700
					fillFileStore(b, dir, sz.stored)
					if _, err := fs.Load(context.Background(), appBenchMember("f", sz.stored-1)); err != nil {
						b.Fatalf("a pre-created record does not load: %v", err)
					}
					store = fs
				}
				a, err := b24oauth.NewApp(appConfig(fake, store))
				if err != nil {
					b.Fatal(err)
				}
				parent.Cleanup(func() { a.Close() })
				b24oauth.SetVerifyLimits(a, 1<<20, time.Nanosecond, 1e6)
				h = a.InstallHandler()
			}
			bodies := make([]string, b.N)
			for i := range bodies {
				bodies[i] = fake.AddPortal().InstallEvent().Form.Encode()
			}
			appInfo, tokens := fake.AppInfoRequests(), fake.TokenRequests()
			lat := make([]time.Duration, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				req := httptest.NewRequest(http.MethodPost, "/install", strings.NewReader(bodies[i]))
				req.Header.Set("Content-Type", formType)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("install: %d %s", rec.Code, rec.Body)
				}
				lat[i] = time.Since(start)
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "installs/s")
			b.ReportMetric(float64(fake.AppInfoRequests()-appInfo)/float64(b.N), "app.info/op")
			b.ReportMetric(float64(fake.TokenRequests()-tokens)/float64(b.N), "token-requests/op")
		})
	}
}

// caching 10,000 portals, measured after a GC before and after the clients were built.
func BenchmarkCachedClientMemory(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	store := b24oauth.NewMemoryStore()
	for i := range n {
		if err := store.Save(ctx, benchInstallation(appBenchMember("e", i))); err != nil {
			b.Fatal(err)
		}
	}
	var perClient float64
	for range b.N {
		a := quietApp(b, store, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range n {
			if _, err := a.ClientForMember(ctx, appBenchMember("e", i)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perClient = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		runtime.KeepAlive(a)
		a.Close()
	}
	b.ReportMetric(perClient, "bytes/client")
}
