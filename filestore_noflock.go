//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package b24oauth

import (
	"context"
	"errors"
)

// fileLock stands in for a file lock where the standard library offers no flock(2), Windows
// included: there the FileStore's in-process lock is the only one, so only one process may use
// a directory at a time.
type fileLock struct{}

// errLockBusy is never returned here: there is no lock to find busy.
var errLockBusy = errors.New("b24oauth: file store: lock busy")

// lockFile only checks ctx; see fileLock.
func lockFile(ctx context.Context, _ string, _ bool) (*fileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &fileLock{}, nil
}

// unlock does nothing: no lock file was created.
func (*fileLock) unlock(bool) {}
