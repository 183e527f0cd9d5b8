// Package storetest is the conformance suite of b24oauth.TokenStore: every store in this
// repository passes it, and so should yours.
//
// Run it from a test of your store's package, giving it a function that returns a new, empty
// store isolated from every other store it returned (a fresh table, key prefix or directory):
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) b24oauth.TokenStore {
//			s, err := mystore.New(db, mystore.WithTable(uniqueTableName(t)))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { dropTable(t, s) })
//			return s
//		})
//	}
//
// Run checks the contract written on b24oauth.TokenStore, plus what it implies for a token
// store:
//   - every field of an Installation round-trips, the embedded OAuthParams included; times must
//     keep at least microsecond precision, their instant (not their location) is compared, and
//     the zero time must come back as the zero time (IsZero);
//   - Update calls fn exactly once per call (fn may spend a single-use refresh token, so a
//     store must lock, not retry fn optimistically) and no Save, Update or Delete of the same
//     member runs while fn does;
//   - a cancelled context makes every method fail with an error matching context.Canceled
//     (errors.Is) and change nothing;
//   - a malformed member_id (see MalformedMemberIDs) is the id of no portal: Load and Update of
//     one match b24oauth.ErrNotInstalled (Update without calling fn), Delete of one is nil, Save
//     of one fails with another error, and nothing is written;
//   - Create (b24oauth.Creator) stores a new record whole and refuses a stored one with
//     b24oauth.ErrAlreadyInstalled; of concurrent Creates of one member exactly one succeeds; a
//     Create racing a Delete succeeds exactly when it comes after it; a Create issued during an
//     Update refuses;
//   - DeleteIf (b24oauth.ConditionalDeleter) calls fn with the stored record, deletes only when
//     fn returns nil, and returns fn's error unchanged; it waits for an Update in progress, and
//     a Save, Update or Create issued while its fn runs waits for it and is never deleted, also
//     when the two race (30 rounds each, half of them with an injected delay);
//   - a store without Create or DeleteIf is checked through b24oauth.CreateInstallation and
//     b24oauth.DeleteInstallationIf, whose fallbacks must work on it, for what they promise
//     (the races they do not close are skipped);
//   - where the store is a b24oauth.Lister: List yields exactly the stored member_ids, once
//     each, after deletes too and while the loop body writes to the store; it ends with an
//     error matching context.Canceled once its context is cancelled, and a loop that breaks
//     early leaves nothing held (the store then passes 50 such loops and works on);
//   - the store, holding an installation, prints none of its tokens with any fmt verb or
//     through log/slog (a store keeping records in memory prints a summary instead).
//
// The suite is deterministic; its subtests run one after another, each with a store of its
// own, and take well under a second for an in-memory store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/redacttest"
)

// Run runs the TokenStore conformance suite as subtests of t. newStore is called once per
// subtest and must return a new, empty store that shares no records with the stores returned
// before; it may register cleanups with t.Cleanup and fail with t.Fatal.
func Run(t *testing.T, newStore func(t *testing.T) b24oauth.TokenStore) {
	t.Helper()
	checkFixtureComplete(t)
	s := &suite{newStore: newStore}
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"LoadAbsent", s.loadAbsent},
		{"SaveLoadRoundTrip", s.saveLoadRoundTrip},
		{"ZeroValuesRoundTrip", s.zeroValuesRoundTrip},
		{"SaveReplaces", s.saveReplaces},
		{"NoAliasing", s.noAliasing},
		{"Delete", s.delete},
		{"DeleteAbsent", s.deleteAbsent},
		{"MembersIsolated", s.membersIsolated},
		{"UpdateAbsent", s.updateAbsent},
		{"UpdatePersists", s.updatePersists},
		{"UpdateFnError", s.updateFnError},
		{"UpdateWritesAfterContextEndsInFn", s.updateWritesAfterContextEndsInFn},
		{"UpdateRefusesMemberIDChange", s.updateRefusesMemberIDChange},
		{"UpdateAtomic", s.updateAtomic},
		{"SaveWaitsForUpdate", s.saveWaitsForUpdate},
		{"DeleteWaitsForUpdate", s.deleteWaitsForUpdate},
		{"ManyMembersParallel", s.manyMembersParallel},
		{"CancelledContext", s.cancelledContext},
		{"MalformedMemberID", s.malformedMemberID},
		{"List", s.list},
		{"ListWhileWriting", s.listWhileWriting},
		{"ListCancelled", s.listCancelled},
		{"ListBreakEarly", s.listBreakEarly},
		{"PrintsNoToken", s.printsNoToken},
		{"Create", s.create},
		{"CreateRace", s.createRace},
		{"CreateRacesDelete", s.createRacesDelete},
		{"CreateDuringUpdate", s.createDuringUpdate},
		{"DeleteIf", s.deleteIf},
		{"DeleteIfWaitsForUpdate", s.deleteIfWaitsForUpdate},
		{"DeleteIfBlocksWriters", s.deleteIfBlocks},
		{"DeleteIfRace", s.deleteIfRace},
	} {
		t.Run(tc.name, tc.run)
	}
}

