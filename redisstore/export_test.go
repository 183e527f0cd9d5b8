package redisstore

// LocalLockCount returns how many members have a local lock entry (held or waited for).
func (s *Store) LocalLockCount() int {
	s.local.mu.Lock()
	defer s.local.mu.Unlock()
	return len(s.local.locks)
}
