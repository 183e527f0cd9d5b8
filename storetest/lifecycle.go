package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// This file checks b24oauth.Creator and b24oauth.ConditionalDeleter. A store that implements
// them is checked in full, races included. A store that does not is checked through
// b24oauth.CreateInstallation and b24oauth.DeleteInstallationIf, whose fallbacks must work on
// it too, for what those fallbacks promise (their outcome, and Creates racing each other in one
// process); the races they do not close are skipped for it.

// raceRounds is how many times each race runs: enough for a store whose check and write are
// two steps to be caught nearly every time, few enough for a networked store.
const raceRounds = 30

// createFunc is a Create; deleteIfFunc is a DeleteIf.
type (
	createFunc   = func(ctx context.Context, inst b24oauth.Installation) error
	deleteIfFunc = func(ctx context.Context, memberID string, fn func(b24oauth.Installation) error) error
)

// creator returns st's Create, or CreateInstallation's fallback over st; atomic reports which.
func creator(st b24oauth.TokenStore) (create createFunc, atomic bool) {
	if c, ok := st.(b24oauth.Creator); ok {
		return c.Create, true
	}
	return func(ctx context.Context, inst b24oauth.Installation) error {
		return b24oauth.CreateInstallation(ctx, st, inst)
	}, false
}

// deleter returns st's DeleteIf, or DeleteInstallationIf's fallback over st; atomic reports
// which.
func deleter(st b24oauth.TokenStore) (deleteIf deleteIfFunc, atomic bool) {
	if d, ok := st.(b24oauth.ConditionalDeleter); ok {
		return d.DeleteIf, true
	}
	return func(ctx context.Context, memberID string, fn func(b24oauth.Installation) error) error {
		return b24oauth.DeleteInstallationIf(ctx, st, memberID, fn)
	}, false
}

// atomicDeleter returns st's DeleteIf, or skips the test if st is not a
// b24oauth.ConditionalDeleter.
func atomicDeleter(t *testing.T, st b24oauth.TokenStore) deleteIfFunc {
	t.Helper()
	deleteIf, ok := deleter(st)
	if !ok {
		t.Skipf("%T is not a b24oauth.ConditionalDeleter: DeleteInstallationIf's fallback leaves a window here", st)
	}
	return deleteIf
}

func checkAlreadyInstalled(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, b24oauth.ErrAlreadyInstalled) {
		t.Errorf("%s = %v; want an error matching ErrAlreadyInstalled", what, err)
	}
}

// create: Create stores a new record whole, refuses a stored one (active or revoked) without
// touching it, and works again once the record is deleted.
func (s *suite) create(t *testing.T) {
	st := s.newStore(t)
	create, _ := creator(st)
	ctx := context.Background()
	member := memberID(1)
	want := fullInstallation(member, 1) // StateActive
	if err := create(ctx, want); err != nil {
		t.Fatalf("Create of a new member: %v", err)
	}
	checkEqual(t, "Load after Create", want, mustLoad(t, st, member))
	checkAlreadyInstalled(t, "Create of a stored member", create(ctx, fullInstallation(member, 2)))
	checkEqual(t, "Load after a refused Create", want, mustLoad(t, st, member))

	revoked := fullInstallation(memberID(2), 2) // StateRevoked
	mustSave(t, st, revoked)
	checkAlreadyInstalled(t, "Create of a member stored as revoked", create(ctx, fullInstallation(memberID(2), 3)))
	checkEqual(t, "Load after a refused Create", revoked, mustLoad(t, st, memberID(2)))

	if err := st.Delete(ctx, member); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	again := fullInstallation(member, 3)
	if err := create(ctx, again); err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	checkEqual(t, "Load after Delete and Create", again, mustLoad(t, st, member))
}

// race runs fns at once (released together), raceRounds times with a fresh member each round;
// before each round, setup prepares the member, after it check looks at the outcome.
func race(t *testing.T, setup func(round int, member string), fns func(member string) []func() error, check func(member string, errs []error)) {
	t.Helper()
	for round := range raceRounds {
		member := memberID(100 + round)
		setup(round, member)
		todo := fns(member)
		errs := make([]error, len(todo))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, fn := range todo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = fn()
			}()
		}
		close(start)
		wg.Wait()
		check(member, errs)
		if t.Failed() {
			t.Fatalf("round %d of %d failed", round+1, raceRounds)
		}
	}
}

