package b24oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"strings"
)

// FileStore is the embedded TokenStore: one JSON file per portal in a directory, for a single
// server or a few processes on one host sharing the directory. It needs no database; for
// processes on several hosts use a shared store (pgstore, redisstore).
//
// # Layout
//
// The record of member_id M is the file M.json. Its JSON form is that of Installation. Next to
// it, on systems with flock(2), M.lock is the file that Save, Update and Delete lock; it holds
// nothing. The directory is created with mode 0700 (see NewFileStore about an existing one)
// and records are written with mode 0600, since they hold refresh tokens.
//
// Only member_ids of 1 to 128 ASCII letters, digits, '-' and '_' are accepted (a real one is 32
// lowercase hex digits); every method returns an error for another one, before touching the
// file system, so no member_id can name a path outside the directory. On a case-insensitive
// file system two member_ids that differ only in case would share a file: real member_ids are
// lowercase, so this only matters for made-up ones.
//
// # Durability
//
// Every write goes to a temporary file in the same directory, which is synced, renamed over
// the record and followed by a sync of the directory: after a crash a record is the old one or
// the new one, never a mix. A crash can leave a temporary file (named .M.tmp-*); it is never
// read as a record, and an operator may delete it. A record that is not valid JSON, or that
// holds another member_id, makes Load and Update fail with an error naming the file, never
// with ErrNotInstalled.
//
// # Concurrency
//
// A FileStore is safe for concurrent use. Load takes no lock: a rename is atomic, so it reads
// a whole record. Save, Update and Delete of one member_id exclude each other within a process
// (an in-process lock per member_id) and, on Linux, the BSDs, macOS and illumos, across
// processes sharing the directory (flock(2) on M.lock, which works on local file systems; do
// not share the directory over NFS). Other systems, Windows included, get the in-process lock
// only: there, only one process may use a directory. Waiting for a lock honours the context.
// Members never wait for each other, and the cost of a write does not depend on the number of
// records in the directory.
//
// Delete removes M.lock too, safely for processes waiting for it: a process that obtains the
// lock of a lock file that has since been removed lets it go and locks the new one.
type FileStore struct {
	dir     string
	members memberLocks
}

// NewFileStore returns a FileStore keeping its records in dir, which it creates, with its
// missing parents, with mode 0700 if it does not exist.
//
// On Unix systems the directory must end up accessible to its owner only, since refresh tokens
// are secrets: an existing dir that its group or other users can access is changed to mode
// 0700 if it is empty, owned by the current user and not sticky (a fresh volume, or
// testing.T.TempDir); any other such dir is left alone and NewFileStore returns an error
// (run chmod 700 on it, or choose another directory).
func NewFileStore(dir string) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("b24oauth: NewFileStore: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: NewFileStore: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("b24oauth: NewFileStore: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: NewFileStore: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("b24oauth: NewFileStore: %s is not a directory", abs)
	}
	if err := checkDirMode(abs, fi); err != nil {
		return nil, err
	}
	return &FileStore{dir: abs}, nil
}

// Dir returns the absolute path of the directory holding the records.
func (s *FileStore) Dir() string { return s.dir }

// Load returns the installation of memberID, or ErrNotInstalled when it has no record.
func (s *FileStore) Load(ctx context.Context, memberID string) (Installation, error) {
	if err := ctx.Err(); err != nil {
		return Installation{}, err
	}
	if err := checkMemberID(memberID); err != nil {
		return Installation{}, err
	}
	return s.read(memberID)
}

// Save inserts or replaces inst, keyed by inst.MemberID. It waits for a Save, Update or Delete
// of the same member_id in progress, in this process or another, to finish.
func (s *FileStore) Save(ctx context.Context, inst Installation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkMemberID(inst.MemberID); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, inst.MemberID)
	if err != nil {
		return err
	}
	defer unlock(false)
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.write(inst)
}

// Delete removes the installation of memberID, and its lock file; it returns nil when there is
// none. It waits for a Save, Update or Delete of the same member_id in progress to finish.
func (s *FileStore) Delete(ctx context.Context, memberID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkMemberID(memberID); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return err
	}
	// Once the record is gone, its lock file goes too, removed while still locked (see
	// lockFile), so that uninstalled portals leave nothing behind.
	gone := false
	defer func() { unlock(gone) }()
	if err := ctx.Err(); err != nil {
		return err
	}
	err = os.Remove(s.recordPath(memberID))
	if errors.Is(err, fs.ErrNotExist) {
		gone = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("b24oauth: file store: %w", err)
	}
	gone = true
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("b24oauth: file store: sync %s: %w", s.dir, err)
	}
	return nil
}

