package b24test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultDeliveryTimeout is how long the fake waits for an app's event handler to answer.
// The real limit is undocumented.
const DefaultDeliveryTimeout = 10 * time.Second

// WithDeliveryTimeout sets how long the fake waits for an app's event handler to answer
// (default DefaultDeliveryTimeout). A handler that does not answer in time is recorded as a
// failed delivery; like the real portal, the fake never retries.
func WithDeliveryTimeout(d time.Duration) Option {
	return func(c *config) { c.deliveryTimeout = d }
}

// WithDeliveryClient sets the *http.Client the fake POSTs events to the app's handlers with.
// Default: a client of its own (redirects not followed) with the delivery timeout.
func WithDeliveryClient(c *http.Client) Option {
	return func(cfg *config) { cfg.deliveryClient = c }
}

// Delivery is one event the fake POSTed to a handler bound with event.bind, and how the handler
// answered. The portal never resends an event, whatever the answer.
type Delivery struct {
	MemberID  string
	Event     string     // "ONCRMDEALADD"
	HandlerID string     // event_handler_id: the binding's ID
	URL       string     // the binding's handler URL
	Form      url.Values // the body as sent (real tokens included)
	Status    int        // the handler's HTTP status; 0 when it did not answer
	Body      string     // the start of the handler's reply (at most 1 KiB)
	Err       error      // why the handler could not be reached, or nil
}

// String prints the delivery with the tokens of its form redacted.
func (d Delivery) String() string {
	errText := "<nil>"
	if d.Err != nil {
		errText = d.Err.Error()
	}
	return "b24test.Delivery{MemberID: " + strconv.Quote(d.MemberID) + ", Event: " + strconv.Quote(d.Event) +
		", HandlerID: " + strconv.Quote(d.HandlerID) + ", URL: " + strconv.Quote(d.URL) +
		", Form: " + redactValues(d.Form) + ", Status: " + strconv.Itoa(d.Status) + ", Err: " + strconv.Quote(errText) + "}"
}

// Format makes every fmt verb print String.
func (d Delivery) Format(f fmt.State, verb rune) { formatAs(f, verb, d.String()) }

// LogValue implements slog.LogValuer as String.
func (d Delivery) LogValue() slog.Value { return slog.StringValue(d.String()) }

// firedEvent is an event a REST call caused.
type firedEvent struct {
	name string
	data map[string]any // the event's data, e.g. {"FIELDS": {"ID": 42}}
}

// fire records that the call caused event name about the object with id.
func (c *callCtx) fire(name string, id int) {
	c.fired = append(c.fired, firedEvent{name: name, data: map[string]any{"FIELDS": map[string]any{"ID": id}}})
}

// connectorParam is a call's auth_connector: changes made with it are not queued for the
// offline bindings with the same connector.
func connectorParam(params *phpArray) string {
	s, _ := pText(params, "auth_connector")
	return s
}

// fireLocked sends what events evs, caused by user (0: an automation rule) through a call
// with auth_connector connector, mean to the portal's bindings: a delivery to each online
// handler, an entry in the offline queue for each offline binding, then one ONOFFLINEEVENT
// signal to its handlers. Nothing is sent before the app is installed.
func (p *Portal) fireLocked(evs []firedEvent, user int, connector string) {
	if len(evs) == 0 || !p.installed {
		return
	}
	queued := false
	for _, ev := range evs {
		for _, b := range p.bindings {
			if b.Event != ev.name {
				continue
			}
			if b.Offline {
				if connector != "" && b.Connector == connector {
					continue
				}
				p.queueOfflineLocked(b.Connector, ev.name, ev.data, user)
				queued = true
				continue
			}
			p.s.out.push(p.deliveryLocked(b, ev.name, ev.data, bindingUser(b, user), false))
		}
	}
	if queued {
		p.signalOfflineLocked(user)
	}
}

// bindingUser is whose tokens an event through b carries: the binding's auth_type, else the user
// who caused it.
func bindingUser(b *Binding, user int) int {
	if b.AuthType > 0 {
		return b.AuthType
	}
	return user
}

