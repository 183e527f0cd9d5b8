package sealstore_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/sealtest"
	"github.com/b24go/b24oauth/sealstore"
	"github.com/b24go/b24oauth/storetest"
)

const (
	member      = "b24a1b2c3d4e5f60718293a4b5c6d7e8"
	otherMember = "0be40be40be40be40be40be40be40be4"
	m1          = "11111111111111111111111111111111"
	m2          = "22222222222222222222222222222222"
)

// testKey returns a distinct key for each n.
func testKey(n byte) []byte { return bytes.Repeat([]byte{n, 0x5a ^ n}, sealstore.KeySize/2) }

func newSealed(t testing.TB, inner b24oauth.TokenStore, keys ...[]byte) *sealstore.Store {
	t.Helper()
	s, err := sealstore.New(inner, keys...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func newFileStore(t testing.TB) *b24oauth.FileStore {
	t.Helper()
	fs, err := b24oauth.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func installation(memberID string) b24oauth.Installation {
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			ApplicationToken: "app-token-secret-1",
			UserID:           7,
			MemberID:         memberID,
			AccessToken:      "access-token-secret-1",
			RefreshToken:     "refresh-token-secret-1",
			Expires:          1_700_000_000,
			ExpiresIn:        3600,
			Scope:            "crm,user",
			Domain:           "portal.bitrix24.com",
			ClientEndpoint:   "https://portal.bitrix24.com/rest/",
			ServerEndpoint:   "https://oauth.bitrix.info/rest/",
			Status:           b24oauth.StatusPaid,
		},
		State:     b24oauth.StateActive,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

var secrets = []string{"app-token-secret-1", "access-token-secret-1", "refresh-token-secret-1"}

func mustSave(t *testing.T, s b24oauth.TokenStore, inst b24oauth.Installation) {
	t.Helper()
	if err := s.Save(context.Background(), inst); err != nil {
		t.Fatalf("Save: %v", err)
	}
}

func mustLoad(t *testing.T, s b24oauth.TokenStore, memberID string) b24oauth.Installation {
	t.Helper()
	inst, err := s.Load(context.Background(), memberID)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return inst
}

func setAccessToken(tok string) func(b24oauth.Installation) (b24oauth.Installation, error) {
	return func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken = tok
		return cur, nil
	}
}

// checkSealedWith fails unless every token of raw is sealed with key (and none is in clear).
func checkSealedWith(t *testing.T, raw b24oauth.Installation, key []byte) {
	t.Helper()
	want := "b24s1:" + sealstore.KeyID(key) + ":"
	for name, v := range map[string]string{
		"access_token": raw.AccessToken, "refresh_token": raw.RefreshToken, "application_token": raw.ApplicationToken,
	} {
		if !strings.HasPrefix(v, want) {
			t.Errorf("stored %s = %.20q...; want it sealed with key %s", name, v, sealstore.KeyID(key))
		}
	}
}

func checkUnseal(t *testing.T, err error, wantKeyID string) *sealstore.UnsealError {
	t.Helper()
	if !errors.Is(err, sealstore.ErrUnseal) {
		t.Fatalf("err = %v; want an error matching ErrUnseal", err)
	}
	if errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("err = %v matches ErrNotInstalled", err)
	}
	var ue *sealstore.UnsealError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %T; want a *UnsealError", err)
	}
	if ue.MemberID == "" || ue.Field == "" {
		t.Errorf("UnsealError %+v: want MemberID and Field set", ue)
	}
	if ue.KeyID != wantKeyID {
		t.Errorf("UnsealError.KeyID = %q; want %q", ue.KeyID, wantKeyID)
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error text %q holds a token", err)
		}
	}
	return ue
}

func TestConformanceMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		return newSealed(t, b24oauth.NewMemoryStore(), testKey(1), testKey(2))
	})
}

func TestConformanceFileStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
		return newSealed(t, newFileStore(t), testKey(1))
	})
}

