//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"time"
)

// fileLock is a held flock(2) lock on one member's lock file.
type fileLock struct {
	f    *os.File
	path string
}

// Bounds of the wait between two attempts to take a lock held by another process. flock is
// polled with LOCK_NB rather than called blocking, so that a cancelled context stops the wait
// at once and no goroutine is left behind to take the lock later.
const (
	minLockBackoff = 500 * time.Microsecond
	maxLockBackoff = 20 * time.Millisecond
)

// errLockBusy is what lockFile returns, without wait, for a lock someone else holds.
var errLockBusy = errors.New("b24oauth: file store: lock busy")

// lockFile takes an exclusive flock on the file at path, creating it (mode 0600) if needed.
// With wait false it returns errLockBusy at once if someone else holds the lock.
func lockFile(ctx context.Context, path string, wait bool) (*fileLock, error) {
	backoff := minLockBackoff
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("b24oauth: file store: %w", err)
		}
		for {
			err = flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				f.Close()
				return nil, fmt.Errorf("b24oauth: file store: lock %s: %w", path, err)
			}
			if !wait {
				f.Close()
				return nil, errLockBusy
			}
			// Up to half the backoff again at random, so that waiting processes do not
			// retry in lockstep.
			wait := backoff + rand.N(backoff/2+1)
			backoff = min(2*backoff, maxLockBackoff)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				f.Close()
				return nil, ctx.Err()
			}
		}
		// Delete removes lock files, holding their lock. If it removed this one between our
		// open and our flock, we hold a lock that others, opening the path afresh, will not
		// see: let it go and lock the file now at path.
		if same, err := isFileAt(f, path); err != nil {
			f.Close()
			return nil, fmt.Errorf("b24oauth: file store: lock %s: %w", path, err)
		} else if same {
			return &fileLock{f: f, path: path}, nil
		}
		f.Close()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// unlock releases the lock, removing the lock file first if remove is set (while the lock
// is still held, see lockFile).
func (l *fileLock) unlock(remove bool) {
	if remove {
		os.Remove(l.path)
	}
	l.f.Close() // closing the only descriptor of the open file releases its flock
}

// flock calls flock(2) on f, retrying when a signal interrupts it.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

// isFileAt reports whether the open file f is still the file at path.
func isFileAt(f *os.File, path string) (bool, error) {
	held, err := f.Stat()
	if err != nil {
		return false, err
	}
	now, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(held, now), nil
}
