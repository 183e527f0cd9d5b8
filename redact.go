package b24oauth

import (
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
)

// This file holds how the types that hold a secret, or reach one, print: with fmt (every verb)
// and with log/slog. Each prints a summary built by hand, never its fields through fmt's
// default struct printing, which shows unexported fields too and, for verbs such as %s, walks
// into every struct a pointer field points to (a MemoryStore full of tokens, an http.Client's
// transport). The token data types (OAuthParams, AuthData, Installation, ...) have theirs next
// to them.

// typeOf names the dynamic type of v without printing any of its value: "nil" when v is nil or
// a nil pointer, map, slice or func.
func typeOf(v any) string {
	if v == nil {
		return "nil"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		if rv.IsNil() {
			return "nil"
		}
	}
	return rv.Type().String()
}

// set says whether an optional setting is present, without printing it.
func set(present bool) string {
	if present {
		return "set"
	}
	return "nil"
}

// String returns a summary of the configuration with the client secret redacted. The store,
// the HTTP client, the logger and the hooks are named by type or as set, never printed: they
// may hold tokens of their own.
func (c AppConfig) String() string {
	var b strings.Builder
	b.WriteString("b24oauth.AppConfig{")
	field(&b, "ClientID", strconv.Quote(c.ClientID), true)
	field(&b, "ClientSecret", strconv.Quote(redact(c.ClientSecret)), false)
	field(&b, "Store", typeOf(c.Store), false)
	field(&b, "HTTPClient", set(c.HTTPClient != nil), false)
	field(&b, "Logger", set(c.Logger != nil), false)
	field(&b, "OAuthServers", fmt.Sprintf("%q", c.OAuthServers), false)
	field(&b, "Restriction", set(c.Restriction != nil), false)
	field(&b, "CacheSize", strconv.Itoa(c.CacheSize), false)
	field(&b, "InsecureHTTP", strconv.FormatBool(c.InsecureHTTP), false)
	field(&b, "ClientOptions", strconv.Itoa(len(c.ClientOptions)), false)
	b.WriteString("}")
	return b.String()
}

// GoString is String: %#v must not reveal the secret either.
func (c AppConfig) GoString() string { return c.String() }

// Format makes every fmt verb print the redacted summary.
func (c AppConfig) Format(f fmt.State, verb rune) { formatRedacted(f, verb, c.String()) }

// LogValue implements slog.LogValuer with the client secret redacted.
func (c AppConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("client_id", c.ClientID),
		slog.String("client_secret", redact(c.ClientSecret)),
		slog.String("store", typeOf(c.Store)),
		slog.Any("oauth_servers", c.OAuthServers),
	)
}

// String returns a summary of the App (its configuration, see AppConfig.String) with the
// client secret redacted; the stored installations are not printed.
func (a *App) String() string {
	if a == nil {
		return "(*b24oauth.App)(nil)"
	}
	return "b24oauth.App{Config: " + a.cfg.String() + "}"
}

// GoString is String.
func (a *App) GoString() string { return a.String() }

// Format makes every fmt verb print the redacted summary.
func (a *App) Format(f fmt.State, verb rune) { formatRedacted(f, verb, a.String()) }

// LogValue implements slog.LogValuer with the client secret redacted.
func (a *App) LogValue() slog.Value {
	if a == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("client_id", a.cfg.ClientID), slog.String("store", typeOf(a.cfg.Store)))
}

// String returns a summary of the client (its portal, the token pair and the credentials) with
// every token and the client secret redacted.
func (b *B24OAuth) String() string {
	if b == nil {
		return "(*b24oauth.B24OAuth)(nil)"
	}
	p := b.params()
	if p == nil {
		p = &OAuthParams{}
	}
	return "b24oauth.B24OAuth{Params: " + p.String() + ", Secret: " + b.secret.String() +
		", Destroyed: " + strconv.FormatBool(b.destroyed.Load()) + "}"
}

