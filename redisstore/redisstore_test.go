package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/redisstore"
	"github.com/b24go/b24oauth/storetest"
	"github.com/redis/go-redis/v9"
)

const envRedis = "B24OAUTH_TEST_REDIS"

// testClient connects to the server named by B24OAUTH_TEST_REDIS (host:port or a redis:// URL):
// it skips the test when the variable is unset and fails it when the server cannot be reached.
func testClient(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	addr := os.Getenv(envRedis)
	if addr == "" {
		tb.Skip(envRedis + " is not set: set it to a Redis address, e.g. 127.0.0.1:6379 or redis://127.0.0.1:6379/0, to run the redisstore tests")
	}
	client, err := dial()
	if err != nil {
		tb.Fatalf("%s: %v", envRedis, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		tb.Fatalf("%s is set but Redis is unreachable: %v", envRedis, err)
	}
	tb.Cleanup(func() { _ = client.Close() })
	return client
}

// dial returns a client of the server named by B24OAUTH_TEST_REDIS, without contacting it.
func dial() (redis.UniversalClient, error) {
	addr := os.Getenv(envRedis)
	if strings.Contains(addr, "://") {
		opt, err := redis.ParseURL(addr)
		if err != nil {
			return nil, err
		}
		return redis.NewClient(opt), nil
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}}), nil
}

// newPrefix returns a fresh key prefix whose keys are deleted when the test ends.
func newPrefix(tb testing.TB, client redis.UniversalClient) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "b24oauth-test:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			if err := client.Del(ctx, iter.Val()).Err(); err != nil {
				tb.Errorf("clean-up: %v", err)
			}
		}
		if err := iter.Err(); err != nil {
			tb.Errorf("clean-up: %v", err)
		}
	})
	return prefix
}

func newStore(tb testing.TB, client redis.UniversalClient, opts ...redisstore.Option) *redisstore.Store {
	tb.Helper()
	opts = append([]redisstore.Option{redisstore.WithKeyPrefix(newPrefix(tb, client))}, opts...)
	s, err := redisstore.New(client, opts...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		return newStore(t, testClient(t))
	})
}

// Member ids of the tests, shaped like real ones (32 lowercase hex).
const (
	m1 = "0000000000000000000000000000a001"
	m2 = "0000000000000000000000000000a002"
)

func installation(member string) b24oauth.Installation {
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			MemberID:     member,
			AccessToken:  "access-1",
			RefreshToken: "refresh-1",
			Domain:       "portal.bitrix24.com",
		},
		State: b24oauth.StateActive,
	}
}

func mustSave(t *testing.T, s b24oauth.TokenStore, inst b24oauth.Installation) {
	t.Helper()
	if err := s.Save(context.Background(), inst); err != nil {
		t.Fatalf("Save: %v", err)
	}
}

func mustLoad(t *testing.T, s b24oauth.TokenStore, member string) b24oauth.Installation {
	t.Helper()
	got, err := s.Load(context.Background(), member)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return got
}

func setAccessToken(tok string) func(b24oauth.Installation) (b24oauth.Installation, error) {
	return func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken = tok
		return cur, nil
	}
}

func TestKeyLayout(t *testing.T) {
	client := testClient(t)
	prefix := newPrefix(t, client)
	s, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.InstallationKey(m1), prefix+"inst:{"+m1+"}"; got != want {
		t.Errorf("InstallationKey = %q; want %q", got, want)
	}
	if got, want := s.LockKey(m1), prefix+"lock:{"+m1+"}"; got != want {
		t.Errorf("LockKey = %q; want %q", got, want)
	}
	mustSave(t, s, installation(m1))
	ctx := context.Background()
	fields, err := client.HGetAll(ctx, prefix+"inst:{"+m1+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	var inst b24oauth.Installation
	if err := json.Unmarshal([]byte(fields["data"]), &inst); err != nil || inst.RefreshToken != "refresh-1" {
		t.Errorf("data field = %q (%v); want the Installation's JSON", fields["data"], err)
	}
	if fields["rev"] == "" {
		t.Error("rev field is empty")
	}
	if n, err := client.Exists(ctx, prefix+"lock:{"+m1+"}").Result(); err != nil || n != 0 {
		t.Errorf("the lock is still there after Save (exists %d, err %v)", n, err)
	}
}

func TestKeyPrefixIsolation(t *testing.T) {
	client := testClient(t)
	a, b := newStore(t, client), newStore(t, client)
	mustSave(t, a, installation(m1))
	if _, err := b.Load(context.Background(), m1); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Fatalf("Load from another prefix = %v; want ErrNotInstalled", err)
	}
	other := installation(m1)
	other.AccessToken = "access-b"
	mustSave(t, b, other)
	if got := mustLoad(t, a, m1); got.AccessToken != "access-1" {
		t.Errorf("a's record = %q; want access-1", got.AccessToken)
	}
	// b's lock does not block a.
	if err := client.Set(context.Background(), b.LockKey(m1), "someone", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Update(ctx, m1, setAccessToken("access-a2")); err != nil {
		t.Fatalf("Update under a while b's lock is held: %v", err)
	}
	if err := a.Delete(context.Background(), m1); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, b, m1); got.AccessToken != "access-b" {
		t.Errorf("b's record after a's Update and Delete = %q; want access-b", got.AccessToken)
	}
}

