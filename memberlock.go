package b24oauth

import (
	"context"
	"sync"
)

// memberLocks is a set of in-process mutexes, one per member_id, created on demand and dropped
// when nobody holds or waits for them, so that the set does not grow with the number of
// portals ever seen. Acquisition honours a context.
type memberLocks struct {
	mu    sync.Mutex
	locks map[string]*memberLock
}

type memberLock struct {
	// held has room for one token: sending it takes the lock, receiving it releases it. A
	// channel rather than a sync.Mutex, so a waiter can give up when its context is done.
	held chan struct{}
	refs int // holders and waiters; guarded by memberLocks.mu
}

// lock takes memberID's lock, or returns ctx.Err() if ctx is done first. The returned func
// releases it and must be called exactly once.
func (l *memberLocks) lock(ctx context.Context, memberID string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := l.ref(memberID)

	select {
	case m.held <- struct{}{}:
	default:
		select {
		case m.held <- struct{}{}:
		case <-ctx.Done():
			l.release(memberID, m)
			return nil, ctx.Err()
		}
	}
	return func() {
		<-m.held
		l.release(memberID, m)
	}, nil
}

// tryLock takes memberID's lock if nobody holds it; ok reports whether it did. unlock must
// then be called exactly once.
func (l *memberLocks) tryLock(memberID string) (unlock func(), ok bool) {
	m := l.ref(memberID)
	select {
	case m.held <- struct{}{}:
		return func() {
			<-m.held
			l.release(memberID, m)
		}, true
	default:
		l.release(memberID, m)
		return nil, false
	}
}

// ref returns memberID's entry, created if needed, counting the caller in its refs.
func (l *memberLocks) ref(memberID string) *memberLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = make(map[string]*memberLock)
	}
	m := l.locks[memberID]
	if m == nil {
		m = &memberLock{held: make(chan struct{}, 1)}
		l.locks[memberID] = m
	}
	m.refs++
	return m
}

func (l *memberLocks) release(memberID string, m *memberLock) {
	l.mu.Lock()
	m.refs--
	if m.refs == 0 {
		delete(l.locks, memberID)
	}
	l.mu.Unlock()
}
