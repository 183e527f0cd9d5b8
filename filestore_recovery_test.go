package b24oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// crashedWrite leaves what a crash between a write's fsync and its rename leaves: the member's
// temporary file holding inst.
func crashedWrite(t *testing.T, s *b24oauth.FileStore, inst b24oauth.Installation) string {
	t.Helper()
	path, err := b24oauth.StageFileStoreWrite(s, inst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the staged write left no temporary file: %v", err)
	}
	return path
}

func checkExpiresIn(t *testing.T, s b24oauth.TokenStore, member string, want int64) {
	t.Helper()
	got, err := s.Load(context.Background(), member)
	if err != nil || got.ExpiresIn != want {
		t.Errorf("Load(%s) = ExpiresIn %d, %v; want %d", member, got.ExpiresIn, err, want)
	}
}

func checkNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	for _, name := range dirNames(t, dir) {
		if strings.HasPrefix(name, ".") {
			t.Errorf("%s is still in the directory", name)
		}
	}
}

// A write whose rename a crash prevented holds the newest pair (a refresh has spent the old
// refresh token): the store finishes it, whoever reads the member next.
func TestFileStoreFinishesInterruptedWrite(t *testing.T) {
	ctx := context.Background()
	// The crashed process restarts, or another process that had the directory open all along
	// reads the member.
	for name, reopen := range map[string]bool{"reopen": true, "load by another process": false} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, other := newFileStore(t, dir), newFileStore(t, dir)
			if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
				t.Fatal(err)
			}
			crashedWrite(t, s, testInstallation(testMember, 2))
			if reopen {
				other = newFileStore(t, dir)
				checkNoTempFiles(t, dir)
			}
			checkExpiresIn(t, other, testMember, 2)
			checkNoTempFiles(t, dir)
			// The record on disk is the finished write, whole.
			data, err := os.ReadFile(filepath.Join(dir, testMember+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var onDisk b24oauth.Installation
			if err := json.Unmarshal(data, &onDisk); err != nil || onDisk.RefreshToken != "refresh-2" {
				t.Errorf("record on disk = %q, %v; want the interrupted write's", data, err)
			}
		})
	}

	t.Run("update", func(t *testing.T) {
		dir := t.TempDir()
		s := newFileStore(t, dir)
		if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
			t.Fatal(err)
		}
		crashedWrite(t, s, testInstallation(testMember, 2))
		err := newFileStore(t, dir).Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			if cur.RefreshToken != "refresh-2" {
				t.Errorf("fn got refresh token %q; want the interrupted write's refresh-2", cur.RefreshToken)
			}
			cur.ExpiresIn = 3
			return cur, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		checkExpiresIn(t, s, testMember, 3)
		checkNoTempFiles(t, dir)
	})

	// A first install that crashed before its rename: there is no record, only the temporary
	// file. Reopening makes it a record, which List then yields.
	t.Run("first install", func(t *testing.T) {
		dir := t.TempDir()
		crashedWrite(t, newFileStore(t, dir), testInstallation(testMember, 1))
		s := newFileStore(t, dir)
		var listed []string
		for id, err := range s.List(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			listed = append(listed, id)
		}
		if !slices.Equal(listed, []string{testMember}) {
			t.Errorf("List after reopening = %q; want [%s]", listed, testMember)
		}
		checkExpiresIn(t, s, testMember, 1)
		checkNoTempFiles(t, dir)
	})
}