// printsNoToken: a store holding an installation, printed with any fmt verb or logged with
// log/slog, shows none of its tokens (a store that keeps records in memory must print a
// summary, as MemoryStore does).
func (s *suite) printsNoToken(t *testing.T) {
	ctx := context.Background()
	store := s.newStore(t)
	inst := fullInstallation(memberID(1), 1)
	if err := store.Save(ctx, inst); err != nil {
		t.Fatalf("Save: %v", err)
	}
	redacttest.AssertNoSecret(t, fmt.Sprintf("a %T holding an installation", store), store,
		inst.AccessToken, inst.RefreshToken, inst.ApplicationToken)
}

type suite struct {
	newStore func(t *testing.T) b24oauth.TokenStore
}

// memberID returns a member_id shaped like a real one (32 lowercase hex digits), distinct for
// each n.
func memberID(n int) string { return fmt.Sprintf("b24%029x", n) }

// timeEqual compares instants: a store may return times in another location (UTC, Local).
var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

// fullInstallation returns an installation with every field set to a value distinct from the
// same field of fullInstallation(member, v) for another v. Its times have microsecond
// precision and three different locations.
func fullInstallation(member string, v int) b24oauth.Installation {
	plus3 := time.FixedZone("UTC+3", 3*60*60)
	minus5 := time.FixedZone("UTC-5", -5*60*60)
	return b24oauth.Installation{
		OAuthParams: b24oauth.OAuthParams{
			ApplicationToken: fmt.Sprintf("application-token-%d", v),
			UserID:           int64(100 + v),
			MemberID:         member,
			AccessToken:      fmt.Sprintf("access-token-%d", v),
			RefreshToken:     fmt.Sprintf("refresh-token-%d", v),
			Expires:          int64(1_700_000_000 + v),
			ExpiresIn:        int64(3600 + v),
			Scope:            fmt.Sprintf("crm,user,task%d", v),
			Domain:           fmt.Sprintf("portal%d.bitrix24.com", v),
			ClientEndpoint:   fmt.Sprintf("https://portal%d.bitrix24.com/rest/", v),
			ServerEndpoint:   fmt.Sprintf("https://oauth%d.bitrix.info/rest/", v),
			Status:           []b24oauth.AppStatus{b24oauth.StatusPaid, b24oauth.StatusTrial}[v%2],
		},
		State:           []b24oauth.InstallationState{b24oauth.StateRevoked, b24oauth.StateActive}[v%2],
		Version:         fmt.Sprintf("%d", 3+v),
		LanguageID:      []string{"de", "en"}[v%2],
		InstalledAt:     time.Date(2024, 3, 1, 10, 20, 30, 123456000, plus3).Add(time.Duration(v) * time.Hour),
		UpdatedAt:       time.Date(2025, 6, 2, 11, 21, 31, 654321000, time.UTC).Add(time.Duration(v) * time.Hour),
		RefreshingSince: time.Date(2025, 6, 2, 11, 21, 30, 999999000, minus5).Add(time.Duration(v) * time.Hour),
	}
}