// Update calls fn with the installation of memberID and stores what fn returns, atomically:
// no Save, Update or Delete of the same member_id, in this process or another sharing the
// directory (see FileStore), runs in between. fn runs with the member's lock held and must not
// call the store for the same member_id.
//
// If fn returns an error, nothing is written and Update returns that error. Update of an
// absent member_id returns ErrNotInstalled without calling fn. fn must not change MemberID; if
// it does, nothing is written and Update returns an error. Once fn has returned a record, it
// is written even if ctx is cancelled meanwhile: fn may have spent a single-use refresh token
// to get it.
func (s *FileStore) Update(ctx context.Context, memberID string, fn func(cur Installation) (Installation, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkMemberID(memberID); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return err
	}
	defer unlock(false)
	if err := ctx.Err(); err != nil {
		return err
	}
	cur, err := s.read(memberID)
	if err != nil {
		return err
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if next.MemberID != memberID {
		return fmt.Errorf("b24oauth: Update of member %q: fn changed MemberID to %q", memberID, next.MemberID)
	}
	return s.write(next)
}

// List yields the member_id of every record in the directory, in no particular order, for
// operators' tools (migrations, audits). A record saved or deleted while List runs may or may
// not be yielded. An error (a cancelled ctx, an unreadable directory) is yielded once, with an
// empty member_id, and ends the sequence.
func (s *FileStore) List(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if err := ctx.Err(); err != nil {
			yield("", err)
			return
		}
		d, err := os.Open(s.dir)
		if err != nil {
			yield("", fmt.Errorf("b24oauth: file store: %w", err))
			return
		}
		defer d.Close()
		for {
			names, err := d.Readdirnames(256)
			for _, name := range names {
				id, ok := strings.CutSuffix(name, recordExt)
				if !ok || checkMemberID(id) != nil {
					continue
				}
				if !yield(id, nil) {
					return
				}
			}
			if err == io.EOF {
				return
			}
			if err == nil {
				err = ctx.Err()
			}
			if err != nil {
				yield("", fmt.Errorf("b24oauth: file store: list %s: %w", s.dir, err))
				return
			}
		}
	}
}

const (
	recordExt    = ".json"
	lockExt      = ".lock"
	maxMemberLen = 128
)

// checkMemberID accepts 1 to 128 ASCII letters, digits, '-' and '_': such a name cannot be
// "." or "..", hold a separator, or collide with a lock or temporary file of another member.
func checkMemberID(id string) error {
	if id == "" || len(id) > maxMemberLen {
		return fmt.Errorf("b24oauth: file store: invalid member_id %q: want 1 to %d letters, digits, '-' or '_'", id, maxMemberLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("b24oauth: file store: invalid member_id %q: want 1 to %d letters, digits, '-' or '_'", id, maxMemberLen)
		}
	}
	return nil
}

func (s *FileStore) recordPath(memberID string) string {
	return filepath.Join(s.dir, memberID+recordExt)
}

func (s *FileStore) lockPath(memberID string) string {
	return filepath.Join(s.dir, memberID+lockExt)
}

// lock takes memberID's in-process lock, then its file lock. The returned func releases both;
// with remove set it also deletes the lock file (Delete).
func (s *FileStore) lock(ctx context.Context, memberID string) (unlock func(remove bool), err error) {
	unlockMember, err := s.members.lock(ctx, memberID)
	if err != nil {
		return nil, err
	}
	fl, err := lockFile(ctx, s.lockPath(memberID))
	if err != nil {
		unlockMember()
		return nil, err
	}
	return func(remove bool) {
		fl.unlock(remove)
		unlockMember()
	}, nil
}

// read returns the record of memberID, ErrNotInstalled if there is none, or an error naming
// the file if it cannot be read or decoded.
func (s *FileStore) read(memberID string) (Installation, error) {
	path := s.recordPath(memberID)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Installation{}, ErrNotInstalled
	}
	if err != nil {
		return Installation{}, fmt.Errorf("b24oauth: file store: %w", err)
	}
	var inst Installation
	if err := json.Unmarshal(data, &inst); err != nil {
		return Installation{}, fmt.Errorf("b24oauth: file store: corrupt record %s: %w", path, err)
	}
	if inst.MemberID != memberID {
		return Installation{}, fmt.Errorf("b24oauth: file store: corrupt record %s: it holds member_id %q", path, inst.MemberID)
	}
	return inst, nil
}

// write replaces the record of inst.MemberID atomically and durably: temporary file, fsync,
// rename, fsync of the directory.
func (s *FileStore) write(inst Installation) error {
	data, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("b24oauth: file store: encode member %q: %w", inst.MemberID, err)
	}
	tmp, err := s.writeTemp(inst.MemberID, append(data, '\n'))
	if err != nil {
		return fmt.Errorf("b24oauth: file store: write member %q: %w", inst.MemberID, err)
	}
	if err := os.Rename(tmp, s.recordPath(inst.MemberID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("b24oauth: file store: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		// The record is in place; only its durability across a power loss is in doubt.
		return fmt.Errorf("b24oauth: file store: sync %s: %w", s.dir, err)
	}
	return nil
}

// writeTemp writes data to a new synced file (mode 0600, as CreateTemp makes it) and returns
// its path. Its name, with a leading dot and ".tmp-", is apart from every record and lock file
// name, whose member_id part has no dot.
func (s *FileStore) writeTemp(memberID string, data []byte) (path string, err error) {
	f, err := os.CreateTemp(s.dir, "."+memberID+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}
