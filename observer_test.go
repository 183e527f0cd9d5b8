package b24oauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
)

// obsKey marks the contexts a recordingObserver hands out, so tests can see what nests in what.
type obsKey struct{}

// obsRecord is one Observer call.
type obsRecord struct {
	kind   string // "call", "retry", "wait", "refresh", "store", "event"
	parent string // the obsKey value of the context it was called with
	call   b24oauth.CallInfo
	result b24oauth.CallResult
	retry  b24oauth.RetryInfo
	wait   b24oauth.LimiterWaitInfo
	ref    b24oauth.RefreshInfo
	refRes b24oauth.RefreshResult
	store  b24oauth.StoreOpInfo
	event  b24oauth.EventInfo
}

// recordingObserver records every Observer call; CallStart and RefreshStart put an id into the
// context they return.
type recordingObserver struct {
	mu      sync.Mutex
	recs    []obsRecord
	seen    []obsRecord // every record, take or not: check looks for secrets in all of them
	starts  int
	open    map[string]bool // ids started and not ended
	badEnds []string
}

func (o *recordingObserver) add(ctx context.Context, r obsRecord) {
	r.parent, _ = ctx.Value(obsKey{}).(string)
	o.mu.Lock()
	o.recs = append(o.recs, r)
	o.seen = append(o.seen, r)
	o.mu.Unlock()
}

func (o *recordingObserver) start(ctx context.Context, prefix string) context.Context {
	o.mu.Lock()
	o.starts++
	id := fmt.Sprintf("%s%d", prefix, o.starts)
	if o.open == nil {
		o.open = map[string]bool{}
	}
	o.open[id] = true
	o.mu.Unlock()
	return context.WithValue(ctx, obsKey{}, id)
}

func (o *recordingObserver) end(ctx context.Context, prefix string) {
	id, _ := ctx.Value(obsKey{}).(string)
	o.mu.Lock()
	defer o.mu.Unlock()
	if !strings.HasPrefix(id, prefix) || !o.open[id] {
		o.badEnds = append(o.badEnds, fmt.Sprintf("%s end with context %q", prefix, id))
	}
	delete(o.open, id)
}

func (o *recordingObserver) CallStart(ctx context.Context, c b24oauth.CallInfo) context.Context {
	return o.start(ctx, "call")
}

func (o *recordingObserver) CallEnd(ctx context.Context, c b24oauth.CallInfo, r b24oauth.CallResult) {
	o.add(ctx, obsRecord{kind: "call", call: c, result: r})
	o.end(ctx, "call")
}

func (o *recordingObserver) Retry(ctx context.Context, c b24oauth.CallInfo, r b24oauth.RetryInfo) {
	o.add(ctx, obsRecord{kind: "retry", call: c, retry: r})
}

func (o *recordingObserver) LimiterWait(ctx context.Context, c b24oauth.CallInfo, w b24oauth.LimiterWaitInfo) {
	o.add(ctx, obsRecord{kind: "wait", call: c, wait: w})
}

func (o *recordingObserver) RefreshStart(ctx context.Context, r b24oauth.RefreshInfo) context.Context {
	o.add(ctx, obsRecord{kind: "refresh-start", ref: r})
	return o.start(ctx, "refresh")
}

func (o *recordingObserver) RefreshEnd(ctx context.Context, r b24oauth.RefreshInfo, res b24oauth.RefreshResult) {
	o.add(ctx, obsRecord{kind: "refresh", ref: r, refRes: res})
	o.end(ctx, "refresh")
}

func (o *recordingObserver) StoreOp(ctx context.Context, s b24oauth.StoreOpInfo) {
	o.add(ctx, obsRecord{kind: "store", store: s})
}

func (o *recordingObserver) Event(ctx context.Context, e b24oauth.EventInfo) {
	o.add(ctx, obsRecord{kind: "event", event: e})
}

// take returns the records so far and forgets them.
func (o *recordingObserver) take() []obsRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.recs
	o.recs = nil
	return r
}

func (o *recordingObserver) of(kind string, recs []obsRecord) []obsRecord {
	var out []obsRecord
	for _, r := range recs {
		if r.kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// check fails t if a start was not ended or an end came with another context, or if any
// record holds one of secrets.
func (o *recordingObserver) check(t *testing.T, secrets ...string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, b := range o.badEnds {
		t.Error(b)
	}
	for id := range o.open {
		t.Errorf("%s started and never ended", id)
	}
	for _, r := range o.seen {
		text := fmt.Sprintf("%+v %v %v %v %v %v", r, r.result.Err, r.wait.Err, r.refRes.Err, r.store.Err, r.event)
		text += dumpStrings(reflect.ValueOf(r))
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("an Observer record holds a secret (%.6s...): %s", s, text)
			}
		}
	}
}