// checkFixtureComplete fails when fullInstallation leaves a field zero, which happens when a
// field is added to Installation or OAuthParams and not to the fixture: the round-trip test
// would then not cover it.
func checkFixtureComplete(t *testing.T) {
	t.Helper()
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for i := range v.NumField() {
			f, fv := v.Type().Field(i), v.Field(i)
			if f.Anonymous && fv.Kind() == reflect.Struct {
				walk(prefix+f.Name+".", fv)
				continue
			}
			if fv.IsZero() {
				t.Fatalf("storetest: the suite's fixture leaves %s%s zero: update fullInstallation", prefix, f.Name)
			}
		}
	}
	walk("Installation.", reflect.ValueOf(fullInstallation(memberID(0), 1)))
}

func mustSave(t *testing.T, s b24oauth.TokenStore, inst b24oauth.Installation) {
	t.Helper()
	if err := s.Save(context.Background(), inst); err != nil {
		t.Fatalf("Save(%s): %v", inst.MemberID, err)
	}
}

func mustLoad(t *testing.T, s b24oauth.TokenStore, member string) b24oauth.Installation {
	t.Helper()
	got, err := s.Load(context.Background(), member)
	if err != nil {
		t.Fatalf("Load(%s): %v", member, err)
	}
	return got
}

func checkEqual(t *testing.T, what string, want, got b24oauth.Installation) {
	t.Helper()
	if diff := cmp.Diff(want, got, timeEqual); diff != "" {
		t.Errorf("%s: mismatch (-want +got):\n%s", what, diff)
	}
}

func checkAbsent(t *testing.T, s b24oauth.TokenStore, member string) {
	t.Helper()
	got, err := s.Load(context.Background(), member)
	if !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Fatalf("Load(%s) = %v, %v; want an error matching ErrNotInstalled", member, got.MemberID, err)
	}
}

func (s *suite) loadAbsent(t *testing.T) {
	st := s.newStore(t)
	checkAbsent(t, st, memberID(1))
}

func (s *suite) saveLoadRoundTrip(t *testing.T) {
	st := s.newStore(t)
	want := fullInstallation(memberID(1), 1)
	mustSave(t, st, want)
	checkEqual(t, "Load after Save", want, mustLoad(t, st, want.MemberID))
}

func (s *suite) zeroValuesRoundTrip(t *testing.T) {
	st := s.newStore(t)
	want := b24oauth.Installation{OAuthParams: b24oauth.OAuthParams{MemberID: memberID(1)}}
	mustSave(t, st, want)
	got := mustLoad(t, st, want.MemberID)
	checkEqual(t, "Load after Save of an installation with only MemberID set", want, got)
	for name, tm := range map[string]time.Time{
		"InstalledAt": got.InstalledAt, "UpdatedAt": got.UpdatedAt, "RefreshingSince": got.RefreshingSince,
	} {
		if !tm.IsZero() {
			t.Errorf("%s = %v; a zero time must come back as the zero time", name, tm)
		}
	}
}

func (s *suite) saveReplaces(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	mustSave(t, st, fullInstallation(member, 1))
	want := fullInstallation(member, 2)
	mustSave(t, st, want)
	checkEqual(t, "Load after a second Save", want, mustLoad(t, st, member))

	// A replacement with fewer fields set must not be merged with the old record.
	sparse := b24oauth.Installation{OAuthParams: b24oauth.OAuthParams{MemberID: member, AccessToken: "only-this"}}
	mustSave(t, st, sparse)
	checkEqual(t, "Load after Save of a sparse record", sparse, mustLoad(t, st, member))
}

