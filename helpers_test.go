package b24oauth_test

import (
	"testing"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// newFake starts a fake Bitrix24 that stops with the test.
func newFake(t testing.TB, opts ...b24test.Option) *b24test.Server {
	t.Helper()
	s := b24test.NewServer(opts...)
	t.Cleanup(s.Close)
	return s
}

// paramsFor returns the OAuthParams of p's current token pair, as an install event gives them.
func paramsFor(s *b24test.Server, p *b24test.Portal) b24oauth.OAuthParams {
	tok := p.Tokens()
	return b24oauth.OAuthParams{
		ApplicationToken: p.ApplicationToken(),
		UserID:           1,
		MemberID:         p.MemberID(),
		AccessToken:      tok.AccessToken,
		RefreshToken:     tok.RefreshToken,
		Expires:          tok.Expires.Unix(),
		ExpiresIn:        3600,
		Scope:            p.Scope(),
		Domain:           p.Domain(),
		ClientEndpoint:   p.ClientEndpoint(),
		ServerEndpoint:   s.OAuthServerEndpoint(),
		Status:           b24oauth.AppStatus(p.Status()),
	}
}

// fakeOptions are the options a client needs to talk to the fake.
func fakeOptions(s *b24test.Server) []b24oauth.Option {
	return []b24oauth.Option{b24oauth.WithHTTPClient(s.Client()), b24oauth.WithOAuthServers(s.OAuthOrigin())}
}

// newClient returns a client for portal p of the fake s.
func newClient(t testing.TB, s *b24test.Server, p *b24test.Portal, opts ...b24oauth.Option) *b24oauth.B24OAuth {
	t.Helper()
	c, err := b24oauth.New(paramsFor(s, p), b24oauth.OAuthSecret{ClientID: s.ClientID(), ClientSecret: s.ClientSecret()},
		append(fakeOptions(s), opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}
