package b24test_test

import (
	"strings"
	"testing"

	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/internal/redacttest"
)

// fakeCases has every exported type of b24test: values reaching the fake's secrets, or why the
// type holds none. TestFakePrintsNoSecret fails when a type is missing.
var fakeCases = map[string]func(s *b24test.Server, p *b24test.Portal) []any{
	"Server": func(s *b24test.Server, _ *b24test.Portal) []any { return []any{s} },
	"Portal": func(_ *b24test.Server, p *b24test.Portal) []any { return []any{p} },
	"Tokens": func(_ *b24test.Server, p *b24test.Portal) []any { t := p.Tokens(); return []any{t, &t} },
	"Event": func(_ *b24test.Server, p *b24test.Portal) []any {
		ev, page := p.InstallEvent(), p.InstallPage()
		return []any{ev, &ev, page, p.UninstallEvent(false)}
	},
	"Delivery": func(s *b24test.Server, p *b24test.Portal) []any {
		d := b24test.Delivery{MemberID: p.MemberID(), Event: "ONCRMDEALADD", Form: p.InstallPage().Form}
		d.Form.Set("auth[access_token]", p.Tokens().AccessToken)
		d.Form.Set("auth[application_token]", p.ApplicationToken())
		return []any{d, &d}
	},
	"Binding":      nil, // an event name, a handler URL and numbers
	"OfflineEvent": nil, // an entry of the offline queue: names, ids and the event's data
	"Error":        nil, // a REST error the test returns from a MethodFunc: code and description
	"Clock":        nil, // a time
	"Option":       nil, // a func
	"PortalOption": nil, // a func
	"MethodFunc":   nil, // a func
}

// TestFakePrintsNoSecret prints the fake and its portals, tokens and events with every fmt verb
// and through slog: no token and not the client secret may show.
func TestFakePrintsNoSecret(t *testing.T) {
	redacttest.CheckTable(t, ".", fakeCases)
	s := b24test.NewServer()
	t.Cleanup(s.Close)
	p := s.AddPortal()
	page := p.InstallPage()
	tok := p.Tokens()
	secrets := []string{s.ClientSecret(), tok.AccessToken, tok.RefreshToken, p.ApplicationToken(),
		page.Form.Get("AUTH_ID"), page.Form.Get("REFRESH_ID")}
	for _, sec := range secrets {
		if sec == "" {
			t.Fatal("a secret to look for is empty")
		}
	}
	for name, values := range fakeCases {
		if values == nil {
			continue
		}
		for _, v := range values(s, p) {
			redacttest.AssertNoSecret(t, name, v, secrets...)
		}
	}
	if got := p.InstallEvent().String(); !strings.Contains(got, p.MemberID()) || !strings.Contains(got, "REDACTED") {
		t.Errorf("an install event prints %s; want its member_id and redacted tokens", got)
	}
}