func (s *suite) noAliasing(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	inst := fullInstallation(member, 1)
	mustSave(t, st, inst)
	inst.AccessToken = "changed-after-save"
	got := mustLoad(t, st, member)
	got.RefreshToken = "changed-after-load"
	checkEqual(t, "Load after the caller changed its copies", fullInstallation(member, 1), mustLoad(t, st, member))
}

func (s *suite) delete(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	mustSave(t, st, fullInstallation(member, 1))
	if err := st.Delete(context.Background(), member); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkAbsent(t, st, member)
	called := false
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return cur, nil
	})
	if !errors.Is(err, b24oauth.ErrNotInstalled) || called {
		t.Errorf("Update after Delete = %v (fn called: %v); want ErrNotInstalled without calling fn", err, called)
	}
	// The member can be installed again.
	want := fullInstallation(member, 2)
	mustSave(t, st, want)
	checkEqual(t, "Load after Delete and Save", want, mustLoad(t, st, member))
}

func (s *suite) deleteAbsent(t *testing.T) {
	st := s.newStore(t)
	if err := st.Delete(context.Background(), memberID(1)); err != nil {
		t.Errorf("Delete of an absent member = %v; want nil", err)
	}
	mustSave(t, st, fullInstallation(memberID(2), 1))
	if err := st.Delete(context.Background(), memberID(2)); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := st.Delete(context.Background(), memberID(2)); err != nil {
		t.Errorf("second Delete = %v; want nil", err)
	}
}

func (s *suite) membersIsolated(t *testing.T) {
	st := s.newStore(t)
	a, b, c := fullInstallation(memberID(1), 1), fullInstallation(memberID(2), 2), fullInstallation(memberID(3), 3)
	mustSave(t, st, a)
	mustSave(t, st, b)
	mustSave(t, st, c)
	checkEqual(t, "Load(a)", a, mustLoad(t, st, a.MemberID))
	checkEqual(t, "Load(b)", b, mustLoad(t, st, b.MemberID))

	err := st.Update(context.Background(), a.MemberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken = "updated-a"
		return cur, nil
	})
	if err != nil {
		t.Fatalf("Update(a): %v", err)
	}
	if err := st.Delete(context.Background(), c.MemberID); err != nil {
		t.Fatalf("Delete(c): %v", err)
	}
	checkEqual(t, "Load(b) after Update(a) and Delete(c)", b, mustLoad(t, st, b.MemberID))
	checkAbsent(t, st, memberID(4))
	// A member_id that is a prefix or an extension of a stored one is a different member.
	checkAbsent(t, st, a.MemberID[:len(a.MemberID)-1])
	checkAbsent(t, st, a.MemberID+"0")
}

func (s *suite) updateAbsent(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	called := false
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		cur.MemberID = member
		return cur, nil
	})
	if !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Update of an absent member = %v; want an error matching ErrNotInstalled", err)
	}
	if called {
		t.Errorf("Update of an absent member called fn")
	}
	checkAbsent(t, st, member)
}

func (s *suite) updatePersists(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	saved := fullInstallation(member, 1)
	mustSave(t, st, saved)
	want := fullInstallation(member, 2)
	calls := 0
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		calls++
		checkEqual(t, "fn's argument", saved, cur)
		return want, nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if calls != 1 {
		t.Errorf("Update called fn %d times; want 1", calls)
	}
	checkEqual(t, "Load after Update", want, mustLoad(t, st, member))
}

func (s *suite) updateFnError(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	saved := fullInstallation(member, 1)
	mustSave(t, st, saved)
	errFn := errors.New("storetest: fn refused")
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.AccessToken = "must-not-be-stored"
		return cur, errFn
	})
	if !errors.Is(err, errFn) {
		t.Errorf("Update with a failing fn = %v; want fn's error", err)
	}
	checkEqual(t, "Load after a failed Update", saved, mustLoad(t, st, member))
}

