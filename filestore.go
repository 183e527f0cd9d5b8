package b24oauth

import (
	"bytes"
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
// nothing. While a record is written, .M.tmp holds the new version (see Durability). The
// directory is created with mode 0700 (see NewFileStore about an existing one) and records are
// written with mode 0600, since they hold refresh tokens.
//
// Only well-formed member_ids (32 lowercase hex digits, see ValidMemberID) name records: Load
// and Update of any other string return ErrNotInstalled, Delete of one returns nil and Save of
// one fails, all before touching the file system, so no member_id can name a path outside the
// directory.
//
// # Durability
//
// Every write goes to .M.tmp, which is synced, renamed over M.json and followed by a sync of
// the directory: a reader sees the old record or the new one, never a mix. A crash before the
// rename leaves .M.tmp behind, and it may hold the only live token pair (a refresh spends the
// old refresh token before its result is written). It is the last write begun for M, since
// every write and Delete of M removes an older one first, holding M's lock; so the store
// finishes that write rather than ignore it: the next Load or Update of M (in any process), and
// NewFileStore for every member, rename a whole .M.tmp (complete JSON of member M, synced
// again first) over the record and remove a torn one. No token is left on disk that the store
// will not read. Temporary files named .M.tmp-* (written by earlier versions of this package)
// are settled by NewFileStore: one that holds a newer record (by UpdatedAt) than M.json
// replaces it, any other is removed.
//
// A record that is not valid JSON, or that holds another member_id, makes Load and Update fail
// with an error naming the file, never with ErrNotInstalled.
//
// # Concurrency
//
// A FileStore is safe for concurrent use. Load takes no lock unless it finds an interrupted
// write to settle: a rename is atomic, so it reads a whole record. Save, Update and Delete of
// one member_id exclude each other within a process (an in-process lock per member_id) and, on
// Linux, the BSDs, macOS and illumos, across processes sharing the directory (flock(2) on
// M.lock, which works on local file systems; do not share the directory over NFS). Other
// systems, Windows included, get the in-process lock only: there, only one process may use a
// directory. Waiting for a lock honours the context. Members never wait for each other, and
// the cost of a Load or a write does not depend on the number of records in the directory.
//
// Delete removes M.lock too, safely for processes waiting for it: a process that obtains the
// lock of a lock file that has since been removed lets it go and locks the new one.
type FileStore struct {
	dir     string
	members memberLocks
}

// NewFileStore returns a FileStore keeping its records in dir, which it creates, with its
// missing parents, with mode 0700 if it does not exist. It reads the directory once, to settle
// the writes that a crash interrupted (see FileStore); a member whose lock another process
// holds is left to that process.
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
	s := &FileStore{dir: abs}
	if err := s.settleAll(); err != nil {
		return nil, fmt.Errorf("b24oauth: NewFileStore: %w", err)
	}
	return s, nil
}

// Dir returns the absolute path of the directory holding the records.
func (s *FileStore) Dir() string { return s.dir }

// Load returns the installation of memberID, or ErrNotInstalled when it has no record or is
// malformed (see ValidMemberID). If a write of memberID was interrupted by a crash, Load
// settles it first (see FileStore), waiting for the member's lock.
func (s *FileStore) Load(ctx context.Context, memberID string) (Installation, error) {
	if !ValidMemberID(memberID) {
		return Installation{}, errMalformedMember
	}
	if err := ctx.Err(); err != nil {
		return Installation{}, err
	}
	if err := s.settlePending(ctx, memberID); err != nil {
		return Installation{}, err
	}
	return s.read(memberID)
}

// Save inserts or replaces inst, keyed by inst.MemberID, which must be well formed (see
// ValidMemberID). It waits for a Save, Update or Delete of the same member_id in progress, in
// this process or another, to finish.
func (s *FileStore) Save(ctx context.Context, inst Installation) error {
	if !ValidMemberID(inst.MemberID) {
		return errSaveMalformedMember
	}
	return s.locked(ctx, inst.MemberID, func() (bool, error) {
		return false, s.write(inst)
	})
}

// Delete removes the installation of memberID, its lock file and any interrupted write of it;
// it returns nil when there is none, or when memberID is malformed. It waits for a Save,
// Update or Delete of the same member_id in progress to finish.
func (s *FileStore) Delete(ctx context.Context, memberID string) error {
	if !ValidMemberID(memberID) {
		return nil // nothing can be stored under it
	}
	return s.locked(ctx, memberID, func() (bool, error) { return s.remove(memberID) })
}

