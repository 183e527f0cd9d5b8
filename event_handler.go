package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one verified Bitrix24 event (ONCRMDEALADD, ONTASKUPDATE, ...): POSTed to
// EventHandler, or taken from the portal's offline queue by PullOfflineEvents. It holds no
// token.
type Event struct {
	Name      string    // event code, upper case: "ONCRMDEALADD"
	HandlerID string    // event_handler_id; "" when absent
	Time      time.Time // ts (an offline event's TIMESTAMP_X: its last change); zero when absent
	MemberID  string
	Domain    string // the portal's host, as the stored installation names it
	UserID    int64  // auth[user_id] (an offline event's EVENT_ADDITIONAL user_id); 0 when absent
	// Data is data[...] as a JSON object: bracket keys nest, keys 0..n-1 in order make a list,
	// every leaf is a string (data[FIELDS][ID]=42 is {"FIELDS":{"ID":"42"}}). An offline event's
	// is its EVENT_DATA as the portal returned it (there, the ID is a number).
	Data    json.RawMessage
	Offline bool // taken from the portal's offline queue
	// Automated reports an event that carried no user token: an automation rule, a workflow or
	// an agent caused it. Always false for an offline event.
	Automated bool
	// ID and MessageID are an offline event's ID and MESSAGE_ID in the portal's queue; "" for
	// an event POSTed to EventHandler.
	ID, MessageID string
	// Additional is an offline event's EVENT_ADDITIONAL as the portal returned it; nil
	// otherwise.
	Additional json.RawMessage
}

// Decode unmarshals the event's Data into v (encoding/json).
func (e Event) Decode(v any) error { return json.Unmarshal(e.Data, v) }

// EventFunc handles one verified event. client is the portal's client, as ClientForMember
// gives it (the installation's tokens, the portal's rate limiter). A nil error accepts the
// event; an error refuses it (EventHandler answers 500, PullOfflineEvents reports it to the
// portal and does not clear it).
type EventFunc func(ctx context.Context, ev Event, client *B24OAuth) error

// EventHandler returns the handler for ordinary events bound with event.bind (AppConfig.Events
// binds them): a form POST of event, event_handler_id, data[...] (PHP bracket notation), ts and
// auth[...].
//
// An event is verified before fn sees it: its auth[application_token] must equal the stored
// installation's (compared in constant time). The token is kept with the portal's cached
// client, so a portal in ClientForMember's cache costs no store read per event. An event for an
// unknown portal, with a missing, wrong or another portal's token gets 403; a malformed body,
// or an ONAPP* lifecycle event (InstallHandler and UninstallHandler take those) gets 400;
// neither reaches fn. Events caused by an automation rule carry no user token: they are
// verified the same way and reach fn with Event.Automated set. Nothing else the event says is
// trusted: the portal's domain is the installation's.
//
// fn (nil: accept every verified event) runs before the answer, which is 200 when it returns
// nil and 500 otherwise (Bitrix24 never resends an event either way). Its context is not
// cancelled when the sender hangs up, but ends after AppConfig.EventTimeout. The handler adds
// no wait of its own around fn (no store lock, no request to the portal), but Bitrix24's queue
// waits for the answer and slows down the deliveries of a slow handler, so keep fn short: to
// hand slow work off, copy what it needs from ev and start it with a context made by
// context.WithoutCancel(ctx) (values kept, no deadline), or put it into a durable queue of your
// own. For events that must not be lost, bind offline events and use PullOfflineEvents (or an
// OfflineLoop) instead.
func (a *App) EventHandler(fn EventFunc) http.Handler {
	return a.eventEndpoint(func(w http.ResponseWriter, r *http.Request, rep *eventReport) { a.serveEvent(w, r, rep, fn) })
}

// inboundState is what an App keeps for inbound requests besides the portal cache.
type inboundState struct {
	frameGateOnce sync.Once
	frameGate     *frameGate

	offlineMu   sync.Mutex
	offlineLeft map[string][]string // member_id → reservations (process_id) not fully settled

	recheckMu sync.Mutex
	rechecked map[string]time.Time // member_id → when an event's token was last checked against the store
}

// Bounds of the store reads events with another token than the cached one cause: one per portal
// per tokenRecheckEvery (forged events cannot flood the store), for at most maxTokenRechecks
// portals at a time (the map restarts past it).
const (
	tokenRecheckEvery = time.Second
	maxTokenRechecks  = 10000
)

