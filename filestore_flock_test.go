//go:build linux

package b24oauth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// holdLock takes the flock of member's lock file the way another process would (through an
// open file of its own) and returns its release.
func holdLock(t *testing.T, dir, member string) (release func()) {
	t.Helper()
	release, _ = holdLockFile(t, filepath.Join(dir, member+".lock"))
	return release
}

// Writes wait for a lock held by another process, and give up when their context is done.
func TestFileStoreWaitsForOtherProcessLock(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	if err := s.Save(bg, testInstallation(testMember, 1)); err != nil {
		t.Fatal(err)
	}
	release := holdLock(t, dir, testMember)
	for op, call := range map[string]func(context.Context) error{
		"Save":   func(ctx context.Context) error { return s.Save(ctx, testInstallation(testMember, 2)) },
		"Delete": func(ctx context.Context) error { return s.Delete(ctx, testMember) },
		"Update": func(ctx context.Context) error {
			return s.Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				return cur, errors.New("fn called while another process held the member")
			})
		},
	} {
		ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s while another process holds the lock = %v; want context.DeadlineExceeded", op, err)
		}
	}
	// Load takes no lock.
	if got, err := s.Load(bg, testMember); err != nil || got.ExpiresIn != 1 {
		t.Errorf("Load = ExpiresIn %d, %v; want 1", got.ExpiresIn, err)
	}

	// Once released, a waiting Save proceeds.
	done := make(chan error, 1)
	go func() { done <- s.Save(bg, testInstallation(testMember, 3)) }()
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(bg, testMember); err != nil || got.ExpiresIn != 3 {
		t.Errorf("Load = ExpiresIn %d, %v; want 3", got.ExpiresIn, err)
	}
}

// openFiles returns the link targets of this process's open files, except the ones in skip.
func openFiles(t *testing.T, skip ...uintptr) map[string]int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	open := map[string]int{}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(skip, uintptr(fd)) {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			open[target]++
		}
	}
	return open
}

// waitUntil polls cond, failing the test if stop is closed first.
func waitUntil(t *testing.T, what string, stop <-chan error, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case err := <-stop:
			t.Fatalf("Save returned (%v) before %s", err, what)
		case <-time.After(time.Millisecond):
		}
	}
}

// A writer that obtains the lock of a lock file that Delete has removed in the meantime lets it
// go and locks the file now at the path, which another process may hold.
func TestFileStoreLockFileReplacedWhileWaiting(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	if err := s.Save(bg, testInstallation(testMember, 1)); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(dir, testMember+".lock")
	old, oldFd := holdLockFile(t, lockPath)
	defer old()

	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Save(ctx, testInstallation(testMember, 2)) }()
	waitUntil(t, "opening the lock file", done, func() bool { return openFiles(t, oldFd)[lockPath] > 0 })

	// What Delete does, then another process locking the new lock file.
	if err := os.Remove(lockPath); err != nil {
		t.Fatal(err)
	}
	current, currentFd := holdLockFile(t, lockPath)
	defer current()
	old()
	waitUntil(t, "moving to the new lock file", done, func() bool { return openFiles(t, currentFd)[lockPath] > 0 })

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Save = %v; want context.Canceled", err)
	}
	if got, err := s.Load(bg, testMember); err != nil || got.ExpiresIn != 1 {
		t.Errorf("Load = ExpiresIn %d, %v; want 1", got.ExpiresIn, err)
	}
}

func holdLockFile(t *testing.T, path string) (release func(), fd uintptr) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, f.Fd()
}

// NewFileStore leaves an interrupted write whose member another process holds locked to that
// process, without waiting; a Load of the member waits for the lock and then settles it.
func TestFileStoreSettlesLockedMemberLater(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	if err := s.Save(bg, testInstallation(testMember, 1)); err != nil {
		t.Fatal(err)
	}
	tmp := crashedWrite(t, s, testInstallation(testMember, 2))
	release := holdLock(t, dir, testMember)
	reopened := newFileStore(t, dir) // returns at once: the member is skipped
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("NewFileStore settled a member another process holds: %v", err)
	}
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	_, err := reopened.Load(ctx, testMember)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Load of a member with an interrupted write whose lock another process holds = %v; want it to wait (context.DeadlineExceeded)", err)
	}
	release()
	checkExpiresIn(t, reopened, testMember, 2)
	checkNoTempFiles(t, dir)
}
