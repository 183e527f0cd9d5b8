package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strconv"
	"time"
)

// InstallationState is the lifecycle state of a stored installation.
type InstallationState string

const (
	// StateActive: the installation's tokens are usable.
	StateActive InstallationState = "active"
	// StateRevoked: its refresh token was refused (invalid_grant); the portal must reinstall the
	// app. Clients of such a portal fail fast with a *RefreshTokenError.
	StateRevoked InstallationState = "revoked"
)

// Installation is what a TokenStore keeps for one portal: its OAuth parameters (keyed by
// MemberID) and what the lifecycle events said about it.
//
// Its JSON form (the flat snake_case fields of OAuthParams plus the fields below) is what the
// file and Redis stores persist. Printing or logging it redacts every token.
type Installation struct {
	OAuthParams

	State       InstallationState `json:"state"`
	Version     string            `json:"version,omitempty"`     // the app version (data[VERSION])
	LanguageID  string            `json:"language_id,omitempty"` // the portal's language (data[LANGUAGE_ID])
	InstalledAt time.Time         `json:"installed_at"`          // first install seen
	UpdatedAt   time.Time         `json:"updated_at"`            // last write by an event or a refresh

	// RefreshingSince is set while a refresh of this installation is in flight (between asking
	// the OAuth server and storing its answer). A mark that outlives the refresh tells the next
	// process that a rotated refresh token may have been lost with a crashed process.
	RefreshingSince time.Time `json:"refreshing_since"`
}

// String returns a representation with every token redacted.
func (i Installation) String() string {
	return "b24oauth.Installation{" + i.OAuthParams.String() +
		", State: " + strconv.Quote(string(i.State)) +
		", Version: " + strconv.Quote(i.Version) +
		", LanguageID: " + strconv.Quote(i.LanguageID) +
		", InstalledAt: " + i.InstalledAt.Format(time.RFC3339) +
		", UpdatedAt: " + i.UpdatedAt.Format(time.RFC3339) +
		", RefreshingSince: " + i.RefreshingSince.Format(time.RFC3339) + "}"
}

// GoString is String.
func (i Installation) GoString() string { return i.String() }

// Format makes every fmt verb print the redacted form.
func (i Installation) Format(f fmt.State, verb rune) { formatRedacted(f, verb, i.String()) }

// LogValue implements slog.LogValuer with every token redacted.
func (i Installation) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("params", i.OAuthParams),
		slog.String("state", string(i.State)),
		slog.String("version", i.Version),
		slog.Time("installed_at", i.InstalledAt),
		slog.Time("updated_at", i.UpdatedAt),
	)
}

// TokenStore persists installations, keyed by member_id. Implementations must be safe for
// concurrent use.
//
// The contract (checked by storetest.Run for every store in this repository):
//   - Load of an absent member_id returns an error matching ErrNotInstalled (errors.Is); any other
//     failure (a corrupt record, a lost connection) is a different error, never ErrNotInstalled.
//   - A member_id that is not well formed (see ValidMemberID) is never stored: Load and Update
//     of one return an error matching ErrNotInstalled (Update without calling fn), Delete of one
//     returns nil, and Save of an installation with one returns an error that does not match
//     ErrNotInstalled. None of them reaches the backend, so no member_id can inject a path, a
//     query or a key pattern.
//   - Save inserts or replaces the whole record, durably, or fails leaving the previous record
//     intact: never a half-written one.
//   - Delete of an absent member_id returns nil.
//   - Update reads the record, calls fn with it exactly once, and writes what fn returns,
//     atomically: no other Update, Save or Delete of the same member_id, in this process or in
//     any other process sharing the store, interleaves with it (a Delete waits for the Update,
//     then removes what it wrote). If fn returns an error, nothing is written
//     and Update returns that error unchanged. Update of an absent member_id returns
//     ErrNotInstalled without calling fn. fn must not change MemberID: a store refuses such a
//     record with an error and writes nothing. Once fn has returned a record, the store writes
//     it even if ctx ends meanwhile (fn may have spent a single-use refresh token to produce
//     it): only a failure of the store itself loses it, and then Update returns an error.
//   - Every method honours its context's cancellation and deadline.
type TokenStore interface {
	// Load returns the installation of memberID, or ErrNotInstalled.
	Load(ctx context.Context, memberID string) (Installation, error)
	// Save inserts or replaces inst (keyed by inst.MemberID).
	Save(ctx context.Context, inst Installation) error
	// Delete removes the installation of memberID; no error when it is absent.
	Delete(ctx context.Context, memberID string) error
	// Update reads, changes and writes one installation atomically.
	Update(ctx context.Context, memberID string, fn func(cur Installation) (Installation, error)) error
}