// mayRecheck reports whether an event of memberID whose token is not the cached one may be
// checked against the store now, and if so records it.
func (in *inboundState) mayRecheck(memberID string, now time.Time) bool {
	in.recheckMu.Lock()
	defer in.recheckMu.Unlock()
	if last, ok := in.rechecked[memberID]; ok && now.Sub(last) < tokenRecheckEvery {
		return false
	}
	if in.rechecked == nil || len(in.rechecked) >= maxTokenRechecks {
		in.rechecked = make(map[string]time.Time)
	}
	in.rechecked[memberID] = now
	return true
}

var (
	errEventNotInstalled = &eventError{http.StatusForbidden, "the application is not installed on this portal"}
	errEventAppToken     = &eventError{http.StatusForbidden, "application_token does not match the installation"}
	errEventNoToken      = &eventError{http.StatusForbidden, "missing auth[application_token]"}
	errEventNoStored     = &eventError{http.StatusForbidden, "the installation has no application token to check the event against"}
	errEventRevoked      = &eventError{http.StatusServiceUnavailable, "the portal's installation is revoked: its administrator must reinstall the application"}
	errEventStore        = &eventError{http.StatusServiceUnavailable, "installation store unavailable"}
	errEventFailed       = &eventError{http.StatusInternalServerError, "the application could not handle the event"}
)

func (a *App) serveEvent(w http.ResponseWriter, r *http.Request, rep *eventReport, fn EventFunc) {
	buf, e := a.readEventBody(w, r)
	if buf != nil {
		defer bodyPool.Put(buf)
	}
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	f, err := parseEventForm(buf.Bytes())
	if err != nil {
		a.reject(w, r, rep, asEventError(err))
		return
	}
	ev, e := f.event()
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.cfg.EventTimeout)
	defer cancel()
	client, e := a.verifyEvent(ctx, f.memberID, f.appToken)
	if e != nil {
		a.reject(w, r, rep, e)
		return
	}
	ev.Domain = client.params().Domain
	rep.named(ev.Name)
	rep.verified(f.memberID)
	if fn == nil {
		fn = acceptEvent
	}
	if err := fn(ctx, ev, client); err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: event handler failed",
			slog.String("member_id", ev.MemberID), slog.String("event", ev.Name), slog.Any("error", err))
		a.reject(w, r, rep, errEventFailed)
		return
	}
	a.log.LogAttrs(ctx, slog.LevelDebug, "b24oauth: event handled",
		slog.String("member_id", ev.MemberID), slog.String("event", ev.Name), slog.String("handler_id", ev.HandlerID))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(okBody)
}

var okBody = []byte("ok\n")

func acceptEvent(context.Context, Event, *B24OAuth) error { return nil }

// bodyPool recycles event bodies.
var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// checkFormPost checks that r is a form POST.
func checkFormPost(w http.ResponseWriter, r *http.Request) *eventError {
	if r.Method != http.MethodPost {
		if w != nil {
			w.Header().Set("Allow", http.MethodPost)
		}
		return &eventError{http.StatusMethodNotAllowed, "method not allowed: POST an event"}
	}
	ct := r.Header.Get("Content-Type")
	if ct != "application/x-www-form-urlencoded" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/x-www-form-urlencoded" {
			return &eventError{http.StatusUnsupportedMediaType, "content type must be application/x-www-form-urlencoded"}
		}
	}
	return nil
}

// readEventBody checks the request and reads its body (at most MaxEventBytes) into a buffer
// of bodyPool, returned even with an error.
func (a *App) readEventBody(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, *eventError) {
	if e := checkFormPost(w, r); e != nil {
		return nil, e
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, a.cfg.MaxEventBytes)); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return buf, &eventError{http.StatusRequestEntityTooLarge, "event body too large"}
		}
		return buf, badRequest("reading the event body failed")
	}
	return buf, nil
}

