package b24oauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

// populatedFileStore returns a FileStore holding n records (see writtenFileStore).
func populatedFileStore(b *testing.B, n int) *b24oauth.FileStore {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = nthMember(i)
	}
	return writtenFileStore(b, ids)
}

// writtenFileStore returns a FileStore holding a record of each of ids, written directly
// (without the store's fsyncs) so that a large directory takes seconds, not minutes, to set up.
func writtenFileStore(b *testing.B, ids []string) *b24oauth.FileStore {
	b.Helper()
	dir := b.TempDir()
	s := newFileStore(b, dir)
	for i, id := range ids {
		data, err := json.Marshal(testInstallation(id, int64(i)))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, id+".json"), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkFileStore measures a Save of a new portal (an install event) and an Update of an
// existing one, in directories of 100 and 100,000 portals: their cost must not depend on it.
func BenchmarkFileStore(b *testing.B) {
	ctx := context.Background()
	for _, portals := range []int{100, 100_000} {
		s := populatedFileStore(b, portals)
		next := portals
		b.Run(fmt.Sprintf("Save/portals=%d", portals), func(b *testing.B) {
			for range b.N {
				if err := s.Save(ctx, testInstallation(nthMember(next), 1)); err != nil {
					b.Fatal(err)
				}
				next++
			}
		})
		member := nthMember(portals / 2)
		b.Run(fmt.Sprintf("Update/portals=%d", portals), func(b *testing.B) {
			for range b.N {
				err := s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
					cur.ExpiresIn++
					return cur, nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMemoryStore(b *testing.B) {
	ctx := context.Background()
	s := b24oauth.NewMemoryStore()
	for i := range 1000 {
		if err := s.Save(ctx, testInstallation(nthMember(i), 1)); err != nil {
			b.Fatal(err)
		}
	}
	member := nthMember(500)
	b.Run("Load", func(b *testing.B) {
		for range b.N {
			if _, err := s.Load(ctx, member); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Update", func(b *testing.B) {
		for range b.N {
			err := s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				cur.ExpiresIn++
				return cur, nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("UpdateParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				err := s.Update(ctx, nthMember(i%1000), func(cur b24oauth.Installation) (b24oauth.Installation, error) {
					cur.ExpiresIn++
					return cur, nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkStoreList: a List pass over 10,000 and 100,000 installations (see
// storetest.BenchmarkList).
func BenchmarkStoreList(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		storetest.BenchmarkList(b, func(b *testing.B, ids []string) b24oauth.TokenStore {
			s := b24oauth.NewMemoryStore()
			storetest.SaveAll(b, s, ids)
			return s
		})
	})
	b.Run("file", func(b *testing.B) {
		storetest.BenchmarkList(b, func(b *testing.B, ids []string) b24oauth.TokenStore {
			return writtenFileStore(b, ids)
		})
	})
}
