package b24oauth_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

// loadCountingStore counts the Loads that reach it.
type loadCountingStore struct {
	b24oauth.TokenStore
	loads atomic.Int64
}

func (s *loadCountingStore) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	s.loads.Add(1)
	return s.TokenStore.Load(ctx, memberID)
}

// ClientForMember answers ErrNotInstalled for a malformed member_id without reading the store,
// so that a request path handed over as it is gets a 404, whatever the store does with it.
func TestClientForMemberMalformedIDIsNotInstalled(t *testing.T) {
	fake := newFake(t)
	for name, inner := range map[string]b24oauth.TokenStore{
		"memory": b24oauth.NewMemoryStore(),
		"file":   newFileStore(t, t.TempDir()),
	} {
		t.Run(name, func(t *testing.T) {
			store := &loadCountingStore{TokenStore: inner}
			a, err := b24oauth.NewApp(appConfig(fake, store))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			for _, id := range storetest.MalformedMemberIDs() {
				c, err := a.ClientForMember(context.Background(), id)
				if !errors.Is(err, b24oauth.ErrNotInstalled) || c != nil {
					t.Errorf("ClientForMember(%.40q) = %v, %v; want ErrNotInstalled", id, c, err)
				}
			}
			if n := store.loads.Load(); n != 0 {
				t.Errorf("ClientForMember of malformed member_ids read the store %d times; want 0", n)
			}
		})
	}
}

func TestValidMemberID(t *testing.T) {
	for _, id := range []string{testMember, "00000000000000000000000000000000", "ffffffffffffffffffffffffffffffff", "0123456789abcdef0123456789abcdef"} {
		if !b24oauth.ValidMemberID(id) {
			t.Errorf("ValidMemberID(%q) = false; want true", id)
		}
	}
	for _, id := range storetest.MalformedMemberIDs() {
		if b24oauth.ValidMemberID(id) {
			t.Errorf("ValidMemberID(%.40q) = true; want false", id)
		}
	}
}