// verifyEvent finds memberID's portal and checks appToken against its installation's, in
// constant time. A portal in the cache costs no store read; a token that differs from the
// cached one is checked against the store once more (another replica may have stored an
// update that rotated it), at most once a second per portal.
func (a *App) verifyEvent(ctx context.Context, memberID, appToken string) (*B24OAuth, *eventError) {
	client, stored := a.cachedPortal(memberID)
	if client != nil && tokensEqual(stored, appToken) {
		return client, nil
	}
	if client != nil && !a.inbound.mayRecheck(memberID, a.now()) {
		return nil, errEventAppToken
	}
	if client == nil {
		c, err := a.ClientForMember(ctx, memberID)
		switch {
		case errors.Is(err, ErrNotInstalled):
			return nil, errEventNotInstalled
		case isRevoked(err):
			return nil, a.revokedEvent(ctx, memberID, appToken)
		case err != nil:
			a.log.LogAttrs(ctx, slog.LevelError, "b24oauth: loading an installation for an event failed",
				slog.String("member_id", memberID), slog.Any("error", err))
			return nil, errEventStore
		}
		client = c
		if cached, tok := a.cachedPortal(memberID); cached == c {
			stored = tok
			if tokensEqual(stored, appToken) {
				return client, nil
			}
		}
	}
	// Not the cached token, or the client left the cache since it was built: the store decides.
	inst, err := a.storeLoad(ctx, memberID)
	switch {
	case errors.Is(err, ErrNotInstalled):
		return nil, errEventNotInstalled
	case err != nil:
		return nil, errEventStore
	case inst.ApplicationToken == "":
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: event refused: the installation has no application token (reinstall the app, or open its page, to store one)",
			slog.String("member_id", memberID))
		return nil, errEventNoStored
	case !tokensEqual(inst.ApplicationToken, appToken):
		return nil, errEventAppToken
	}
	a.setCachedToken(memberID, client, inst.ApplicationToken)
	return client, nil
}

// revokedEvent answers an event for a revoked portal: 503 if it is genuine (its client cannot
// work until the portal reinstalls the app), 403 otherwise.
func (a *App) revokedEvent(ctx context.Context, memberID, appToken string) *eventError {
	inst, err := a.storeLoad(ctx, memberID)
	switch {
	case errors.Is(err, ErrNotInstalled):
		return errEventNotInstalled
	case err != nil:
		return errEventStore
	case !tokensEqual(inst.ApplicationToken, appToken):
		return errEventAppToken
	}
	a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: event for a revoked installation not handled",
		slog.String("member_id", memberID))
	return errEventRevoked
}

// cachedPortal returns memberID's cached client and the application token of the installation
// it was built from, or nil when the cache holds no usable client of the portal.
func (a *App) cachedPortal(memberID string) (*B24OAuth, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	el, ok := a.entries[memberID]
	if !ok {
		return nil, ""
	}
	e := el.Value.(*portalEntry)
	if e.client == nil || e.client.failFastErr() != nil {
		return nil, ""
	}
	a.lru.MoveToFront(el)
	return e.client, e.appToken
}

// setCachedToken records tok, read from the store, as the application token of memberID's
// cached client c (if it is still cached).
func (a *App) setCachedToken(memberID string, c *B24OAuth, tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if el, ok := a.entries[memberID]; ok {
		if e := el.Value.(*portalEntry); e.client == c {
			e.appToken = tok
		}
	}
}

// eventForm is what an event's body says, before anything is checked.
type eventForm struct {
	name, handlerID, ts                     string
	memberID, appToken, accessToken, userID string
	data                                    *phpNode // nil: no data[...] keys
}

// event validates the form's shape and returns the Event it describes (without Domain).
func (f *eventForm) event() (Event, *eventError) {
	ev := Event{MemberID: f.memberID, HandlerID: f.handlerID, Automated: f.accessToken == ""}
	name, e := eventName(f.name)
	if e != nil {
		return ev, e
	}
	ev.Name = name
	if e := checkEventMemberID("auth[member_id]", f.memberID); e != nil {
		return ev, e
	}
	if f.appToken == "" {
		return ev, errEventNoToken
	}
	if e := checkAppToken("auth[application_token]", f.appToken); e != nil {
		return ev, e
	}
	if len(f.handlerID) > 64 || !isDigits(f.handlerID) {
		return ev, badRequest("invalid event_handler_id")
	}
	if f.ts != "" {
		n, err := strconv.ParseInt(f.ts, 10, 64)
		if err != nil || n < 0 {
			return ev, badRequest("invalid ts")
		}
		ev.Time = time.Unix(n, 0)
	}
	if f.userID != "" {
		n, err := strconv.ParseInt(f.userID, 10, 64)
		if err != nil || n < 0 {
			return ev, badRequest("invalid auth[user_id]")
		}
		ev.UserID = n
	}
	ev.Data = f.data.appendJSON(make([]byte, 0, f.data.jsonSize()), true)
	return ev, nil
}

