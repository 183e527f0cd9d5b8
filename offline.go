package b24oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// offlinePageSize is how many events one event.offline.get reserves (the portal's default).
const offlinePageSize = 50

// maxRefusalsKept bounds the fn errors PullOfflineEvents returns.
const maxRefusalsKept = 10

// PullOfflineEvents drains the portal's offline queue (events bound with event_type=offline,
// an EventBinding without Handler): it takes events page by page (event.offline.get with
// clear=0, which reserves them under a process_id), calls fn for each in queue order, clears
// the ones fn accepted (event.offline.clear) and reports the ones it refused
// (event.offline.error). It returns when the queue holds nothing more for it, with how many
// events fn accepted.
//
// Delivery is at least once: an event is cleared only after fn accepted it, so fn must
// tolerate seeing an event again. Processes pulling the same portal at once never hand one
// event to two of them: the portal reserves each page for one caller, and no lock serialises
// the pullers. Each page's clear and error reports travel with the request for the next page
// (one batch request per page, through the portal's client and rate limiter).
//
// An event fn refused is never cleared: the portal keeps it as an error (event.offline.get with
// error=1 or event.offline.list show it; the portal adds later changes of the same object to
// it). The error then returned wraps fn's errors; pulling goes on meanwhile. When ctx ends in
// the middle of a page, the events already handled are settled and the rest stay reserved; the
// App takes them first at the portal's next pull in this process (a process that dies mid-page
// leaves them reserved until the portal drops the reservation, after 30 days).
//
// The installation's user must be a portal administrator (the offline queue is theirs), and the
// portal's plan must allow clear=0 (Bitrix24's feature rest_offline_extended).
func (a *App) PullOfflineEvents(ctx context.Context, memberID string, fn EventFunc) (handled int, err error) {
	if fn == nil {
		return 0, errors.New("b24oauth: PullOfflineEvents needs an EventFunc")
	}
	c, err := a.ClientForMember(ctx, memberID)
	if err != nil {
		return 0, err
	}
	p := &offlinePull{app: a, c: c, memberID: memberID, fn: fn}
	return p.run(ctx)
}

// offlinePull is one PullOfflineEvents.
type offlinePull struct {
	app      *App
	c        *B24OAuth
	memberID string
	fn       EventFunc

	handled  int
	refusals []error
	refused  int
}

// settlement is what a handled page leaves to tell the portal.
type settlement struct {
	processID   string
	cleared     []string // IDs fn accepted
	failed      []string // MESSAGE_IDs fn refused
	unsettled   bool     // events of the page stay reserved (not handed to fn, or not reportable)
	interrupted bool     // ctx ended before every event was handed to fn
}

func (s settlement) commands() []BatchCommand {
	var cmds []BatchCommand
	if len(s.cleared) > 0 {
		cmds = append(cmds, BatchCommand{Key: "clear", Method: "event.offline.clear",
			Params: map[string]any{"process_id": s.processID, "id": s.cleared}})
	}
	if len(s.failed) > 0 {
		cmds = append(cmds, BatchCommand{Key: "error", Method: "event.offline.error",
			Params: map[string]any{"process_id": s.processID, "message_id": s.failed}})
	}
	return cmds
}

// offlinePage is event.offline.get's result.
type offlinePage struct {
	ProcessID *string        `json:"process_id"`
	Events    []offlineEntry `json:"events"`
}

type offlineEntry struct {
	ID         flexString      `json:"ID"`
	Time       string          `json:"TIMESTAMP_X"`
	Name       string          `json:"EVENT_NAME"`
	Data       json.RawMessage `json:"EVENT_DATA"`
	Additional json.RawMessage `json:"EVENT_ADDITIONAL"`
	MessageID  flexString      `json:"MESSAGE_ID"`
}

// flexString decodes a JSON string or number as a string.
type flexString string

func (s *flexString) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var v string
		err := json.Unmarshal(data, &v)
		*s = flexString(v)
		return err
	}
	if string(data) == "null" {
		*s = ""
		return nil
	}
	var n json.Number
	err := json.Unmarshal(data, &n)
	*s = flexString(n)
	return err
}

