package b24oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/storetest"
)

func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore { return b24oauth.NewMemoryStore() })
}

func TestFileStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) b24oauth.TokenStore { return newFileStore(t, t.TempDir()) })
}

func newFileStore(t testing.TB, dir string) *b24oauth.FileStore {
	t.Helper()
	s, err := b24oauth.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nthMember returns the n-th made-up member_id, shaped like a real one (32 lowercase hex).
func nthMember(n int) string { return fmt.Sprintf("%032x", n) }

func testInstallation(member string, n int64) b24oauth.Installation {
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			MemberID:       member,
			AccessToken:    "access-" + strconv.FormatInt(n, 10),
			RefreshToken:   "refresh-" + strconv.FormatInt(n, 10),
			ExpiresIn:      n,
			Domain:         "example.bitrix24.com",
			ClientEndpoint: "https://example.bitrix24.com/rest/",
			ServerEndpoint: "https://oauth.bitrix.info/rest/",
		},
		State:     b24oauth.StateActive,
		UpdatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// dirNames lists the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Both stores lock per member: an Update's fn may use the store for another member (a slow
// refresh of one portal never holds up the others).
func TestStoresLockPerMember(t *testing.T) {
	for name, s := range map[string]b24oauth.TokenStore{
		"memory": b24oauth.NewMemoryStore(),
		"file":   newFileStore(t, t.TempDir()),
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a, b := testInstallation(nthMember(0xa), 1), testInstallation(nthMember(0xb), 1)
			for _, inst := range []b24oauth.Installation{a, b} {
				if err := s.Save(ctx, inst); err != nil {
					t.Fatal(err)
				}
			}
			// A deadline only so that a store holding one lock for all members fails instead
			// of hanging; a correct one never comes near it.
			inner, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := s.Update(ctx, a.MemberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				if err := s.Update(inner, b.MemberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
					cur.ExpiresIn = 20
					return cur, nil
				}); err != nil {
					return cur, fmt.Errorf("Update of member b inside fn of member a: %w", err)
				}
				cur.ExpiresIn = 10
				return cur, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]int64{a.MemberID: 10, b.MemberID: 20} {
				got, err := s.Load(ctx, id)
				if err != nil || got.ExpiresIn != want {
					t.Errorf("Load(%s) = ExpiresIn %d, %v; want %d", id, got.ExpiresIn, err, want)
				}
			}
		})
	}
}

// A waiter for a member's lock gives up when its context is done.
func TestStoresLockWaitHonoursContext(t *testing.T) {
	for name, s := range map[string]b24oauth.TokenStore{
		"memory": b24oauth.NewMemoryStore(),
		"file":   newFileStore(t, t.TempDir()),
	} {
		t.Run(name, func(t *testing.T) {
			bg := context.Background()
			if err := s.Save(bg, testInstallation(testMember, 1)); err != nil {
				t.Fatal(err)
			}
			// Inside fn the member is locked, so these must wait until their deadline.
			err := s.Update(bg, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				for op, call := range map[string]func(context.Context) error{
					"Save":   func(ctx context.Context) error { return s.Save(ctx, testInstallation(testMember, 2)) },
					"Delete": func(ctx context.Context) error { return s.Delete(ctx, testMember) },
					"Update": func(ctx context.Context) error {
						return s.Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
							return cur, errors.New("fn called while another Update held the member")
						})
					},
				} {
					ctx, cancel := context.WithTimeout(bg, 10*time.Millisecond)
					err := call(ctx)
					cancel()
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%s waiting for the member's lock = %v; want context.DeadlineExceeded", op, err)
					}
				}
				cur.ExpiresIn = 3
				return cur, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(bg, testMember); err != nil || got.ExpiresIn != 3 {
				t.Errorf("Load = ExpiresIn %d, %v; want 3", got.ExpiresIn, err)
			}
		})
	}
}

