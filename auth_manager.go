package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"sync/atomic"

	"golang.org/x/oauth2"
)

// AuthManager gives access to a client's tokens (the JS SDK's auth manager). Get it with
// B24OAuth.Auth. It is safe for concurrent use.
type AuthManager struct {
	b     *B24OAuth
	admin atomic.Int32 // 0 unknown, 1 not an admin, 2 admin
}

// AuthData returns the current token pair, and false when the access token has expired (or the
// client has no access token). A client refreshes by itself on its next call; RefreshAuth forces
// it now.
func (m *AuthManager) AuthData() (AuthData, bool) {
	p := m.b.params()
	return p.authData(), !m.b.destroyed.Load() && !m.b.expiring(p, 0)
}

// RefreshAuth refreshes the token pair now and returns the new one. Concurrent calls (and calls
// that need a refresh at the same time) share one request to the OAuth server.
//
// The error is a *RefreshTokenError when the refresh failed. When the refresh succeeded but the
// refresh callback (or, for a client of an App, the store) failed, RefreshAuth returns the new
// pair, which is in use, together with that error.
func (m *AuthManager) RefreshAuth(ctx context.Context) (AuthData, error) {
	if err := m.b.failFastErr(); err != nil {
		return AuthData{}, err
	}
	p, warn, err := m.b.refreshAfter(ctx, m.b.params().AccessToken, TriggerRequested)
	if err != nil {
		return AuthData{}, err
	}
	return p.authData(), warn
}

// Uniq returns prefix + "_" + member_id: a key unique to this portal, e.g. for caches.
func (m *AuthManager) Uniq(prefix string) string { return prefix + "_" + m.b.params().MemberID }

// IsAdmin reports whether the user the tokens belong to is a portal administrator, as found by
// B24OAuth.InitIsAdmin; ErrIsAdminNotInit before that.
func (m *AuthManager) IsAdmin() (bool, error) {
	switch m.admin.Load() {
	case 1:
		return false, nil
	case 2:
		return true, nil
	}
	return false, ErrIsAdminNotInit
}

// InitIsAdmin asks the portal (method profile) whether the tokens' user is an administrator, for
// AuthManager.IsAdmin.
func (b *B24OAuth) InitIsAdmin(ctx context.Context) error {
	resp, err := b.Call(ctx, "profile", nil)
	if err != nil {
		return err
	}
	var profile struct {
		Admin json.RawMessage `json:"ADMIN"`
	}
	if err := resp.Decode(&profile); err != nil {
		return err
	}
	admin := int32(1)
	switch string(bytes.Trim(profile.Admin, `"`)) {
	case "true", "Y", "1":
		admin = 2
	}
	b.auth.admin.Store(admin)
	return nil
}

// TokenSource returns an oauth2.TokenSource that hands out this client's access token,
// refreshing it through the client (so it shares the client's single refresh). The tokens it
// returns carry no refresh token: refreshing is the client's job, not oauth2's. Token takes no
// context (an oauth2 limitation); TokenSourceContext binds one.
//
// The *oauth2.Token returned holds the live access token in clear and prints it (it is
// x/oauth2's type, not ours): it is the caller's to keep out of logs.
func (b *B24OAuth) TokenSource() oauth2.TokenSource {
	return tokenSource{b: b, ctx: context.Background()}
}

// TokenSourceContext is TokenSource whose refreshes use ctx (its cancellation stops waiting).
func (b *B24OAuth) TokenSourceContext(ctx context.Context) oauth2.TokenSource {
	return tokenSource{b: b, ctx: ctx}
}

type tokenSource struct {
	b   *B24OAuth
	ctx context.Context
}

func (ts tokenSource) Token() (*oauth2.Token, error) {
	if err := ts.b.failFastErr(); err != nil {
		return nil, err
	}
	p := ts.b.params()
	if ts.b.expiring(p, ts.b.expiryMargin) {
		var err error
		if p, _, err = ts.b.refreshAfter(ts.ctx, p.AccessToken, TriggerExpiring); err != nil {
			return nil, err
		}
	}
	return &oauth2.Token{AccessToken: p.AccessToken, TokenType: "Bearer", Expiry: expiresAt(p.Expires)}, nil
}