// increment is an Update fn adding 1 to ExpiresIn, the counter of the concurrency tests.
// updateWritesAfterContextEndsInFn: once fn has returned a record, it is written even if the
// context ended while fn ran (fn may have spent a single-use refresh token to produce it).
func (s *suite) updateWritesAfterContextEndsInFn(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	mustSave(t, st, fullInstallation(member, 1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := st.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cancel()
		cur.RefreshToken = "rotated"
		return cur, nil
	})
	if err != nil {
		t.Fatalf("Update whose context ended while fn ran: %v; want the record written", err)
	}
	if got := mustLoad(t, st, member); got.RefreshToken != "rotated" {
		t.Errorf("RefreshToken = %q; want rotated", got.RefreshToken)
	}
}

// updateRefusesMemberIDChange: fn must not change MemberID; a store refuses such a record
// and writes nothing, under either member_id.
func (s *suite) updateRefusesMemberIDChange(t *testing.T) {
	st := s.newStore(t)
	m1, m2 := memberID(1), memberID(2)
	want := fullInstallation(m1, 1)
	mustSave(t, st, want)
	err := st.Update(context.Background(), m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		cur.MemberID = m2
		cur.AccessToken = "changed"
		return cur, nil
	})
	if err == nil {
		t.Fatal("an Update that changed MemberID succeeded")
	}
	checkEqual(t, "the record after a refused Update", want, mustLoad(t, st, m1))
	checkAbsent(t, st, m2)
}

func increment(cur b24oauth.Installation) (b24oauth.Installation, error) {
	cur.ExpiresIn++
	return cur, nil
}

func counterInstallation(member string) b24oauth.Installation {
	inst := fullInstallation(member, 1)
	inst.ExpiresIn = 0
	return inst
}

func (s *suite) updateAtomic(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	mustSave(t, st, counterInstallation(member))
	const n = 50
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		calls int
		errs  = make(chan error, n)
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				mu.Lock()
				calls++
				mu.Unlock()
				return increment(cur)
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	if calls != n {
		t.Errorf("%d Updates called fn %d times; want exactly once each", n, calls)
	}
	want := counterInstallation(member)
	want.ExpiresIn = n
	checkEqual(t, fmt.Sprintf("Load after %d concurrent increments", n), want, mustLoad(t, st, member))
}

// saveWaitsForUpdate starts a Save while an Update of the same member is inside fn. The Save
// must wait for the Update to finish, so it cannot complete while fn runs, and its record is
// what remains.
func (s *suite) saveWaitsForUpdate(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	replacement := fullInstallation(member, 2)
	waitsForUpdate(t, st, member, "Save", func() error { return st.Save(context.Background(), replacement) })
	checkEqual(t, "Load after a Save issued during an Update", replacement, mustLoad(t, st, member))
}

// deleteWaitsForUpdate starts a Delete while an Update of the same member is inside fn. The
// Delete must wait for the Update, whose write succeeds (fn may have spent a single-use refresh
// token to produce it), and then remove the record.
func (s *suite) deleteWaitsForUpdate(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	waitsForUpdate(t, st, member, "Delete", func() error { return st.Delete(context.Background(), member) })
	checkAbsent(t, st, member)
}