// eventName checks an event code and returns it upper case. The lifecycle events have their
// own handlers.
func eventName(s string) (string, *eventError) {
	if s == "" {
		return "", badRequest("missing event")
	}
	if !validEventCode(s) {
		return "", badRequest("invalid event")
	}
	s = strings.ToUpper(s)
	switch s {
	case EventAppInstall, EventAppUpdate:
		return "", badRequest("%s is not handled here: mount InstallHandler for it", s)
	case EventAppUninstall:
		return "", badRequest("%s is not handled here: mount UninstallHandler for it", s)
	}
	return s, nil
}

// validEventCode accepts an event code: letters, digits and "_", at most 128.
func validEventCode(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// errMalformedForm is a body parse_str would not read as Bitrix24 writes it.
var errMalformedForm = badRequest("malformed form body")

// parseEventForm reads an event's application/x-www-form-urlencoded body as PHP's parse_str
// does, keeping what an event handler needs: event, event_handler_id, ts, the flat auth[...]
// keys it checks, and data[...] as a tree. Later keys override earlier ones, [] appends, and a
// key that goes deeper than a value replaces it. It is stricter than PHP where Bitrix24 never
// writes what PHP would repair: an invalid percent escape, an unbalanced bracket or text after
// a closing bracket, more than 64 levels of nesting, or a bracketed event, event_handler_id or
// ts are malformed.
func parseEventForm(body []byte) (eventForm, error) {
	var f eventForm
	var key []byte
	var segs [][]byte
	for len(body) > 0 {
		pair := body
		if i := bytes.IndexByte(body, '&'); i >= 0 {
			pair, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(pair) == 0 {
			continue
		}
		rawKey, rawVal, _ := bytes.Cut(pair, []byte{'='})
		var ok bool
		if key, ok = appendUnescaped(key[:0], rawKey); !ok {
			return f, errMalformedForm
		}
		base := key
		var rest []byte
		if i := bytes.IndexByte(key, '['); i >= 0 {
			base, rest = key[:i], key[i:]
		}
		if segs, ok = bracketSegments(segs[:0], rest); !ok {
			return f, errMalformedForm
		}
		var target *string
		switch string(base) {
		case "event", "event_handler_id", "ts":
			if len(segs) > 0 { // event[x]=...: not a string
				return f, errMalformedForm
			}
			target = f.topField(string(base))
		case "auth":
			if len(segs) == 0 { // auth=x replaces the whole auth array
				f.memberID, f.appToken, f.accessToken, f.userID = "", "", "", ""
				continue
			}
			if len(segs) == 1 {
				target = f.authField(string(segs[0]))
			}
		case "data":
			if len(segs) == 0 { // data=x replaces the data array with a string: no data
				f.data = nil
				continue
			}
			val, ok := unescapeString(rawVal)
			if !ok {
				return f, errMalformedForm
			}
			if f.data == nil {
				f.data = &phpNode{}
			}
			f.data.set(segs, val)
			continue
		}
		if target == nil {
			continue
		}
		val, ok := unescapeString(rawVal)
		if !ok {
			return f, errMalformedForm
		}
		*target = strings.TrimSpace(val)
	}
	return f, nil
}

// topField returns the top-level field name: event, event_handler_id or ts.
func (f *eventForm) topField(name string) *string {
	switch name {
	case "event":
		return &f.name
	case "event_handler_id":
		return &f.handlerID
	}
	return &f.ts
}

// authField returns the auth[name] field the handler reads, or nil.
func (f *eventForm) authField(name string) *string {
	switch name {
	case "member_id":
		return &f.memberID
	case "application_token":
		return &f.appToken
	case "access_token":
		return &f.accessToken
	case "user_id":
		return &f.userID
	}
	return nil
}

// bracketSegments appends the bracket segments of rest ("[a][b][]" → a, b, "") to segs.
func bracketSegments(segs [][]byte, rest []byte) ([][]byte, bool) {
	for len(rest) > 0 {
		if rest[0] != '[' {
			return segs, false
		}
		j := bytes.IndexByte(rest, ']')
		if j < 0 {
			return segs, false
		}
		segs = append(segs, rest[1:j])
		rest = rest[j+1:]
		if len(segs) > phpMaxNesting {
			return segs, false
		}
	}
	return segs, true
}

// appendUnescaped appends the query-unescaped s ("+" is a space) to dst; false for an invalid
// percent escape.
func appendUnescaped(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(s) || !isHex(string(s[i+1:i+3]), true) {
				return dst, false
			}
			dst = append(dst, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

// unescapeString is appendUnescaped into a new string.
func unescapeString(s []byte) (string, bool) {
	if bytes.IndexByte(s, '%') < 0 && bytes.IndexByte(s, '+') < 0 {
		return string(s), true
	}
	b, ok := appendUnescaped(make([]byte, 0, len(s)), s)
	return string(b), ok
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// phpNode is a PHP array built by parse_str: keys in insertion order, each value a string or
// another array.
type phpNode struct {
	keys []string
	vals []phpValue
	idx  map[string]int // key → position, once the node is large
	next int            // the next integer key, for "[]"
}

type phpValue struct {
	s    string
	node *phpNode // non-nil: an array
}

const phpNodeIndexAt = 16 // keys from which a node keeps an index

func (n *phpNode) find(k []byte) int {
	if n.idx != nil {
		if i, ok := n.idx[string(k)]; ok {
			return i
		}
		return -1
	}
	for i, kk := range n.keys {
		if kk == string(k) {
			return i
		}
	}
	return -1
}

func (n *phpNode) add(k string, v phpValue) {
	n.keys = append(n.keys, k)
	n.vals = append(n.vals, v)
	if i, ok := phpIntKey(k); ok && i >= n.next {
		n.next = i + 1
	}
	switch {
	case n.idx != nil:
		n.idx[k] = len(n.keys) - 1
	case len(n.keys) >= phpNodeIndexAt:
		n.idx = make(map[string]int, 2*len(n.keys))
		for i, kk := range n.keys {
			n.idx[kk] = i
		}
	}
}

// phpIntKey reports whether k is a key PHP stores as an integer (canonical decimal, here only
// non-negative), and its value.
func phpIntKey(k string) (int, bool) {
	if k == "" || len(k) > 9 || (len(k) > 1 && k[0] == '0') || !isDigits(k) {
		return 0, false
	}
	n, _ := strconv.Atoi(k)
	return n, true
}

// set stores val under the path of bracket segments.
func (n *phpNode) set(path [][]byte, val string) {
	cur := n
	for i, seg := range path {
		pos := -1
		if len(seg) > 0 {
			pos = cur.find(seg)
		}
		var key string
		if pos < 0 {
			if len(seg) == 0 {
				key = strconv.Itoa(cur.next)
			} else {
				key = string(seg)
			}
		}
		if i == len(path)-1 {
			if pos >= 0 {
				cur.vals[pos] = phpValue{s: val}
			} else {
				cur.add(key, phpValue{s: val})
			}
			return
		}
		if pos >= 0 && cur.vals[pos].node != nil {
			cur = cur.vals[pos].node
			continue
		}
		child := &phpNode{}
		if pos >= 0 {
			cur.vals[pos] = phpValue{node: child}
		} else {
			cur.add(key, phpValue{node: child})
		}
		cur = child
	}
}

// isList reports whether the keys are 0..n-1 in order: PHP's json_encode writes a JSON array.
func (n *phpNode) isList() bool {
	for i, k := range n.keys {
		if j, ok := phpIntKey(k); !ok || j != i {
			return false
		}
	}
	return true
}

// jsonSize estimates the length of n's JSON form.
func (n *phpNode) jsonSize() int {
	if n == nil {
		return 2
	}
	size := 2
	for i, k := range n.keys {
		size += len(k) + 4
		if v := n.vals[i]; v.node != nil {
			size += v.node.jsonSize()
		} else {
			size += len(v.s) + 2
		}
	}
	return size
}

// appendJSON appends n as JSON: an object, or a list when its keys are 0..n-1 (never at the top:
// Data is always an object). A nil node is {}.
func (n *phpNode) appendJSON(buf []byte, top bool) []byte {
	if n == nil {
		return append(buf, '{', '}')
	}
	list := !top && n.isList()
	if list {
		buf = append(buf, '[')
	} else {
		buf = append(buf, '{')
	}
	for i, k := range n.keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		if !list {
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
		}
		if v := n.vals[i]; v.node != nil {
			buf = v.node.appendJSON(buf, false)
		} else {
			buf = appendJSONString(buf, v.s)
		}
	}
	if list {
		return append(buf, ']')
	}
	return append(buf, '}')
}