// The FileStore's directory, every file read byte by byte, holds no token in clear, but the
// member_id, domain and endpoints are there for operators.
func TestFileStoreRawHoldsNoToken(t *testing.T) {
	fs := newFileStore(t)
	sealtest.Run(t, newSealed(t, fs, testKey(1)), testKey(1), member, func(t *testing.T) string {
		entries, err := os.ReadDir(fs.Dir())
		if err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(fs.Dir(), e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			all.WriteString(e.Name() + ":\n" + string(data) + "\n")
		}
		return all.String()
	})
}

// Every write draws new nonces: the same token sealed twice gives two different values.
func TestNonceIsFreshOnEveryWrite(t *testing.T) {
	inner := b24oauth.NewMemoryStore()
	s := newSealed(t, inner, testKey(1))
	mustSave(t, s, installation(member))
	first := mustLoad(t, inner, member)
	mustSave(t, s, installation(member))
	second := mustLoad(t, inner, member)
	if first.RefreshToken == second.RefreshToken || first.AccessToken == second.AccessToken {
		t.Errorf("two Saves of the same tokens stored the same sealed values")
	}
	if first.AccessToken[:15] != second.AccessToken[:15] {
		t.Errorf("the prefix and key id differ: %.15q vs %.15q", first.AccessToken, second.AccessToken)
	}
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey := testKey(1), testKey(2)
	inner := b24oauth.NewMemoryStore()
	mustSave(t, newSealed(t, inner, oldKey), installation(member))
	mustSave(t, newSealed(t, inner, oldKey), installation(otherMember))

	// Step 1: the new key in second place opens, and seals nothing.
	both := newSealed(t, inner, oldKey, newKey)
	if got := mustLoad(t, both, member); got.RefreshToken != "refresh-token-secret-1" {
		t.Fatalf("RefreshToken = %q", got.RefreshToken)
	}
	if err := both.Update(ctx, member, setAccessToken("access-token-secret-1")); err != nil {
		t.Fatal(err)
	}
	checkSealedWith(t, mustLoad(t, inner, member), oldKey)

	// Step 2: the new key first: records sealed with the old key still open, and the next
	// write of each re-seals it with the new key.
	rotated := newSealed(t, inner, newKey, oldKey)
	if got := mustLoad(t, rotated, member); got.AccessToken != "access-token-secret-1" {
		t.Fatalf("AccessToken = %q", got.AccessToken)
	}
	checkSealedWith(t, mustLoad(t, inner, member), oldKey) // a Load writes nothing
	if err := rotated.Update(ctx, member, setAccessToken("access-token-secret-2")); err != nil {
		t.Fatal(err)
	}
	checkSealedWith(t, mustLoad(t, inner, member), newKey)
	checkSealedWith(t, mustLoad(t, inner, otherMember), oldKey)

	// Step 3: Reseal re-seals a record nobody wrote, unchanged.
	if err := rotated.Reseal(ctx, otherMember); err != nil {
		t.Fatal(err)
	}
	checkSealedWith(t, mustLoad(t, inner, otherMember), newKey)

	// Step 4: the old key dropped, everything opens.
	newOnly := newSealed(t, inner, newKey)
	if got := mustLoad(t, newOnly, member); got.AccessToken != "access-token-secret-2" || got.RefreshToken != "refresh-token-secret-1" {
		t.Errorf("Load with the new key only = %q, %q", got.AccessToken, got.RefreshToken)
	}
	want := installation(otherMember)
	if got := mustLoad(t, newOnly, otherMember); got.OAuthParams != want.OAuthParams {
		t.Errorf("Load after Reseal = %v; want %v unchanged", got, want)
	}

	// A process that has only the old key cannot open what the new key sealed.
	_, err := newSealed(t, inner, oldKey).Load(ctx, member)
	checkUnseal(t, err, sealstore.KeyID(newKey))
}

