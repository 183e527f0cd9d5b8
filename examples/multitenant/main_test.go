package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := runDemo(context.Background(), &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"events bound: ONCRMDEALUPDATE (offline), ONCRMDEALADD, ONOFFLINEEVENT",
		`handler: new deal "Big deal" on acme.example.com (delivered to /events)`,
		`handler: deal changed "Bigger deal" on acme.example.com (pulled from the offline queue)`,
		"pulled 1 event(s); left in the queue: 0",
		"refreshes seen by Bitrix24: 1; stored pair is the current one: true", "-> 404",
		"/oauth/callback -> 200 connected globex.example.com", "Done:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestProfileStatuses(t *testing.T) {
	fake := b24test.NewServer()
	t.Cleanup(fake.Close)
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: b24oauth.NewMemoryStore(),
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := newStates(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newMux(app, st, nil))
	t.Cleanup(srv.Close)
	p := fake.AddPortal()
	if rec := p.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		t.Fatalf("install: %d %s", rec.Code, rec.Body)
	}
	status := func(member string) int {
		resp, err := http.Get(srv.URL + "/portal/" + member + "/profile")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(p.MemberID()); got != http.StatusOK {
		t.Errorf("installed portal: %d", got)
	}
	if got := status("0123456789abcdef0123456789abcdef"); got != http.StatusNotFound {
		t.Errorf("unknown portal: %d", got)
	}
	p.ExpireAccessToken()
	p.ExpireRefreshToken()
	if got := status(p.MemberID()); got != http.StatusBadGateway {
		t.Errorf("refresh refused during the call: %d, want 502", got)
	}
	if got := status(p.MemberID()); got != http.StatusConflict {
		t.Errorf("revoked portal: %d, want 409", got)
	}
	resp, err := http.Post(srv.URL+"/install", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("bad install: %d", resp.StatusCode)
	}
}
