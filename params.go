package b24oauth

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// AppStatus is the application's status on a portal, as Bitrix24 reports it in the "status"
// field of events and token replies.
type AppStatus string

// The application statuses Bitrix24 knows.
const (
	StatusFree         AppStatus = "F"
	StatusDemo         AppStatus = "D"
	StatusTrial        AppStatus = "T"
	StatusPaid         AppStatus = "P"
	StatusLocal        AppStatus = "L"
	StatusSubscription AppStatus = "S"
)

// OAuthParams is one portal's OAuth token pair and endpoints (the JS SDK's B24OAuthParams).
//
// Its JSON form uses the snake_case names of Bitrix24 (access_token, member_id, ...), so it is
// what a store persists. Printing it with fmt (any verb) or logging it with log/slog redacts
// the access, refresh and application tokens.
type OAuthParams struct {
	ApplicationToken string    `json:"application_token,omitempty"`
	UserID           int64     `json:"user_id,omitempty"`
	MemberID         string    `json:"member_id"`
	AccessToken      string    `json:"access_token"`
	RefreshToken     string    `json:"refresh_token"`
	Expires          int64     `json:"expires"`    // unix seconds when AccessToken expires; 0 if unknown
	ExpiresIn        int64     `json:"expires_in"` // lifetime in seconds, as issued
	Scope            string    `json:"scope"`      // comma-separated
	Domain           string    `json:"domain"`     // portal host (and port, if any), no scheme
	ClientEndpoint   string    `json:"client_endpoint"`
	ServerEndpoint   string    `json:"server_endpoint"`
	Status           AppStatus `json:"status,omitempty"`
}

// OAuthSecret is the application's credentials (the JS SDK's B24OAuthSecret). Printing or
// logging it never shows ClientSecret.
type OAuthSecret struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// AuthData is the part of OAuthParams a caller needs to authorize a request by hand. Printing or
// logging it redacts both tokens.
type AuthData struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	Expires      int64  `json:"expires"`
	ExpiresIn    int64  `json:"expires_in"`
	Domain       string `json:"domain"`
	MemberID     string `json:"member_id"`
}

// redacted stands in for a secret that is set; an empty secret stays visibly empty, which is
// what one needs to know when debugging.
const redacted = "[REDACTED]"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// expiresAt is the access token's expiry, or the zero time when unknown.
func expiresAt(unix int64) time.Time {
	if unix <= 0 {
		return time.Time{}
	}
	return time.Unix(unix, 0)
}

// String returns a representation with every token redacted.
func (p OAuthParams) String() string {
	var b strings.Builder
	b.WriteString("b24oauth.OAuthParams{")
	field(&b, "MemberID", strconv.Quote(p.MemberID), true)
	field(&b, "Domain", strconv.Quote(p.Domain), false)
	field(&b, "UserID", strconv.FormatInt(p.UserID, 10), false)
	field(&b, "AccessToken", strconv.Quote(redact(p.AccessToken)), false)
	field(&b, "RefreshToken", strconv.Quote(redact(p.RefreshToken)), false)
	field(&b, "ApplicationToken", strconv.Quote(redact(p.ApplicationToken)), false)
	field(&b, "Expires", strconv.FormatInt(p.Expires, 10), false)
	field(&b, "ExpiresIn", strconv.FormatInt(p.ExpiresIn, 10), false)
	field(&b, "Scope", strconv.Quote(p.Scope), false)
	field(&b, "ClientEndpoint", strconv.Quote(p.ClientEndpoint), false)
	field(&b, "ServerEndpoint", strconv.Quote(p.ServerEndpoint), false)
	field(&b, "Status", strconv.Quote(string(p.Status)), false)
	b.WriteString("}")
	return b.String()
}

// GoString is String: %#v must not reveal a token either.
func (p OAuthParams) GoString() string { return p.String() }

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d ...) print the redacted form.
func (p OAuthParams) Format(f fmt.State, verb rune) { formatRedacted(f, verb, p.String()) }

// LogValue implements slog.LogValuer with every token redacted.
func (p OAuthParams) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("member_id", p.MemberID),
		slog.String("domain", p.Domain),
		slog.Int64("user_id", p.UserID),
		slog.String("access_token", redact(p.AccessToken)),
		slog.String("refresh_token", redact(p.RefreshToken)),
		slog.String("application_token", redact(p.ApplicationToken)),
		slog.Int64("expires", p.Expires),
		slog.String("scope", p.Scope),
		slog.String("client_endpoint", p.ClientEndpoint),
		slog.String("server_endpoint", p.ServerEndpoint),
		slog.String("status", string(p.Status)),
	)
}

// String returns a representation with the client secret redacted.
func (s OAuthSecret) String() string {
	return "b24oauth.OAuthSecret{ClientID: " + strconv.Quote(s.ClientID) +
		", ClientSecret: " + strconv.Quote(redact(s.ClientSecret)) + "}"
}

// GoString is String.
func (s OAuthSecret) GoString() string { return s.String() }

// Format makes every fmt verb print the redacted form.
func (s OAuthSecret) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.String()) }

// LogValue implements slog.LogValuer with the client secret redacted.
func (s OAuthSecret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("client_id", s.ClientID), slog.String("client_secret", redact(s.ClientSecret)))
}

// String returns a representation with both tokens redacted.
func (a AuthData) String() string {
	var b strings.Builder
	b.WriteString("b24oauth.AuthData{")
	field(&b, "MemberID", strconv.Quote(a.MemberID), true)
	field(&b, "Domain", strconv.Quote(a.Domain), false)
	field(&b, "AccessToken", strconv.Quote(redact(a.AccessToken)), false)
	field(&b, "RefreshToken", strconv.Quote(redact(a.RefreshToken)), false)
	field(&b, "Expires", strconv.FormatInt(a.Expires, 10), false)
	field(&b, "ExpiresIn", strconv.FormatInt(a.ExpiresIn, 10), false)
	b.WriteString("}")
	return b.String()
}

// GoString is String.
func (a AuthData) GoString() string { return a.String() }

// Format makes every fmt verb print the redacted form.
func (a AuthData) Format(f fmt.State, verb rune) { formatRedacted(f, verb, a.String()) }

// LogValue implements slog.LogValuer with both tokens redacted.
func (a AuthData) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("member_id", a.MemberID),
		slog.String("domain", a.Domain),
		slog.String("access_token", redact(a.AccessToken)),
		slog.String("refresh_token", redact(a.RefreshToken)),
		slog.Int64("expires", a.Expires),
	)
}

func field(b *strings.Builder, name, value string, first bool) {
	if !first {
		b.WriteString(", ")
	}
	b.WriteString(name)
	b.WriteString(": ")
	b.WriteString(value)
}

// formatRedacted prints s for any verb: a verb such as %d or %x applied to the struct itself
// would otherwise print its fields (tokens included) through fmt's default struct printing.
func formatRedacted(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// authData extracts the AuthData view of p.
func (p OAuthParams) authData() AuthData {
	return AuthData{
		AccessToken:  p.AccessToken,
		RefreshToken: p.RefreshToken,
		Expires:      p.Expires,
		ExpiresIn:    p.ExpiresIn,
		Domain:       p.Domain,
		MemberID:     p.MemberID,
	}
}
