package sealstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/b24go/b24oauth"
)

// KeySize is the size of every key: AES-256 takes 32 bytes.
const KeySize = 32

// prefix starts every sealed value: "b24s1:<key id>:<base64url(nonce|ciphertext)>". A stored
// value without it is a token written in plaintext, before sealing was switched on.
const prefix = "b24s1:"

// nonceSize is the nonce size of cipher.NewGCM.
const nonceSize = 12

// keyIDLen is the length of a key id: 8 hex digits of a hash of the key. Two keys of one Store
// with the same id are refused by New, so the id picks the key that opens a value.
const keyIDLen = 8

var (
	// ErrUnseal is matched (errors.Is) by every error about a stored token that cannot be
	// opened: no key of the Store opens it, it was changed (tampered with, or copied from
	// another member_id, domain or endpoint), it is malformed, or it is in plaintext and the
	// Store forbids plaintext. Such an error is never b24oauth.ErrNotInstalled: the record is
	// there, and the portal must not be treated as uninstalled. Its *UnsealError tells which.
	ErrUnseal = errors.New("sealstore: a stored token cannot be opened")

	// ErrPlaintext is the reason of an *UnsealError for a token stored in plaintext when the
	// Store was made with WithoutPlaintext.
	ErrPlaintext = errors.New("the token is stored in plaintext and this Store forbids plaintext")

	errUnknownKey = errors.New("it was sealed with a key this Store does not have (removed from the keys too early?)")
	errOpen       = errors.New("it does not open: changed after it was sealed, or copied from another member_id, domain or endpoint")
	errFormat     = errors.New("it is not a valid sealed value")
)

// UnsealError reports a stored token of one installation that cannot be opened. It matches
// ErrUnseal and its Reason (errors.Is). Its text names the member_id, the field and the key
// id, never a token, a sealed value or a key.
type UnsealError struct {
	MemberID string
	Field    string // "access_token", "refresh_token" or "application_token"
	KeyID    string // the id of the key the value says sealed it; "" when it names none
	Reason   error  // ErrPlaintext, or an error saying why the value does not open
}

// Error implements error.
func (e *UnsealError) Error() string {
	msg := fmt.Sprintf("sealstore: member %q: %s cannot be opened", e.MemberID, e.Field)
	if e.KeyID != "" {
		msg += " (key id " + e.KeyID + ")"
	}
	return msg + ": " + e.Reason.Error()
}

// Unwrap returns ErrUnseal and the reason, for errors.Is and errors.As.
func (e *UnsealError) Unwrap() []error { return []error{ErrUnseal, e.Reason} }

// KeyID returns the id that sealed values name their key by: 8 hex digits of a SHA-256 of the
// key (domain-separated, so it is no hash an attacker could look up elsewhere). It reveals
// nothing usable about the key. Operators use it to find the records still sealed with an old
// key, e.g. in PostgreSQL:
//
//	SELECT count(*) FROM b24oauth_installations WHERE data->>'refresh_token' LIKE 'b24s1:<id>:%';
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("b24oauth sealstore key id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil))[:keyIDLen]
}

// ParseKeys decodes a comma-separated list of base64 keys (standard or URL alphabet, padded or
// not; spaces around each are ignored), the first being the sealing key, as one would keep
// them in an environment variable:
//
//	keys, err := sealstore.ParseKeys(os.Getenv("B24OAUTH_SEAL_KEYS"))
//
// Each must decode to KeySize bytes. Its errors say which key is wrong, never what it holds.
func ParseKeys(s string) ([][]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("sealstore: ParseKeys: no key")
	}
	parts := strings.Split(s, ",")
	keys := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimRight(strings.TrimSpace(p), "=")
		enc := base64.RawStdEncoding
		if strings.ContainsAny(p, "-_") {
			enc = base64.RawURLEncoding
		}
		k, err := enc.DecodeString(p)
		if err != nil {
			return nil, fmt.Errorf("sealstore: ParseKeys: key %d of %d is not base64", i+1, len(parts))
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("sealstore: ParseKeys: key %d of %d is %d bytes; want %d", i+1, len(parts), len(k), KeySize)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// sealKey is one key of a Store: its id and its AES-256-GCM. The key bytes themselves are not
// kept (the cipher holds its expanded form only).
type sealKey struct {
	id   string
	aead cipher.AEAD
}

// keyring holds the keys of a Store: ring[0] seals, every key opens.
type keyring []sealKey

func newKeyring(keys [][]byte) (keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("sealstore: no key: give at least one 32-byte key")
	}
	ring := make(keyring, 0, len(keys))
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("sealstore: key %d of %d is %d bytes; want %d", i+1, len(keys), len(k), KeySize)
		}
		id := KeyID(k)
		for j, prev := range ring {
			if prev.id == id {
				return nil, fmt.Errorf("sealstore: keys %d and %d are the same key (id %s)", j+1, i+1, id)
			}
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("sealstore: key %d of %d: %w", i+1, len(keys), err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealstore: key %d of %d: %w", i+1, len(keys), err)
		}
		ring = append(ring, sealKey{id: id, aead: aead})
	}
	return ring, nil
}

