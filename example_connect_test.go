package b24oauth_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// A portal's user connects an external service by the authorization-code flow: the service
// sends the browser to the portal's authorize URL, the portal sends it back to the redirect URI
// with a code, and the service's redirect handler passes the code to Connect (within 30
// seconds: codes are single-use and short-lived). examples/multitenant has the handlers, with a
// signed, single-use state.
func ExampleApp_Connect() {
	fake := b24test.NewServer(b24test.WithRedirectURI("https://service.example.net/oauth/callback"))
	defer fake.Close()
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret(), Store: b24oauth.NewMemoryStore(),
		HTTPClient: fake.Client(), OAuthServers: []string{fake.OAuthOrigin()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnInstall: func(ctx context.Context, inst b24oauth.Installation) {
			fmt.Println("OnInstall:", inst.Domain, b24oauth.InstallKindFrom(ctx))
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	portal := fake.AddPortal(b24test.PortalName("acme"))

	// GET /connect?domain=acme.example.com: redirect the browser to the portal.
	cfg, err := app.OAuth2Config("acme.example.com")
	if err != nil {
		log.Fatal(err)
	}
	authURL := cfg.AuthCodeURL("a-state-the-callback-checks")

	// The browser: the fake portal logs the user in at once and redirects to the callback.
	browser := *fake.Client()
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := browser.Get(authURL)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	callback, _ := url.Parse(resp.Header.Get("Location"))

	// GET /oauth/callback?code=...&state=...&domain=...: check the state, then connect.
	q := callback.Query()
	inst, err := app.Connect(context.Background(), q.Get("domain"), q.Get("code"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected:", inst.MemberID == portal.MemberID(), inst.ClientEndpoint)

	// The same code again: refused, nothing stored.
	_, err = app.Connect(context.Background(), q.Get("domain"), q.Get("code"))
	fmt.Println(err)
	// Output:
	// OnInstall: acme.example.com new
	// connected: true https://acme.example.com/rest/
	// b24oauth: connecting portal "acme.example.com" failed: invalid_grant (HTTP 400): Invalid authorization code
}