// createRace: of 8 concurrent Creates of one new member exactly one succeeds, the others get
// ErrAlreadyInstalled, and the record is the winner's.
func (s *suite) createRace(t *testing.T) {
	st := s.newStore(t)
	create, _ := creator(st)
	const n = 8
	race(t, func(int, string) {}, func(member string) []func() error {
		fns := make([]func() error, n)
		for i := range fns {
			fns[i] = func() error { return create(context.Background(), fullInstallation(member, i)) }
		}
		return fns
	}, func(member string, errs []error) {
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("Creates %d and %d of one new member both succeeded", winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, b24oauth.ErrAlreadyInstalled):
				t.Errorf("Create %d: %v; want nil or an error matching ErrAlreadyInstalled", i, err)
			}
		}
		if winner < 0 {
			t.Errorf("none of %d concurrent Creates of a new member succeeded", n)
			return
		}
		checkEqual(t, "Load after concurrent Creates", fullInstallation(member, winner), mustLoad(t, st, member))
	})
}

// createRacesDelete: a Create racing the Delete of a stored record succeeds exactly when it
// comes after the Delete, and then its record is stored; otherwise nothing is.
func (s *suite) createRacesDelete(t *testing.T) {
	st := s.newStore(t)
	create, _ := creator(st)
	ctx := context.Background()
	race(t, func(_ int, member string) { mustSave(t, st, fullInstallation(member, 1)) },
		func(member string) []func() error {
			return []func() error{
				func() error { return st.Delete(ctx, member) },
				func() error { return create(ctx, fullInstallation(member, 2)) },
			}
		}, func(member string, errs []error) {
			if errs[0] != nil {
				t.Fatalf("Delete: %v", errs[0])
			}
			got, err := st.Load(ctx, member)
			switch {
			case errs[1] == nil:
				if err != nil {
					t.Errorf("Create succeeded, then Load = %v; want its record", err)
				} else {
					checkEqual(t, "Load after a Create that followed a Delete", fullInstallation(member, 2), got)
				}
			case errors.Is(errs[1], b24oauth.ErrAlreadyInstalled):
				if !errors.Is(err, b24oauth.ErrNotInstalled) {
					t.Errorf("Create came before the Delete (ErrAlreadyInstalled), then Load = %v; want ErrNotInstalled", err)
				}
			default:
				t.Errorf("Create racing a Delete: %v", errs[1])
			}
		})
}

// createDuringUpdate: a Create of a stored member issued while an Update of it is inside fn
// refuses (it may do so at once, since the record exists whichever comes first), and the
// Update's write stands.
func (s *suite) createDuringUpdate(t *testing.T) {
	st := s.newStore(t)
	create, _ := creator(st)
	member := memberID(1)
	mustSave(t, st, counterInstallation(member))
	done := make(chan error, 1)
	err := st.Update(context.Background(), member, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		go func() { done <- create(context.Background(), fullInstallation(member, 2)) }()
		time.Sleep(10 * time.Millisecond) // an injected delay: the Create reaches the store
		return increment(cur)
	})
	if err != nil {
		t.Fatalf("Update overlapped by a Create: %v", err)
	}
	checkAlreadyInstalled(t, "Create of a member being updated", <-done)
	want := counterInstallation(member)
	want.ExpiresIn = 1
	checkEqual(t, "Load after a Create issued during an Update", want, mustLoad(t, st, member))
}

var errKeep = errors.New("storetest: DeleteIf's fn refused")

