package b24oauth

import (
	"context"
	"fmt"
	"iter"
	"sync"
)

// MemoryStore is a TokenStore that keeps installations in process memory. It is meant for
// tests, demos and single-process tools: its records vanish with the process and are not
// shared with other processes.
//
// A MemoryStore is safe for concurrent use. Update holds a lock of its own member_id only
// (while fn runs too), so a slow fn, such as a token refresh, never delays the other portals.
// Records are stored and returned by value: a caller cannot change what the store holds other
// than through its methods. The zero value is not usable; call NewMemoryStore.
type MemoryStore struct {
	members memberLocks // serializes Save, Update and Delete of one member_id

	mu   sync.RWMutex // guards data
	data map[string]Installation
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{data: make(map[string]Installation)}
}

// Load returns the installation of memberID, or ErrNotInstalled (also for a malformed
// member_id, see ValidMemberID).
func (s *MemoryStore) Load(ctx context.Context, memberID string) (Installation, error) {
	if !ValidMemberID(memberID) {
		return Installation{}, errMalformedMember
	}
	if err := ctx.Err(); err != nil {
		return Installation{}, err
	}
	s.mu.RLock()
	inst, ok := s.data[memberID]
	s.mu.RUnlock()
	if !ok {
		return Installation{}, ErrNotInstalled
	}
	return inst, nil
}

// Save inserts or replaces inst, keyed by inst.MemberID, which must be well formed (see
// ValidMemberID). It waits for an Update of the same member_id in progress to finish.
func (s *MemoryStore) Save(ctx context.Context, inst Installation) error {
	if !ValidMemberID(inst.MemberID) {
		return errSaveMalformedMember
	}
	unlock, err := s.members.lock(ctx, inst.MemberID)
	if err != nil {
		return err
	}
	defer unlock()
	s.put(inst)
	return nil
}

// Delete removes the installation of memberID; it returns nil when there is none. It waits
// for an Update of the same member_id in progress to finish, so it is never undone by it.
func (s *MemoryStore) Delete(ctx context.Context, memberID string) error {
	if !ValidMemberID(memberID) {
		return nil // nothing can be stored under it
	}
	unlock, err := s.members.lock(ctx, memberID)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	delete(s.data, memberID)
	s.mu.Unlock()
	return nil
}

// Update calls fn with the installation of memberID and stores what fn returns, atomically:
// no Save, Update or Delete of the same member_id runs in between. fn runs with that member's
// lock held and must not call the store for the same member_id. If fn returns an error,
// nothing is stored and Update returns that error. Update of an absent member_id returns
// ErrNotInstalled without calling fn, as does Update of a malformed member_id. fn must not
// change MemberID; if it does, nothing is stored and Update returns an error.
func (s *MemoryStore) Update(ctx context.Context, memberID string, fn func(cur Installation) (Installation, error)) error {
	if !ValidMemberID(memberID) {
		return errMalformedMember
	}
	return s.locked(ctx, memberID, func(cur Installation, ok bool) error {
		if !ok {
			return ErrNotInstalled
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if next.MemberID != memberID {
			return fmt.Errorf("b24oauth: Update of member %q: fn changed MemberID to %q", memberID, next.MemberID)
		}
		// Stored even if ctx was cancelled while fn ran: fn may have spent a single-use refresh
		// token, and dropping the pair it returns would lose the portal.
		s.put(next)
		return nil
	})
}

// Create stores inst if its member_id (which must be well formed) has no installation, and
// otherwise returns an error matching ErrAlreadyInstalled (see Creator). It waits for a Save,
// Update or Delete of the same member_id in progress to finish.
func (s *MemoryStore) Create(ctx context.Context, inst Installation) error {
	if !ValidMemberID(inst.MemberID) {
		return errSaveMalformedMember
	}
	return s.locked(ctx, inst.MemberID, func(_ Installation, exists bool) error {
		if exists {
			return ErrAlreadyInstalled
		}
		s.put(inst)
		return nil
	})
}

// DeleteIf deletes the installation of memberID if fn, called with it, returns nil (see
// ConditionalDeleter); fn runs with the member's lock held, as Update's does.
func (s *MemoryStore) DeleteIf(ctx context.Context, memberID string, fn func(cur Installation) error) error {
	if !ValidMemberID(memberID) {
		return errMalformedMember
	}
	return s.locked(ctx, memberID, func(cur Installation, ok bool) error {
		if !ok {
			return ErrNotInstalled
		}
		if err := fn(cur); err != nil {
			return err
		}
		s.mu.Lock()
		delete(s.data, memberID)
		s.mu.Unlock()
		return nil
	})
}

// locked runs f with memberID's lock held and its record (ok false: there is none).
func (s *MemoryStore) locked(ctx context.Context, memberID string, f func(cur Installation, ok bool) error) error {
	unlock, err := s.members.lock(ctx, memberID)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.RLock()
	cur, ok := s.data[memberID]
	s.mu.RUnlock()
	return f(cur, ok)
}

// List yields the member_id of every installation (see Lister). It takes a snapshot of the
// member_ids when the loop starts, so the loop body may use the store.
func (s *MemoryStore) List(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if err := ctx.Err(); err != nil {
			yield("", err)
			return
		}
		s.mu.RLock()
		ids := make([]string, 0, len(s.data))
		for id := range s.data {
			ids = append(ids, id)
		}
		s.mu.RUnlock()
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				yield("", err)
				return
			}
			if !yield(id, nil) {
				return
			}
		}
	}
}

func (s *MemoryStore) put(inst Installation) {
	s.mu.Lock()
	s.data[inst.MemberID] = inst
	s.mu.Unlock()
}