// A record sealed with a key the Store does not have is a clear error naming the key id,
// Update neither calls fn nor writes, and Save replaces it (a reinstall recovers the portal).
func TestWrongKey(t *testing.T) {
	ctx := context.Background()
	inner := b24oauth.NewMemoryStore()
	mustSave(t, newSealed(t, inner, testKey(1)), installation(member))
	stored := mustLoad(t, inner, member)

	s := newSealed(t, inner, testKey(2), testKey(3))
	_, err := s.Load(ctx, member)
	checkUnseal(t, err, sealstore.KeyID(testKey(1)))
	for _, b := range [][]byte{testKey(1), testKey(2), testKey(3)} {
		for _, form := range []string{string(b), hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)} {
			if strings.Contains(err.Error(), form) {
				t.Errorf("error text %q holds a key", err)
			}
		}
	}
	if strings.Contains(err.Error(), stored.AccessToken) || strings.Contains(err.Error(), stored.RefreshToken) {
		t.Errorf("error text %q holds a sealed value", err)
	}

	called := false
	err = s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	checkUnseal(t, err, sealstore.KeyID(testKey(1)))
	if called {
		t.Error("Update called fn with a record no key opens")
	}
	if got := mustLoad(t, inner, member); got.OAuthParams != stored.OAuthParams {
		t.Error("a failed Update changed the stored record")
	}

	mustSave(t, s, installation(member))
	if got := mustLoad(t, s, member); got.RefreshToken != "refresh-token-secret-1" {
		t.Errorf("Load after Save = %q", got.RefreshToken)
	}
}

// tamper returns v, a sealed value, with one bit of its decoded bytes at i flipped (i < 0
// counts from the end).
func tamper(t *testing.T, v string, i int) string {
	t.Helper()
	cut := strings.LastIndexByte(v, ':') + 1
	raw, err := base64.RawURLEncoding.DecodeString(v[cut:])
	if err != nil {
		t.Fatalf("sealed value is not base64url: %v", err)
	}
	if i < 0 {
		i += len(raw)
	}
	raw[i] ^= 0x01
	return v[:cut] + base64.RawURLEncoding.EncodeToString(raw)
}

func TestTamperedValueDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	key := testKey(1)
	for _, tc := range []struct {
		name  string
		field func(*b24oauth.Installation) *string
		edit  func(t *testing.T, v string) string
		keyID string
	}{
		{"nonce", refreshField, func(t *testing.T, v string) string { return tamper(t, v, 0) }, sealstore.KeyID(key)},
		{"ciphertext", refreshField, func(t *testing.T, v string) string { return tamper(t, v, 12) }, sealstore.KeyID(key)},
		{"tag", accessField, func(t *testing.T, v string) string { return tamper(t, v, -1) }, sealstore.KeyID(key)},
		{"application token", appField, func(t *testing.T, v string) string { return tamper(t, v, 13) }, sealstore.KeyID(key)},
		{"truncated", refreshField, func(t *testing.T, v string) string { return v[:len(v)-4] }, sealstore.KeyID(key)},
		{"short", refreshField, func(t *testing.T, v string) string { return v[:len("b24s1:")+9+10] }, sealstore.KeyID(key)},
		{"not base64", refreshField, func(t *testing.T, v string) string { return v[:len(v)-1] + "*" }, sealstore.KeyID(key)},
		{"key id changed", refreshField, func(t *testing.T, v string) string {
			return "b24s1:" + sealstore.KeyID(testKey(9)) + v[len("b24s1:")+8:]
		}, sealstore.KeyID(testKey(9))},
		{"no key id", refreshField, func(t *testing.T, v string) string { return "b24s1:" + v[len("b24s1:")+9:] }, ""},
		{"other version", refreshField, func(t *testing.T, v string) string { return "b24s2:" + v[len("b24s1:"):] }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := b24oauth.NewMemoryStore()
			s := newSealed(t, inner, key)
			mustSave(t, s, installation(member))
			raw := mustLoad(t, inner, member)
			f := tc.field(&raw)
			*f = tc.edit(t, *f)
			mustSave(t, inner, raw)

			_, err := s.Load(ctx, member)
			checkUnseal(t, err, tc.keyID)
			err = s.Update(ctx, member, setAccessToken("x"))
			checkUnseal(t, err, tc.keyID)
			if got := mustLoad(t, inner, member); got.OAuthParams != raw.OAuthParams {
				t.Error("an Update of a tampered record wrote")
			}
		})
	}
}

