package redisstore

// LocalLockCount returns how many members have a local lock entry (held or waited for).
func (s *Store) LocalLockCount() int {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return len(s.local.locks)
}

// SetLockBusyHook makes fn run when an operation first finds a member's Redis lock held by
// someone else, before it pauses to try again.
func (s *Store) SetLockBusyHook(fn func(memberID string)) { s.hookLockBusy = fn }

// SetDeleteLockedHook makes fn run when Delete holds the member's lock, just before it
// deletes.
func (s *Store) SetDeleteLockedHook(fn func(memberID string)) { s.hookDeleteLocked = fn }

// SetListCount sets the COUNT of List's SCANs, so that a test walks many of them.
func (s *Store) SetListCount(n int64) { s.listCount = n }