func TestFileStorePermissions(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
		t.Skip("no Unix permission bits")
	}
	ctx := context.Background()
	parent := t.TempDir()

	dir := filepath.Join(parent, "a", "store")
	s := newFileStore(t, dir)
	if s.Dir() != dir {
		t.Errorf("Dir() = %q; want %q", s.Dir(), dir)
	}
	if err := s.Save(ctx, testInstallation(testMember, 1)); err != nil {
		t.Fatal(err)
	}
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, testMember+".json"), 0o600)
	if err := s.Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil }); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(dir, testMember+".json"), 0o600)
	for _, name := range dirNames(t, dir) {
		checkMode(t, filepath.Join(dir, name), 0o600)
	}

	// An empty directory of ours is tightened.
	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	newFileStore(t, empty)
	checkMode(t, empty, 0o700)

	// One in use is left alone, and refused.
	used := filepath.Join(parent, "used")
	if err := os.Mkdir(used, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "other.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(used, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := b24oauth.NewFileStore(used); err == nil || !strings.Contains(err.Error(), used) {
		t.Errorf("NewFileStore of a non-empty directory with mode 0750 = %v; want an error naming it", err)
	}
	checkMode(t, used, 0o750)

	// A file is not a directory.
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b24oauth.NewFileStore(file); err == nil {
		t.Errorf("NewFileStore of a regular file succeeded")
	}
	if _, err := b24oauth.NewFileStore(""); err == nil {
		t.Errorf("NewFileStore(\"\") succeeded")
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o; want %#o", path, got, want)
	}
}

// A malformed member_id never reaches the file system: no path is read, created or removed,
// inside the directory or outside it (see storetest for the results of each method).
func TestFileStoreMalformedMemberIDsTouchNothing(t *testing.T) {
	ctx := context.Background()
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	s := newFileStore(t, dir)
	// What a traversal would reach: a record next to the directory, and the directory itself.
	victim := filepath.Join(parent, "victim.json")
	if err := os.WriteFile(victim, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := append(storetest.MalformedMemberIDs(), "../victim", "..", ".", "../store", "x.json", ".hidden")
	for _, id := range ids {
		if _, err := s.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%.40q) = %v; want ErrNotInstalled", id, err)
		}
		if err := s.Save(ctx, testInstallation(id, 1)); err == nil || errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Save(%.40q) = %v; want an error saying the member_id is malformed", id, err)
		}
		if err := s.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%.40q) = %v; want nil", id, err)
		}
		err := s.Update(ctx, id, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			t.Errorf("Update(%.40q) called fn", id)
			return cur, nil
		})
		if !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Update(%.40q) = %v; want ErrNotInstalled", id, err)
		}
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("store directory holds %q after operations on malformed member_ids; want nothing", names)
	}
	if names := dirNames(t, parent); !slices.Equal(names, []string{"store", "victim.json"}) {
		t.Errorf("parent directory holds %q; want the store and victim.json", names)
	}
}

func TestFileStoreCorruptRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	other, _ := json.Marshal(testInstallation(nthMember(0xe15e), 1))
	for name, content := range map[string][]byte{
		"empty":          nil,
		"not JSON":       []byte("{\"member_id\": \"" + testMember + "\", \"access_tok"),
		"wrong type":     []byte(`{"member_id": 42}`),
		"another member": other,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, testMember+".json")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			check := func(op string, err error) {
				t.Helper()
				if err == nil || errors.Is(err, b24oauth.ErrNotInstalled) || !strings.Contains(err.Error(), path) {
					t.Errorf("%s of a corrupt record = %v; want an error naming %s, not ErrNotInstalled", op, err, path)
				}
			}
			_, err := s.Load(ctx, testMember)
			check("Load", err)
			called := false
			check("Update", s.Update(ctx, testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				called = true
				return cur, nil
			}))
			if called {
				t.Errorf("Update of a corrupt record called fn")
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != string(content) {
				t.Errorf("corrupt record changed to %q, %v", got, err)
			}
			// Save repairs it.
			want := testInstallation(testMember, 2)
			if err := s.Save(ctx, want); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(ctx, testMember); err != nil || got.AccessToken != want.AccessToken {
				t.Errorf("Load after Save over a corrupt record = %v, %v", got.AccessToken, err)
			}
		})
	}
}

// While records are replaced, a reader of the file sees the old or the new JSON, whole; and
// no temporary file stays behind.
func TestFileStoreAtomicReplace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	path := filepath.Join(dir, testMember+".json")
	records := []b24oauth.Installation{testInstallation(testMember, 1), testInstallation(testMember, 2)}
	// Records of different sizes, so a mix of the two would show.
	records[1].Scope = strings.Repeat("crm,", 500)
	if err := s.Save(ctx, records[0]); err != nil {
		t.Fatal(err)
	}
	const saves = 40
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range saves {
			if err := s.Save(ctx, records[(i+1)%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reads := 0
	for stop := false; !stop; reads++ {
		select {
		case <-done:
			stop = true // one last read after the final Save
		default:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		var got b24oauth.Installation
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("read %d: torn record: %v", reads, err)
		}
		if !cmp.Equal(got, records[0]) && !cmp.Equal(got, records[1]) {
			t.Fatalf("read %d: a record that was never saved: %+v", reads, got)
		}
	}
	if names := dirNames(t, dir); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, ".") }) {
		t.Errorf("directory holds %q after the saves; want no temporary file", names)
	}
}

func TestFileStoreReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	want := testInstallation(testMember, 5)
	want.InstalledAt = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("MSK", 3*3600))
	if err := newFileStore(t, dir).Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := newFileStore(t, dir).Load(ctx, testMember)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load from a reopened store: mismatch (-want +got):\n%s", diff)
	}
}

func TestFileStoreListAndDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newFileStore(t, dir)
	a, b, c := nthMember(0xa), nthMember(0xb), nthMember(0xc)
	for _, id := range []string{a, b, c, testMember} {
		if err := s.Save(ctx, testInstallation(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(ctx, b, func(cur b24oauth.Installation) (b24oauth.Installation, error) { return cur, nil }); err != nil {
		t.Fatal(err)
	}
	// Files that are not records are not listed.
	for _, name := range []string{".ddd.tmp-1", "notes.txt", "UPPER0123456789abcdef0123456789ab.json", "short.json"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{b, c} {
		if err := s.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	for id, err := range s.List(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, id)
	}
	slices.Sort(listed)
	if want := []string{a, testMember}; !slices.Equal(listed, want) {
		t.Errorf("List = %q; want %q", listed, want)
	}
	// Delete leaves neither the record nor its lock file.
	for _, name := range dirNames(t, dir) {
		if strings.HasPrefix(name, b) || strings.HasPrefix(name, c) {
			t.Errorf("%s left behind by Delete", name)
		}
	}
	for _, id := range []string{b, c} {
		if _, err := s.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%s) after Delete = %v; want ErrNotInstalled", id, err)
		}
	}
}

// The environment variables that make TestFileStoreCrossProcessUpdate a child process.
const (
	helperEnvDir     = "B24OAUTH_TEST_FILESTORE_DIR"
	helperEnvUpdates = "B24OAUTH_TEST_FILESTORE_UPDATES"
)

// crossProcessChild runs the part of TestFileStoreCrossProcessUpdate done in a child process,
// and reports whether this process is one.
func crossProcessChild(t *testing.T) bool {
	dir := os.Getenv(helperEnvDir)
	if dir == "" {
		return false
	}
	n, err := strconv.Atoi(os.Getenv(helperEnvUpdates))
	if err != nil {
		t.Fatal(err)
	}
	incrementConcurrently(t, newFileStore(t, dir), n)
	return true
}

// incrementConcurrently increments testMember's ExpiresIn n times from each of two goroutines.
func incrementConcurrently(t *testing.T, s b24oauth.TokenStore, n int) {
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				err := s.Update(context.Background(), testMember, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
					cur.ExpiresIn++
					return cur, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Processes sharing a directory never lose an Update.
func TestFileStoreCrossProcessUpdate(t *testing.T) {
	if crossProcessChild(t) {
		return
	}
	switch runtime.GOOS {
	case "darwin", "dragonfly", "freebsd", "illumos", "linux", "netbsd", "openbsd":
	default:
		t.Skip("FileStore locks across processes only where flock(2) is available")
	}
	if testing.Short() {
		t.Skip("runs child processes")
	}
	const children, perGoroutine = 3, 12
	dir := t.TempDir()
	s := newFileStore(t, dir)
	if err := s.Save(context.Background(), testInstallation(testMember, 0)); err != nil {
		t.Fatal(err)
	}
	cmds := make([]*exec.Cmd, children)
	for i := range cmds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileStoreCrossProcessUpdate$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnvDir+"="+dir, helperEnvUpdates+"="+strconv.Itoa(perGoroutine))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("child %d output:\n%s", i, out.String())
			}
		})
	}
	// This process takes part too.
	incrementConcurrently(t, s, perGoroutine)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child %d: %v", i, err)
		}
	}
	got, err := s.Load(context.Background(), testMember)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64((children + 1) * 2 * perGoroutine); got.ExpiresIn != want {
		t.Errorf("counter after %d increments from %d processes = %d; lost updates", want, children+1, got.ExpiresIn)
	}
}

func BenchmarkMemoryStoreUpdate(b *testing.B) {
	storetest.BenchmarkUpdate(b, func(*testing.B) b24oauth.TokenStore { return b24oauth.NewMemoryStore() })
}

func BenchmarkFileStoreUpdate(b *testing.B) {
	storetest.BenchmarkUpdate(b, func(b *testing.B) b24oauth.TokenStore {
		s, err := b24oauth.NewFileStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}