func refreshField(i *b24oauth.Installation) *string { return &i.RefreshToken }
func accessField(i *b24oauth.Installation) *string  { return &i.AccessToken }
func appField(i *b24oauth.Installation) *string     { return &i.ApplicationToken }

// A sealed value opens only in its own field of its own record: copied to another member_id,
// moved to another field, or with the record's domain or endpoints changed, it does not.
func TestCopiedValueDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	key := testKey(1)
	for _, tc := range []struct {
		name string
		edit func(*b24oauth.Installation)
	}{
		{"another member_id", func(i *b24oauth.Installation) { i.MemberID = "b24ffffffffffffffffffffffffffff0" }},
		{"tokens swapped", func(i *b24oauth.Installation) { i.AccessToken, i.RefreshToken = i.RefreshToken, i.AccessToken }},
		{"domain", func(i *b24oauth.Installation) { i.Domain = "evil.example.com" }},
		{"client endpoint", func(i *b24oauth.Installation) { i.ClientEndpoint = "https://evil.example.com/rest/" }},
		{"server endpoint", func(i *b24oauth.Installation) { i.ServerEndpoint = "https://evil.example.com/rest/" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner := b24oauth.NewMemoryStore()
			s := newSealed(t, inner, key)
			mustSave(t, s, installation(member))
			raw := mustLoad(t, inner, member)
			tc.edit(&raw)
			mustSave(t, inner, raw)

			_, err := s.Load(ctx, raw.MemberID)
			checkUnseal(t, err, sealstore.KeyID(key))
		})
	}

	// Fields outside the binding may change under the Store: an operator marking a portal
	// revoked in SQL, say.
	inner := b24oauth.NewMemoryStore()
	s := newSealed(t, inner, key)
	mustSave(t, s, installation(member))
	raw := mustLoad(t, inner, member)
	raw.State, raw.Scope, raw.Expires, raw.UserID = b24oauth.StateRevoked, "crm", 1, 9
	mustSave(t, inner, raw)
	if got := mustLoad(t, s, member); got.RefreshToken != "refresh-token-secret-1" || got.State != b24oauth.StateRevoked {
		t.Errorf("Load = %q, %q", got.RefreshToken, got.State)
	}
}

// Records written before sealing was switched on load as they are, are sealed by their next
// write, and Reseal seals them without changing them.
func TestPlaintextMigration(t *testing.T) {
	ctx := context.Background()
	inner := b24oauth.NewMemoryStore()
	plain := installation(member)
	mustSave(t, inner, plain)
	mustSave(t, inner, installation(otherMember))
	s := newSealed(t, inner, testKey(1))

	if got := mustLoad(t, s, member); got.OAuthParams != plain.OAuthParams {
		t.Fatalf("Load of a plaintext record = %v; want %v", got, plain)
	}
	if got := mustLoad(t, inner, member); got.RefreshToken != plain.RefreshToken {
		t.Fatal("a Load wrote the record")
	}
	var seen b24oauth.Installation
	err := s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		seen = cur
		cur.AccessToken = "access-token-secret-2"
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen.OAuthParams != plain.OAuthParams {
		t.Errorf("fn got %v; want the plaintext record", seen)
	}
	checkSealedWith(t, mustLoad(t, inner, member), testKey(1))
	if got := mustLoad(t, s, member); got.AccessToken != "access-token-secret-2" || got.RefreshToken != plain.RefreshToken {
		t.Errorf("Load after Update = %q, %q", got.AccessToken, got.RefreshToken)
	}

	if err := s.Reseal(ctx, otherMember); err != nil {
		t.Fatal(err)
	}
	checkSealedWith(t, mustLoad(t, inner, otherMember), testKey(1))
	if got := mustLoad(t, s, otherMember); got.OAuthParams != installation(otherMember).OAuthParams {
		t.Errorf("Load after Reseal = %v", got)
	}
}