// A lock held by someone else keeps Update out until the context's deadline.
func TestUpdateWaitsForForeignLock(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	if err := client.Set(context.Background(), s.LockKey(m1), "other-owner", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	called := false
	err := s.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	if !errors.Is(err, context.DeadlineExceeded) || called {
		t.Fatalf("Update while another owner holds the lock = %v (fn called: %v); want DeadlineExceeded without calling fn", err, called)
	}
	if v, err := client.Get(context.Background(), s.LockKey(m1)).Result(); err != nil || v != "other-owner" {
		t.Errorf("the other owner's lock = %q, %v; want it untouched", v, err)
	}
	err = s.Save(ctx, installation(m1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Save while another owner holds the lock = %v; want DeadlineExceeded", err)
	}
}

// A holder that died leaves its lock to expire; then the others proceed.
func TestLeaseExpiryLetsAnotherOwnerIn(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	if err := client.Set(context.Background(), s.LockKey(m1), "dead-holder", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cur b24oauth.Installation
	err := s.Update(ctx, m1, func(c b24oauth.Installation) (b24oauth.Installation, error) {
		cur = c
		// Inside fn the lock is ours, not the dead holder's.
		if v, _ := client.Get(context.Background(), s.LockKey(m1)).Result(); v == "dead-holder" {
			t.Error("fn runs while the dead holder's lock is still there")
		}
		c.AccessToken = "access-2"
		return c, nil
	})
	if err != nil {
		t.Fatalf("Update after the dead holder's lease: %v", err)
	}
	if cur.AccessToken != "access-1" {
		t.Errorf("fn saw AccessToken %q; want access-1", cur.AccessToken)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != "access-2" {
		t.Errorf("AccessToken = %q; want access-2", got.AccessToken)
	}
	if n, _ := client.Exists(context.Background(), s.LockKey(m1)).Result(); n != 0 {
		t.Error("the lock was not released after Update")
	}
}

// A holder whose lock expired while fn ran, and that another owner took and used, writes
// nothing, and its release leaves the new owner's lock alone.
func TestExpiredHolderCannotOverwrite(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	ctx := context.Background()
	newer := installation(m1)
	newer.AccessToken = "written-by-the-new-owner"
	newerJSON, _ := json.Marshal(newer)
	err := s.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		// The lease runs out and another owner takes the lock and writes.
		if err := client.Set(ctx, s.LockKey(m1), "new-owner", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.HSet(ctx, s.InstallationKey(m1), "data", newerJSON, "rev", "new-owner-rev").Err(); err != nil {
			t.Fatal(err)
		}
		cur.AccessToken = "written-by-the-expired-holder"
		return cur, nil
	})
	if !errors.Is(err, redisstore.ErrLockLost) {
		t.Fatalf("Update of an expired holder = %v; want ErrLockLost", err)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != newer.AccessToken {
		t.Errorf("AccessToken = %q; want the new owner's %q", got.AccessToken, newer.AccessToken)
	}
	if v, err := client.Get(ctx, s.LockKey(m1)).Result(); err != nil || v != "new-owner" {
		t.Errorf("the new owner's lock = %q, %v; the expired holder must not release it", v, err)
	}
}

// A lock that vanished (evicted, lost in a failover) is reported even if nobody wrote since.
func TestLockVanishedIsLost(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	err := s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		if err := client.Del(context.Background(), s.LockKey(m1)).Err(); err != nil {
			t.Fatal(err)
		}
		cur.AccessToken = "must-not-be-written"
		return cur, nil
	})
	if !errors.Is(err, redisstore.ErrLockLost) {
		t.Fatalf("Update whose lock vanished = %v; want ErrLockLost", err)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != "access-1" {
		t.Errorf("AccessToken = %q; want access-1", got.AccessToken)
	}
}

// A record changed behind the lock's back (by a writer that ignored it) is not overwritten.
func TestRecordChangedUnderLockIsLost(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	other := installation(m1)
	other.AccessToken = "blind-write"
	otherJSON, _ := json.Marshal(other)
	err := s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		if err := client.HSet(context.Background(), s.InstallationKey(m1), "data", otherJSON, "rev", "x").Err(); err != nil {
			t.Fatal(err)
		}
		cur.AccessToken = "must-not-be-written"
		return cur, nil
	})
	if !errors.Is(err, redisstore.ErrLockLost) {
		t.Fatalf("Update whose record changed = %v; want ErrLockLost", err)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != "blind-write" {
		t.Errorf("AccessToken = %q; want blind-write", got.AccessToken)
	}
}

// A record removed behind the Store's back (not by Delete, which waits for the lock) during an
// Update is not brought back by it.
func TestRecordRemovedDuringUpdate(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	mustSave(t, s, installation(m1))
	err := s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		if err := client.Del(context.Background(), s.InstallationKey(m1)).Err(); err != nil {
			t.Fatal(err)
		}
		return cur, nil
	})
	if !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Fatalf("Update whose record was removed = %v; want ErrNotInstalled", err)
	}
	if _, err := s.Load(context.Background(), m1); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Load after the removal during Update = %v; want ErrNotInstalled", err)
	}
}