// dumpStrings concatenates every string reachable from v's exported and unexported fields.
func dumpStrings(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return v.String() + " "
	case reflect.Struct:
		var b strings.Builder
		for i := 0; i < v.NumField(); i++ {
			b.WriteString(dumpStrings(v.Field(i)))
		}
		return b.String()
	}
	return ""
}

// tokensOf returns every token the fake portal issued so far: the current pair and the
// application token.
func tokensOf(s *b24test.Server, p *b24test.Portal) []string {
	tok := p.Tokens()
	return []string{tok.AccessToken, tok.RefreshToken, p.ApplicationToken(), s.ClientSecret()}
}

// A client on its own reports each call with its outcome, each retry with its reason, the
// limiter's waits and its refreshes, in the contexts that nest them.
func TestObserverReportsCalls(t *testing.T) {
	fake := newFake(t)
	p := fake.AddPortal()
	obs := &recordingObserver{}
	rp := *unlimitedParams()
	c := newClient(t, fake, p, b24oauth.WithObserver(obs), b24oauth.WithRestrictionParams(rp))
	ctx := context.Background()
	secrets := tokensOf(fake, p)

	// A call that works.
	mustCallProfile(t, c)
	recs := obs.take()
	calls, waits := obs.of("call", recs), obs.of("wait", recs)
	if len(calls) != 1 || len(waits) != 1 || len(recs) != 2 {
		t.Fatalf("one call: %+v", recs)
	}
	got := calls[0]
	wantInfo := b24oauth.CallInfo{Method: "profile", APIVersion: b24oauth.APIVersionV2, MemberID: p.MemberID(), Domain: p.Domain(), Commands: 1}
	if got.call != wantInfo || got.result.Outcome != b24oauth.OutcomeOK || got.result.Status != http.StatusOK ||
		got.result.Retries != 0 || got.result.Err != nil || got.result.Duration <= 0 {
		t.Errorf("profile: %+v %+v", got.call, got.result)
	}
	if waits[0].parent != got.parent || waits[0].wait.Err != nil || waits[0].call != wantInfo || waits[0].wait.Limit != "" || waits[0].wait.Fallback {
		t.Errorf("limiter wait: %+v (call context %q)", waits[0], got.parent)
	}

	// An error reply.
	if _, err := c.Call(ctx, "no.such.method", nil); err == nil {
		t.Fatal("no.such.method worked")
	}
	recs = obs.of("call", obs.take())
	var ae *b24oauth.APIError
	if len(recs) != 1 || recs[0].result.Outcome != b24oauth.OutcomeAPIError || !errors.As(recs[0].result.Err, &ae) ||
		recs[0].result.Code != ae.Code || recs[0].result.Code == "" || recs[0].result.Status != ae.Status {
		t.Errorf("no.such.method: %+v", recs)
	}

	// A v3 call and a batch.
	if _, err := c.CallV3(ctx, "crm.deal.add", map[string]any{"fields": map[string]any{"title": "v3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Batch(ctx, []b24oauth.BatchCommand{
		{Key: "a", Method: "profile"}, {Key: "b", Method: "server.time"}, {Key: "c", Method: "profile"},
	}); err != nil {
		t.Fatal(err)
	}
	recs = obs.of("call", obs.take())
	if len(recs) != 2 || recs[0].call.APIVersion != b24oauth.APIVersionV3 || recs[0].call.Method != "crm.deal.add" ||
		recs[0].result.Outcome != b24oauth.OutcomeOK || recs[1].call.Method != "batch" || recs[1].call.Commands != 3 {
		t.Errorf("v3 call and batch: %+v", recs)
	}

	// The portal refuses the access token: one refresh, in the call's context, then a re-send.
	p.ExpireAccessToken()
	mustCallProfile(t, c)
	recs = obs.take()
	calls, refreshes, retries := obs.of("call", recs), obs.of("refresh", recs), obs.of("retry", recs)
	if len(calls) != 1 || len(refreshes) != 1 || len(retries) != 1 {
		t.Fatalf("a call refused with expired_token: %+v", recs)
	}
	callCtx := calls[0].parent
	if r := refreshes[0]; r.refRes.Outcome != b24oauth.RefreshOK || r.refRes.Err != nil || r.ref.MemberID != p.MemberID() ||
		r.ref.Domain != p.Domain() || r.ref.Trigger != b24oauth.TriggerRejected || !strings.HasPrefix(r.parent, "refresh") {
		t.Errorf("refresh: %+v", r)
	}
	if starts := obs.of("refresh-start", recs); len(starts) != 1 || starts[0].parent != callCtx {
		t.Errorf("the refresh did not start in the call's context %q: %+v", callCtx, starts)
	}
	if r := retries[0]; r.retry.Reason != b24oauth.RetryExpiredToken || r.retry.Attempt != 1 || r.parent != callCtx {
		t.Errorf("retry: %+v", r)
	}
	if r := calls[0].result; r.Outcome != b24oauth.OutcomeOK || r.Retries != 1 {
		t.Errorf("the call after the refresh: %+v", r)
	}
	secrets = append(secrets, tokensOf(fake, p)...)

	// A cancelled call.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Call(cctx, "profile", nil); err == nil {
		t.Fatal("a cancelled call worked")
	}
	if recs = obs.of("call", obs.take()); len(recs) != 1 || recs[0].result.Outcome != b24oauth.OutcomeCanceled {
		t.Errorf("cancelled: %+v", recs)
	}

	// The refresh token is revoked: the refresh says so, and so does the call.
	p.RevokeTokens()
	if _, err := c.Call(ctx, "profile", nil); err == nil {
		t.Fatal("a call with revoked tokens worked")
	}
	recs = obs.take()
	if r := obs.of("refresh", recs); len(r) != 1 || r[0].refRes.Outcome != b24oauth.RefreshRevoked || r[0].refRes.Err == nil {
		t.Errorf("refresh of a revoked pair: %+v", r)
	}
	if r := obs.of("call", recs); len(r) != 1 || r[0].result.Outcome != b24oauth.OutcomeAuthError ||
		r[0].result.Status != http.StatusUnauthorized { // the portal's 401 before the refresh
		t.Errorf("call with a revoked pair: %+v", r)
	}
	obs.check(t, secrets...)
}