// signalOfflineLocked sends ONOFFLINEEVENT (no data; the full auth block, refresh token
// included, as the docs show it) to its online handlers, at most once per minTimeout seconds.
func (p *Portal) signalOfflineLocked(user int) {
	now := p.s.now()
	for _, b := range p.bindings {
		if b.Offline || b.Event != "ONOFFLINEEVENT" {
			continue
		}
		if last, ok := p.lastSignal[b.ID]; ok && b.MinTimeout > 0 && now.Sub(last) < time.Duration(b.MinTimeout)*time.Second {
			continue
		}
		if p.lastSignal == nil {
			p.lastSignal = map[int]time.Time{}
		}
		p.lastSignal[b.ID] = now
		p.s.out.push(p.deliveryLocked(b, b.Event, nil, bindingUser(b, user), true))
	}
}

func (p *Portal) deliveryLocked(b *Binding, name string, data map[string]any, user int, withRefresh bool) *Delivery {
	return &Delivery{
		MemberID:  p.memberID,
		Event:     name,
		HandlerID: strconv.Itoa(b.ID),
		URL:       b.Handler,
		Form:      p.eventFormLocked(name, b.ID, data, user, withRefresh),
	}
}

// eventFormLocked builds an ordinary event's body: event, event_handler_id (when handlerID >
// 0), data[...] in bracket notation, ts and auth[...]. An event caused by a user carries a
// fresh access token of that user (access_token, expires, expires_in, scope, domain,
// server_endpoint, status, client_endpoint, member_id, user_id, application_token; the refresh
// token only when withRefresh); one caused by an automation rule (user 0) carries no tokens:
// domain, client_endpoint, server_endpoint, member_id and application_token only.
func (p *Portal) eventFormLocked(name string, handlerID int, data map[string]any, user int, withRefresh bool) url.Values {
	s := p.s
	f := url.Values{}
	f.Set("event", name)
	if handlerID > 0 {
		f.Set("event_handler_id", strconv.Itoa(handlerID))
	}
	if len(data) > 0 {
		q, _ := url.ParseQuery(EncodePHPQuery(map[string]any{"data": data}))
		for k, vs := range q {
			f[k] = vs
		}
	}
	f.Set("ts", strconv.FormatInt(s.now().Unix(), 10))
	if _, known := p.users[user]; user > 0 && known {
		p.fullAuthLocked(f, p.issueKeepingCurrentLocked(user), user, withRefresh)
		return f
	}
	f.Set("auth[domain]", p.domain)
	f.Set("auth[client_endpoint]", p.ClientEndpoint())
	f.Set("auth[server_endpoint]", s.OAuthServerEndpoint())
	f.Set("auth[member_id]", p.memberID)
	f.Set("auth[application_token]", p.appToken)
	return f
}

// issueKeepingCurrentLocked issues a pair for user without changing Tokens (the app's chain).
func (p *Portal) issueKeepingCurrentLocked(user int) Tokens {
	cur := p.current
	t := p.issueLocked(user)
	p.current = cur
	return t
}

// NewEvent returns the ordinary event name as the portal would POST it to a handler: data in
// bracket notation (nested maps and slices; every leaf sent as a string), event_handler_id of
// the portal's first online binding of name (absent when there is none), the portal's real
// application_token, and a fresh access token of user, or no tokens at all for user 0 (an
// event caused by an automation rule, a workflow or an agent). Send it with Event.Post or
// Event.Send to test a handler directly; events the portal causes itself (AddDeal, crm.deal.add)
// are delivered to bound handlers without help.
func (p *Portal) NewEvent(name string, data map[string]any, user int) Event {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	if _, known := p.users[user]; user != 0 && !known {
		panic("b24test: portal has no user " + strconv.Itoa(user))
	}
	id := 0
	for _, b := range p.bindings {
		if !b.Offline && b.Event == strings.ToUpper(name) {
			id = b.ID
			break
		}
	}
	return Event{Query: url.Values{}, Form: p.eventFormLocked(strings.ToUpper(name), id, data, user, false)}
}

// ForgedEvent returns event name as a forger who knows the portal's member_id and domain (but
// not its application_token) would build it: NewEvent's shape for user 1, with a random
// application_token and an access token the OAuth server never issued. A handler must refuse
// it. Edit its Form for other forgeries (another portal's application_token, none at all...).
func (p *Portal) ForgedEvent(name string, data map[string]any) Event {
	ev := p.NewEvent(name, data, 1)
	ev.Form.Set("auth[application_token]", randHex(16))
	ev.Form.Set("auth[access_token]", randHex(35))
	return ev
}