// Lister is implemented by stores that can enumerate their installations: MemoryStore,
// FileStore, pgstore and redisstore all do, and storetest checks it where a store has it.
type Lister interface {
	// List yields every stored member_id once, in any order, without holding any lock or
	// connection while the loop body runs (the body may use the store). A record saved or
	// deleted while List runs may or may not be yielded; one that stays stored is yielded
	// exactly once. An error ends the sequence: it is yielded once, with an empty member_id.
	// Once ctx is done, List yields no further member_id, only an error matching ctx.Err().
	// Breaking out of the loop early releases everything List holds.
	List(ctx context.Context) iter.Seq2[string, error]
}

// Creator is implemented by stores that can store an installation only where none is stored,
// in one atomic step: MemoryStore, FileStore, pgstore, redisstore and sealstore (over any
// store) do, and storetest checks it where a store has it. The App stores every first install
// with it (through CreateInstallation): when two first installs of one portal arrive together
// (the ONAPPINSTALL event and the install page POST of an app with a UI do), one is created and
// the other is merged into it by the install rules, instead of the last write winning.
//
// A store without Create keeps working: CreateInstallation then falls back to a check and a
// Save under a lock of this process, which is atomic among the App's lifecycle events in one
// process but not across processes (see CreateInstallation).
type Creator interface {
	// Create stores inst (keyed by inst.MemberID) if that member_id has no installation;
	// otherwise it writes nothing and returns an error matching ErrAlreadyInstalled. The check
	// and the write are one step: no other Create, Save, Update or Delete of the same member_id,
	// in this process or in any other sharing the store, interleaves with them, so of any
	// number of concurrent Creates of one member_id exactly one succeeds. An installation with
	// a malformed member_id (see ValidMemberID) is refused as Save refuses it (an error matching
	// neither ErrNotInstalled nor ErrAlreadyInstalled), without reaching the backend. A
	// cancelled context writes nothing.
	Create(ctx context.Context, inst Installation) error
}

// ConditionalDeleter is implemented by stores that can delete an installation on a condition
// checked against the record as it is at the moment of the delete: MemoryStore, FileStore,
// pgstore, redisstore and sealstore (over any store) do, and storetest checks it where a store
// has it. The App's uninstall handler deletes with it (through DeleteInstallationIf), so the
// application token of the event is compared with the record it deletes: a reinstall stored
// while the uninstall was being checked is never deleted.
//
// A store without DeleteIf keeps working: DeleteInstallationIf then falls back to a check
// inside Update followed by a Delete, which leaves a window between the two (see
// DeleteInstallationIf).
type ConditionalDeleter interface {
	// DeleteIf reads the installation of memberID, calls fn with it exactly once, and deletes
	// it if fn returns nil, under the exclusion of Update: no other Create, Save, Update or
	// Delete of the same member_id, in this process or in any other sharing the store,
	// interleaves between the read and the delete. If fn returns an error, nothing is deleted
	// and DeleteIf returns that error unchanged. DeleteIf of an absent or malformed member_id
	// returns an error matching ErrNotInstalled without calling fn (nor reaching the backend,
	// for a malformed one). fn must not call the store. Once fn has returned nil, the record is
	// deleted even if ctx ends meanwhile; a cancelled context before that deletes nothing.
	DeleteIf(ctx context.Context, memberID string, fn func(cur Installation) error) error
}

// The stores of this package implement every optional interface.
var (
	_ fullStore = (*MemoryStore)(nil)
	_ fullStore = (*FileStore)(nil)
)

type fullStore interface {
	TokenStore
	Lister
	Creator
	ConditionalDeleter
}

// fallbackLocks serializes, per member_id, the CreateInstallation and DeleteInstallationIf
// calls of this process on stores that lack Create or DeleteIf.
var fallbackLocks memberLocks

// errDeleteChecked ends the Update in which DeleteInstallationIf's fallback ran fn: nothing to
// write, the Delete follows.
var errDeleteChecked = errors.New("b24oauth: checked for delete")

