package redisstore_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/redisstore"
)

// twoProcesses returns two Stores sharing one key prefix but nothing in memory, as two
// processes sharing the Redis would.
func twoProcesses(t *testing.T) (a, b *redisstore.Store) {
	t.Helper()
	client := testClient(t)
	prefix := newPrefix(t, client)
	a, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	b, err = redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// An uninstall that arrives while another process's Update of the portal is inside fn (a
// token refresh, say) waits for it: the Update writes what fn returned, and then the Delete
// removes it.
func TestDeleteWaitsForUpdate(t *testing.T) {
	a, b := twoProcesses(t)
	ctx := context.Background()
	mustSave(t, a, installation(m1))

	inFn, release := make(chan struct{}), make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		updated <- a.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
			close(inFn)
			<-release // the injected delay: fn holds the lock until the Delete is waiting
			cur.RefreshToken = "refreshed"
			return cur, nil
		})
	}()
	<-inFn
	waiting := make(chan struct{})
	var once sync.Once
	b.SetLockBusyHook(func(string) { once.Do(func() { close(waiting) }) })
	deleted := make(chan error, 1)
	go func() { deleted <- b.Delete(ctx, m1) }()
	select {
	case <-waiting:
	case err := <-deleted:
		deleted <- err
		t.Errorf("Delete returned (%v) while an Update of the member was inside fn; want it to wait", err)
	}
	close(release)
	if err := <-updated; err != nil {
		t.Errorf("Update overlapped by a Delete = %v; want its write to succeed", err)
	}
	if err := <-deleted; err != nil {
		t.Errorf("Delete = %v", err)
	}
	if _, err := a.Load(ctx, m1); !errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("Load after the Delete = %v; want ErrNotInstalled", err)
	}
}

// A Delete whose lock ran out before it deleted (its process stalled past the lease) removes
// nothing: the record another process wrote meanwhile, holding the lock, stays.
func TestDeleteAfterLostLockRemovesNothing(t *testing.T) {
	a, b := twoProcesses(t)
	ctx := context.Background()
	mustSave(t, a, installation(m1))
	reinstall := installation(m1)
	reinstall.RefreshToken = "reinstalled"
	a.SetDeleteLockedHook(func(string) {
		// The injected stall: the lease runs out (its key goes, as expiry would make it), and
		// the other process takes the lock and writes.
		if err := testClient(t).Del(ctx, a.LockKey(m1)).Err(); err != nil {
			t.Error(err)
		}
		if err := b.Save(ctx, reinstall); err != nil {
			t.Errorf("Save by the next holder: %v", err)
		}
	})
	if err := a.Delete(ctx, m1); !errors.Is(err, redisstore.ErrLockLost) {
		t.Errorf("Delete that lost its lock = %v; want ErrLockLost", err)
	}
	if got := mustLoad(t, a, m1); got.RefreshToken != "reinstalled" {
		t.Errorf("RefreshToken after the stale Delete = %q; want the record written after it lost the lock", got.RefreshToken)
	}
}

// Update and Delete of one portal from two processes, many rounds, fn taking a random while:
// whenever fn ran, its result is written (Update succeeds), and the portal always ends deleted.
func TestDeleteUpdateRace(t *testing.T) {
	a, b := twoProcesses(t)
	ctx := context.Background()
	const rounds = 60
	for round := range rounds {
		mustSave(t, a, installation(m1))
		var (
			wg     sync.WaitGroup
			fnRan  bool
			updErr error
			delErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			updErr = a.Update(ctx, m1, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
				fnRan = true
				time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
				cur.RefreshToken = "refreshed"
				return cur, nil
			})
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.N(1000)) * time.Microsecond)
			delErr = b.Delete(ctx, m1)
		}()
		wg.Wait()
		if delErr != nil {
			t.Fatalf("round %d: Delete = %v", round, delErr)
		}
		if fnRan && updErr != nil {
			t.Fatalf("round %d: Update whose fn ran = %v; a Delete must wait for it, not make it drop fn's result", round, updErr)
		}
		if !fnRan && !errors.Is(updErr, b24oauth.ErrNotInstalled) {
			t.Fatalf("round %d: Update after the Delete = %v; want ErrNotInstalled", round, updErr)
		}
		if _, err := a.Load(ctx, m1); !errors.Is(err, b24oauth.ErrNotInstalled) {
			t.Fatalf("round %d: Load after Update and Delete = %v; want ErrNotInstalled", round, err)
		}
	}
}
