package redisstore

import (
	"context"
	"sync"
)

// localLocks queues this process's Saves and Updates of one member before they compete for
// the member's Redis lock. Without it, goroutines of one process poll the Redis lock against
// each other, and a waiter in its backoff pause keeps losing to fresh arrivals; with it, they
// take turns in arrival order and only one of them polls Redis. Entries are dropped when
// nobody holds or waits for them, so the set does not grow with the number of portals.
type localLocks struct {
	mu    sync.Mutex
	locks map[string]*localLock
}

type localLock struct {
	held chan struct{} // a token in the channel: the lock is held
	refs int           // holders and waiters; guarded by localLocks.mu
}

// lock takes memberID's local lock, or returns ctx.Err() if ctx ends first. unlock must be
// called exactly once.
func (l *localLocks) lock(ctx context.Context, memberID string) (unlock func(), err error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]*localLock)
	}
	m := l.locks[memberID]
	if m == nil {
		m = &localLock{held: make(chan struct{}, 1)}
		l.locks[memberID] = m
	}
	m.refs++
	l.mu.Unlock()
	select {
	case m.held <- struct{}{}:
		return func() { <-m.held; l.drop(memberID, m) }, nil
	case <-ctx.Done():
		l.drop(memberID, m)
		return nil, ctx.Err()
	}
}

func (l *localLocks) drop(memberID string, m *localLock) {
	l.mu.Lock()
	if m.refs--; m.refs == 0 {
		delete(l.locks, memberID)
	}
	l.mu.Unlock()
}
