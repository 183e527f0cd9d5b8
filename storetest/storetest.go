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
//     store must lock, not retry fn optimistically) and no Save or Update of the same member
//     runs while fn does;
//   - a cancelled context makes every method fail with an error matching context.Canceled
//     (errors.Is) and change nothing.
//
// The suite is deterministic; its subtests run one after another, each with a store of its
// own, and take well under a second for an in-memory store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/b24go/b24oauth"
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
		{"ManyMembersParallel", s.manyMembersParallel},
		{"CancelledContext", s.cancelledContext},
	} {
		t.Run(tc.name, tc.run)
	}
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
// what remains. A store that lets them interleave is caught when its Save completes within
// fn's grace period (a broken store is then caught nearly every time); a correct store passes
// whatever the timing.
func (s *suite) saveWaitsForUpdate(t *testing.T) {
	st := s.newStore(t)
	member := memberID(1)
	mustSave(t, st, counterInstallation(member))
	replacement := fullInstallation(member, 2)
	saveDone := make(chan error, 1)
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		go func() { saveDone <- st.Save(context.Background(), replacement) }()
		select {
		case err := <-saveDone:
			saveDone <- err
			t.Errorf("Save of the same member completed while Update's fn was running (err %v)", err)
		case <-time.After(50 * time.Millisecond):
		}
		return increment(cur)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := <-saveDone; err != nil {
		t.Fatalf("Save: %v", err)
	}
	checkEqual(t, "Load after a Save issued during an Update", replacement, mustLoad(t, st, member))
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

	checkEqual(t, "Load after operations with a cancelled context", saved, mustLoad(t, st, member))
	checkAbsent(t, st, memberID(2))
}