// waitsForUpdate saves member, then runs op while an Update of member is inside fn and checks
// that op completes only after the Update, which must succeed. A store that lets them
// interleave is caught when op completes within fn's grace period (a broken store is then
// caught nearly every time); a correct store passes whatever the timing.
func waitsForUpdate(t *testing.T, st b24oauth.TokenStore, member, op string, run func() error) {
	t.Helper()
	mustSave(t, st, counterInstallation(member))
	done := make(chan error, 1)
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		go func() { done <- run() }()
		select {
		case err := <-done:
			done <- err
			t.Errorf("%s of the same member completed while Update's fn was running (err %v)", op, err)
		case <-time.After(50 * time.Millisecond):
		}
		return increment(cur)
	})
	if err != nil {
		t.Fatalf("Update overlapped by a %s: %v; want its write to succeed", op, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func (s *suite) manyMembersParallel(t *testing.T) {
	st := s.newStore(t)
	const members, perMember = 8, 8
	for m := range members {
		mustSave(t, st, counterInstallation(memberID(m)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, members*perMember)
	for i := range members * perMember {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- st.Update(context.Background(), memberID(i%members), increment)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	for m := range members {
		want := counterInstallation(memberID(m))
		want.ExpiresIn = perMember
		checkEqual(t, fmt.Sprintf("member %d after %d increments", m, perMember), want, mustLoad(t, st, memberID(m)))
	}
}

func (s *suite) cancelledContext(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	saved := fullInstallation(member, 1)
	mustSave(t, st, saved)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v; want an error matching context.Canceled", op, err)
		}
	}
	_, err := st.Load(ctx, member)
	check("Load", err)
	_, err = st.Load(ctx, memberID(2))
	check("Load of an absent member", err)
	check("Save", st.Save(ctx, fullInstallation(member, 2)))
	check("Save of a new member", st.Save(ctx, fullInstallation(memberID(2), 2)))
	called := false
	check("Update", st.Update(ctx, member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		called = true
		return increment(cur)
	}))
	if called {
		t.Errorf("Update with a cancelled context called fn")
	}
	check("Delete", st.Delete(ctx, member))
	create, _ := creator(st)
	check("Create", create(ctx, fullInstallation(memberID(2), 2)))
	deleteIf, _ := deleter(st)
	check("DeleteIf", deleteIf(ctx, member, func(b24oauth.Installation) error {
		called = true
		return nil
	}))
	if called {
		t.Errorf("DeleteIf with a cancelled context called fn")
	}

	checkEqual(t, "Load after operations with a cancelled context", saved, mustLoad(t, st, member))
	checkAbsent(t, st, memberID(2))
}

// MalformedMemberIDs returns strings that b24oauth.ValidMemberID refuses, chosen to hurt a store
// (or a handler) that passes them on: empty, one digit short or long, upper case, path
// traversal, NUL and line breaks, a 1 MiB string, SQL and Redis metacharacters, glob patterns,
// Redis Cluster hash tags, non-ASCII digits. Use them in tests of your own code too.
func MalformedMemberIDs() []string {
	id := memberID(7) // well formed; most strings below are one change away from it
	return []string{
		"",
		"0",
		id[:31],
		id + "0",
		strings.ToUpper(id),
		"ABCDEF0123456789ABCDEF0123456789",
		id[:31] + "g",
		"../" + id[3:],
		"../../../../../../../../etc/passwd",
		"..",
		"/" + id[1:],
		id[:16] + "/" + id[17:],
		id[:16] + `\` + id[17:],
		id[:31] + "\x00",
		id + "\x00",
		id[:30] + "\r\n",
		" " + id[1:],
		id[:31] + " ",
		strings.Repeat("a", 1<<20),
		"' OR '1'='1",
		"'; DROP TABLE b24oauth_installations; --",
		id[:28] + "'--",
		"*",
		id[:31] + "*",
		id[:30] + "?",
		"[a-f]*",
		"{" + id[2:] + "}",
		id[:15] + "}{" + id[17:],
		"inst:{*}",
		"é" + id[2:],
		"\uff10" + id[3:], // a fullwidth digit zero, 3 bytes
	}
}

// short describes a possibly huge string for a failure message.
func short(s string) string {
	if len(s) <= 40 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:40]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

func (s *suite) malformedMemberID(t *testing.T) {
	st := s.newStore(t)
	ctx := context.Background()
	keep := fullInstallation(memberID(1), 1)
	mustSave(t, st, keep)
	create, _ := creator(st)
	deleteIf, _ := deleter(st)
	for _, id := range MalformedMemberIDs() {
		if _, err := st.Load(ctx, id); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Load(%s) = %v; want an error matching ErrNotInstalled", short(id), err)
		}
		called := false
		err := st.Update(ctx, id, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			called = true
			return cur, nil
		})
		if !errors.Is(err, b24oauth.ErrNotInstalled) || called {
			t.Errorf("Update(%s) = %v (fn called: %v); want an error matching ErrNotInstalled, without calling fn", short(id), err, called)
		}
		if err := st.Delete(ctx, id); err != nil {
			t.Errorf("Delete(%s) = %v; want nil", short(id), err)
		}
		if err := st.Save(ctx, fullInstallation(id, 2)); err == nil || errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Errorf("Save of an installation with member_id %s = %v; want an error that does not match ErrNotInstalled", short(id), err)
		}
		err = create(ctx, fullInstallation(id, 2))
		if err == nil || errors.Is(err, b24oauth.ErrNotInstalled) || errors.Is(err, b24oauth.ErrAlreadyInstalled) {
			t.Errorf("Create of an installation with member_id %s = %v; want an error matching neither ErrNotInstalled nor ErrAlreadyInstalled", short(id), err)
		}
		called = false
		err = deleteIf(ctx, id, func(b24oauth.Installation) error { called = true; return nil })
		if !errors.Is(err, b24oauth.ErrNotInstalled) || called {
			t.Errorf("DeleteIf(%s) = %v (fn called: %v); want an error matching ErrNotInstalled, without calling fn", short(id), err, called)
		}
	}
	checkEqual(t, "the stored installation after operations on malformed member_ids", keep, mustLoad(t, st, keep.MemberID))
	if l, ok := st.(b24oauth.Lister); ok {
		checkList(t, l, []string{keep.MemberID})
	}
}

// lister returns st as a b24oauth.Lister, or skips the test if it is not one.
func lister(t *testing.T, st b24oauth.TokenStore) b24oauth.Lister {
	t.Helper()
	l, ok := st.(b24oauth.Lister)
	if !ok {
		t.Skipf("%T is not a b24oauth.Lister", st)
	}
	return l
}

// listAll runs a whole List, failing the test on an error, and returns what it yielded.
func listAll(t *testing.T, l b24oauth.Lister) []string {
	t.Helper()
	// A deadline only so that a List that waits forever fails instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []string
	for id, err := range l.List(ctx) {
		if err != nil {
			t.Fatalf("List yielded an error after %d member_ids: %v", len(got), err)
		}
		got = append(got, id)
	}
	return got
}

// checkList checks that a whole List yields want, in any order, each once.
func checkList(t *testing.T, l b24oauth.Lister, want []string) {
	t.Helper()
	got := listAll(t, l)
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("List yielded %d member_ids, want %d:\n%s", len(got), len(want), cmp.Diff(want, got))
	}
}

func (s *suite) list(t *testing.T) {
	st := s.newStore(t)
	l := lister(t, st)
	ctx := context.Background()
	checkList(t, l, nil)
	var all, want []string
	for i := range 30 {
		mustSave(t, st, fullInstallation(memberID(i), i))
		all = append(all, memberID(i))
		if i%3 != 0 {
			want = append(want, memberID(i))
		}
	}
	checkList(t, l, all)
	for i := 0; i < 30; i += 3 {
		if err := st.Delete(ctx, memberID(i)); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	// Updates, replacing Saves and the Delete of an absent member change nothing listed.
	if err := st.Update(ctx, memberID(1), increment); err != nil {
		t.Fatalf("Update: %v", err)
	}
	mustSave(t, st, fullInstallation(memberID(2), 3))
	if err := st.Delete(ctx, memberID(100)); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkList(t, l, want)
	// Deleted and saved again: listed again, once.
	mustSave(t, st, fullInstallation(memberID(0), 1))
	checkList(t, l, append(want, memberID(0)))
}

// listWhileWriting: the loop body updates every listed record, deletes some records and saves
// new ones. Every record stored throughout is yielded exactly once; the deleted and the new
// ones at most once; nothing else.
func (s *suite) listWhileWriting(t *testing.T) {
	st := s.newStore(t)
	l := lister(t, st)
	const stay, gone, added = 20, 5, 5
	for i := range stay + gone {
		mustSave(t, st, counterInstallation(memberID(i)))
	}
	// A deadline only so that a store holding a lock while the loop body runs fails instead
	// of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seen := map[string]int{}
	first := true
	for id, err := range l.List(ctx) {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		seen[id]++
		if first {
			first = false
			for i := range gone {
				if err := st.Delete(ctx, memberID(stay+i)); err != nil {
					t.Fatalf("Delete inside the List loop: %v", err)
				}
			}
			for i := range added {
				if err := st.Save(ctx, counterInstallation(memberID(1000+i))); err != nil {
					t.Fatalf("Save inside the List loop: %v", err)
				}
			}
		}
		if err := st.Update(ctx, id, increment); err != nil && !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Fatalf("Update(%s) inside the List loop: %v", id, err)
		}
	}
	for i := range stay {
		if n := seen[memberID(i)]; n != 1 {
			t.Errorf("List yielded %s, stored throughout, %d times; want once", memberID(i), n)
		}
		delete(seen, memberID(i))
	}
	for i := range gone {
		delete(seen, memberID(stay+i))
	}
	for i := range added {
		delete(seen, memberID(1000+i))
	}
	for id, n := range seen {
		t.Errorf("List yielded %s (%d times), which was never stored", short(id), n)
	}
	// (Deleted and added ones may be yielded or not, but never twice.)
	counts := map[string]int{}
	for id, err := range l.List(ctx) {
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		counts[id]++
	}
	for id, n := range counts {
		if n != 1 {
			t.Errorf("List after the writes yielded %s %d times", id, n)
		}
	}
	if len(counts) != stay+added {
		t.Errorf("List after the writes yielded %d member_ids; want %d", len(counts), stay+added)
	}
}

func (s *suite) listCancelled(t *testing.T) {
	st := s.newStore(t)
	l := lister(t, st)
	for i := range 10 {
		mustSave(t, st, fullInstallation(memberID(i), i))
	}
	checkEnd := func(what string, ctx context.Context, cancelAfter int, cancel context.CancelFunc) {
		t.Helper()
		ids, errs := 0, 0
		for id, err := range l.List(ctx) {
			if err != nil {
				errs++
				if id != "" || !errors.Is(err, context.Canceled) {
					t.Errorf("%s: List yielded %s, %v; want an empty member_id and an error matching context.Canceled", what, short(id), err)
				}
				continue
			}
			if errs > 0 {
				t.Errorf("%s: List yielded %s after its error", what, id)
			}
			if ids++; ids == cancelAfter {
				cancel()
			} else if ids > cancelAfter {
				t.Errorf("%s: List yielded %s after its context was cancelled", what, id)
			}
		}
		if errs != 1 {
			t.Errorf("%s: List yielded %d errors; want 1", what, errs)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checkEnd("cancelled before the loop", ctx, 0, cancel)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	checkEnd("cancelled by the loop body", ctx, 3, cancel)
}

// listBreakEarly: loops that stop early, many more than a connection pool holds, leave the
// store working.
func (s *suite) listBreakEarly(t *testing.T) {
	st := s.newStore(t)
	l := lister(t, st)
	var want []string
	for i := range 5 {
		mustSave(t, st, fullInstallation(memberID(i), i))
		want = append(want, memberID(i))
	}
	// A deadline only so that a List that leaked a connection or a lock fails instead of
	// hanging.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 50 {
		n := 0
		for id, err := range l.List(ctx) {
			if err != nil {
				t.Fatalf("List %d: %v", i, err)
			}
			if !slices.Contains(want, id) {
				t.Fatalf("List %d yielded %s, which was never stored", i, short(id))
			}
			if n++; n == 1+i%3 {
				break
			}
		}
	}
	if err := st.Update(ctx, memberID(1), increment); err != nil {
		t.Fatalf("Update after the Lists that stopped early: %v", err)
	}
	mustSave(t, st, fullInstallation(memberID(5), 5))
	checkList(t, l, append(want, memberID(5)))
}
