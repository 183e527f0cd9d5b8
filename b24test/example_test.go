package b24test_test

import (
	"encoding/json"
	"fmt"
	"net/http"
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

// The authorization-code flow: the portal's authorize endpoint redirects the browser to the
// app's redirect URI with a code, which the app exchanges at the OAuth server.
func ExampleWithRedirectURI() {
	s := b24test.NewServer(b24test.WithRedirectURI("https://app.example.net/oauth/callback"))
	defer s.Close()
	p := s.AddPortal(b24test.PortalName("acme"))

	browser := *s.Client()
	browser.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := browser.Get("https://" + p.Domain() + "/oauth/authorize/?client_id=" + url.QueryEscape(s.ClientID()) + "&state=xyz")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	fmt.Println(resp.StatusCode, loc.Host+loc.Path, q.Get("state"), q.Get("domain"), q.Get("server_domain"))

	tok, err := s.Client().PostForm(s.OAuthOrigin()+"/oauth/token/", url.Values{
		"grant_type": {"authorization_code"}, "client_id": {s.ClientID()},
		"client_secret": {s.ClientSecret()}, "code": {q.Get("code")},
	})
	if err != nil {
		panic(err)
	}
	defer tok.Body.Close()
	var reply struct {
		MemberID       string `json:"member_id"`
		ClientEndpoint string `json:"client_endpoint"`
	}
	_ = json.NewDecoder(tok.Body).Decode(&reply)
	fmt.Println(tok.StatusCode, reply.MemberID == p.MemberID(), reply.ClientEndpoint)
	// Output:
	// 302 app.example.net/oauth/callback xyz acme.example.com oauth.example.com
	// 200 true https://acme.example.com/rest/
}