func TestWithoutPlaintext(t *testing.T) {
	ctx := context.Background()
	inner := b24oauth.NewMemoryStore()
	mustSave(t, inner, installation(member))
	s, err := sealstore.NewWithOptions(ctx, inner, sealstore.WithKeys(testKey(1)), sealstore.WithoutPlaintext())
	if err != nil {
		t.Fatal(err)
	}

	_, err = s.Load(ctx, member)
	ue := checkUnseal(t, err, "")
	if !errors.Is(err, sealstore.ErrPlaintext) {
		t.Errorf("err = %v; want it to match ErrPlaintext", err)
	}
	if ue.Field != "access_token" {
		t.Errorf("Field = %q; want the first token checked, access_token", ue.Field)
	}
	called := false
	err = s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	if !errors.Is(err, sealstore.ErrPlaintext) || called {
		t.Errorf("Update of a plaintext record = %v (fn called: %v); want ErrPlaintext, fn not called", err, called)
	}

	// One plaintext token among sealed ones is refused too.
	mustSave(t, s, installation(member))
	raw := mustLoad(t, inner, member)
	raw.ApplicationToken = "app-token-secret-1"
	mustSave(t, inner, raw)
	_, err = s.Load(ctx, member)
	if ue := checkUnseal(t, err, ""); ue.Field != "application_token" || !errors.Is(err, sealstore.ErrPlaintext) {
		t.Errorf("err = %v; want ErrPlaintext for application_token", err)
	}

	// Records it sealed itself load, and empty tokens are no plaintext.
	mustSave(t, s, installation(member))
	if got := mustLoad(t, s, member); got.RefreshToken != "refresh-token-secret-1" {
		t.Errorf("RefreshToken = %q", got.RefreshToken)
	}
	bare := b24oauth.Installation{OAuthParams: b24oauth.OAuthParams{MemberID: m2}}
	mustSave(t, inner, bare)
	if got := mustLoad(t, s, m2); got != bare {
		t.Errorf("Load of a record without tokens = %v", got)
	}
}

// Neither fmt (any verb, the Store by pointer or by value) nor slog shows a key; both show
// the key ids.
func TestPrintsNoKey(t *testing.T) {
	keys := [][]byte{testKey(1), testKey(2)}
	s := newSealed(t, newFileStore(t), keys...)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("store", "store", s)
	outputs := []string{logged.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, *s), fmt.Sprintf(verb, []any{s}))
	}
	for _, out := range outputs {
		for _, k := range keys {
			for _, form := range []string{string(k), hex.EncodeToString(k), fmt.Sprintf("%v", k), fmt.Sprintf("% x", k),
				base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k), fmt.Sprint(k[:4])} {
				if strings.Contains(out, form) {
					t.Errorf("output %q holds a key (as %q)", out, form)
				}
			}
		}
		if !strings.Contains(out, sealstore.KeyID(keys[0])) {
			t.Errorf("output %q lacks the key id %s", out, sealstore.KeyID(keys[0]))
		}
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	inner := b24oauth.NewMemoryStore()
	for _, tc := range []struct {
		name  string
		inner b24oauth.TokenStore
		keys  [][]byte
	}{
		{"no key", inner, nil},
		{"short key", inner, [][]byte{testKey(1), testKey(2)[:16]}},
		{"long key", inner, [][]byte{append(testKey(1), 0)}},
		{"same key twice", inner, [][]byte{testKey(1), testKey(2), testKey(1)}},
		{"nil inner", nil, [][]byte{testKey(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sealstore.New(tc.inner, tc.keys...)
			if err == nil {
				t.Fatalf("New = %v; want an error", s)
			}
			for _, k := range tc.keys {
				if len(k) > 0 && (strings.Contains(err.Error(), hex.EncodeToString(k)) || strings.Contains(err.Error(), string(k))) {
					t.Errorf("error %q holds a key", err)
				}
			}
		})
	}
}

type keyProvider struct {
	keys [][]byte
	err  error
}

func (p keyProvider) Keys(context.Context) ([][]byte, error) { return p.keys, p.err }

