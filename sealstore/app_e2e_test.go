package sealstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/sealstore"
)

// e2eApp is an App of the fake on store, logging into a buffer.
func e2eApp(t *testing.T, fake *b24test.Server, store b24oauth.TokenStore) (*b24oauth.App, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        store,
		HTTPClient:   fake.Client(),
		OAuthServers: []string{fake.OAuthOrigin()},
		Logger:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app, &logs
}

func callProfile(t *testing.T, app *b24oauth.App, memberID string) {
	t.Helper()
	client, err := app.ClientForMember(context.Background(), memberID)
	if err != nil {
		t.Fatalf("ClientForMember: %v", err)
	}
	if _, err := client.Call(context.Background(), "profile", nil); err != nil {
		t.Fatalf("profile: %v", err)
	}
}

// The whole life of a portal through an App whose FileStore is sealed: install, calls, a
// refresh written back, a key rotation, a process with the wrong key, uninstall. The tokens
// the fake issues never reach the directory in clear.
func TestAppOnSealedFileStore(t *testing.T) {
	ctx := context.Background()
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	portal := fake.AddPortal(b24test.PortalName("acme"))
	files := newFileStore(t)
	oldKey, newKey := testKey(1), testKey(2)
	app, logs := e2eApp(t, fake, newSealed(t, files, oldKey))

	var issued []string // every token the fake issued, none of which may be on disk
	note := func() {
		tok := portal.Tokens()
		issued = append(issued, tok.AccessToken, tok.RefreshToken, portal.ApplicationToken())
	}
	rawRecord := func() string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(files.Dir(), portal.MemberID()+".json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range issued {
			if strings.Contains(string(data), tok) {
				t.Errorf("the record file holds a token in clear: %s", data)
			}
		}
		return string(data)
	}

	if rec := portal.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("install event: %d %s", rec.Code, rec.Body)
	}
	note()
	if raw := rawRecord(); strings.Count(raw, "b24s1:"+sealstore.KeyID(oldKey)+":") != 3 {
		t.Errorf("record after install: want its three tokens sealed with the key: %s", raw)
	}
	callProfile(t, app, portal.MemberID())

	// A refresh: its new pair is written through the Store, sealed.
	portal.ExpireAccessToken()
	callProfile(t, app, portal.MemberID())
	if fake.Refreshes() != 1 {
		t.Fatalf("refreshes = %d; want 1", fake.Refreshes())
	}
	note()
	rawRecord()
	stored, err := newSealed(t, files, oldKey).Load(ctx, portal.MemberID())
	if err != nil {
		t.Fatal(err)
	}
	if stored.RefreshToken != portal.Tokens().RefreshToken {
		t.Errorf("stored refresh token is not the fake's current one")
	}

	// Rotation: another process with the new key first opens the old records, and its first
	// write (an update event) re-seals the record with the new key.
	rotated, _ := e2eApp(t, fake, newSealed(t, files, newKey, oldKey))
	callProfile(t, rotated, portal.MemberID())
	if rec := portal.UpdateEvent("2").Send(rotated.InstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("update event: %d %s", rec.Code, rec.Body)
	}
	note()
	if raw := rawRecord(); strings.Count(raw, "b24s1:"+sealstore.KeyID(newKey)+":") != 3 {
		t.Errorf("record after an update event on the rotated store: want it sealed with the new key: %s", raw)
	}

	// A process with neither key: ClientForMember fails with ErrUnseal, not ErrNotInstalled;
	// events for the portal are refused (the application_token cannot be checked) and change
	// nothing; its logs hold no token.
	before := rawRecord()
	wrong, wrongLogs := e2eApp(t, fake, newSealed(t, files, testKey(3)))
	_, err = wrong.ClientForMember(ctx, portal.MemberID())
	if !errors.Is(err, sealstore.ErrUnseal) || errors.Is(err, b24oauth.ErrNotInstalled) {
		t.Errorf("ClientForMember with the wrong key = %v; want ErrUnseal", err)
	}
	if rec := portal.UpdateEvent("3").Send(wrong.InstallHandler()); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("update event with the wrong key: %d %s; want 503", rec.Code, rec.Body)
	}
	if rec := portal.UninstallEvent(false).Send(wrong.UninstallHandler()); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("uninstall event with the wrong key: %d %s; want 503", rec.Code, rec.Body)
	}
	if after := rawRecord(); after != before {
		t.Errorf("a process with the wrong key changed the record")
	}
	for _, out := range []string{logs.String(), wrongLogs.String()} {
		for _, tok := range issued {
			if strings.Contains(out, tok) {
				t.Errorf("logs hold a token: %s", out)
			}
		}
	}
	if !strings.Contains(wrongLogs.String(), sealstore.KeyID(newKey)) {
		t.Errorf("the wrong-key process's logs do not name the key id the record needs:\n%s", wrongLogs)
	}

	// Uninstall through a process with the key removes the record.
	if rec := portal.UninstallEvent(false).Send(rotated.UninstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("uninstall event: %d %s", rec.Code, rec.Body)
	}
	if _, err := os.Stat(filepath.Join(files.Dir(), portal.MemberID()+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record after uninstall: %v; want it gone", err)
	}
}

