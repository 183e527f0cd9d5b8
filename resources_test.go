package b24oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
)

// fdCount counts this process's file descriptors (Linux; -1 elsewhere).
func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// settle waits, up to a bound, until the goroutine count is at most want; it returns the count.
func settle(want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// profileServer is a loopback portal answering every REST call with a profile.
func profileServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"result":{"ID":"1","ADMIN":true},"time":{"start":1,"finish":1}}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Clients made and destroyed per request share the SDK's transport: goroutines and file
// descriptors come back to where they were, not 2 goroutines and 1 descriptor per client.
func TestClientsPerRequestDoNotLeak(t *testing.T) {
	srv := profileServer(t)
	params := b24oauth.OAuthParams{
		MemberID: randomHex(16), AccessToken: "a", RefreshToken: "r",
		Expires: time.Now().Add(time.Hour).Unix(), ClientEndpoint: srv.URL + "/rest/",
	}
	call := func() {
		c, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: "id", ClientSecret: "s"}, b24oauth.WithInsecureHTTP())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(context.Background(), "profile", nil); err != nil {
			t.Fatal(err)
		}
		c.Destroy()
	}
	call() // the shared transport's first connection
	baseG, baseF := settle(runtime.NumGoroutine()), fdCount()
	for range 200 {
		call()
	}
	if g := settle(baseG + 10); g > baseG+10 {
		t.Errorf("goroutines: %d before, %d after 200 clients", baseG, g)
	}
	if f := fdCount(); baseF >= 0 && f > baseF+10 {
		t.Errorf("file descriptors: %d before, %d after 200 clients", baseF, f)
	}
}

// An App built without an HTTPClient owns its transport, and Close gives its connections back.
func TestAppCloseReleasesConnections(t *testing.T) {
	srv := profileServer(t)
	baseG, baseF := settle(runtime.NumGoroutine()), fdCount()
	for range 50 {
		store := b24oauth.NewMemoryStore()
		inst := b24oauth.Installation{State: b24oauth.StateActive, OAuthParams: b24oauth.OAuthParams{
			MemberID: randomHex(16), AccessToken: "a", RefreshToken: "r",
			Expires: time.Now().Add(time.Hour).Unix(), ClientEndpoint: srv.URL + "/rest/",
		}}
		if err := store.Save(context.Background(), inst); err != nil {
			t.Fatal(err)
		}
		a, err := b24oauth.NewApp(b24oauth.AppConfig{ClientID: "id", ClientSecret: "s", Store: store, InsecureHTTP: true})
		if err != nil {
			t.Fatal(err)
		}
		c, err := a.ClientForMember(context.Background(), inst.MemberID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(context.Background(), "profile", nil); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if g := settle(baseG + 10); g > baseG+10 {
		t.Errorf("goroutines: %d before, %d after 50 Apps closed", baseG, g)
	}
	if f := fdCount(); baseF >= 0 && f > baseF+10 {
		t.Errorf("file descriptors: %d before, %d after 50 Apps closed", baseF, f)
	}
}