// locked runs f holding memberID's lock, once ctx has been checked before and after taking
// it. When f reports the record gone, the lock file goes too, removed while still locked (see
// lockFile), so that uninstalled portals leave nothing behind.
func (s *FileStore) locked(ctx context.Context, memberID string, f func() (gone bool, err error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return err
	}
	gone := false
	defer func() { unlock(gone) }()
	if err := ctx.Err(); err != nil {
		return err
	}
	gone, err = f()
	return err
}

// remove deletes the record of memberID and any interrupted write of it; gone reports that
// both are gone. The caller holds the member's lock.
func (s *FileStore) remove(memberID string) (gone bool, err error) {
	// The temporary file first: left behind, it would bring the record back.
	if err := removeIfExists(s.tempPath(memberID)); err != nil {
		return false, fmt.Errorf("b24oauth: file store: %w", err)
	}
	if err := removeIfExists(s.recordPath(memberID)); err != nil {
		return false, fmt.Errorf("b24oauth: file store: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return true, fmt.Errorf("b24oauth: file store: sync %s: %w", s.dir, err)
	}
	return true, nil
}

// readSettled settles an interrupted write of memberID, then reads its record. The caller
// holds the member's lock.
func (s *FileStore) readSettled(memberID string) (Installation, error) {
	if err := s.settle(memberID); err != nil {
		return Installation{}, err
	}
	return s.read(memberID)
}

// Create stores inst if its member_id (which must be well formed) has no record, and otherwise
// returns an error matching ErrAlreadyInstalled (see Creator). The check and the write hold
// the member's lock, in this process and across processes sharing the directory (see
// FileStore), like Update. A write of the member that a crash interrupted is settled first,
// so a record it holds counts as stored.
func (s *FileStore) Create(ctx context.Context, inst Installation) error {
	if !ValidMemberID(inst.MemberID) {
		return errSaveMalformedMember
	}
	return s.locked(ctx, inst.MemberID, func() (bool, error) {
		switch _, err := s.readSettled(inst.MemberID); {
		case err == nil:
			return false, ErrAlreadyInstalled
		case !errors.Is(err, ErrNotInstalled):
			return false, err // a corrupt record is not overwritten by a Create
		}
		return false, s.write(inst)
	})
}

// DeleteIf deletes the record of memberID (with its lock file and any interrupted write) if fn,
// called with it, returns nil (see ConditionalDeleter). fn runs with the member's lock held, as
// Update's does, and must not call the store for the same member_id.
func (s *FileStore) DeleteIf(ctx context.Context, memberID string, fn func(cur Installation) error) error {
	if !ValidMemberID(memberID) {
		return errMalformedMember
	}
	return s.locked(ctx, memberID, func() (bool, error) {
		cur, err := s.readSettled(memberID)
		if err != nil {
			return errors.Is(err, ErrNotInstalled), err // no record: its lock file goes too
		}
		if err := fn(cur); err != nil {
			return false, err
		}
		return s.remove(memberID)
	})
}

// Update calls fn with the installation of memberID and stores what fn returns, atomically:
// no Save, Update or Delete of the same member_id, in this process or another sharing the
// directory (see FileStore), runs in between. fn runs with the member's lock held and must not
// call the store for the same member_id.
//
// If fn returns an error, nothing is written and Update returns that error. Update of an
// absent or malformed member_id returns ErrNotInstalled without calling fn. fn must not change
// MemberID; if it does, nothing is written and Update returns an error. Once fn has returned a
// record, it is written even if ctx is cancelled meanwhile: fn may have spent a single-use
// refresh token to get it.
func (s *FileStore) Update(ctx context.Context, memberID string, fn func(cur Installation) (Installation, error)) error {
	if !ValidMemberID(memberID) {
		return errMalformedMember
	}
	return s.locked(ctx, memberID, func() (bool, error) {
		cur, err := s.readSettled(memberID)
		if err != nil {
			return false, err
		}
		next, err := fn(cur)
		if err != nil {
			return false, err
		}
		if next.MemberID != memberID {
			return false, fmt.Errorf("b24oauth: Update of member %q: fn changed MemberID to %q", memberID, next.MemberID)
		}
		return false, s.write(next)
	})
}

// List yields the member_id of every record in the directory (see Lister), reading the
// directory in batches, so its memory does not grow with the number of records. A write whose
// rename a crash interrupted is listed once NewFileStore, Load or Update has settled it.
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
				if !ok || !ValidMemberID(id) {
					continue
				}
				if err := ctx.Err(); err != nil {
					yield("", err)
					return
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
	recordExt = ".json"
	lockExt   = ".lock"
	tempExt   = ".tmp"
)

func (s *FileStore) recordPath(memberID string) string {
	return filepath.Join(s.dir, memberID+recordExt)
}

func (s *FileStore) lockPath(memberID string) string {
	return filepath.Join(s.dir, memberID+lockExt)
}

// tempPath is where a write of memberID stages the new record. Its leading dot keeps it apart
// from every record and lock file name, whose member_id part is hex digits.
func (s *FileStore) tempPath(memberID string) string {
	return filepath.Join(s.dir, "."+memberID+tempExt)
}

// lock takes memberID's in-process lock, then its file lock. The returned func releases both;
// with remove set it also deletes the lock file (Delete).
func (s *FileStore) lock(ctx context.Context, memberID string) (unlock func(remove bool), err error) {
	unlockMember, err := s.members.lock(ctx, memberID)
	if err != nil {
		return nil, err
	}
	fl, err := lockFile(ctx, s.lockPath(memberID), true)
	if err != nil {
		unlockMember()
		return nil, err
	}
	return func(remove bool) {
		fl.unlock(remove)
		unlockMember()
	}, nil
}

// tryLock is lock without waiting: ok is false if someone holds the lock.
func (s *FileStore) tryLock(memberID string) (unlock func(remove bool), ok bool, err error) {
	unlockMember, ok := s.members.tryLock(memberID)
	if !ok {
		return nil, false, nil
	}
	fl, err := lockFile(context.Background(), s.lockPath(memberID), false)
	if err != nil {
		unlockMember()
		if errors.Is(err, errLockBusy) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func(remove bool) {
		fl.unlock(remove)
		unlockMember()
	}, true, nil
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

// write replaces the record of inst.MemberID atomically and durably: stage, then commit.
func (s *FileStore) write(inst Installation) error {
	tmp, err := s.stage(inst)
	if err != nil {
		return err
	}
	if renamed, err := s.commit(inst.MemberID, tmp); err != nil {
		if !renamed {
			// The caller is told the write failed: it must not come back as a record.
			os.Remove(tmp)
		}
		return err
	}
	return nil
}

// stage writes inst to the member's temporary file, synced, replacing an older one (a new
// file, so that it has mode 0600 whatever the old one had). The caller holds the member's lock.
func (s *FileStore) stage(inst Installation) (path string, err error) {
	data, err := json.Marshal(inst)
	if err != nil {
		return "", fmt.Errorf("b24oauth: file store: encode member %q: %w", inst.MemberID, err)
	}
	path = s.tempPath(inst.MemberID)
	if err := removeIfExists(path); err != nil {
		return "", fmt.Errorf("b24oauth: file store: %w", err)
	}
	if err := writeSynced(path, append(data, '\n')); err != nil {
		// What the caller is told was not written must not come back as a record.
		os.Remove(path)
		return "", fmt.Errorf("b24oauth: file store: write member %q: %w", inst.MemberID, err)
	}
	return path, nil
}

// commit renames the synced temporary file tmp over the record of memberID and syncs the
// directory. renamed reports whether the rename happened (the record is then in place, even if
// the directory sync failed).
func (s *FileStore) commit(memberID, tmp string) (renamed bool, err error) {
	if err := os.Rename(tmp, s.recordPath(memberID)); err != nil {
		return false, fmt.Errorf("b24oauth: file store: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		// The record is in place; only its durability across a power loss is in doubt.
		return true, fmt.Errorf("b24oauth: file store: sync %s: %w", s.dir, err)
	}
	return true, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// settlePending settles an interrupted write of memberID if its temporary file exists: the
// usual case, none, costs one lstat.
func (s *FileStore) settlePending(ctx context.Context, memberID string) error {
	if _, err := os.Lstat(s.tempPath(memberID)); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("b24oauth: file store: %w", err)
	}
	unlock, err := s.lock(ctx, memberID)
	if err != nil {
		return err
	}
	err = s.settle(memberID)
	unlock(err == nil && !s.hasRecord(memberID))
	return err
}

// settle finishes the write of memberID that a crash interrupted, if there is one: a whole
// temporary file (see wholeRecord) is synced and renamed over the record; any other is
// removed. The caller holds the member's lock, so the file is no live writer's: every write
// holds the lock until its rename.
func (s *FileStore) settle(memberID string) error {
	tmp := s.tempPath(memberID)
	if _, whole, err := readTemp(tmp, memberID); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("b24oauth: file store: settle %s: %w", tmp, err)
	} else if !whole {
		return s.discard(tmp)
	}
	// A failed rename leaves the file for the next attempt: it may hold the only live pair.
	_, err := s.commit(memberID, tmp)
	return err
}

// discard removes a temporary file that holds no whole record.
func (s *FileStore) discard(path string) error {
	if err := removeIfExists(path); err != nil {
		return fmt.Errorf("b24oauth: file store: %w", err)
	}
	return nil
}

// readTemp reads a temporary file of memberID, syncing it if it holds a whole record, so that
// it is durable before it is renamed into place.
func readTemp(path, memberID string) (inst Installation, whole bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Installation{}, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return Installation{}, false, err
	}
	inst, whole = wholeRecord(memberID, data)
	if whole {
		if err := f.Sync(); err != nil {
			return Installation{}, false, err
		}
	}
	return inst, whole, nil
}

// wholeRecord decodes data as written by stage: the JSON of an installation of memberID and a
// final newline, which a torn write lacks (the JSON holds no raw newline).
func wholeRecord(memberID string, data []byte) (Installation, bool) {
	body, ok := bytes.CutSuffix(data, []byte("\n"))
	if !ok {
		return Installation{}, false
	}
	var inst Installation
	if err := json.Unmarshal(body, &inst); err != nil || inst.MemberID != memberID {
		return Installation{}, false
	}
	return inst, true
}

func (s *FileStore) hasRecord(memberID string) bool {
	_, err := os.Lstat(s.recordPath(memberID))
	return err == nil
}

// settleAll settles every interrupted write in the directory whose member's lock is free:
// .M.tmp as settle does, and the .M.tmp-* files of earlier versions, which carry no order of
// their own: one replaces the record only if it is whole and newer by UpdatedAt.
func (s *FileStore) settleAll() error {
	names, err := tempNames(s.dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		memberID, legacy, ok := parseTempName(name)
		if !ok {
			continue
		}
		unlock, ok, err := s.tryLock(memberID)
		if err != nil {
			return err
		}
		if !ok {
			continue // its holder settles it
		}
		if legacy {
			err = s.settleLegacy(memberID, filepath.Join(s.dir, name))
		} else {
			err = s.settle(memberID)
		}
		unlock(err == nil && !s.hasRecord(memberID))
		if err != nil {
			return err
		}
	}
	return nil
}

// tempNames returns the names in dir that start with a dot: temporary files, and whatever
// else is hidden there (parseTempName sorts them out). They are few, so they are collected
// before any is settled.
func tempNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var out []string
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			if strings.HasPrefix(n, ".") {
				out = append(out, n)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// parseTempName recognises .M.tmp (legacy false) and .M.tmp-* (legacy true) of a well-formed
// member_id M.
func parseTempName(name string) (memberID string, legacy, ok bool) {
	rest, ok := strings.CutPrefix(name, ".")
	if !ok || len(rest) < memberIDLen+len(tempExt) {
		return "", false, false
	}
	memberID, suffix := rest[:memberIDLen], rest[memberIDLen:]
	if !ValidMemberID(memberID) {
		return "", false, false
	}
	switch {
	case suffix == tempExt:
		return memberID, false, true
	case strings.HasPrefix(suffix, tempExt+"-"):
		return memberID, true, true
	}
	return "", false, false
}

// settleLegacy settles a .M.tmp-* file: it replaces the record if it is whole and newer by
// UpdatedAt (or there is no readable record), and is removed otherwise.
func (s *FileStore) settleLegacy(memberID, path string) error {
	inst, whole, err := readTemp(path, memberID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("b24oauth: file store: settle %s: %w", path, err)
	}
	if whole {
		cur, err := s.read(memberID)
		if err != nil || inst.UpdatedAt.After(cur.UpdatedAt) {
			_, err := s.commit(memberID, path)
			return err
		}
	}
	return s.discard(path)
}