// gatedPlainStore is a store of a user's without Create and DeleteIf; its next Delete, once
// armed, waits until released. writes counts the Updates that wrote.
type gatedPlainStore struct {
	b24oauth.TokenStore
	entered, release chan struct{} // set to arm the next Delete
	armed            atomic.Bool
	writes           atomic.Int64
}

func (s *gatedPlainStore) Delete(ctx context.Context, memberID string) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.TokenStore.Delete(ctx, memberID)
}

func (s *gatedPlainStore) Update(ctx context.Context, memberID string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	err := s.TokenStore.Update(ctx, memberID, fn)
	if err == nil {
		s.writes.Add(1)
	}
	return err
}

// An App on a sealed store of a user's (no Create, no DeleteIf of its own): sealstore's DeleteIf
// is then DeleteInstallationIf's check-then-delete over it. A reinstall that arrives while an
// uninstall stands between its check and its delete waits for the delete, and is stored: the
// uninstall never takes it with it.
func TestAppOnSealedPlainStoreKeepsAReinstall(t *testing.T) {
	ctx := context.Background()
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	portal := fake.AddPortal()
	inner := &gatedPlainStore{TokenStore: b24oauth.NewMemoryStore()}
	sealed := newSealed(t, inner, testKey(1))
	app, logs := e2eApp(t, fake, sealed)
	if rec := portal.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("install: %d %s", rec.Code, rec.Body)
	}
	uninstall, reinstall := portal.UninstallEvent(false), portal.InstallEvent()
	inner.entered, inner.release = make(chan struct{}), make(chan struct{})
	inner.armed.Store(true)
	uninstalled := make(chan int, 1)
	go func() { uninstalled <- uninstall.Send(app.UninstallHandler()).Code }()
	select {
	case <-inner.entered: // the uninstall's check passed; its Delete waits
	case <-time.After(10 * time.Second):
		t.Fatalf("the uninstall did not reach its delete\n%s", logs)
	}
	before := inner.writes.Load()
	reinstalled := make(chan int, 1)
	go func() { reinstalled <- reinstall.Send(app.InstallHandler()).Code }()
	select {
	case code := <-reinstalled:
		t.Errorf("the reinstall answered %d while the uninstall stood between its check and its delete", code)
		reinstalled <- code
	case <-time.After(500 * time.Millisecond):
	}
	if inner.writes.Load() != before {
		t.Error("the reinstall was written while the uninstall stood between its check and its delete")
	}
	close(inner.release)
	if code := <-uninstalled; code != http.StatusOK {
		t.Fatalf("uninstall answered %d, want 200\n%s", code, logs)
	}
	if code := <-reinstalled; code != http.StatusOK {
		t.Fatalf("reinstall answered %d\n%s", code, logs)
	}
	got, err := sealed.Load(ctx, portal.MemberID())
	if err != nil {
		t.Fatalf("the reinstall is gone: %v", err)
	}
	if got.ApplicationToken != portal.ApplicationToken() || got.RefreshToken != portal.Tokens().RefreshToken {
		t.Error("the stored installation is not the reinstall")
	}
}
