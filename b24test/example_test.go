package b24test_test

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/b24go/b24oauth/b24test"
)

func ExampleNewServer() {
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal(b24test.PortalName("acme"))

	// Any code that takes an *http.Client can talk to the fake: s.Client()
	// trusts its certificate and routes *.example.com to it.
	resp, err := s.Client().PostForm(p.ClientEndpoint()+"profile", url.Values{"auth": {p.Tokens().AccessToken}})
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result struct {
			ID    string `json:"ID"`
			Admin bool   `json:"ADMIN"`
		} `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		panic(err)
	}
	fmt.Println(p.Domain(), resp.StatusCode, out.Result.ID, out.Result.Admin, p.Requests("profile"))
	// Output: acme.example.com 200 1 true 1
}

func ExamplePortal_ExpireAccessToken() {
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal()
	p.ExpireAccessToken()

	resp, err := s.Client().Get(p.ClientEndpoint() + "profile?auth=" + p.Tokens().AccessToken)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	fmt.Println(resp.StatusCode, e.Error)
	// Output: 401 expired_token
}
