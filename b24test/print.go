package b24test

import (
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The fake's tokens and secret are fake, but tests print what they hold in failure messages and
// logs that may be kept: a Server, a Portal, Tokens and an Event print with their tokens and the
// client secret redacted, for every fmt verb. Their accessors (Tokens().AccessToken, ...) still
// give the values.

const redacted = "[REDACTED]"

func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// formatAs prints s for any verb: fmt's default printing of the struct itself would show its
// fields (tokens included) for verbs such as %d or %x.
func formatAs(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// String names the fake's URL, application and number of portals; the client secret is
// redacted and no token is printed.
func (s *Server) String() string {
	if s == nil {
		return "(*b24test.Server)(nil)"
	}
	s.mu.Lock()
	n := len(s.portals)
	s.mu.Unlock()
	return "b24test.Server{URL: " + strconv.Quote(s.ts.URL) + ", ClientID: " + strconv.Quote(s.cfg.clientID) +
		", ClientSecret: " + strconv.Quote(redact(s.cfg.clientSecret)) + ", Portals: " + strconv.Itoa(n) + "}"
}

// Format makes every fmt verb print String.
func (s *Server) Format(f fmt.State, verb rune) { formatAs(f, verb, s.String()) }

// LogValue implements slog.LogValuer as String.
func (s *Server) LogValue() slog.Value { return slog.StringValue(s.String()) }

// String names the portal (member_id and domain); no token is printed.
func (p *Portal) String() string {
	if p == nil {
		return "(*b24test.Portal)(nil)"
	}
	return "b24test.Portal{MemberID: " + strconv.Quote(p.memberID) + ", Domain: " + strconv.Quote(p.domain) + "}"
}

// Format makes every fmt verb print String.
func (p *Portal) Format(f fmt.State, verb rune) { formatAs(f, verb, p.String()) }

// LogValue implements slog.LogValuer as String.
func (p *Portal) LogValue() slog.Value { return slog.StringValue(p.String()) }

// String prints the pair with both tokens redacted.
func (t Tokens) String() string {
	return "b24test.Tokens{AccessToken: " + strconv.Quote(redact(t.AccessToken)) +
		", RefreshToken: " + strconv.Quote(redact(t.RefreshToken)) +
		", Expires: " + t.Expires.Format(time.RFC3339) + "}"
}

// Format makes every fmt verb print String.
func (t Tokens) Format(f fmt.State, verb rune) { formatAs(f, verb, t.String()) }

// LogValue implements slog.LogValuer as String.
func (t Tokens) LogValue() slog.Value { return slog.StringValue(t.String()) }

// String prints the event's query and form with the values that carry a token or a secret
// (auth[access_token], AUTH_ID, REFRESH_ID, APPLICATION_TOKEN, ...) redacted.
func (e Event) String() string {
	return "b24test.Event{Query: " + redactValues(e.Query) + ", Form: " + redactValues(e.Form) + "}"
}

// Format makes every fmt verb print String.
func (e Event) Format(f fmt.State, verb rune) { formatAs(f, verb, e.String()) }

// LogValue implements slog.LogValuer as String.
func (e Event) LogValue() slog.Value { return slog.StringValue(e.String()) }

// secretKey reports whether a form key names a token or a secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "token") || strings.Contains(k, "secret") ||
		k == "auth" || k == "auth_id" || k == "refresh_id"
}

// redactValues prints v as "k=v&..." in key order, secret values redacted.
func redactValues(v url.Values) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, val := range v[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			if secretKey(k) {
				val = redact(val)
			}
			b.WriteString(url.QueryEscape(k) + "=" + url.QueryEscape(val))
		}
	}
	return strconv.Quote(b.String())
}
