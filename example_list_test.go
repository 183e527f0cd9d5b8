package b24oauth_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

func ExampleB24OAuth_List() {
	// A fake portal with 120 deals stands in for a real one.
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal()
	p.SeedDeals(120)
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

	var count int
	var sum float64
	for row, err := range client.List(context.Background(), "crm.deal.list", map[string]any{
		"filter": map[string]any{"STAGE_ID": "NEW"},
		"select": []string{"ID", "OPPORTUNITY"},
	}) {
		if err != nil {
			panic(err)
		}
		var deal struct {
			ID          string      `json:"ID"`
			Opportunity json.Number `json:"OPPORTUNITY"`
		}
		if err := json.Unmarshal(row, &deal); err != nil {
			panic(err)
		}
		v, _ := deal.Opportunity.Float64()
		count++
		sum += v
	}
	fmt.Printf("%d deals worth %.2f, in %d requests\n", count, sum, p.TotalRequests())

	// tasks.task.list puts its rows under result.tasks, with lower-case keys.
	p.SeedTasks(3)
	for row, err := range client.List(context.Background(), "tasks.task.list", map[string]any{"select": []string{"ID", "TITLE"}},
		b24oauth.WithItemsKey("tasks"), b24oauth.WithCursorKey("ID", "id")) {
		if err != nil {
			panic(err)
		}
		var task struct{ ID, Title string }
		_ = json.Unmarshal(row, &task)
		fmt.Println(task.ID, task.Title)
	}
	// Output:
	// 120 deals worth 726000.00, in 2 requests
	// 1 Task 1
	// 2 Task 2
	// 3 Task 3
}