// CreateInstallation stores inst in store if its member_id has no installation there, and
// otherwise returns an error matching ErrAlreadyInstalled, writing nothing. It calls store's
// Create when store is a Creator.
//
// For any other store it holds a lock of this process for inst.MemberID (shared by all
// CreateInstallation and DeleteInstallationIf calls of the process), checks with an Update
// that the member_id is absent, and then Saves: atomic against the other lifecycle events this
// process handles, but a Save or Create by another process sharing such a store may land
// between the check and the write, and the last write wins. A store shared by several
// processes should implement Creator.
func CreateInstallation(ctx context.Context, store TokenStore, inst Installation) error {
	if c, ok := store.(Creator); ok {
		return c.Create(ctx, inst)
	}
	if !ValidMemberID(inst.MemberID) {
		return errSaveMalformedMember
	}
	unlock, err := fallbackLocks.lock(ctx, inst.MemberID)
	if err != nil {
		return err
	}
	defer unlock()
	err = store.Update(ctx, inst.MemberID, func(cur Installation) (Installation, error) {
		return cur, ErrAlreadyInstalled
	})
	if !errors.Is(err, ErrNotInstalled) {
		if err == nil {
			err = ErrAlreadyInstalled // a store that wrote anyway
		}
		return err
	}
	return store.Save(ctx, inst)
}

// DeleteInstallationIf deletes the installation of memberID from store if fn, called with the
// stored record, returns nil; otherwise it returns fn's error, deleting nothing. An absent or
// malformed member_id is an error matching ErrNotInstalled, without calling fn. It calls
// store's DeleteIf when store is a ConditionalDeleter.
//
// For any other store it holds a lock of this process for memberID (shared by all
// CreateInstallation and DeleteInstallationIf calls of the process), calls fn inside an Update
// that writes nothing, and then Deletes: a write that lands between the Update and the Delete
// (an Update of this process, or any write of another) is deleted with the record. An App's
// install and connect writes hold the same lock, whatever its store (a wrapper such as
// sealstore may call this fallback from its own DeleteIf), so among one process's events an
// uninstall never deletes a reinstall. A store that serves several processes' uninstall
// events racing reinstalls should implement ConditionalDeleter.
func DeleteInstallationIf(ctx context.Context, store TokenStore, memberID string, fn func(cur Installation) error) error {
	if d, ok := store.(ConditionalDeleter); ok {
		return d.DeleteIf(ctx, memberID, fn)
	}
	if !ValidMemberID(memberID) {
		return errMalformedMember
	}
	unlock, err := fallbackLocks.lock(ctx, memberID)
	if err != nil {
		return err
	}
	defer unlock()
	err = store.Update(ctx, memberID, func(cur Installation) (Installation, error) {
		if err := fn(cur); err != nil {
			return cur, err
		}
		return cur, errDeleteChecked
	})
	if !errors.Is(err, errDeleteChecked) {
		if err == nil {
			err = errors.New("b24oauth: DeleteInstallationIf: the store's Update wrote when told not to; nothing deleted")
		}
		return err
	}
	// The check passed: the delete goes on if ctx ends now, as DeleteIf's would.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fallbackDeleteTimeout)
	defer cancel()
	return store.Delete(dctx, memberID)
}

// fallbackDeleteTimeout bounds the Delete of DeleteInstallationIf's fallback once its check
// passed, whatever the caller's context does.
const fallbackDeleteTimeout = 10 * time.Second

// memberIDLen is the length of a member_id: 32 hexadecimal digits.
const memberIDLen = 32

// ValidMemberID reports whether s has the form of a Bitrix24 member_id: exactly 32 lowercase
// hexadecimal digits (0-9, a-f). Cloud portals have such ids, and an on-premise portal's is the
// MD5 of its OAuth client id, written the same way. Every store in this module and the App
// treat any other string as the id of no portal (ErrNotInstalled); a TokenStore of your own
// should do the same.
func ValidMemberID(s string) bool {
	if len(s) != memberIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// errMalformedMember is what Load, Update and ClientForMember return for a member_id that
// ValidMemberID refuses. It does not quote the id, which came from outside and may be long or
// hold control characters.
var errMalformedMember = fmt.Errorf("b24oauth: malformed member_id (want 32 lowercase hex digits): %w", ErrNotInstalled)

// errSaveMalformedMember is what Save returns for an installation whose MemberID ValidMemberID
// refuses: a caller's mistake, not an absent portal.
var errSaveMalformedMember = errors.New("b24oauth: installation has a malformed member_id (want 32 lowercase hex digits); nothing was written")
