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

// An App that binds ONCRMDEALADD on every portal that installs it and reads each new deal with
// the portal's client. The b24test fake delivers the event over HTTP when a deal is added, as
// Bitrix24 would: test your own event handlers the same way.
func ExampleApp_EventHandler() {
	fake := b24test.NewServer()
	defer fake.Close()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux) // the app's public URL
	defer srv.Close()

	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        b24oauth.NewMemoryStore(),
		HTTPClient:   fake.Client(),
		OAuthServers: []string{fake.OAuthOrigin()},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Events:       []b24oauth.EventBinding{{Event: "ONCRMDEALADD", Handler: srv.URL + "/events"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()

	titles := make(chan string, 1)
	mux.Handle("POST /install", app.InstallHandler())
	mux.Handle("POST /events", app.EventHandler(func(ctx context.Context, ev b24oauth.Event, client *b24oauth.B24OAuth) error {
		var data struct{ FIELDS struct{ ID string } }
		if err := ev.Decode(&data); err != nil {
			return err
		}
		r, err := client.Call(ctx, "crm.deal.get", map[string]any{"id": data.FIELDS.ID})
		if err != nil {
			return err
		}
		var deal struct{ TITLE string }
		if err := r.Decode(&deal); err != nil {
			return err
		}
		titles <- ev.Name + ": " + deal.TITLE
		return nil
	}))

	portal := fake.AddPortal()
	resp, err := portal.InstallEvent().Post(context.Background(), srv.URL+"/install") // binds ONCRMDEALADD
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	portal.AddDeal(1, map[string]string{"TITLE": "Big deal"}) // a user adds a deal in the portal
	fmt.Println(<-titles)
	// Output: ONCRMDEALADD: Big deal
}

// Offline events wait in the portal's queue until the app takes them: PullOfflineEvents hands
// each to fn and clears only the ones fn accepted.
func ExampleApp_PullOfflineEvents() {
	fake := b24test.NewServer()
	defer fake.Close()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID:     fake.ClientID(),
		ClientSecret: fake.ClientSecret(),
		Store:        b24oauth.NewMemoryStore(),
		HTTPClient:   fake.Client(),
		OAuthServers: []string{fake.OAuthOrigin()},
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Events:       []b24oauth.EventBinding{{Event: "ONCRMDEALUPDATE"}}, // no Handler: offline
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	portal := fake.AddPortal()
	if rec := portal.InstallEvent().Send(app.InstallHandler()); rec.Code != http.StatusOK {
		log.Fatal(rec.Body.String())
	}
	portal.SeedDeals(2)
	portal.UpdateDeal(1, 1, map[string]string{"STAGE_ID": "WON"})
	portal.UpdateDeal(1, 2, map[string]string{"STAGE_ID": "LOSE"})
	portal.UpdateDeal(1, 1, map[string]string{"TITLE": "Renamed"}) // deal 1 stays queued once, as of now

	n, err := app.PullOfflineEvents(context.Background(), portal.MemberID(), func(ctx context.Context, ev b24oauth.Event, _ *b24oauth.B24OAuth) error {
		fmt.Println(ev.Name, string(ev.Data))
		return nil
	})
	fmt.Println(n, err, len(portal.OfflineEvents()))
	// Output:
	// ONCRMDEALUPDATE {"FIELDS":{"ID":2}}
	// ONCRMDEALUPDATE {"FIELDS":{"ID":1}}
	// 2 <nil> 0
}
