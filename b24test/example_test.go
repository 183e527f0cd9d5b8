package b24test_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"

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

// A deal added in the portal reaches the app's handler bound with event.bind: test your own
// event handlers this way (b24oauth.App.EventHandler, or any http.Handler).
func ExamplePortal_AddDeal() {
	s := b24test.NewServer()
	defer s.Close()
	p := s.AddPortal(b24test.PortalName("acme"))

	// The app's event handler, on a loopback port.
	received := make(chan url.Values, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		received <- r.PostForm
	}))
	defer app.Close()

	// The app binds ONCRMDEALADD with its installation's (an administrator's) token.
	resp, err := s.Client().PostForm(p.ClientEndpoint()+"event.bind", url.Values{
		"auth": {p.Tokens().AccessToken}, "event": {"ONCRMDEALADD"}, "handler": {app.URL + "/events"},
	})
	if err != nil {
		panic(err)
	}
	resp.Body.Close()

	// A user adds a deal; the portal POSTs the event to the handler.
	id := p.AddDeal(1, map[string]string{"TITLE": "Big deal"})
	ev := <-received
	if err := s.WaitForDeliveries(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println(ev.Get("event"), ev.Get("data[FIELDS][ID]") == strconv.Itoa(id), ev.Get("auth[application_token]") == p.ApplicationToken())
	fmt.Println("delivered:", p.Deliveries()[0].Status)
	// Output:
	// ONCRMDEALADD true true
	// delivered: 200
}
