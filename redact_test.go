package b24oauth_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/internal/redacttest"
)

// The secrets the printing tests plant: each is distinct, so a failure names which one leaked.
const (
	leakAccess    = "leakAccessToken-4e1f8a2c6b9d3e7f"
	leakRefresh   = "leakRefreshToken-8c3a5e7f1d2b4a6c"
	leakAppToken  = "leakApplicationToken-2d7b9f1e3c5a"
	leakSecret    = "leakClientSecret-6a4c8e2f0b1d3f5e"
	leakTransport = "leakTransportToken-1b3d5f7a9c2e"
)

var leakSecrets = []string{leakAccess, leakRefresh, leakAppToken, leakSecret, leakTransport}

// secretTransport is a user's RoundTripper with a credential of its own: an AppConfig or a
// client holding it must not print it.
type secretTransport struct {
	token string
	next  http.RoundTripper
}

func (t *secretTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.next.RoundTrip(r)
}

// leakyCause is an error that keeps a token in a field but not in its message: an error
// wrapping it must print the message only.
type leakyCause struct{ token string }

func (leakyCause) Error() string { return "the cause" }

// printWorld is a set of values reaching every planted secret: an App whose MemoryStore holds an
// installation, its cached client, a client of its own, and the stores.
type printWorld struct {
	inst       b24oauth.Installation
	mem        *b24oauth.MemoryStore
	files      *b24oauth.FileStore
	cfg        b24oauth.AppConfig
	app        *b24oauth.App
	appClient  *b24oauth.B24OAuth
	standalone *b24oauth.B24OAuth
}

