package b24oauth_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// A client for one portal, built from its stored token pair: it refreshes by itself and hands
// every refreshed pair to the callback for saving.
func ExampleNew() {
	s := b24test.NewServer() // a fake Bitrix24 stands in for a real portal
	defer s.Close()
	p := s.AddPortal(b24test.PortalName("b24-demo"))
	tok := p.Tokens()

	client, err := b24oauth.New(b24oauth.OAuthParams{
		MemberID:       p.MemberID(),
		AccessToken:    tok.AccessToken,
		RefreshToken:   tok.RefreshToken,
		Expires:        tok.Expires.Unix(),
		Domain:         p.Domain(),
		ServerEndpoint: s.OAuthServerEndpoint(),
	}, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()},
		b24oauth.WithHTTPClient(s.Client()),
		b24oauth.WithOAuthServers(s.OAuthOrigin()),
		b24oauth.WithCallbackRefreshAuth(func(ctx context.Context, ev b24oauth.RefreshAuthEvent) error {
			fmt.Println("save the new pair of", ev.Params.Domain)
			return nil
		}))
	if err != nil {
		panic(err)
	}

	p.ExpireAccessToken() // the portal answers 401 expired_token: the client refreshes and retries
	resp, err := client.Call(context.Background(), "profile", nil)
	if err != nil {
		panic(err)
	}
	var profile struct {
		ID    string `json:"ID"`
		Admin bool   `json:"ADMIN"`
	}
	if err := resp.Decode(&profile); err != nil {
		panic(err)
	}
	fmt.Println("user", profile.ID, "admin:", profile.Admin)
	// Output:
	// save the new pair of b24-demo.example.com
	// user 1 admin: true
}

// Errors are typed: a REST error reply is an *APIError, a refused refresh a
// *RefreshTokenError, even when it comes from the REST call that needed the refresh.
func ExampleAPIError() {
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal(b24test.PortalName("b24-demo"))
	tok := p.Tokens()
	client, err := b24oauth.New(b24oauth.OAuthParams{
		MemberID: p.MemberID(), AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		Expires: tok.Expires.Unix(), Domain: p.Domain(), ServerEndpoint: s.OAuthServerEndpoint(),
	}, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()},
		b24oauth.WithHTTPClient(s.Client()), b24oauth.WithOAuthServers(s.OAuthOrigin()))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	_, err = client.Call(ctx, "no.such.method", nil)
	var apiErr *b24oauth.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Code, apiErr.Status)
	}

	p.ExpireAccessToken()
	p.ExpireRefreshToken() // the portal's administrator must reinstall the app
	_, err = client.Call(ctx, "profile", nil)
	var refreshErr *b24oauth.RefreshTokenError
	if errors.As(err, &refreshErr) {
		fmt.Println(refreshErr.Code, refreshErr.Revoked())
	}
	// Output:
	// ERROR_METHOD_NOT_FOUND 404
	// invalid_grant true
}

// TokenSource hands the client's access token to code built on golang.org/x/oauth2 (an
// oauth2.Transport, a library that takes a TokenSource). Refreshes still go through the client,
// once, persisted as usual. The oauth2.Token it returns holds the live access token: it is
// yours to keep out of logs.
func ExampleB24OAuth_TokenSource() {
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal()
	tok := p.Tokens()
	client, err := b24oauth.New(b24oauth.OAuthParams{
		MemberID: p.MemberID(), AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		Expires: tok.Expires.Unix(), Domain: p.Domain(), ServerEndpoint: s.OAuthServerEndpoint(),
	}, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()},
		b24oauth.WithHTTPClient(s.Client()), b24oauth.WithOAuthServers(s.OAuthOrigin()))
	if err != nil {
		panic(err)
	}
	ts := client.TokenSourceContext(context.Background())
	t1, err := ts.Token()
	if err != nil {
		panic(err)
	}
	p.ExpireAccessToken()
	if _, err := client.Auth().RefreshAuth(context.Background()); err != nil { // the next Token sees the new pair
		panic(err)
	}
	t2, err := ts.Token()
	if err != nil {
		panic(err)
	}
	fmt.Println("valid:", t1.Valid(), t2.Valid(), "refreshed:", t1.AccessToken != t2.AccessToken, "type:", t2.Type())
	// Output:
	// valid: true true refreshed: true type: Bearer
}