func TestKeyProvider(t *testing.T) {
	ctx := context.Background()
	inner := b24oauth.NewMemoryStore()
	s, err := sealstore.NewWithOptions(ctx, inner,
		sealstore.WithKeyProvider(keyProvider{keys: [][]byte{testKey(3), testKey(4)}}),
		sealstore.WithKeys(testKey(5)))
	if err != nil {
		t.Fatal(err)
	}
	mustSave(t, s, installation(member))
	checkSealedWith(t, mustLoad(t, inner, member), testKey(3))
	if got := s.String(); !strings.Contains(got, sealstore.KeyID(testKey(3))+" "+sealstore.KeyID(testKey(4))+" "+sealstore.KeyID(testKey(5))) {
		t.Errorf("String = %q; want the provider's keys first, in order", got)
	}

	errKMS := errors.New("kms: access denied")
	_, err = sealstore.NewWithOptions(ctx, inner, sealstore.WithKeyProvider(keyProvider{err: errKMS}))
	if !errors.Is(err, errKMS) {
		t.Errorf("NewWithOptions with a failing provider = %v; want its error", err)
	}
	if _, err := sealstore.NewWithOptions(ctx, inner, sealstore.WithKeyProvider(nil)); err == nil {
		t.Error("NewWithOptions with a nil provider succeeded")
	}
}

func TestParseKeys(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	got, err := sealstore.ParseKeys(" " + base64.StdEncoding.EncodeToString(k1) + " ,\t" + base64.RawURLEncoding.EncodeToString(k2))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0], k1) || !bytes.Equal(got[1], k2) {
		t.Errorf("ParseKeys = %x; want %x, %x", got, k1, k2)
	}
	for _, bad := range []string{
		"",
		"  ",
		base64.StdEncoding.EncodeToString(k1[:31]),
		base64.StdEncoding.EncodeToString(k1) + ",",
		base64.StdEncoding.EncodeToString(k1) + ",not*base64",
	} {
		if keys, err := sealstore.ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) = %d keys; want an error", bad, len(keys))
		} else if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k1)[:10]) {
			t.Errorf("error %q holds a key", err)
		}
	}
}

// notLister hides every method of its store but those of TokenStore.
type notLister struct{ b24oauth.TokenStore }

func TestList(t *testing.T) {
	ctx := context.Background()
	fs := newFileStore(t)
	s := newSealed(t, fs, testKey(1))
	mustSave(t, s, installation(m1))
	mustSave(t, s, installation(m2))
	got := map[string]bool{}
	for id, err := range s.List(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got[id] = true
	}
	if len(got) != 2 || !got[m1] || !got[m2] {
		t.Errorf("List over a FileStore = %v; want m1 and m2", got)
	}

	n := 0
	for id, err := range newSealed(t, notLister{b24oauth.NewMemoryStore()}, testKey(1)).List(ctx) {
		n++
		if id != "" || !errors.Is(err, sealstore.ErrNotLister) || !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("List over a store that cannot list yielded %q, %v; want ErrNotLister", id, err)
		}
	}
	if n != 1 {
		t.Errorf("List over a store that cannot list yielded %d times; want once", n)
	}
}

// Update returns fn's error unchanged and writes nothing; ErrNotInstalled passes through.
func TestUpdateErrors(t *testing.T) {
	ctx := context.Background()
	inner := b24oauth.NewMemoryStore()
	s := newSealed(t, inner, testKey(1))
	err := s.Update(ctx, member, setAccessToken("x"))
	if !errors.Is(err, b24oauth.ErrNotInstalled) || errors.Is(err, sealstore.ErrUnseal) {
		t.Errorf("Update of an absent member = %v; want ErrNotInstalled", err)
	}
	if _, err := s.Load(ctx, member); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Load of an absent member = %v; want ErrNotInstalled", err)
	}
	mustSave(t, s, installation(member))
	before := mustLoad(t, inner, member)
	errFn := errors.New("fn failed")
	if err := s.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		return cur, errFn
	}); err != errFn {
		t.Errorf("Update = %v; want fn's error unchanged", err)
	}
	if got := mustLoad(t, inner, member); got.OAuthParams != before.OAuthParams {
		t.Error("a failed Update wrote")
	}
}