// GoString is String.
func (b *B24OAuth) GoString() string { return b.String() }

// Format makes every fmt verb print the redacted summary.
func (b *B24OAuth) Format(f fmt.State, verb rune) { formatRedacted(f, verb, b.String()) }

// LogValue implements slog.LogValuer: the portal, never a token.
func (b *B24OAuth) LogValue() slog.Value {
	if b == nil {
		return slog.StringValue("<nil>")
	}
	p := b.params()
	if p == nil {
		p = &OAuthParams{}
	}
	return slog.GroupValue(slog.String("member_id", p.MemberID), slog.String("domain", p.Domain))
}

// authDataOrZero is the pair of the manager's client, or nothing for a manager without one.
func (m *AuthManager) authDataOrZero() AuthData {
	if m.b == nil || m.b.params() == nil {
		return AuthData{}
	}
	return m.b.params().authData()
}

// String returns the current pair (see AuthData.String) with both tokens redacted.
func (m *AuthManager) String() string {
	if m == nil {
		return "(*b24oauth.AuthManager)(nil)"
	}
	return "b24oauth.AuthManager{" + m.authDataOrZero().String() + "}"
}

// GoString is String.
func (m *AuthManager) GoString() string { return m.String() }

// Format makes every fmt verb print the redacted summary.
func (m *AuthManager) Format(f fmt.State, verb rune) { formatRedacted(f, verb, m.String()) }

// LogValue implements slog.LogValuer with both tokens redacted.
func (m *AuthManager) LogValue() slog.Value {
	if m == nil {
		return slog.StringValue("<nil>")
	}
	return m.authDataOrZero().LogValue()
}

// String returns how many installations the store holds; none of them is printed.
func (s *MemoryStore) String() string {
	if s == nil {
		return "(*b24oauth.MemoryStore)(nil)"
	}
	s.mu.RLock()
	n := len(s.data)
	s.mu.RUnlock()
	return "b24oauth.MemoryStore{Installations: " + strconv.Itoa(n) + "}"
}

// GoString is String.
func (s *MemoryStore) GoString() string { return s.String() }

// Format makes every fmt verb print the summary, never a stored token.
func (s *MemoryStore) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.String()) }

// LogValue implements slog.LogValuer: the number of installations.
func (s *MemoryStore) LogValue() slog.Value {
	if s == nil {
		return slog.StringValue("<nil>")
	}
	s.mu.RLock()
	n := len(s.data)
	s.mu.RUnlock()
	return slog.GroupValue(slog.Int("installations", n))
}

// String names the store's directory.
func (s *FileStore) String() string {
	if s == nil {
		return "(*b24oauth.FileStore)(nil)"
	}
	return "b24oauth.FileStore{Dir: " + strconv.Quote(s.dir) + "}"
}

// GoString is String.
func (s *FileStore) GoString() string { return s.String() }

// Format makes every fmt verb print the summary.
func (s *FileStore) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.String()) }

// LogValue implements slog.LogValuer: the store's directory.
func (s *FileStore) LogValue() slog.Value {
	if s == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("dir", s.dir))
}

// Format prints the error's message (Error) for every verb: never the fields through fmt's
// struct printing.
func (e *APIError) Format(f fmt.State, verb rune) { formatError(f, verb, e) }

// Format prints the error's message (Error) for every verb: never the fields, nor the cause's,
// through fmt's struct printing.
func (e *RefreshTokenError) Format(f fmt.State, verb rune) { formatError(f, verb, e) }

// formatError is formatRedacted of err's message; a nil *T prints as "<nil>".
func formatError(f fmt.State, verb rune, err error) {
	if v := reflect.ValueOf(err); v.Kind() == reflect.Pointer && v.IsNil() {
		formatRedacted(f, verb, "<nil>")
		return
	}
	formatRedacted(f, verb, err.Error())
}