// A holder keeps its lock past the lease while fn runs, by renewing it.
func TestLeaseRenewedWhileFnRuns(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client, redisstore.WithLockLease(300*time.Millisecond))
	mustSave(t, s, installation(m1))
	ctx := context.Background()
	err := s.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		// Three renewals (each seen as the TTL going up) span a whole lease: without them the
		// lock would have expired.
		last, err := client.PTTL(ctx, s.LockKey(m1)).Result()
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for renewals := 0; renewals < 3; {
			if time.Now().After(deadline) {
				t.Fatalf("saw %d renewals of the lock in 15s; want 3", renewals)
			}
			time.Sleep(10 * time.Millisecond)
			ttl, err := client.PTTL(ctx, s.LockKey(m1)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= 0 {
				t.Fatalf("the lock expired while fn ran (PTTL %v)", ttl)
			}
			if ttl > last {
				renewals++
			}
			last = ttl
		}
		cur.AccessToken = "access-2"
		return cur, nil
	})
	if err != nil {
		t.Fatalf("Update with renewals: %v", err)
	}
	if got := mustLoad(t, s, m1); got.AccessToken != "access-2" {
		t.Errorf("AccessToken = %q; want access-2", got.AccessToken)
	}
}

// A record that does not decode is an error, never ErrNotInstalled.
func TestCorruptRecord(t *testing.T) {
	client := testClient(t)
	s := newStore(t, client)
	ctx := context.Background()
	if err := client.HSet(ctx, s.InstallationKey(m1), "data", "{not json", "rev", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := client.Set(ctx, s.InstallationKey(m2), "a string, not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{m1, m2} {
		if _, err := s.Load(ctx, m); err == nil || errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%s) of a corrupt record = %v; want an error other than ErrNotInstalled", m, err)
		}
		called := false
		err := s.Update(ctx, m, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			called = true
			return cur, nil
		})
		if err == nil || errors.Is(err, b24oauth.ErrNotInstalled) || called {
			t.Errorf("Update(%s) of a corrupt record = %v (fn called: %v); want an error other than ErrNotInstalled", m, err, called)
		}
	}
}

func TestOptionsValidated(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	defer client.Close()
	for name, opt := range map[string]redisstore.Option{
		"prefix with {":     redisstore.WithKeyPrefix("app{x}:"),
		"lease too short":   redisstore.WithLockLease(time.Millisecond),
		"zero polling":      redisstore.WithLockPolling(0, time.Second),
		"polling max < min": redisstore.WithLockPolling(time.Second, time.Millisecond),
	} {
		if _, err := redisstore.New(client, opt); err == nil {
			t.Errorf("New with %s succeeded", name)
		}
	}
	if _, err := redisstore.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
	if _, err := redisstore.New(client, redisstore.WithKeyPrefix(""), redisstore.WithLockLease(time.Second), redisstore.WithLockPolling(time.Millisecond, time.Millisecond)); err != nil {
		t.Errorf("New with valid options: %v", err)
	}
}

func BenchmarkUpdate(b *testing.B) {
	storetest.BenchmarkUpdate(b, func(b *testing.B) b24oauth.TokenStore { return newStore(b, testClient(b)) })
}

// Goroutines of one process queue for a member before its Redis lock, and a waiter in that
// queue still gives up when its context ends.
func TestLocalQueueHonoursContext(t *testing.T) {
	s := newStore(t, testClient(t))
	mustSave(t, s, installation(m1))
	inFn, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			close(inFn)
			<-release
			cur.ExpiresIn = 7
			return cur, nil
		})
	}()
	<-inFn
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		waiting <- s.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			return cur, errors.New("fn of a cancelled Update ran")
		})
	}()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued Update after cancel = %v; want context.Canceled", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, s, m1); got.ExpiresIn != 7 {
		t.Errorf("ExpiresIn = %d; want 7", got.ExpiresIn)
	}
	// The queue is empty again: the next Update goes straight through.
	if err := s.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil }); err != nil {
		t.Fatal(err)
	}
	if n := s.LocalLockCount(); n != 0 {
		t.Errorf("%d local lock entries left; want 0", n)
	}
}
