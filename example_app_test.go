package b24oauth_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// An App mounted on a server: a portal installs the application, then business code gets a
// client for it with ClientForMember. Here the portal and its OAuth server are the b24test fake;
// in production leave HTTPClient and OAuthServers unset and use a durable store
// (NewFileStore, pgstore, redisstore).
func ExampleNewApp() {
	fake := b24test.NewServer()
	defer fake.Close()

	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        b24oauth.NewMemoryStore(),
		HTTPClient:   fake.Client(),                // trusts the fake's certificate
		OAuthServers: []string{fake.OAuthOrigin()}, // the fake's OAuth server
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnInstall: func(ctx context.Context, inst b24oauth.Installation) {
			fmt.Println("installed on", inst.Domain, "version", inst.Version)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()

	mux := http.NewServeMux()
	mux.Handle("POST /install", app.InstallHandler())
	mux.Handle("POST /uninstall", app.UninstallHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Bitrix24 sends ONAPPINSTALL to the install URL.
	portal := fake.AddPortal(b24test.PortalName("acme"))
	resp, err := portal.InstallEvent().Post(context.Background(), srv.URL+"/install")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("install event:", resp.Status)

	// Later, anywhere in the business code:
	client, err := app.ClientForMember(context.Background(), portal.MemberID())
	if err != nil {
		log.Fatal(err)
	}
	r, err := client.Call(context.Background(), "profile", nil)
	if err != nil {
		log.Fatal(err)
	}
	var profile struct {
		ID    string `json:"ID"`
		Admin bool   `json:"ADMIN"`
	}
	if err := r.Decode(&profile); err != nil {
		log.Fatal(err)
	}
	fmt.Println("profile: user", profile.ID, "admin", profile.Admin)
	// Output:
	// installed on acme.example.com version 1
	// install event: 200 OK
	// profile: user 1 admin true
}