// Retries report their reason; a call the portal's limits stop is "limited", a call that
// cannot reach the portal is "transport".
func TestObserverReportsRetries(t *testing.T) {
	fake := newFake(t, b24test.WithRateLimit(1, 20))
	p := fake.AddPortal()
	obs := &recordingObserver{}
	rp := *unlimitedParams()
	rp.MaxRetries, rp.RetryDelay = 20, 10*time.Millisecond
	c := newClient(t, fake, p, b24oauth.WithObserver(obs), b24oauth.WithRestrictionParams(rp))
	mustCallProfile(t, c)
	mustCallProfile(t, c) // the fake's bucket (burst 1) is empty: 503 QUERY_LIMIT_EXCEEDED first
	recs := obs.take()
	calls, retries := obs.of("call", recs), obs.of("retry", recs)
	if len(calls) != 2 || len(retries) == 0 || calls[1].result.Retries != len(retries) || calls[1].result.Outcome != b24oauth.OutcomeOK {
		t.Fatalf("calls past the portal's bucket: %+v", recs)
	}
	for i, r := range retries {
		if r.retry.Reason != b24oauth.RetryQueryLimit || r.retry.Attempt != i+1 || r.retry.Delay <= 0 || r.parent != calls[1].parent {
			t.Errorf("retry %d: %+v", i, r)
		}
	}

	rp.MaxRetries = 0
	c.SetRestrictionParams(rp)
	var limited bool
	for i := 0; i < 5 && !limited; i++ { // one of a few calls in a row meets the empty bucket
		_, _ = c.Call(context.Background(), "profile", nil)
		for _, r := range obs.of("call", obs.take()) {
			if r.result.Outcome == b24oauth.OutcomeLimited {
				limited = r.result.Code == "QUERY_LIMIT_EXCEEDED" && r.result.Status == http.StatusServiceUnavailable
			}
		}
	}
	if !limited {
		t.Error("no call was reported limited with QUERY_LIMIT_EXCEEDED and 503")
	}

	// A portal nobody listens at: a read is re-sent, then reported as a transport failure.
	params := paramsFor(fake, p)
	params.ClientEndpoint, params.Domain = "https://127.0.0.1:1/rest/", ""
	rp.MaxRetries, rp.RetryDelay = 2, time.Millisecond
	down, err := b24oauth.New(params, b24oauth.OAuthSecret{ClientID: fake.ClientID(), ClientSecret: fake.ClientSecret()},
		append(fakeOptions(fake), b24oauth.WithObserver(obs), b24oauth.WithRestrictionParams(rp))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Call(context.Background(), "profile", nil); err == nil {
		t.Fatal("a call to a closed port worked")
	}
	recs = obs.take()
	if r := obs.of("call", recs); len(r) != 1 || r[0].result.Outcome != b24oauth.OutcomeTransport || r[0].result.Retries != 2 || r[0].result.Status != 0 {
		t.Errorf("unreachable portal: %+v", r)
	}
	if r := obs.of("retry", recs); len(r) != 2 || r[0].retry.Reason != b24oauth.RetryTransport {
		t.Errorf("unreachable portal's retries: %+v", r)
	}
	obs.check(t, tokensOf(fake, p)...)
}

// An App reports its events (accepted with the portal, rejected without a name anyone could
// make up), its store operations with their failures, and the refreshes of its clients and of
// KeepAlive, adopted ones included.
func TestObserverReportsTheApp(t *testing.T) {
	obs := &recordingObserver{}
	store := b24oauth.NewMemoryStore()
	withObs := func(c *b24oauth.AppConfig) { c.Observer = obs }
	env := newEventEnv(t, nil, store, dealBindings, withObs)
	p := env.install()
	secrets := tokensOf(env.fake, p)
	recs := obs.take()
	events := obs.of("event", recs)
	if len(events) != 1 || events[0].event.Event != b24oauth.EventAppInstall || events[0].event.Outcome != b24oauth.EventAccepted ||
		events[0].event.MemberID != p.MemberID() || events[0].event.Status != http.StatusOK || events[0].event.Duration <= 0 {
		t.Errorf("install: %+v", events)
	}
	ops := map[string]int{}
	for _, r := range obs.of("store", recs) {
		ops[r.store.Op]++
		if r.store.Err != nil || r.store.MemberID != p.MemberID() {
			t.Errorf("install's store operation: %+v", r.store)
		}
	}
	if ops[b24oauth.StoreLoad] == 0 || ops[b24oauth.StoreCreate] != 1 {
		t.Errorf("install's store operations: %v", ops)
	}

	// A forged install (a user's token) and a forged ordinary event.
	user := p.AddUser(false)
	if code, _ := env.post("/install", p.InstallEventAs(user)); code != http.StatusForbidden {
		t.Fatalf("a user's install: %d", code)
	}
	forged := p.ForgedEvent("ONMADEUPEVENT", map[string]any{"FIELDS": map[string]any{"ID": "1"}})
	if code := env.postEvent(forged); code != http.StatusForbidden {
		t.Fatalf("forged event: %d", code)
	}
	secrets = append(secrets, tokensOf(env.fake, p)...)
	events = obs.of("event", obs.take())
	if len(events) != 2 {
		t.Fatalf("rejected events: %+v", events)
	}
	if e := events[0].event; e.Event != b24oauth.EventAppInstall || e.Outcome != b24oauth.EventRejected || e.MemberID != "" ||
		e.Status != http.StatusForbidden || e.Reason == "" {
		t.Errorf("a user's install: %+v", e)
	}
	if e := events[1].event; e.Event != "" || e.Outcome != b24oauth.EventRejected || e.MemberID != "" || e.Status != http.StatusForbidden {
		t.Errorf("forged event: %+v", e)
	}

	// A genuine ordinary event.
	c := env.client(p.MemberID())
	if _, err := c.Call(context.Background(), "crm.deal.add", map[string]any{"fields": map[string]any{"TITLE": "x"}}); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, env.fake)
	var dealAdd []b24oauth.EventInfo
	for _, r := range obs.of("event", obs.take()) {
		dealAdd = append(dealAdd, r.event)
	}
	if len(dealAdd) != 1 || dealAdd[0].Event != "ONCRMDEALADD" || dealAdd[0].Outcome != b24oauth.EventAccepted || dealAdd[0].MemberID != p.MemberID() {
		t.Errorf("ONCRMDEALADD: %+v", dealAdd)
	}

	// Two replicas: the first refreshes, the second's cached client adopts the stored pair.
	obs2 := &recordingObserver{}
	env2 := newAppEnv(t, env.fake, store, func(c *b24oauth.AppConfig) { c.Observer = obs2 })
	c2 := env2.client(p.MemberID())
	mustCallProfile(t, c2)
	p.ExpireAccessToken()
	mustCallProfile(t, c)
	mustCallProfile(t, c2)
	secrets = append(secrets, tokensOf(env.fake, p)...)
	if r := obs.of("refresh", obs.take()); len(r) != 1 || r[0].refRes.Outcome != b24oauth.RefreshOK || r[0].ref.Trigger != b24oauth.TriggerRejected {
		t.Errorf("replica 1's refresh: %+v", r)
	}
	if r := obs2.of("refresh", obs2.take()); len(r) != 1 || r[0].refRes.Outcome != b24oauth.RefreshAdopted || r[0].refRes.Err != nil ||
		r[0].ref.Trigger != b24oauth.TriggerRejected {
		t.Errorf("replica 2's refresh: %+v", r)
	}

	// KeepAlive refreshes an idle portal and reports it.
	env.clock.Advance(48 * time.Hour)
	if _, err := env.app.KeepAlive(context.Background(), b24oauth.KeepAliveOptions{IdleFor: time.Hour, Rate: 1000}); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, tokensOf(env.fake, p)...)
	recs = obs.take()
	if r := obs.of("refresh", recs); len(r) != 1 || r[0].refRes.Outcome != b24oauth.RefreshOK || r[0].ref.MemberID != p.MemberID() ||
		r[0].ref.Trigger != b24oauth.TriggerKeepAlive {
		t.Errorf("KeepAlive's refresh: %+v", r)
	}
	var listed bool
	for _, r := range obs.of("store", recs) {
		listed = listed || (r.store.Op == b24oauth.StoreList && r.store.Err == nil)
	}
	if !listed {
		t.Errorf("KeepAlive's list was not reported: %+v", obs.of("store", recs))
	}

	// A failing store write is reported with its error; a refresh whose pair could not be stored
	// is still ok, with the write's error.
	env.store.setFailWrite(func(*b24oauth.Installation, b24oauth.Installation) bool { return true })
	p.ExpireAccessToken()
	c = env.client(p.MemberID())
	_, _ = c.Call(context.Background(), "profile", nil)
	env.store.setFailWrite(nil)
	secrets = append(secrets, tokensOf(env.fake, p)...)
	recs = obs.take()
	var failed int
	for _, r := range obs.of("store", recs) {
		if r.store.Err != nil {
			failed++
			if !errors.Is(r.store.Err, errStoreDown) || r.store.Op != b24oauth.StoreUpdate {
				t.Errorf("store failure: %+v", r.store)
			}
		}
	}
	if failed == 0 {
		t.Errorf("the failing writes were not reported: %+v", obs.of("store", recs))
	}

	// The uninstall.
	env.mustPost("/uninstall", p.UninstallEvent(false))
	recs = obs.take()
	if e := obs.of("event", recs); len(e) != 1 || e[0].event.Event != b24oauth.EventAppUninstall || e[0].event.Outcome != b24oauth.EventAccepted ||
		e[0].event.MemberID != p.MemberID() {
		t.Errorf("uninstall: %+v", e)
	}
	var deleted bool
	for _, r := range obs.of("store", recs) {
		deleted = deleted || (r.store.Op == b24oauth.StoreDeleteIf && r.store.Err == nil)
	}
	if !deleted {
		t.Errorf("the uninstall's delete was not reported: %+v", obs.of("store", recs))
	}
	obs.check(t, secrets...)
	obs2.check(t, secrets...)
}

