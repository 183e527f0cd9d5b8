package sealstore

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strings"

	"github.com/b24go/b24oauth"
)

// ErrNotLister is yielded by Store.List when the inner store does not implement
// b24oauth.Lister. It matches errors.ErrUnsupported too.
var ErrNotLister = fmt.Errorf("sealstore: the inner store does not implement b24oauth.Lister: %w", errors.ErrUnsupported)

// A Store has every optional method of a store; each works over any inner store.
var _ interface {
	b24oauth.TokenStore
	b24oauth.Lister
	b24oauth.Creator
	b24oauth.ConditionalDeleter
} = (*Store)(nil)

// Store is a b24oauth.TokenStore that keeps the access, refresh and application tokens of
// every installation sealed in an inner store (see the package documentation). It is safe for
// concurrent use, as its inner store must be. Printing or logging it shows its key ids only.
// The zero value is not usable; call New or NewWithOptions.
type Store struct {
	inner          b24oauth.TokenStore
	keys           keyring
	allowPlaintext bool
}

// KeyProvider gives the keys of a Store: typically data keys kept wrapped (encrypted) by a
// KMS, which Keys unwraps. The first key seals, all of them open, as with New. It is called
// once, by NewWithOptions.
type KeyProvider interface {
	Keys(ctx context.Context) ([][]byte, error)
}

// Option configures NewWithOptions.
type Option func(*config)

type config struct {
	keys    []keySource // in the order of the options
	noPlain bool
}

// keySource gives keys: WithKeys' or a KeyProvider's.
type keySource func(ctx context.Context) ([][]byte, error)

// WithKeys adds keys of KeySize bytes to the Store's keys, after those of the options before
// it. The first key of all seals.
func WithKeys(keys ...[]byte) Option {
	return func(c *config) {
		c.keys = append(c.keys, func(context.Context) ([][]byte, error) { return keys, nil })
	}
}

// WithKeyProvider adds the keys p gives (called once, by NewWithOptions) to the Store's keys,
// after those of the options before it. The first key of all seals.
func WithKeyProvider(p KeyProvider) Option {
	return func(c *config) {
		c.keys = append(c.keys, func(ctx context.Context) ([][]byte, error) {
			if p == nil {
				return nil, errors.New("sealstore: nil key provider")
			}
			keys, err := p.Keys(ctx)
			if err != nil {
				return nil, fmt.Errorf("sealstore: key provider: %w", err)
			}
			return keys, nil
		})
	}
}

// WithoutPlaintext makes a token stored in plaintext an error (an *UnsealError matching
// ErrUnseal and ErrPlaintext) instead of a token to take as it is. Use it once every record
// has been sealed (see Store.Reseal), so that a token written into the inner store by anything
// but a Store is refused.
func WithoutPlaintext() Option {
	return func(c *config) { c.noPlain = true }
}

// New wraps any TokenStore so that tokens and the application token are stored encrypted
// (AES-256-GCM, bound to the member_id). keys are 32 bytes each: the first seals, all open, so
// keys rotate by putting the new one first. Store is a Lister when inner is.
//
// New keeps no copy of the key bytes: the caller may clear them afterwards. Tokens stored in
// plaintext (records written before sealing was switched on) are read as they are and sealed
// on their next write; NewWithOptions and WithoutPlaintext forbid them.
func New(inner b24oauth.TokenStore, keys ...[]byte) (*Store, error) {
	return NewWithOptions(context.Background(), inner, WithKeys(keys...))
}

// NewWithOptions is New with options: the keys come from WithKeys and WithKeyProvider (at
// least one key in all), and WithoutPlaintext forbids plaintext tokens. ctx is given to the
// key providers.
func NewWithOptions(ctx context.Context, inner b24oauth.TokenStore, opts ...Option) (*Store, error) {
	if inner == nil {
		return nil, errors.New("sealstore: nil inner store")
	}
	var c config
	for _, o := range opts {
		o(&c)
	}
	var keys [][]byte
	for _, src := range c.keys {
		more, err := src(ctx)
		if err != nil {
			return nil, err
		}
		keys = append(keys, more...)
	}
	ring, err := newKeyring(keys)
	if err != nil {
		return nil, err
	}
	return &Store{inner: inner, keys: ring, allowPlaintext: !c.noPlain}, nil
}

// Load returns the installation of memberID with its tokens opened, ErrNotInstalled when it
// has none, or an error matching ErrUnseal when a token cannot be opened.
func (s *Store) Load(ctx context.Context, memberID string) (b24oauth.Installation, error) {
	inst, err := s.inner.Load(ctx, memberID)
	if err != nil {
		return b24oauth.Installation{}, err
	}
	if err := s.keys.open(&inst.OAuthParams, s.allowPlaintext); err != nil {
		return b24oauth.Installation{}, err
	}
	return inst, nil
}