func (p *offlinePull) run(ctx context.Context) (int, error) {
	left := p.app.takeOfflineLeft(p.memberID)
	var prev settlement
	for {
		get := map[string]any{"clear": 0, "limit": offlinePageSize}
		leftover := len(left) > 0
		if leftover {
			get["process_id"] = left[0]
		}
		cmds := append(prev.commands(), BatchCommand{Key: "get", Method: "event.offline.get", Params: get})
		resp, err := p.c.Batch(ctx, cmds)
		if err != nil {
			if len(prev.commands()) > 0 || prev.unsettled {
				p.keepOpen(prev.processID)
			}
			p.keepOpen(left...)
			return p.handled, fmt.Errorf("b24oauth: pulling offline events of %s: %w", p.memberID, err)
		}
		if p.settled(resp) != nil || prev.unsettled {
			p.keepOpen(prev.processID)
		}
		res, _ := resp.Get("get")
		var page offlinePage
		switch {
		case res.Error != nil:
			p.keepOpen(left...)
			return p.handled, fmt.Errorf("b24oauth: pulling offline events of %s: %w", p.memberID, res.Error)
		case res.Decode(&page) != nil || (len(page.Events) > 0 && (page.ProcessID == nil || *page.ProcessID == "")):
			p.keepOpen(left...)
			return p.handled, fmt.Errorf("b24oauth: pulling offline events of %s: unexpected event.offline.get result", p.memberID)
		}
		if leftover {
			left = left[1:]
		}
		prev = settlement{}
		if len(page.Events) == 0 {
			if leftover {
				continue
			}
			p.app.log.LogAttrs(ctx, slog.LevelDebug, "b24oauth: offline events pulled",
				slog.String("member_id", p.memberID), slog.Int("handled", p.handled), slog.Int("refused", p.refused))
			return p.handled, p.err()
		}
		prev = p.handle(ctx, *page.ProcessID, page.Events)
		if prev.interrupted {
			p.interrupted(ctx, prev, left)
			return p.handled, ctx.Err()
		}
	}
}

// interrupted settles, on its own time, what fn handled of a page before ctx ended, and keeps
// the page's reservation and the leftovers for the next pull.
func (p *offlinePull) interrupted(ctx context.Context, s settlement, left []string) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.app.cfg.EventTimeout)
	defer cancel()
	if cmds := s.commands(); len(cmds) > 0 {
		if resp, err := p.c.Batch(sctx, cmds); err == nil {
			_ = p.settled(resp)
		}
	}
	p.keepOpen(s.processID)
	p.keepOpen(left...)
	p.app.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: offline pull interrupted; the rest of its page stays reserved for the next pull",
		slog.String("member_id", p.memberID), slog.Any("error", ctx.Err()))
}

// handle hands the page's events to fn, in order, until ctx ends.
func (p *offlinePull) handle(ctx context.Context, processID string, events []offlineEntry) settlement {
	s := settlement{processID: processID}
	domain := p.c.params().Domain
	for _, e := range events {
		if ctx.Err() != nil {
			s.unsettled, s.interrupted = true, true
			break
		}
		ev := Event{
			Name:       strings.ToUpper(e.Name),
			Time:       parseDate(e.Time),
			MemberID:   p.memberID,
			Domain:     domain,
			Data:       e.Data,
			Offline:    true,
			ID:         string(e.ID),
			MessageID:  string(e.MessageID),
			Additional: e.Additional,
		}
		var add struct {
			UserID flexInt `json:"user_id"`
		}
		if len(e.Additional) > 0 && e.Additional[0] == '{' && json.Unmarshal(e.Additional, &add) == nil {
			ev.UserID = int64(add.UserID)
		}
		err := p.handOver(ctx, ev)
		if err != nil {
			p.refused++
			if len(p.refusals) < maxRefusalsKept {
				p.refusals = append(p.refusals, err)
			}
			if ev.MessageID == "" {
				s.unsettled = true // cannot be reported: it stays reserved, for the next pull
			} else {
				s.failed = append(s.failed, ev.MessageID)
			}
			continue
		}
		p.handled++
		s.cleared = append(s.cleared, ev.ID)
	}
	return s
}

