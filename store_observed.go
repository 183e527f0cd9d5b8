package b24oauth

import (
	"context"
	"errors"
	"iter"
	"time"
)

// The App's operations on its TokenStore, each reported to AppConfig.Observer. Without an
// Observer they are the store's own methods.

// storeLoad is Store.Load.
func (a *App) storeLoad(ctx context.Context, memberID string) (Installation, error) {
	o := a.cfg.Observer
	if o == nil {
		return a.cfg.Store.Load(ctx, memberID)
	}
	start := time.Now()
	inst, err := a.cfg.Store.Load(ctx, memberID)
	a.reportStoreOp(ctx, StoreLoad, memberID, start, err, nil)
	return inst, err
}

// storeUpdate is Store.Update.
func (a *App) storeUpdate(ctx context.Context, memberID string, fn func(Installation) (Installation, error)) error {
	o := a.cfg.Observer
	if o == nil {
		return a.cfg.Store.Update(ctx, memberID, fn)
	}
	var fnErr error // what fn returned last: an answer of the App's, not a failure of the store
	start := time.Now()
	err := a.cfg.Store.Update(ctx, memberID, func(inst Installation) (Installation, error) {
		next, err := fn(inst)
		fnErr = err
		return next, err
	})
	a.reportStoreOp(ctx, StoreUpdate, memberID, start, err, fnErr)
	return err
}

// storeDelete is Store.Delete.
func (a *App) storeDelete(ctx context.Context, memberID string) error {
	o := a.cfg.Observer
	if o == nil {
		return a.cfg.Store.Delete(ctx, memberID)
	}
	start := time.Now()
	err := a.cfg.Store.Delete(ctx, memberID)
	a.reportStoreOp(ctx, StoreDelete, memberID, start, err, nil)
	return err
}

// storeCreate is CreateInstallation on the App's store.
func (a *App) storeCreate(ctx context.Context, inst Installation) error {
	o := a.cfg.Observer
	if o == nil {
		return CreateInstallation(ctx, a.cfg.Store, inst)
	}
	start := time.Now()
	err := CreateInstallation(ctx, a.cfg.Store, inst)
	a.reportStoreOp(ctx, StoreCreate, inst.MemberID, start, err, nil)
	return err
}

// storeDeleteIf is DeleteInstallationIf on the App's store.
func (a *App) storeDeleteIf(ctx context.Context, memberID string, fn func(Installation) error) error {
	o := a.cfg.Observer
	if o == nil {
		return DeleteInstallationIf(ctx, a.cfg.Store, memberID, fn)
	}
	var fnErr error
	start := time.Now()
	err := DeleteInstallationIf(ctx, a.cfg.Store, memberID, func(inst Installation) error {
		fnErr = fn(inst)
		return fnErr
	})
	a.reportStoreOp(ctx, StoreDeleteIf, memberID, start, err, fnErr)
	return err
}

// storeList is Lister.List, reported once when the listing ends (its Duration is the whole
// listing's, the caller's work between entries included).
func (a *App) storeList(ctx context.Context, l Lister) iter.Seq2[string, error] {
	o := a.cfg.Observer
	if o == nil {
		return l.List(ctx)
	}
	return func(yield func(string, error) bool) {
		start := time.Now()
		var failed error
		for id, err := range l.List(ctx) {
			if err != nil {
				failed = err
			}
			if !yield(id, err) {
				break
			}
		}
		a.reportStoreOp(ctx, StoreList, "", start, failed, nil)
	}
}

// reportStoreOp tells the Observer of one store operation that returned err, fnErr being what
// the App's own function returned (the store did not fail when err is that answer).
func (a *App) reportStoreOp(ctx context.Context, op, memberID string, start time.Time, err, fnErr error) {
	if err != nil && (errors.Is(err, ErrNotInstalled) || errors.Is(err, ErrAlreadyInstalled) ||
		(fnErr != nil && errors.Is(err, fnErr))) {
		err = nil
	}
	a.cfg.Observer.StoreOp(ctx, StoreOpInfo{Op: op, MemberID: memberID, Duration: time.Since(start), Err: err})
}

// lifecycleUpdate is storeUpdate for the writes of an install or a connection. For a store
// that is no ConditionalDeleter, DeleteInstallationIf checks and deletes in two steps under a
// lock of this process: such a write holds the same lock, so that an uninstall's delete cannot
// remove a reinstall written between its check and its delete. It holds it whatever the App's
// store: a ConditionalDeleter may be a wrapper whose DeleteIf is that fallback over a plain
// store (sealstore over a store of a user's is), and the lock of this process is cheap next to
// an install's checks at the OAuth server.
func (a *App) lifecycleUpdate(ctx context.Context, memberID string, fn func(Installation) (Installation, error)) error {
	if !ValidMemberID(memberID) {
		return a.storeUpdate(ctx, memberID, fn)
	}
	unlock, err := fallbackLocks.lock(ctx, memberID)
	if err != nil {
		return err
	}
	defer unlock()
	return a.storeUpdate(ctx, memberID, fn)
}
