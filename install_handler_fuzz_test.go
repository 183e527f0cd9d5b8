package b24oauth_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// checkingStore is a MemoryStore that checks every installation written to it and counts the
// writes.
type checkingStore struct {
	*b24oauth.MemoryStore
	fake *b24test.Server

	mu       sync.Mutex
	writes   int
	problems []string
}

var (
	validMemberID = regexp.MustCompile(`^[0-9a-f]{32}$`)
	validAppToken = regexp.MustCompile(`^([0-9A-Fa-f]{32})?$`)
	validDomain   = regexp.MustCompile(`^[a-z0-9.-]{1,253}(:[1-9][0-9]{0,4})?$`)
)

func (s *checkingStore) check(inst b24oauth.Installation) {
	var problems []string
	if !validMemberID.MatchString(inst.MemberID) {
		problems = append(problems, fmt.Sprintf("invalid member_id %q stored", inst.MemberID))
	}
	if !validAppToken.MatchString(inst.ApplicationToken) {
		problems = append(problems, "invalid application_token stored")
	}
	if !validDomain.MatchString(inst.Domain) || s.fake.PortalByDomain(inst.Domain) == nil {
		problems = append(problems, fmt.Sprintf("domain %q stored: not a portal of the fake", inst.Domain))
	}
	if u, err := url.Parse(inst.ServerEndpoint); err != nil || u.Scheme+"://"+u.Host != s.fake.OAuthOrigin() {
		problems = append(problems, fmt.Sprintf("untrusted server_endpoint %q stored", inst.ServerEndpoint))
	}
	if want := "https://" + inst.Domain + "/rest/"; inst.ClientEndpoint != want {
		problems = append(problems, fmt.Sprintf("client_endpoint %q stored for domain %q", inst.ClientEndpoint, inst.Domain))
	}
	secret := b24oauth.OAuthSecret{ClientID: s.fake.ClientID(), ClientSecret: s.fake.ClientSecret()}
	if _, err := b24oauth.New(inst.OAuthParams, secret, fakeOptions(s.fake)...); err != nil {
		problems = append(problems, fmt.Sprintf("stored installation builds no client: %v", err))
	}
	s.mu.Lock()
	s.writes++
	s.problems = append(s.problems, problems...)
	s.mu.Unlock()
}

// Save checks inst if the store took it: a store refuses a malformed member_id by itself.
func (s *checkingStore) Save(ctx context.Context, inst b24oauth.Installation) error {
	if err := s.MemoryStore.Save(ctx, inst); err != nil {
		return err
	}
	s.check(inst)
	return nil
}

func (s *checkingStore) Update(ctx context.Context, memberID string, fn func(b24oauth.Installation) (b24oauth.Installation, error)) error {
	return s.MemoryStore.Update(ctx, memberID, func(cur b24oauth.Installation) (b24oauth.Installation, error) {
		next, err := fn(cur)
		if err == nil {
			s.check(next)
		}
		return next, err
	})
}

func (s *checkingStore) state() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.problems
	s.problems = nil
	return s.writes, p
}

// FuzzLifecycleHandlers sends arbitrary form bodies and query strings to the install and
// uninstall handlers of an App that knows two portals. The handlers must not panic, must answer
// 200 or an error status, must write nothing when they reject a request, and must never store
// an installation with an invalid member_id or application_token, a domain that is not a real
// portal's, an untrusted OAuth server, a client endpoint not on its domain, or one New refuses;
// the known portal is never uninstalled but by its genuine event.
func FuzzLifecycleHandlers(f *testing.F) {
	fake := newFake(f)
	store := &checkingStore{MemoryStore: b24oauth.NewMemoryStore(), fake: fake}
	cfg := appConfig(fake, store)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := b24oauth.NewApp(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	// Generous bounds: the fuzzer sends thousands of events a second on purpose.
	b24oauth.SetVerifyLimits(a, 1<<20, time.Nanosecond, 1e6)
	install, uninstall := a.InstallHandler(), a.UninstallHandler()

	known, stranger, leaving := fake.AddPortal(), fake.AddPortal(), fake.AddPortal()
	for _, p := range []*b24test.Portal{known, leaving} {
		if rec := p.InstallEvent().Send(install); rec.Code != http.StatusOK {
			f.Fatalf("installing a portal: %d %s", rec.Code, rec.Body)
		}
	}
	add := func(u bool, ev b24test.Event) { f.Add(u, ev.Query.Encode(), ev.Form.Encode()) }
	add(false, known.InstallEvent())
	add(false, known.UpdateEvent("2"))
	add(false, known.InstallPage())
	add(false, known.OpenPage(known.AddUser(false)))
	add(false, stranger.InstallEvent())
	add(false, stranger.InstallPage())
	add(false, stranger.InstallEventAs(stranger.AddUser(false)))
	forged := known.InstallEvent()
	forged.Form.Set("auth[application_token]", strings.Repeat("0", 32))
	add(false, forged)
	other := forged
	other.Form = url.Values{}
	for k, v := range forged.Form {
		other.Form[k] = v
	}
	other.Form.Set("auth[refresh_token]", stranger.Tokens().RefreshToken)
	add(false, other)
	add(true, uninstallEvent(fake, known, known.ApplicationToken(), true)) // forged: known's tokens work
	add(true, uninstallEvent(fake, known, strings.Repeat("0", 32), false))
	add(true, leaving.UninstallEvent(true))
	f.Add(false, "DOMAIN=x.example.com&PROTOCOL=1", "AUTH_ID=a&REFRESH_ID=b&member_id=0123456789abcdef&AUTH_EXPIRES=1")
	f.Add(false, "", "event=ONAPPINSTALL&auth[member_id]=..%2Fx")
	f.Add(true, "", "event=ONAPPUNINSTALL&auth[member_id]=..%2Fx&auth[application_token]=1")
	f.Add(false, "%zz", "")

	f.Fuzz(func(t *testing.T, toUninstall bool, query, body string) {
		writes, _ := store.state()
		h, path := install, "/install"
		if toUninstall {
			h, path = uninstall, "/uninstall"
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Content-Type", formType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		after, problems := store.state()
		for _, p := range problems {
			t.Error(p)
		}
		if _, err := store.MemoryStore.Load(context.Background(), known.MemberID()); err != nil {
			t.Fatalf("the known portal's installation is gone: %v", err)
		}
		switch code := rec.Code; {
		case code == http.StatusOK:
		case code >= 400 && code < 600:
			if after != writes {
				t.Errorf("status %d, but the store saw %d writes", code, after-writes)
			}
		default:
			t.Errorf("status %d, want 200, 4xx or 5xx", code)
		}
	})
}