// handOver hands ev to fn, and reports it to the App's Observer.
func (p *offlinePull) handOver(ctx context.Context, ev Event) error {
	o := p.app.cfg.Observer
	if o == nil {
		return p.fn(ctx, ev, p.c)
	}
	start := time.Now()
	err := p.fn(ctx, ev, p.c)
	info := EventInfo{Event: p.app.reportedEventName(ev.Name), MemberID: p.memberID, Outcome: EventAccepted,
		Status: http.StatusOK, Offline: true, Duration: time.Since(start)}
	if err != nil {
		info.Outcome, info.Status, info.Reason = EventRejected, errEventFailed.status, errEventFailed.reason
	}
	o.Event(ctx, info)
	return err
}

// settled checks the clear and error commands in resp.
func (p *offlinePull) settled(resp *BatchResponse) error {
	for _, key := range []string{"clear", "error"} {
		if r, ok := resp.Get(key); ok && r.Error != nil {
			p.app.log.LogAttrs(context.Background(), slog.LevelWarn, "b24oauth: settling offline events failed; they stay reserved for the next pull",
				slog.String("member_id", p.memberID), slog.Any("error", r.Error))
			return r.Error
		}
	}
	return nil
}

func (p *offlinePull) err() error {
	if p.refused == 0 {
		return nil
	}
	return fmt.Errorf("b24oauth: %d offline events of %s refused (reported with event.offline.error): %w",
		p.refused, p.memberID, errors.Join(p.refusals...))
}

// keepOpen remembers reservations that may still hold events of this portal, for its next pull.
func (p *offlinePull) keepOpen(processIDs ...string) {
	in := &p.app.inbound
	in.offlineMu.Lock()
	defer in.offlineMu.Unlock()
	for _, pid := range processIDs {
		if pid == "" {
			continue
		}
		if in.offlineLeft == nil {
			in.offlineLeft = make(map[string][]string)
		}
		dup := false
		for _, have := range in.offlineLeft[p.memberID] {
			dup = dup || have == pid
		}
		if !dup {
			in.offlineLeft[p.memberID] = append(in.offlineLeft[p.memberID], pid)
		}
	}
}

// takeOfflineLeft takes the reservations of memberID a pull left open.
func (a *App) takeOfflineLeft(memberID string) []string {
	in := &a.inbound
	in.offlineMu.Lock()
	defer in.offlineMu.Unlock()
	left := in.offlineLeft[memberID]
	delete(in.offlineLeft, memberID)
	return left
}

// OfflineLoopOptions configures an OfflineLoop.
type OfflineLoopOptions struct {
	// Interval is how often every installed portal is pulled; 0: 5 minutes; negative: never
	// (only signals). The first pass starts with Run.
	Interval time.Duration
	// Members lists the portals of a pass; nil: the Store's (it must be a Lister; a store that
	// wraps another may be one only when the other is: its List then yields ErrNotLister, which
	// each pass reports).
	Members func(ctx context.Context) iter.Seq2[string, error]
	// Concurrency is how many portals are pulled at once; 0: 4. Each pull is paced by its
	// portal's rate limiter.
	Concurrency int
	// OnError receives a pull's failure (a portal not installed any more, or revoked, is not
	// one); nil: it is logged.
	OnError func(ctx context.Context, memberID string, err error)
}

// OfflineLoop keeps the offline queues of every portal drained: it pulls a portal when told to
// (Notify, or an ONOFFLINEEVENT through Signals), and every portal on an interval. A portal is
// pulled by one goroutine at a time in a process; a signal during its pull makes it pulled
// again after. Replicas may each run a loop: the portals' reservations keep them from handing
// an event out twice.
type OfflineLoop struct {
	app     *App
	fn      EventFunc
	opts    OfflineLoopOptions
	members func(ctx context.Context) iter.Seq2[string, error]

	mu      sync.Mutex
	queue   []string
	queued  map[string]bool
	running map[string]bool
	again   map[string]bool
	wake    chan struct{}
}