func newPrintWorld(t *testing.T) *printWorld {
	ctx := context.Background()
	p := testParams()
	p.AccessToken, p.RefreshToken, p.ApplicationToken = leakAccess, leakRefresh, leakAppToken
	w := &printWorld{inst: b24oauth.Installation{OAuthParams: p, State: b24oauth.StateActive, InstalledAt: time.Now()}}
	w.mem = b24oauth.NewMemoryStore()
	if err := w.mem.Save(ctx, w.inst); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.files, err = b24oauth.NewFileStore(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := w.files.Save(ctx, w.inst); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &secretTransport{token: leakTransport, next: http.DefaultTransport}}
	rp := b24oauth.DefaultRestrictionParams()
	w.cfg = b24oauth.AppConfig{
		ClientID: testSecretPair.ClientID, ClientSecret: leakSecret,
		Store: w.mem, HTTPClient: hc, Logger: slog.Default(), Restriction: &rp,
		OnInstall:     func(context.Context, b24oauth.Installation) {},
		ClientOptions: []b24oauth.Option{b24oauth.WithExpiryMargin(time.Second)},
	}
	if w.app, err = b24oauth.NewApp(w.cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.app.Close() })
	if w.appClient, err = w.app.ClientForMember(ctx, p.MemberID); err != nil {
		t.Fatal(err)
	}
	w.standalone, err = b24oauth.New(p, b24oauth.OAuthSecret{ClientID: testSecretPair.ClientID, ClientSecret: leakSecret},
		b24oauth.WithHTTPClient(hc), b24oauth.WithCallbackRefreshAuth(func(context.Context, b24oauth.RefreshAuthEvent) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// printCase is how the printing test covers one exported type: values of it (value and pointer
// forms, where a user could print either) that reach every secret the type can, or, for a type
// that cannot hold a secret of ours, why.
type printCase struct {
	values func(w *printWorld) []any
	none   string
}

// printCases has every exported type of the package: TestExportedTypesPrintNoSecret fails when
// one is missing, so a new type cannot be forgotten.
var printCases = map[string]printCase{
	"OAuthParams": {values: func(w *printWorld) []any { p := w.inst.OAuthParams; return []any{p, &p} }},
	"OAuthSecret": {values: func(*printWorld) []any {
		s := b24oauth.OAuthSecret{ClientID: "id", ClientSecret: leakSecret}
		return []any{s, &s}
	}},
	"AuthData": {values: func(w *printWorld) []any {
		a, _ := w.standalone.Auth().AuthData()
		return []any{a, &a}
	}},
	"Installation": {values: func(w *printWorld) []any { i := w.inst; return []any{i, &i} }},
	"RefreshAuthEvent": {values: func(w *printWorld) []any {
		a, _ := w.standalone.Auth().AuthData()
		ev := b24oauth.RefreshAuthEvent{AuthData: a, Params: w.inst.OAuthParams}
		return []any{ev, &ev}
	}},
	"HandlerRefreshAuth": {values: func(*printWorld) []any {
		h := b24oauth.HandlerRefreshAuth{AccessToken: leakAccess, RefreshToken: leakRefresh, MemberID: testMember}
		return []any{h, &h}
	}},
	"AppConfig": {values: func(w *printWorld) []any { c := w.cfg; return []any{c, &c} }},
	"App":       {values: func(w *printWorld) []any { return []any{w.app} }},
	"B24OAuth":  {values: func(w *printWorld) []any { return []any{w.appClient, w.standalone} }},
	"AuthManager": {values: func(w *printWorld) []any {
		return []any{w.appClient.Auth(), w.standalone.Auth()}
	}},
	"MemoryStore": {values: func(w *printWorld) []any { return []any{w.mem} }},
	"FileStore":   {values: func(w *printWorld) []any { return []any{w.files} }},
	"Creator": {values: func(w *printWorld) []any {
		return []any{b24oauth.Creator(w.mem), b24oauth.Creator(w.files)}
	}},
	"ConditionalDeleter": {values: func(w *printWorld) []any {
		return []any{b24oauth.ConditionalDeleter(w.mem), b24oauth.ConditionalDeleter(w.files)}
	}},
	"TokenStore": {values: func(w *printWorld) []any {
		return []any{b24oauth.TokenStore(w.mem), b24oauth.TokenStore(w.files)}
	}},
	"RefreshTokenError": {values: func(*printWorld) []any {
		e := &b24oauth.RefreshTokenError{Code: "invalid_grant", MemberID: testMember, Err: leakyCause{token: leakRefresh}}
		// (A wrapper of the standard library, such as fmt.Errorf's, keeps its cause in an
		// unexported field, which fmt prints without asking the cause's Format for verbs such as
		// %d: so the SDK's errors keep no secret in their fields, and only a user's own cause
		// could; this checks that the error itself never prints its cause's fields.)
		return []any{e, error(e)}
	}},
	"ConnectError": {values: func(*printWorld) []any {
		e := &b24oauth.ConnectError{Code: "invalid_grant", MemberID: testMember, Domain: "acme.bitrix24.com", Err: leakyCause{token: leakRefresh}}
		return []any{e, error(e)}
	}},
	"APIError": {values: func(*printWorld) []any {
		// Its fields come from the portal's reply; the SDK puts no token there. It prints its
		// message only, whatever the verb.
		e := &b24oauth.APIError{Code: "ERROR_CORE", Description: "d", Method: "profile", Validation: []b24oauth.ValidationError{{Field: "f"}}}
		return []any{e, error(e)}
	}},

	"Lister": {values: func(w *printWorld) []any {
		return []any{b24oauth.Lister(w.mem), b24oauth.Lister(w.files)}
	}},

	"Frame": {values: func(w *printWorld) []any {
		f := &b24oauth.Frame{MemberID: testMember, Domain: "acme.bitrix24.com", Client: w.appClient}
		return []any{f, *f}
	}},
	"BindError": {values: func(*printWorld) []any {
		e := &b24oauth.BindError{MemberID: testMember, Failed: []b24oauth.BindFailure{{Binding: b24oauth.EventBinding{Event: "ONCRMDEALADD"}, Err: leakyCause{token: leakAppToken}}}}
		return []any{e, error(e)}
	}},
	"BindFailure": {values: func(*printWorld) []any {
		f := b24oauth.BindFailure{Binding: b24oauth.EventBinding{Event: "ONCRMDEALADD"}, Err: leakyCause{token: leakAppToken}}
		return []any{f, &f}
	}},
	"OfflineLoop": {values: func(w *printWorld) []any {
		l, err := w.app.NewOfflineLoop(func(context.Context, b24oauth.Event, *b24oauth.B24OAuth) error { return nil },
			b24oauth.OfflineLoopOptions{Interval: -1})
		if err != nil {
			panic(err)
		}
		return []any{l}
	}},
	"CallResult": {values: func(*printWorld) []any {
		// Err is what the call returned: the SDK's own errors, redacted.
		err := &b24oauth.RefreshTokenError{MemberID: testMember, Code: "invalid_grant", Err: leakyCause{token: leakRefresh}}
		r := b24oauth.CallResult{Outcome: b24oauth.OutcomeAuthError, Err: err}
		return []any{r, &r}
	}},
	"RefreshResult": {values: func(*printWorld) []any {
		err := &b24oauth.RefreshTokenError{MemberID: testMember, Code: "invalid_grant", Err: leakyCause{token: leakRefresh}}
		r := b24oauth.RefreshResult{Outcome: b24oauth.RefreshRevoked, Err: err}
		return []any{r, &r}
	}},
	"Observer":           {none: "the caller's implementation; the SDK hands it the Info values below, never a token"},
	"NopObserver":        {none: "an empty struct"},
	"CallInfo":           {none: "a method, an API version, a member_id, a domain and a count"},
	"RetryInfo":          {none: "a count, a reason and a duration"},
	"LimiterWaitInfo":    {none: "a duration and the limiter's error (a deadline or a cancellation, never a token)"},
	"RefreshInfo":        {none: "a member_id and a domain"},
	"StoreOpInfo":        {none: "an operation name, a member_id, a duration and the store's error"},
	"EventInfo":          {none: "an event name, a member_id, a status and the reason told to the sender (never a token)"},
	"Event":              {none: "no token: the event's name, portal and data (the application token is checked, not kept)"},
	"EventBinding":       {none: "an event name and a handler URL"},
	"EventFunc":          {none: "a func: fmt prints its address"},
	"OfflineLoopOptions": {none: "durations, a count and funcs"},

	"ValidationError":      {none: "a field error of the portal's reply"},
	"KeepAliveOptions":     {none: "durations and rates"},
	"KeepAliveReport":      {none: "counts"},
	"InstallKind":          {none: "an event kind"},
	"Bucket":               {none: "a burst and a rate"},
	"RateLimitWaitError":   {none: "a duration"},
	"RateLimiter":          {none: "the caller's implementation; the SDK gives it a member_id and a bucket, never a token"},
	"Response":             {none: "the portal's reply: the SDK puts no token in it"},
	"ResponseTime":         {none: "the timing figures of a reply"},
	"BatchCommand":         {none: "the caller's method and params; the SDK adds the token to the request, not to it"},
	"BatchResult":          {none: "one command's outcome from the portal's reply (its error is an APIError)"},
	"BatchResponse":        {none: "the portal's reply to a batch"},
	"RestrictionParams":    {none: "rate limits: numbers"},
	"RateLimitParams":      {none: "rate limits: numbers"},
	"OperatingLimitParams": {none: "rate limits: numbers"},
	"ResponseBudget":       {none: "a byte count and a semaphore"},
	"AppStatus":            {none: "a status letter"},
	"InstallationState":    {none: "a state name"},
	"APIVersion":           {none: "a version name"},
	"Option":               {none: "a func: fmt prints its address"},
	"BatchOption":          {none: "a func: fmt prints its address"},
	"ListOption":           {none: "a func: fmt prints its address"},
	"CallbackRefreshAuth":  {none: "a func: fmt prints its address"},
	"CustomRefreshAuth":    {none: "a func: fmt prints its address"},
}

// TestExportedTypesPrintNoSecret prints every exported type that can reach a secret, filled with
// planted ones, with every fmt verb and through slog's text and JSON handlers: none may show.
func TestExportedTypesPrintNoSecret(t *testing.T) {
	redacttest.CheckTable(t, ".", printCases)
	w := newPrintWorld(t)
	for name, pc := range printCases {
		if pc.values == nil {
			if pc.none == "" {
				t.Errorf("%s: no values and no reason", name)
			}
			continue
		}
		for i, v := range pc.values(w) {
			redacttest.AssertNoSecret(t, name+"#"+string(rune('0'+i)), v, leakSecrets...)
		}
	}
	// Values inside the user's own containers are printed by fmt one level down.
	redacttest.AssertNoSecret(t, "[]any", []any{w.cfg, w.app, w.appClient, w.mem, w.inst}, leakSecrets...)
	redacttest.AssertNoSecret(t, "map", map[string]*b24oauth.B24OAuth{"c": w.appClient}, leakSecrets...)
	redacttest.AssertNoSecret(t, "struct", struct {
		Config b24oauth.AppConfig
		Client *b24oauth.B24OAuth
	}{w.cfg, w.standalone}, leakSecrets...)
}

// TestPrintingsStayUseful: redacted is not empty: what one needs to debug is still printed.
func TestPrintingsStayUseful(t *testing.T) {
	w := newPrintWorld(t)
	for _, c := range []struct {
		name string
		v    any
		want []string
	}{
		{"AppConfig", w.cfg, []string{testSecretPair.ClientID, "[REDACTED]", "*b24oauth.MemoryStore"}},
		{"App", w.app, []string{testSecretPair.ClientID, "[REDACTED]"}},
		{"B24OAuth", w.appClient, []string{testMember, "acme.bitrix24.com", "[REDACTED]"}},
		{"AuthManager", w.standalone.Auth(), []string{testMember, "[REDACTED]"}},
		{"MemoryStore", w.mem, []string{"Installations: 1"}},
		{"FileStore", w.files, []string{w.files.Dir()}},
		{"RefreshTokenError", &b24oauth.RefreshTokenError{Code: "invalid_grant", Err: leakyCause{}}, []string{"invalid_grant", "the cause"}},
	} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			got := sprintf(verb, c.v)
			for _, want := range c.want {
				if !contains(got, want) {
					t.Errorf("%s with %s = %s; want it to show %q", c.name, verb, got, want)
				}
			}
		}
	}
	var nilClient *b24oauth.B24OAuth
	if got := sprintf("%v", nilClient); !contains(got, "nil") {
		t.Errorf("a nil client prints %q", got)
	}
}

func sprintf(format string, v any) string { return fmt.Sprintf(format, v) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
