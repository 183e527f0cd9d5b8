package b24oauth_test

import (
	"context"
	"fmt"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func ExampleB24OAuth_Batch() {
	// A fake portal stands in for a real one; with a real portal, the params come from the
	// installation event or your TokenStore.
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal()
	tok := p.Tokens()
	client, err := b24oauth.New(b24oauth.OAuthParams{
		MemberID:       p.MemberID(),
		AccessToken:    tok.AccessToken,
		RefreshToken:   tok.RefreshToken,
		Expires:        tok.Expires.Unix(),
		Domain:         p.Domain(),
		ClientEndpoint: p.ClientEndpoint(),
		ServerEndpoint: s.OAuthServerEndpoint(),
	}, b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()},
		b24oauth.WithHTTPClient(s.Client()), b24oauth.WithOAuthServers(s.OAuthOrigin()))
	if err != nil {
		panic(err)
	}

	// One request: add a deal, read it back through a reference to the new ID, and try to read
	// a deal that does not exist.
	resp, err := client.Batch(context.Background(), []b24oauth.BatchCommand{
		{Key: "add", Method: "crm.deal.add", Params: map[string]any{"fields": map[string]any{"TITLE": "Website redesign"}}},
		{Key: "get", Method: "crm.deal.get", Params: map[string]any{"id": "$result[add]"}},
		{Key: "missing", Method: "crm.deal.get", Params: map[string]any{"id": 999}},
	})
	if err != nil {
		panic(err) // the batch as a whole failed: transport, authorization, limits
	}
	for key, r := range resp.All() {
		if r.Error != nil {
			fmt.Printf("%s: failed: %s\n", key, r.Error.Description)
			continue
		}
		fmt.Printf("%s: ok\n", key)
	}
	var deal struct {
		ID    string `json:"ID"`
		Title string `json:"TITLE"`
		Stage string `json:"STAGE_ID"`
	}
	if err := resp.Decode("get", &deal); err != nil {
		panic(err)
	}
	fmt.Printf("deal %s %q in stage %s\n", deal.ID, deal.Title, deal.Stage)
	fmt.Println("HTTP requests:", p.Requests("batch"))
	// Output:
	// add: ok
	// get: ok
	// missing: failed: Not found
	// deal 1 "Website redesign" in stage NEW
	// HTTP requests: 1
}
