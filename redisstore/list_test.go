package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/redisstore"
	"github.com/b24go/b24oauth/storetest"
	"github.com/redis/go-redis/v9"
)

func member(n int) string { return fmt.Sprintf("%032x", n) }

func listAll(t *testing.T, s *redisstore.Store) []string {
	t.Helper()
	var got []string
	for id, err := range s.List(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	slices.Sort(got)
	return got
}

// List walks many SCAN calls, and yields only the Store's own records: not its lock keys, not
// the keys of a Store whose prefix extends its own or matches its prefix read as a pattern.
func TestListOwnRecordsOnly(t *testing.T) {
	ctx := context.Background()
	client := testClient(t)
	base := newPrefix(t, client)
	// A prefix full of glob metacharacters: read as a pattern, it matches none of its own keys
	// ("[]" opens a character class), and several Stores' keys look alike.
	s, err := redisstore.New(client, redisstore.WithKeyPrefix(base+`*\?[]`))
	if err != nil {
		t.Fatal(err)
	}
	s.SetListCount(3)
	var want []string
	for i := range 40 {
		mustSave(t, s, installation(member(i)))
		want = append(want, member(i))
	}
	for _, prefix := range []string{base + `xx\?[]`, base + "x", base + `*\?[]` + "more:"} {
		other, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		mustSave(t, other, installation(member(1000)))
	}
	// A lock held with no record, and one held on a record.
	for _, m := range []string{member(2000), member(5)} {
		if err := client.Set(ctx, s.LockKey(m), "holder", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A key in the record's shape whose id is malformed.
	if err := client.HSet(ctx, s.InstallationKey("NOT-A-MEMBER"), "data", "{}").Err(); err != nil {
		t.Fatal(err)
	}
	if got := listAll(t, s); !slices.Equal(got, want) {
		t.Errorf("List = %d ids; want %d:\n got %q\nwant %q", len(got), len(want), got, want)
	}

	// Read as a pattern, prefix "p*" matches the keys of the Store with prefix "pq" too: they
	// are not listed.
	star, err := redisstore.New(client, redisstore.WithKeyPrefix(base+"p*"))
	if err != nil {
		t.Fatal(err)
	}
	pq, err := redisstore.New(client, redisstore.WithKeyPrefix(base+"pq"))
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, star, installation(member(1)))
	mustSave(t, pq, installation(member(2)))
	if got := listAll(t, star); !slices.Equal(got, []string{member(1)}) {
		t.Errorf("List of the Store with prefix %q = %q; want only its own record", base+"p*", got)
	}
}

// SCAN may return a key more than once; List yields it once. A Ring whose two shards are the
// same server returns every key twice, deterministically.
func TestListDeduplicates(t *testing.T) {
	addr := os.Getenv(envRedis)
	testClient(t) // skips or fails as every test of the package does
	if strings.Contains(addr, "://") {
		opt, err := redis.ParseURL(addr)
		if err != nil {
			t.Fatal(err)
		}
		addr = opt.Addr
	}
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": addr, "b": addr}})
	t.Cleanup(func() { _ = ring.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "b24oauth-test:" + hex.EncodeToString(b[:]) + ":"
	s, err := redisstore.New(ring, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 25 {
		mustSave(t, s, installation(member(i)))
		want = append(want, member(i))
	}
	t.Cleanup(func() {
		for _, id := range want {
			_ = s.Delete(context.Background(), id)
		}
	})
	if got := listAll(t, s); !slices.Equal(got, want) {
		t.Errorf("List over a ring of two shards on one server = %d ids; want each of %d once:\n%q", len(got), len(want), got)
	}
}

// A malformed member_id is answered without a command: on a closed client, where every
// command fails, the answers are still those of the contract.
func TestMalformedMemberIDSendsNoCommand(t *testing.T) {
	ctx := context.Background()
	testClient(t)
	client, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	s, err := redisstore.New(client, redisstore.WithKeyPrefix("b24oauth-test:closed:"))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, member(1)); !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("Load of a well-formed member_id on a closed client = %v; want redis.ErrClosed", err)
	}
	for _, id := range storetest.MalformedMemberIDs() {
		if _, err := s.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%.40q) = %v; want ErrNotInstalled without a command", id, err)
		}
		err := s.Update(ctx, id, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil })
		if !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Update(%.40q) = %v; want ErrNotInstalled without a command", id, err)
		}
		if err := s.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%.40q) = %v; want nil without a command", id, err)
		}
		if err := s.Save(ctx, installation(id)); err == nil || !strings.Contains(err.Error(), "malformed member_id") {
			t.Errorf("Save(%.40q) = %v; want the malformed member_id error", id, err)
		}
	}
}

// BenchmarkList: a List pass over 10,000 and 100,000 records (see storetest.BenchmarkList).
func BenchmarkList(b *testing.B) {
	client := testClient(b)
	storetest.BenchmarkList(b, func(b *testing.B, ids []string) b24oauth.TokenStore {
		s := newStore(b, client)
		// Pipelined writes of the records as Save lays them out: Save one by one would take
		// minutes.
		ctx := context.Background()
		for start := 0; start < len(ids); start += 1000 {
			pipe := client.Pipeline()
			for _, id := range ids[start:min(start+1000, len(ids))] {
				data, err := json.Marshal(installation(id))
				if err != nil {
					b.Fatal(err)
				}
				pipe.HSet(ctx, s.InstallationKey(id), "data", data, "rev", "bench")
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
		return s
	})
}