// deleteIf: DeleteIf of an absent member does not call fn; fn sees the stored record; its
// error keeps the record and comes back unchanged; nil deletes it, and the member can be
// stored again.
func (s *suite) deleteIf(t *testing.T) {
	st := s.newStore(t)
	deleteIf, _ := deleter(st)
	ctx := context.Background()
	member := memberID(1)
	called := 0
	err := deleteIf(ctx, member, func(b24oauth.Installation) error { called++; return nil })
	if !errors.Is(err, b24oauth.ErrNotInstalled) || called != 0 {
		t.Errorf("DeleteIf of an absent member = %v (fn called %d times); want ErrNotInstalled without calling fn", err, called)
	}

	saved := fullInstallation(member, 1)
	mustSave(t, st, saved)
	err = deleteIf(ctx, member, func(cur b24oauth.Installation) error {
		called++
		checkEqual(t, "DeleteIf's fn argument", saved, cur)
		return errKeep
	})
	if !errors.Is(err, errKeep) {
		t.Errorf("DeleteIf whose fn refused = %v; want fn's error", err)
	}
	checkEqual(t, "Load after a refused DeleteIf", saved, mustLoad(t, st, member))

	called = 0
	err = deleteIf(ctx, member, func(cur b24oauth.Installation) error {
		called++
		checkEqual(t, "DeleteIf's fn argument", saved, cur)
		return nil
	})
	if err != nil || called != 1 {
		t.Fatalf("DeleteIf whose fn accepted = %v (fn called %d times); want nil, fn called once", err, called)
	}
	checkAbsent(t, st, member)
	if l, ok := st.(b24oauth.Lister); ok {
		checkList(t, l, nil)
	}
	again := fullInstallation(member, 2)
	mustSave(t, st, again)
	checkEqual(t, "Load after DeleteIf and Save", again, mustLoad(t, st, member))
}

// deleteIfWaitsForUpdate: a DeleteIf issued while an Update is inside fn waits for it, and its
// fn sees what the Update wrote.
func (s *suite) deleteIfWaitsForUpdate(t *testing.T) {
	st := s.newStore(t)
	deleteIf, _ := deleter(st)
	member := memberID(1)
	waitsForUpdate(t, st, member, "DeleteIf", func() error {
		return deleteIf(context.Background(), member, func(cur b24oauth.Installation) error {
			if cur.ExpiresIn != 1 {
				return fmt.Errorf("DeleteIf's fn saw ExpiresIn %d; want 1, the Update's write", cur.ExpiresIn)
			}
			return nil
		})
	})
	checkAbsent(t, st, member)
}

type deleteIfRival struct {
	name string
	// run writes record 2 of member.
	run func(st b24oauth.TokenStore, create createFunc, member string) error
	// stays says, from run's error, whether record 2 must be stored at the end; an error it
	// returns is a failure of the store.
	stays func(err error) (bool, error)
	// refusesEarly: run may complete while DeleteIf's fn runs if it refuses
	// (ErrAlreadyInstalled): it is then ordered before the DeleteIf.
	refusesEarly bool
}

// deleteIfRivals are the writes that race a DeleteIf in deleteIfBlocks and deleteIfRace.
var deleteIfRivals = []deleteIfRival{
	{"Save", func(st b24oauth.TokenStore, _ createFunc, member string) error {
		return st.Save(context.Background(), fullInstallation(member, 2))
	}, func(err error) (bool, error) { return true, err }, false},
	{"Update", func(st b24oauth.TokenStore, _ createFunc, member string) error {
		return st.Update(context.Background(), member, func(b24oauth.Installation) (b24oauth.Installation, error) {
			return fullInstallation(member, 2), nil
		})
	}, func(err error) (bool, error) {
		if errors.Is(err, b24oauth.ErrNotInstalled) {
			return false, nil // it came after the delete
		}
		return true, err
	}, false},
	{"Create", func(_ b24oauth.TokenStore, create createFunc, member string) error {
		return create(context.Background(), fullInstallation(member, 2))
	}, func(err error) (bool, error) {
		if errors.Is(err, b24oauth.ErrAlreadyInstalled) {
			return false, nil // it came before the delete
		}
		return true, err
	}, true},
}

// keepIfChanged is the condition of an uninstall: delete record 1 of member, nothing else.
func keepIfChanged(member string) func(cur b24oauth.Installation) error {
	want := fullInstallation(member, 1).RefreshToken
	return func(cur b24oauth.Installation) error {
		if cur.RefreshToken != want {
			return errKeep
		}
		return nil
	}
}

