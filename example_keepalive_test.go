package b24oauth_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// Idle portals are kept alive by a pass over the store: each portal whose pair is older than
// IdleFor is refreshed once, paced, through the store (replicas running it together refresh
// each portal once). A portal whose refresh token was refused is reported to OnRevoked: its
// administrator must reinstall the app. Run the ready loop next to the server:
//
//	go app.KeepAliveLoop(ctx, 24*time.Hour, b24oauth.KeepAliveOptions{}, func(r b24oauth.KeepAliveReport, err error) {
//		slog.Info("b24 keep-alive", "report", r.String(), "error", err)
//	})
func ExampleApp_KeepAlive() {
	fake := b24test.NewServer()
	defer fake.Close()
	dir, err := os.MkdirTemp("", "b24oauth-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := b24oauth.NewFileStore(dir) // FileStore, MemoryStore, pgstore and redisstore can list
	if err != nil {
		log.Fatal(err)
	}
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: store,
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnRevoked: func(ctx context.Context, inst b24oauth.Installation, err error) {
			fmt.Println("revoked:", inst.Domain, "- ask its administrator to reinstall the app")
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	for _, name := range []string{"north", "south", "gone"} {
		p := fake.AddPortal(b24test.PortalName(name))
		if rec := p.InstallEvent().Send(app.InstallHandler()); rec.Code != 200 {
			log.Fatal(rec.Body)
		}
	}
	fake.PortalByDomain("gone.example.com").RevokeTokens() // its refresh token no longer works

	// In production keep the default IdleFor (20 days); here every portal counts as idle.
	rep, err := app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{IdleFor: time.Nanosecond, Rate: 100})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("checked %d, refreshed %d, revoked %d, failed %d\n", rep.Checked, rep.Refreshed, rep.Revoked, rep.Failed)
	// Unordered output:
	// revoked: gone.example.com - ask its administrator to reinstall the app
	// checked 3, refreshed 2, revoked 1, failed 0
}