// Offline events handed to fn are reported, a refused one as rejected.
func TestObserverReportsOfflineEvents(t *testing.T) {
	obs := &recordingObserver{}
	env := newEventEnv(t, nil, nil, offlineBindings, func(c *b24oauth.AppConfig) { c.Observer = obs })
	p := env.install()
	p.AddDeal(1, map[string]string{"TITLE": "one"})
	p.AddDeal(1, map[string]string{"TITLE": "two"})
	env.rec.setFail(func(ev b24oauth.Event) error {
		if dealID(t, ev) == 2 {
			return errRefused
		}
		return nil
	})
	obs.take()
	if _, err := env.app.PullOfflineEvents(context.Background(), p.MemberID(), env.rec.handle); !errors.Is(err, errRefused) {
		t.Fatalf("PullOfflineEvents: %v", err)
	}
	var got []b24oauth.EventInfo
	for _, r := range obs.of("event", obs.take()) {
		got = append(got, r.event)
	}
	if len(got) != 2 || !got[0].Offline || got[0].Event != "ONCRMDEALADD" || got[0].Outcome != b24oauth.EventAccepted ||
		got[0].MemberID != p.MemberID() || got[1].Outcome != b24oauth.EventRejected || got[1].Status != http.StatusInternalServerError {
		t.Errorf("offline events: %+v", got)
	}
	obs.check(t, tokensOf(env.fake, p)...)
}
