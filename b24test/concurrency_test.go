package b24test_test

import (
	"net/url"
	"sync"
	"testing"

	"github.com/b24go/b24oauth/b24test"
)

func TestConcurrency(t *testing.T) {
	s := newServer(t, b24test.WithRefreshTokenReuse(true), b24test.WithOldAccessTokenValid(true))
	portals := []*b24test.Portal{s.AddPortal(), s.AddPortal()}
	for _, p := range portals {
		p.SeedDeals(10)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := portals[i%2]
			switch i % 4 {
			case 0, 1:
				form := url.Values{"grant_type": {"refresh_token"}, "client_id": {s.ClientID()},
					"client_secret": {s.ClientSecret()}, "refresh_token": {p.Tokens().RefreshToken}}
				resp, err := s.Client().PostForm(s.OAuthOrigin()+"/oauth/token/", form)
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
				}
			case 2:
				resp, err := s.Client().PostForm(p.ClientEndpoint()+"crm.deal.list", url.Values{"auth": {p.Tokens().AccessToken}})
				if err != nil {
					errs <- err.Error()
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
				}
			default:
				_ = p.Requests("crm.deal.list") + p.Refreshes() + p.Deals() + s.TokenRequests()
				p.SeedDeals(1)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if s.Refreshes() != 100 || s.TokenRequests() != 100 {
		t.Fatalf("refreshes %d token requests %d", s.Refreshes(), s.TokenRequests())
	}
	if portals[0].Requests("crm.deal.list")+portals[1].Requests("crm.deal.list") != 50 {
		t.Fatal("requests")
	}
}

// Strict rotation under contention: exactly one of many refreshes with the
// same refresh token wins.
func TestConcurrentRefreshSingleUse(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	rt := p.Tokens().RefreshToken
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.Client().PostForm(s.OAuthOrigin()+"/oauth/token/", url.Values{"grant_type": {"refresh_token"},
				"client_id": {s.ClientID()}, "client_secret": {s.ClientSecret()}, "refresh_token": {rt}})
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode == 200 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 || p.Refreshes() != 1 {
		t.Fatalf("%d refreshes succeeded", ok)
	}
}

func TestClientFor(t *testing.T) {
	s := newServer(t)
	p := s.AddPortal()
	c := b24test.ClientFor(s.URL())
	defer c.CloseIdleConnections()
	resp, err := c.Get(p.ClientEndpoint() + "profile?auth=" + p.Tokens().AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
}
