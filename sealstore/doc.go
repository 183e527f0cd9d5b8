// Package sealstore keeps the tokens of a b24oauth.TokenStore sealed at rest: a leaked backup,
// a copied directory or a read-only SQL injection then yields no usable token.
//
//	keys, err := sealstore.ParseKeys(os.Getenv("B24OAUTH_SEAL_KEYS"))
//	if err != nil { ... }
//	files, err := b24oauth.NewFileStore("/var/lib/myapp/b24oauth")
//	if err != nil { ... }
//	store, err := sealstore.New(files, keys...)
//	if err != nil { ... }
//	app, err := b24oauth.NewApp(b24oauth.AppConfig{Store: store, ...})
//
// It wraps any TokenStore (the file and memory stores, pgstore, redisstore, yours) and needs
// nothing from it but the TokenStore interface. The wrapped store passes storetest.Run as the
// inner one does, and its Update is as atomic as the inner store's: it opens the current
// record, calls fn and seals fn's result inside the inner store's Update. Its Create and
// DeleteIf (b24oauth.Creator, b24oauth.ConditionalDeleter) are the inner store's when it has
// them, and otherwise the fallbacks of b24oauth.CreateInstallation and DeleteInstallationIf.
//
// # What is sealed
//
// The access token, the refresh token and the application token of every installation, each
// with AES-256-GCM (crypto/aes, crypto/cipher) under a random nonce of its own, drawn anew on
// every write. A sealed value is a string in the token's own field:
//
//	b24s1:<key id>:<base64url(nonce | ciphertext | tag)>
//
// where the key id (KeyID: 8 hex digits of a hash of the key) names the key that sealed it,
// so that opening it takes that key and no other. The value is bound (as GCM's additional
// data) to its field and to the record's member_id, domain, client endpoint and server
// endpoint: a value moved to another field or another record, or a record whose domain or
// endpoints were changed by anything but a Store, does not open. So someone who can write to
// the inner store but has no key can neither swap portals' tokens nor redirect a portal's
// calls, and with them its access token, to a host of theirs.
//
// Everything else stays readable, for operators and queries: the member_id, the domain, the
// endpoints, the user id, the scope, the status, the state, the expiry and the times. An
// empty token stays empty (that a portal has no application token is no secret).
//
// # Errors
//
// A token that cannot be opened (no key of the Store has its key id, it was changed, it is
// malformed, or it is plaintext under WithoutPlaintext) makes Load and Update fail with an
// *UnsealError, which matches ErrUnseal (errors.Is) and never b24oauth.ErrNotInstalled: the
// portal is installed, and its record must not be dropped for it. Update then neither calls
// fn nor writes anything, so the App's handlers refuse the portal's events (503: they cannot
// check an event's application_token against a record they cannot open) and its clients fail.
// To recover a record sealed with a lost key, delete it (Store.Delete, or its file, row or
// key): the portal's next install stores it anew. Save, which replaces any record, replaces
// such a one too. No error, and nothing a Store prints or logs, holds a key, a token or a
// sealed value.
//
// # Where the keys come from
//
// A key is 32 random bytes (KeySize), made once, for instance with
//
//	openssl rand -base64 32
//
// and kept apart from the store it protects: in a secret manager that puts it into the
// environment (B24OAUTH_SEAL_KEYS="<new>,<old>", read with ParseKeys), in a file mounted
// from one, or wrapped by a KMS: keep the KMS-encrypted data key next to the app, unwrap it at
// start-up, and give the result to New, or implement KeyProvider and use NewWithOptions with
// WithKeyProvider. A key kept in the same database or backup as the tokens protects nothing.
//
// # Rotating keys
//
// The first key seals; every key opens. To rotate:
//
//  1. Add the new key in second position on every replica (B24OAUTH_SEAL_KEYS="<old>,<new>"),
//     so that all of them can open what it will seal.
//  2. Put it first ("<new>,<old>"). Every write (an install event, a token refresh) now seals
//     with it, and re-seals a record sealed with the old key.
//  3. Re-seal the records nobody writes: Store.Reseal over every member_id (Store.List).
//     Records still sealed with a key carry its id, so a query finds them (see KeyID).
//  4. Drop the old key.
//
// # Switching sealing on
//
// Records written before a Store wrapped the inner store hold their tokens in plaintext. A
// Store reads them as they are and seals them on their next write (or Reseal), so sealing can
// be switched on without a migration. Once every record is sealed, NewWithOptions with
// WithoutPlaintext makes a plaintext token an error (ErrPlaintext), so that tokens written
// into the inner store behind the Store's back are refused.
package sealstore