// A temporary file that holds no whole record of its member is a write torn by the crash
// (before its fsync): it is removed, and the record stays as it was.
func TestFileStoreDiscardsTornWrites(t *testing.T) {
	ctx := context.Background()
	whole, err := json.Marshal(testInstallation(testMember, 2))
	if err != nil {
		t.Fatal(err)
	}
	otherMember, _ := json.Marshal(testInstallation(nthMember(0xe15e), 2))
	torn := map[string][]byte{
		"empty":                  nil,
		"half":                   whole[:len(whole)/2],
		"no final newline":       whole,
		"zeros":                  make([]byte, len(whole)+1),
		"another member's":       append(otherMember, '\n'),
		"not an installation":    []byte("[1, 2, 3]\n"),
		"trailing garbage":       append(append(whole, '\n'), "{\"x\n"...),
		"json with a bad member": []byte(`{"member_id": 42}` + "\n"),
	}
	for name, content := range torn {
		for _, how := range []string{"reopen", "load", "update"} {
			t.Run(name+"/"+how, func(t *testing.T) {
				dir := t.TempDir()
				s := newFileStore(t, dir)
				if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(b24oauth.FileStoreTempPath(s, testMember), content, 0o600); err != nil {
					t.Fatal(err)
				}
				switch how {
				case "reopen":
					s = newFileStore(t, dir)
					checkNoTempFiles(t, dir)
				case "update":
					if err := s.Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
						if cur.ExpiresIn != 1 {
							t.Errorf("fn got ExpiresIn %d; want the record's 1", cur.ExpiresIn)
						}
						return cur, nil
					}); err != nil {
						t.Fatal(err)
					}
				}
				checkExpiresIn(t, s, testMember, 1)
				checkNoTempFiles(t, dir)
			})
		}
	}
}

// Delete removes an interrupted write with the record: it must not bring the portal back.
func TestFileStoreDeleteDropsInterruptedWrite(t *testing.T) {
	ctx := context.Background()
	for name, saved := range map[string]bool{"over a record": true, "of a first install": false} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := newFileStore(t, dir)
			if saved {
				if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
					t.Fatal(err)
				}
			}
			crashedWrite(t, s, testInstallation(testMember, 2))
			if err := s.Delete(ctx, testMember); err != nil {
				t.Fatal(err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("directory holds %q after Delete; want nothing", names)
			}
			for _, st := range []*b24oauth.FileStore{s, newFileStore(t, dir)} {
				if _, err := st.Load(ctx, testMember); !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("Load after Delete = %v; want ErrNotInstalled", err)
				}
			}
		})
	}
}

// Save replaces an interrupted write along with the record.
func TestFileStoreSaveOverInterruptedWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
		t.Fatal(err)
	}
	crashedWrite(t, s, testInstallation(testMember, 2))
	if err := s.Save(ctx, testInstallation(testMember, 3)); err != nil {
		t.Fatal(err)
	}
	checkNoTempFiles(t, dir)
	checkExpiresIn(t, s, testMember, 3)
	checkExpiresIn(t, newFileStore(t, dir), testMember, 3)
}

// Earlier versions named their temporary files .M.tmp-<random>, which carry no order: on
// opening, a whole one newer by UpdatedAt than the record replaces it, and every other is
// removed.
func TestFileStoreSettlesLegacyTempFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	stale, fresh, lone := nthMember(1), nthMember(2), nthMember(3)
	recordAt := func(member string, n int64, at time.Time) []byte {
		inst := testInstallation(member, n)
		inst.UpdatedAt = at
		data, err := json.Marshal(inst)
		if err != nil {
			t.Fatal(err)
		}
		return append(data, '\n')
	}
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, m := range []string{stale, fresh} {
		inst := testInstallation(m, 1)
		inst.UpdatedAt = t0
		if err := s.Save(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	leftovers := map[string][]byte{
		"." + stale + ".tmp-111": recordAt(stale, 2, t0.Add(-time.Hour)), // older than the record
		"." + stale + ".tmp-222": recordAt(stale, 3, t0),                 // as old as the record
		"." + fresh + ".tmp-333": recordAt(fresh, 4, t0.Add(time.Hour)),  // newer
		"." + fresh + ".tmp-444": recordAt(fresh, 5, t0.Add(time.Hour))[:40],
		"." + lone + ".tmp-555":  recordAt(lone, 6, t0), // no record at all
	}
	for name, data := range leftovers {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s = newFileStore(t, dir)
	checkNoTempFiles(t, dir)
	checkExpiresIn(t, s, stale, 1)
	checkExpiresIn(t, s, fresh, 4)
	checkExpiresIn(t, s, lone, 6)
}

// A write that fails leaves no temporary file behind: a pair the caller was told was not
// stored must not come back as a record.
func TestFileStoreFailedWriteLeavesNoToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	// A directory where the record should be makes the rename fail.
	if err := os.MkdirAll(filepath.Join(dir, testMember+".json", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, testInstallation(testMember, 1)); err == nil {
		t.Fatal("Save over a directory succeeded")
	}
	checkNoTempFiles(t, dir)
}
