// Package sealtest checks that a sealstore.Store leaves no token in clear in the raw storage
// of its inner store (issue 12): the tests of the file store, pgstore and redisstore give it
// a sealed store and a way to read everything their storage holds.
package sealtest

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/sealstore"
)

// The tokens Run writes; none may appear in the raw storage.
const (
	applicationToken = "app-token-secret-1"
	accessToken      = "access-token-secret-2"
	refreshToken     = "refresh-token-secret-2"
)

// Wrap returns a Store over inner sealing with a new random key, and that key.
func Wrap(t testing.TB, inner b24oauth.TokenStore) (*sealstore.Store, []byte) {
	t.Helper()
	key := make([]byte, sealstore.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s, err := sealstore.New(inner, key)
	if err != nil {
		t.Fatalf("sealstore.New: %v", err)
	}
	return s, key
}

// Run saves an installation of memberID through s (sealed with key, its first key), updates its
// tokens, and then checks what raw returns, which must be everything the inner store holds
// (every file, row or key) as text: no token (of the Save or of the Update) in clear, its
// three tokens sealed with key, and the member_id, domain, endpoints and state readable.
// Last, it checks that s gives the tokens back.
func Run(t *testing.T, s *sealstore.Store, key []byte, memberID string, raw func(t *testing.T) string) {
	t.Helper()
	ctx := context.Background()
	inst := b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			ApplicationToken: applicationToken,
			MemberID:         memberID,
			AccessToken:      "access-token-secret-1",
			RefreshToken:     "refresh-token-secret-1",
			Expires:          1_700_000_000,
			Domain:           "portal.bitrix24.com",
			ClientEndpoint:   "https://portal.bitrix24.com/rest/",
			ServerEndpoint:   "https://oauth.bitrix.info/rest/",
		},
		State: b24oauth.StateActive,
	}
	if err := s.Save(ctx, inst); err != nil {
		t.Fatalf("Save: %v", err)
	}
	err := s.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken, cur.RefreshToken = accessToken, refreshToken
		return cur, nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}

	dump := raw(t)
	// "-secret" is in every token Run wrote, so this catches every one of them.
	if strings.Contains(dump, "-secret") {
		t.Errorf("the raw storage holds a token in clear:\n%s", dump)
	}
	for _, clear := range []string{memberID, inst.Domain, inst.ClientEndpoint, inst.ServerEndpoint, string(inst.State)} {
		if !strings.Contains(dump, clear) {
			t.Errorf("the raw storage lacks %q, which must stay readable:\n%s", clear, dump)
		}
	}
	sealed := "b24s1:" + sealstore.KeyID(key) + ":"
	if n := strings.Count(dump, sealed); n != 3 {
		t.Errorf("the raw storage holds %d values sealed with key %s; want 3 (access, refresh and application token):\n%s", n, sealstore.KeyID(key), dump)
	}

	got, err := s.Load(ctx, memberID)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.AccessToken != accessToken || got.RefreshToken != refreshToken || got.ApplicationToken != applicationToken {
		t.Errorf("Load = %q, %q, %q; want the tokens back", got.AccessToken, got.RefreshToken, got.ApplicationToken)
	}
}