// NewOfflineLoop returns a loop that hands the events of every portal's offline queue to fn
// (see PullOfflineEvents). Start it with Run.
func (a *App) NewOfflineLoop(fn EventFunc, opts OfflineLoopOptions) (*OfflineLoop, error) {
	if fn == nil {
		return nil, errors.New("b24oauth: NewOfflineLoop needs an EventFunc")
	}
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Minute
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	l := &OfflineLoop{
		app: a, fn: fn, opts: opts, members: opts.Members,
		queued: map[string]bool{}, running: map[string]bool{}, again: map[string]bool{},
		wake: make(chan struct{}, 1),
	}
	if l.members == nil && opts.Interval > 0 {
		lister, ok := a.cfg.Store.(Lister)
		if !ok {
			return nil, fmt.Errorf("b24oauth: NewOfflineLoop: set OfflineLoopOptions.Members: %w", ErrNotLister)
		}
		l.members = func(ctx context.Context) iter.Seq2[string, error] { return a.storeList(ctx, lister) }
	}
	return l, nil
}

// String returns a summary of the loop: its settings and how many portals wait or are being
// pulled; never the App.
func (l *OfflineLoop) String() string {
	if l == nil {
		return "<nil>"
	}
	l.mu.Lock()
	queued, running := len(l.queue), len(l.running)
	l.mu.Unlock()
	return fmt.Sprintf("b24oauth.OfflineLoop{Interval: %s, Concurrency: %d, queued: %d, running: %d}",
		l.opts.Interval, l.opts.Concurrency, queued, running)
}

// Format prints String for every verb.
func (l *OfflineLoop) Format(f fmt.State, verb rune) { formatRedacted(f, verb, l.String()) }

// LogValue implements slog.LogValuer with String.
func (l *OfflineLoop) LogValue() slog.Value { return slog.StringValue(l.String()) }

// Notify asks for a pull of memberID's queue soon (at once if a worker is free).
func (l *OfflineLoop) Notify(memberID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.queued[memberID]:
	case l.running[memberID]:
		l.again[memberID] = true
	default:
		l.queued[memberID] = true
		l.queue = append(l.queue, memberID)
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// Signals returns an EventFunc for EventHandler that turns ONOFFLINEEVENT (bind it with a
// Handler to be told when a portal's queue has new events) into a Notify of its portal, and
// passes every other event to next (nil: accepted and ignored).
func (l *OfflineLoop) Signals(next EventFunc) EventFunc {
	return func(ctx context.Context, ev Event, c *B24OAuth) error {
		if ev.Name == "ONOFFLINEEVENT" && !ev.Offline {
			l.Notify(ev.MemberID)
			return nil
		}
		if next == nil {
			return nil
		}
		return next(ctx, ev, c)
	}
}

// Run pulls until ctx ends, then waits for the pulls under way and returns ctx's error.
func (l *OfflineLoop) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < l.opts.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.work(ctx)
		}()
	}
	if l.opts.Interval > 0 {
		t := time.NewTicker(l.opts.Interval)
		defer t.Stop()
		for {
			l.pass(ctx)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
	return ctx.Err()
}

// pass queues every portal the members function lists.
func (l *OfflineLoop) pass(ctx context.Context) {
	for m, err := range l.members(ctx) {
		if err != nil {
			if ctx.Err() == nil {
				l.report(ctx, "", fmt.Errorf("b24oauth: listing portals: %w", err))
			}
			return
		}
		l.Notify(m)
	}
}

func (l *OfflineLoop) work(ctx context.Context) {
	for {
		l.mu.Lock()
		var m string
		if len(l.queue) > 0 {
			m, l.queue = l.queue[0], l.queue[1:]
			delete(l.queued, m)
			l.running[m] = true
			if len(l.queue) > 0 {
				select {
				case l.wake <- struct{}{}:
				default:
				}
			}
		}
		l.mu.Unlock()
		if m == "" {
			select {
			case <-l.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		_, err := l.app.PullOfflineEvents(ctx, m, l.fn)
		if err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotInstalled) && !isRevoked(err) {
			l.report(ctx, m, err)
		}
		l.mu.Lock()
		delete(l.running, m)
		again := l.again[m]
		delete(l.again, m)
		l.mu.Unlock()
		if again {
			l.Notify(m)
		}
	}
}

func (l *OfflineLoop) report(ctx context.Context, memberID string, err error) {
	if l.opts.OnError != nil {
		l.opts.OnError(ctx, memberID, err)
		return
	}
	l.app.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: offline pull failed", slog.String("member_id", memberID), slog.Any("error", err))
}