// Save seals the tokens of inst with the first key and saves it in the inner store, replacing
// whatever record it had, even one that no key opens. It reads nothing.
func (s *Store) Save(ctx context.Context, inst b24oauth.Installation) error {
	if err := s.keys.seal(&inst.OAuthParams); err != nil {
		return err
	}
	return s.inner.Save(ctx, inst)
}

// Delete removes the installation of memberID from the inner store.
func (s *Store) Delete(ctx context.Context, memberID string) error {
	return s.inner.Delete(ctx, memberID)
}

// Update runs the inner store's Update, so it is as atomic as the inner store's: inside it,
// the current record is opened, fn is called with it, and what fn returns is sealed with the
// first key and handed back to be written. A record sealed with an older key, or in plaintext,
// is thus sealed with the first key by any Update. If the current record cannot be opened, fn
// is not called, nothing is written and Update returns an error matching ErrUnseal. fn's own
// error is returned unchanged.
func (s *Store) Update(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) (b24oauth.Installation, error)) error {
	return s.inner.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		if err := s.keys.open(&cur.OAuthParams, s.allowPlaintext); err != nil {
			return b24oauth.Installation{}, err
		}
		next, err := fn(cur)
		if err != nil {
			return next, err
		}
		if err := s.keys.seal(&next.OAuthParams); err != nil {
			return b24oauth.Installation{}, err
		}
		return next, nil
	})
}

// Create seals the tokens of inst with the first key and creates it in the inner store: with
// the inner store's Create when it is a b24oauth.Creator, so it is as atomic as the inner
// store's, and otherwise as b24oauth.CreateInstallation does for a store without Create. An
// installation already stored, even one that no key opens, is an error matching
// b24oauth.ErrAlreadyInstalled.
func (s *Store) Create(ctx context.Context, inst b24oauth.Installation) error {
	if err := s.keys.seal(&inst.OAuthParams); err != nil {
		return err
	}
	return b24oauth.CreateInstallation(ctx, s.inner, inst)
}

// DeleteIf deletes the installation of memberID if fn, called with it opened, returns nil: with
// the inner store's DeleteIf when it is a b24oauth.ConditionalDeleter, so it is as atomic as
// the inner store's, and otherwise as b24oauth.DeleteInstallationIf does for a store without
// DeleteIf. A record that cannot be opened is not deleted: fn is not called and DeleteIf returns
// an error matching ErrUnseal (Delete removes such a record).
func (s *Store) DeleteIf(ctx context.Context, memberID string, fn func(cur b24oauth.Installation) error) error {
	return b24oauth.DeleteInstallationIf(ctx, s.inner, memberID, func(cur b24oauth.Installation) error {
		if err := s.keys.open(&cur.OAuthParams, s.allowPlaintext); err != nil {
			return err
		}
		return fn(cur)
	})
}

// Reseal rewrites the record of memberID unchanged but sealed with the first key (an Update
// that changes nothing else). Running it over every member_id (List) after putting a new key
// first, or after switching sealing on, leaves no record sealed with an old key or in
// plaintext; the old key can then be dropped, and WithoutPlaintext set.
func (s *Store) Reseal(ctx context.Context, memberID string) error {
	return s.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil })
}

// List yields every member_id of the inner store when it implements b24oauth.Lister (member_ids
// are not sealed). Otherwise it yields ErrNotLister once, with an empty member_id: a Store
// always has the method, since New returns one type for every inner store, so a caller that
// found it by a type assertion learns at the first iteration that the inner store cannot list.
func (s *Store) List(ctx context.Context) iter.Seq2[string, error] {
	if l, ok := s.inner.(b24oauth.Lister); ok {
		return l.List(ctx)
	}
	return func(yield func(string, error) bool) { yield("", ErrNotLister) }
}

// String describes the Store by its inner store's type and its key ids; it shows no key.
func (s Store) String() string {
	plain := "allowed"
	if !s.allowPlaintext {
		plain = "forbidden"
	}
	return fmt.Sprintf("sealstore.Store{inner: %T, keys: [%s], plaintext: %s}", s.inner, strings.Join(s.keys.ids(), " "), plain)
}

// GoString is String.
func (s Store) GoString() string { return s.String() }

// Format makes every fmt verb print String, so that no verb walks the ciphers' fields. The
// printing methods have value receivers so that a Store printed by value is covered too.
func (s Store) Format(f fmt.State, verb rune) {
	out := s.String()
	if verb == 'q' {
		out = fmt.Sprintf("%q", out)
	}
	_, _ = f.Write([]byte(out))
}

// LogValue implements slog.LogValuer: the inner store's type and the key ids.
func (s Store) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("inner", fmt.Sprintf("%T", s.inner)),
		slog.Any("key_ids", s.keys.ids()),
		slog.Bool("plaintext_allowed", s.allowPlaintext),
	)
}