// checkRivalOutcome checks the end of a DeleteIf of record 1 raced by a rival writing record 2.
func checkRivalOutcome(t *testing.T, st b24oauth.TokenStore, member, rival string, stays func(error) (bool, error), rivalErr, delErr error) {
	t.Helper()
	want, err := stays(rivalErr)
	if err != nil {
		t.Fatalf("%s racing a DeleteIf: %v", rival, err)
	}
	if delErr != nil && !errors.Is(delErr, errKeep) {
		t.Fatalf("DeleteIf raced by a %s: %v", rival, delErr)
	}
	got, err := st.Load(context.Background(), member)
	switch {
	case want && err != nil:
		t.Errorf("%s wrote a new record while a DeleteIf of the old one ran, and it is gone: Load = %v (DeleteIf: %v)", rival, err, delErr)
	case want:
		checkEqual(t, "Load after a DeleteIf raced by a "+rival, fullInstallation(member, 2), got)
	case !errors.Is(err, b24oauth.ErrNotInstalled):
		t.Errorf("%s came after the DeleteIf (%v), yet Load = %v; want ErrNotInstalled", rival, rivalErr, err)
	}
}

// deleteIfBlocks: a Save, Update or Create of the member issued while DeleteIf's fn runs does
// not complete before the DeleteIf (unless it is a Create that refuses), and what it writes is
// not deleted.
func (s *suite) deleteIfBlocks(t *testing.T) {
	s.eachRival(t, func(t *testing.T, st b24oauth.TokenStore, deleteIf deleteIfFunc, create createFunc, rival deleteIfRival) {
		member := memberID(1)
		mustSave(t, st, fullInstallation(member, 1))
		done := make(chan error, 1)
		check := keepIfChanged(member)
		delErr := deleteIf(context.Background(), member, func(cur b24oauth.Installation) error {
			go func() { done <- rival.run(st, create, member) }()
			select {
			case err := <-done:
				done <- err
				if !rival.refusesEarly || !errors.Is(err, b24oauth.ErrAlreadyInstalled) {
					t.Errorf("%s of the same member completed while DeleteIf's fn was running (err %v)", rival.name, err)
				}
			case <-time.After(50 * time.Millisecond):
			}
			return check(cur)
		})
		if delErr != nil {
			t.Fatalf("DeleteIf whose fn accepted: %v", delErr)
		}
		checkRivalOutcome(t, st, member, rival.name, rival.stays, <-done, delErr)
	})
}

// eachRival runs f as a subtest for each of deleteIfRivals, with a new store that must be a
// b24oauth.ConditionalDeleter (the subtest is skipped otherwise).
func (s *suite) eachRival(t *testing.T, f func(t *testing.T, st b24oauth.TokenStore, deleteIf deleteIfFunc, create createFunc, rival deleteIfRival)) {
	for _, rival := range deleteIfRivals {
		t.Run(rival.name, func(t *testing.T) {
			st := s.newStore(t)
			deleteIf := atomicDeleter(t, st)
			create, _ := creator(st)
			f(t, st, deleteIf, create, rival)
		})
	}
}

// deleteIfRace: DeleteIfs racing a Save, an Update or a Create of a new record, raceRounds
// times: the new record, once written, is never deleted. In half the rounds the two start
// together; in the other half the rival starts from inside DeleteIf's fn, so that it waits at
// the member's lock when the DeleteIf's own work ends: a store that checks and deletes in two
// steps lets it in between.
func (s *suite) deleteIfRace(t *testing.T) {
	s.eachRival(t, func(t *testing.T, st b24oauth.TokenStore, deleteIf deleteIfFunc, create createFunc, rival deleteIfRival) {
		for round := range raceRounds {
			member := memberID(100 + round)
			mustSave(t, st, fullInstallation(member, 1))
			check := keepIfChanged(member)
			fromFn := round%2 == 1
			var rivalErr, delErr error
			var wg sync.WaitGroup
			runRival := func() {
				defer wg.Done()
				rivalErr = rival.run(st, create, member)
			}
			start := make(chan struct{})
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				started := false
				delErr = deleteIf(context.Background(), member, func(cur b24oauth.Installation) error {
					if fromFn && !started {
						started = true
						go runRival()
						time.Sleep(time.Millisecond) // an injected delay: the rival reaches the lock
					}
					return check(cur)
				})
				if fromFn && !started {
					go runRival() // DeleteIf failed before calling fn: checkRivalOutcome reports it
				}
			}()
			if !fromFn {
				go func() { <-start; runRival() }()
			}
			close(start)
			wg.Wait()
			checkRivalOutcome(t, st, member, rival.name, rival.stays, rivalErr, delErr)
			if t.Failed() {
				t.Fatalf("round %d of %d failed", round+1, raceRounds)
			}
		}
	})
}