func (r keyring) ids() []string {
	ids := make([]string, len(r))
	for i, k := range r {
		ids[i] = k.id
	}
	return ids
}

func (r keyring) find(id string) (cipher.AEAD, bool) {
	for _, k := range r {
		if k.id == id {
			return k.aead, true
		}
	}
	return nil, false
}

// The sealed fields, by their JSON names.
const (
	fieldAccess      = "access_token"
	fieldRefresh     = "refresh_token"
	fieldApplication = "application_token"
)

// sealedFields returns pointers to the fields of p that are sealed, with their names.
func sealedFields(p *b24oauth.OAuthParams) [3]struct {
	name string
	v    *string
} {
	return [3]struct {
		name string
		v    *string
	}{
		{fieldAccess, &p.AccessToken},
		{fieldRefresh, &p.RefreshToken},
		{fieldApplication, &p.ApplicationToken},
	}
}

// additionalData is what a sealed value is bound to: the format, its field, and the record's
// member_id, domain and endpoints, each length-prefixed so that no two different tuples give
// the same bytes. A value moved to another field, member_id or endpoint does not open.
func additionalData(buf []byte, field string, p *b24oauth.OAuthParams) []byte {
	parts := [...]string{field, p.MemberID, p.Domain, p.ClientEndpoint, p.ServerEndpoint}
	n := len(prefix)
	for _, s := range parts {
		n += binary.MaxVarintLen64 + len(s)
	}
	if cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	buf = append(buf[:0], prefix...)
	for _, s := range parts {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return buf
}

// seal replaces every non-empty token of p by its sealed value under the first key. An empty
// token stays empty: that a portal has no application token is no secret.
func (r keyring) seal(p *b24oauth.OAuthParams) error {
	k := r[0]
	var nonces [3 * nonceSize]byte
	// One read for the three nonces: each value still gets its own random nonce.
	if _, err := rand.Read(nonces[:]); err != nil {
		return fmt.Errorf("sealstore: random nonce: %w", err)
	}
	fields := sealedFields(p)
	longest := 0
	for _, f := range fields {
		longest = max(longest, len(*f.v))
	}
	// Scratch buffers shared by the three fields: the additional data, the nonce and
	// ciphertext, and their encoding.
	var aad []byte
	raw := make([]byte, 0, nonceSize+longest+k.aead.Overhead())
	enc := make([]byte, 0, base64.RawURLEncoding.EncodedLen(cap(raw)))
	var out strings.Builder
	for i, f := range fields {
		if *f.v == "" {
			continue
		}
		aad = additionalData(aad, f.name, p)
		raw = append(raw[:0], nonces[i*nonceSize:(i+1)*nonceSize]...)
		raw = k.aead.Seal(raw, raw, []byte(*f.v), aad)
		enc = base64.RawURLEncoding.AppendEncode(enc[:0], raw)
		out.Reset()
		out.Grow(len(prefix) + keyIDLen + 1 + len(enc))
		out.WriteString(prefix)
		out.WriteString(k.id)
		out.WriteByte(':')
		out.Write(enc)
		*f.v = out.String()
	}
	return nil
}

// open replaces every sealed token of p by its plaintext. A token without the seal prefix is
// plaintext, taken as it is if allowPlaintext; otherwise, and for a value that does not
// open, open returns an *UnsealError.
func (r keyring) open(p *b24oauth.OAuthParams, allowPlaintext bool) error {
	var aad []byte
	for _, f := range sealedFields(p) {
		v := *f.v
		if v == "" {
			continue
		}
		rest, sealed := strings.CutPrefix(v, prefix)
		if !sealed {
			if looksVersioned(v) {
				return unsealError(p, f.name, "", errFormat)
			}
			if !allowPlaintext {
				return unsealError(p, f.name, "", ErrPlaintext)
			}
			continue
		}
		id, enc, ok := strings.Cut(rest, ":")
		if !ok || len(id) != keyIDLen {
			return unsealError(p, f.name, "", errFormat)
		}
		aead, ok := r.find(id)
		if !ok {
			return unsealError(p, f.name, id, errUnknownKey)
		}
		raw, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil || len(raw) < nonceSize+aead.Overhead() {
			return unsealError(p, f.name, id, errFormat)
		}
		aad = additionalData(aad, f.name, p)
		nonce, ct := raw[:nonceSize], raw[nonceSize:]
		plain, err := aead.Open(ct[:0], nonce, ct, aad)
		if err != nil {
			return unsealError(p, f.name, id, errOpen)
		}
		*f.v = string(plain)
	}
	return nil
}

func unsealError(p *b24oauth.OAuthParams, field, keyID string, reason error) error {
	return &UnsealError{MemberID: p.MemberID, Field: field, KeyID: keyID, Reason: reason}
}

// looksVersioned reports whether v starts like a sealed value of another format version
// ("b24s2:..."), which must not be mistaken for a plaintext token.
func looksVersioned(v string) bool {
	rest, ok := strings.CutPrefix(v, "b24s")
	if !ok {
		return false
	}
	n := 0
	for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
		n++
	}
	return n > 0 && n < len(rest) && rest[n] == ':'
}