// AddDeal adds a deal as user would in the portal (0: an automation rule) and fires
// ONCRMDEALADD: to the bound handlers (over HTTP, see Server.Deliveries) and to the offline
// queue. fields are deal fields (TITLE, STAGE_ID, ...). It returns the deal's ID.
func (p *Portal) AddDeal(user int, fields map[string]string) int {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	id := p.addDealLocked(s.now())
	_, d := p.findDeal(id)
	d["TITLE"] = ""
	for k, v := range fields {
		if k = strings.ToUpper(k); k != "ID" {
			d[k] = v
		}
	}
	p.fireLocked([]firedEvent{{name: "ONCRMDEALADD", data: map[string]any{"FIELDS": map[string]any{"ID": id}}}}, user, "")
	return id
}

// UpdateDeal changes a deal as user would in the portal (0: an automation rule) and fires
// ONCRMDEALUPDATE. It reports whether the deal exists.
func (p *Portal) UpdateDeal(user, id int, fields map[string]string) bool {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	_, d := p.findDeal(id)
	if d == nil {
		return false
	}
	for k, v := range fields {
		if k = strings.ToUpper(k); k != "ID" {
			d[k] = v
		}
	}
	d["DATE_MODIFY"] = phpDate(s.now())
	p.fireLocked([]firedEvent{{name: "ONCRMDEALUPDATE", data: map[string]any{"FIELDS": map[string]any{"ID": id}}}}, user, "")
	return true
}

// Deliveries returns every event delivery to the app's handlers so far (all portals), in the
// order they were made. Deliveries are asynchronous: call WaitForDeliveries first.
func (s *Server) Deliveries() []Delivery { return s.out.results("") }

// Deliveries returns the portal's event deliveries so far (see Server.Deliveries).
func (p *Portal) Deliveries() []Delivery { return p.s.out.results(p.memberID) }

// WaitForDeliveries waits until every event fired so far was delivered to its handler (or
// failed to be). Do not call it from an event handler of the fake's own deliveries: it would
// wait for itself.
func (s *Server) WaitForDeliveries(ctx context.Context) error {
	s.out.mu.Lock()
	idle := s.out.idle
	s.out.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outbox sends deliveries one at a time, in order, as the portal's event queue does.
type outbox struct {
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	queue   []*Delivery
	running bool
	pending int
	idle    chan struct{} // closed while nothing is pending
	stopped chan struct{} // closed when the worker has exited (nil: no worker)
	done    []Delivery
	closed  bool
}

func (o *outbox) init(c *http.Client, timeout time.Duration) {
	if c == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		c = &http.Client{
			Transport:     tr,
			Timeout:       timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	o.client = c
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.idle = make(chan struct{})
	close(o.idle)
}

func (o *outbox) push(d *Delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	if o.pending == 0 {
		o.idle = make(chan struct{})
	}
	o.pending++
	o.queue = append(o.queue, d)
	if !o.running {
		o.running = true
		o.stopped = make(chan struct{})
		go o.work(o.stopped)
	}
}

func (o *outbox) work(stopped chan struct{}) {
	defer close(stopped)
	for {
		o.mu.Lock()
		if len(o.queue) == 0 || o.closed {
			o.running = false
			o.mu.Unlock()
			return
		}
		d := o.queue[0]
		o.queue = o.queue[1:]
		o.mu.Unlock()

		o.send(d)

		o.mu.Lock()
		o.done = append(o.done, *d)
		o.pending--
		if o.pending == 0 {
			close(o.idle)
		}
		o.mu.Unlock()
	}
}

func (o *outbox) send(d *Delivery) {
	req, err := http.NewRequestWithContext(o.ctx, http.MethodPost, d.URL, strings.NewReader(d.Form.Encode()))
	if err != nil {
		d.Err = err
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Bitrix24 Webhook Engine")
	resp, err := o.client.Do(req)
	if err != nil {
		d.Err = err
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	d.Status, d.Body = resp.StatusCode, string(body)
}

func (o *outbox) results(memberID string) []Delivery {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []Delivery
	for _, d := range o.done {
		if memberID == "" || d.MemberID == memberID {
			out = append(out, d)
		}
	}
	return out
}

// close drops what is queued, stops the delivery under way and waits for the worker to exit.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	for _, d := range o.queue {
		d.Err = errServerClosed
		o.done = append(o.done, *d)
	}
	if n := len(o.queue); n > 0 {
		o.pending -= n
		o.queue = nil
		if o.pending == 0 {
			close(o.idle)
		}
	}
	stopped := o.stopped
	o.mu.Unlock()
	o.cancel()
	if stopped != nil {
		<-stopped
	}
	o.client.CloseIdleConnections()
}

var errServerClosed = errors.New("b24test: the server was closed before the delivery")
