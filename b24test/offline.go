package b24test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReservationLifetime is how long events reserved by event.offline.get with clear=0 stay in the
// queue before the portal deletes them (30 days).
const ReservationLifetime = 30 * 24 * time.Hour

// offlineRec is one entry of a portal's offline event queue (b_rest_event_offline).
type offlineRec struct {
	id         int
	ts         time.Time
	messageID  string // md5(EVENT_NAME|json(EVENT_DATA)): one entry per object and event
	event      string
	data       any
	additional any
	processID  string // "" until reserved
	connector  string
	err        bool
}

// OfflineEvent is one entry of a portal's offline event queue, for tests to inspect.
type OfflineEvent struct {
	ID        int
	Time      time.Time // TIMESTAMP_X: the last change it records
	Event     string
	MessageID string
	Data      json.RawMessage // EVENT_DATA
	ProcessID string          // the reservation it is under; "" when free
	Connector string
	Error     bool // marked with event.offline.error
}

// queueOfflineLocked records event name with data in the queue of connector, as the portal does:
// the queue keeps one entry per object, so an entry not reserved yet for the same event and
// data (the same MESSAGE_ID) is updated in place, with the time of the latest change.
func (p *Portal) queueOfflineLocked(connector, name string, data map[string]any, user int) {
	now := p.s.now()
	raw, _ := json.Marshal(data)
	sum := md5.Sum([]byte(name + "|" + string(raw)))
	msg := hex.EncodeToString(sum[:])
	var additional any = false
	if user > 0 {
		additional = map[string]any{"user_id": strconv.Itoa(user)}
	}
	for _, r := range p.offline {
		if r.messageID == msg && r.connector == connector && r.processID == "" {
			r.ts, r.data, r.additional = now, data, additional
			return
		}
	}
	p.nextOffline++
	p.offline = append(p.offline, &offlineRec{
		id: p.nextOffline, ts: now, messageID: msg, event: name, data: data,
		additional: additional, connector: connector,
	})
}

// QueueOfflineEvent puts event name with data into the portal's offline queue (the one without
// auth_connector) as an offline binding of it would, whether or not one exists, and without
// signalling ONOFFLINEEVENT. For tests and benchmarks that need a queue of a given size.
func (p *Portal) QueueOfflineEvent(name string, data map[string]any) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.queueOfflineLocked("", strings.ToUpper(name), data, 1)
}

// OfflineEvents returns the portal's offline queue, every connector, in ID order.
func (p *Portal) OfflineEvents() []OfflineEvent {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	out := make([]OfflineEvent, 0, len(p.offline))
	for _, r := range p.offline {
		raw, _ := json.Marshal(r.data)
		out = append(out, OfflineEvent{
			ID: r.id, Time: r.ts, Event: r.event, MessageID: r.messageID, Data: raw,
			ProcessID: r.processID, Connector: r.connector, Error: r.err,
		})
	}
	return out
}

// expireReservationsLocked deletes the reserved entries whose last change is older than
// ReservationLifetime, as the portal's agent does.
func (p *Portal) expireReservationsLocked(now time.Time) {
	kept := p.offline[:0]
	for _, r := range p.offline {
		if r.processID != "" && now.Sub(r.ts) > ReservationLifetime {
			continue
		}
		kept = append(kept, r)
	}
	p.offline = kept
}

func (r *offlineRec) row() record {
	return record{
		"ID": strconv.Itoa(r.id), "TIMESTAMP_X": phpDate(r.ts), "EVENT_NAME": r.event,
		"MESSAGE_ID": r.messageID, "PROCESS_ID": r.processID, "ERROR": map[bool]string{true: "1", false: "0"}[r.err],
	}
}

func (r *offlineRec) reply(full bool) map[string]any {
	out := map[string]any{
		"ID": strconv.Itoa(r.id), "TIMESTAMP_X": phpDate(r.ts), "EVENT_NAME": r.event,
		"EVENT_DATA": r.data, "EVENT_ADDITIONAL": r.additional, "MESSAGE_ID": r.messageID,
	}
	if r.data == nil {
		out["EVENT_DATA"] = false
	}
	if full {
		out["PROCESS_ID"] = r.processID
		out["ERROR"] = map[bool]string{true: "1", false: "0"}[r.err]
	}
	return out
}

// less orders a before b by field (ascending unless desc).
func (r *offlineRec) compareBy(o *offlineRec, field string) int {
	switch field {
	case "ID":
		return r.id - o.id
	case "TIMESTAMP_X":
		return r.ts.Compare(o.ts)
	}
	return compare(r.row()[field], o.row()[field])
}

var (
	offlineGetFields  = []string{"ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID"}
	offlineListFields = []string{"ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID", "PROCESS_ID", "ERROR"}
)

// selectOffline returns the queue's entries for which which is true that match the request's
// filter (on the allowed fields), in the request's order (else def), ID breaking ties.
func (p *Portal) selectOffline(params *phpArray, allowed []string, def []orderBy, which func(*offlineRec) bool) []*offlineRec {
	var conds []cond
	if f, ok := pParam(params, "filter"); ok {
		if fa, ok := f.(*phpArray); ok {
			for _, c := range parseV2Filter(fa) {
				if inList(allowed, c.field) {
					conds = append(conds, c)
				}
			}
		}
	}
	order := def
	if o, ok := pParam(params, "order"); ok {
		if oa, ok := o.(*phpArray); ok {
			order = nil
			for _, ob := range parseV2Order(oa) {
				if inList(allowed, ob.field) {
					order = append(order, ob)
				}
			}
		}
	}
	var out []*offlineRec
	for _, r := range p.offline {
		if !which(r) {
			continue
		}
		if len(conds) > 0 {
			row, ok := r.row(), true
			for _, c := range conds {
				if ok = c.match(row); !ok {
					break
				}
			}
			if !ok {
				continue
			}
		}
		out = append(out, r)
	}
	order = append(order, orderBy{field: "ID"})
	sort.SliceStable(out, func(i, j int) bool {
		for _, o := range order {
			if c := out[i].compareBy(out[j], o.field); c != 0 {
				return (c < 0) != o.desc
			}
		}
		return false
	})
	return out
}

// reservationCall checks a call of event.offline.clear or event.offline.error: an
// administrator's, with the process_id of a reservation.
func (p *Portal) reservationCall(c *callCtx, params *phpArray) (string, *Error) {
	if e := p.requireOfflineAdmin(c); e != nil {
		return "", e
	}
	processID, given := pText(params, "process_id")
	if !given {
		return "", argError("Argument 'PROCESS_ID' is null or empty")
	}
	return processID, nil
}

func (p *Portal) requireOfflineAdmin(c *callCtx) *Error {
	if !p.users[c.user] {
		return accessDenied("Access denied!")
	}
	p.expireReservationsLocked(c.now)
	return nil
}

// mOfflineGet is event.offline.get: filter, order (default TIMESTAMP_X ASC), limit (50),
// clear (1), process_id, error (0), auth_connector. Without process_id it reserves up to limit
// free entries under a new process_id, so that parallel calls get disjoint sets; with one, it
// returns what is still reserved under it. clear=1 deletes what it returns. The reply is
// {process_id (null with clear=1 and no process_id given), events: [{ID, TIMESTAMP_X,
// EVENT_NAME, EVENT_DATA, EVENT_ADDITIONAL, MESSAGE_ID}]}.
func mOfflineGet(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	if e := p.requireOfflineAdmin(c); e != nil {
		return nil, e
	}
	clear := pInt(params, "clear", 1) != 0
	processID, given := pText(params, "process_id")
	limit := pInt(params, "limit", pageSize)
	if limit <= 0 {
		return nil, argError("Value must be positive integer")
	}
	wantErrors := pInt(params, "error", 0) == 1
	connector := connectorParam(params)
	byTime := []orderBy{{field: "TIMESTAMP_X"}}
	var mine []*offlineRec
	if given {
		mine = p.selectOffline(params, offlineGetFields, byTime, func(r *offlineRec) bool {
			return r.connector == connector && r.err == wantErrors && r.processID == processID
		})
	} else {
		processID = randAlnum(32)
		mine = p.selectOffline(params, offlineGetFields, byTime, func(r *offlineRec) bool {
			return r.connector == connector && r.err == wantErrors && r.processID == ""
		})
		if len(mine) > limit {
			mine = mine[:limit]
		}
		for _, r := range mine {
			r.processID = processID
		}
	}
	if len(mine) > limit {
		mine = mine[:limit]
	}
	events := make([]any, 0, len(mine))
	for _, r := range mine {
		events = append(events, r.reply(false))
	}
	if clear && len(mine) > 0 {
		p.removeOffline(func(r *offlineRec) bool { return r.processID == processID && r.connector == connector })
	}
	var pid any
	if !clear || given {
		pid = processID
	}
	return map[string]any{"process_id": pid, "events": events}, nil
}

func (p *Portal) removeOffline(drop func(*offlineRec) bool) {
	kept := p.offline[:0]
	for _, r := range p.offline {
		if !drop(r) {
			kept = append(kept, r)
		}
	}
	p.offline = kept
}

// listParam reads an array parameter's values; ok is false when it is absent, not ok (and
// isArray false) when it is a scalar.
func listParam(params *phpArray, key string) (vals []string, present, isArray bool) {
	v, ok := pParam(params, key)
	if !ok {
		return nil, false, false
	}
	a, ok := v.(*phpArray)
	if !ok {
		return nil, true, false
	}
	for _, k := range a.keys {
		s, _ := scalarString(a.m[k])
		vals = append(vals, strings.TrimSpace(s))
	}
	return vals, true, true
}

// mOfflineClear is event.offline.clear: process_id (required), then id[] or message_id[] (32
// characters each); without either it clears everything reserved under process_id.
func mOfflineClear(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	processID, e := p.reservationCall(c, params)
	if e != nil {
		return nil, e
	}
	connector := connectorParam(params)
	mine := func(r *offlineRec) bool { return r.processID == processID && r.connector == connector }
	if msgs, present, isArray := listParam(params, "message_id"); present {
		if !isArray {
			return nil, argError("Value must be array of MESSAGE_ID values")
		}
		for _, m := range msgs {
			if len(m) != 32 {
				return nil, argError("Value must be array of MESSAGE_ID values")
			}
		}
		p.removeOffline(func(r *offlineRec) bool { return mine(r) && inList(msgs, r.messageID) })
		return true, nil
	}
	if ids, present, isArray := listParam(params, "id"); present {
		if !isArray {
			return nil, argError("Value must be array of integers")
		}
		want := map[int]bool{}
		for _, s := range ids {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return nil, argError("Value must be array of integers")
			}
			want[n] = true
		}
		p.removeOffline(func(r *offlineRec) bool { return mine(r) && want[r.id] })
		return true, nil
	}
	p.removeOffline(mine)
	return true, nil
}

// mOfflineError is event.offline.error: process_id and message_id[] (both required). As the
// portal does: a newer free copy of each message is dropped, the copy reserved under
// process_id is marked ERROR=1 and freed (event.offline.get with error=1 returns it; a later
// change of the same object joins it there), and copies reserved elsewhere are dropped.
func mOfflineError(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	processID, e := p.reservationCall(c, params)
	if e != nil {
		return nil, e
	}
	msgs, _, isArray := listParam(params, "message_id")
	if !isArray {
		return nil, argError("Value must be array of MESSAGE_ID values")
	}
	if len(msgs) == 0 {
		return true, nil
	}
	connector := connectorParam(params)
	in := func(r *offlineRec) bool { return r.connector == connector && inList(msgs, r.messageID) }
	p.removeOffline(func(r *offlineRec) bool { return in(r) && !r.err && r.processID != processID })
	for _, r := range p.offline {
		if in(r) && !r.err {
			r.err = true
			if r.processID == processID {
				r.processID = ""
			} else {
				r.processID = "fake_process_id"
			}
		}
	}
	p.removeOffline(func(r *offlineRec) bool { return in(r) && r.processID == "fake_process_id" })
	return true, nil
}

// mOfflineList is event.offline.list: the queue read without changing it, pages of 50 (start),
// filter and order (default ID ASC) also on PROCESS_ID and ERROR.
func mOfflineList(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	if e := p.requireOfflineAdmin(c); e != nil {
		return nil, e
	}
	connector := connectorParam(params)
	all := p.selectOffline(params, offlineListFields, []orderBy{{field: "ID"}}, func(r *offlineRec) bool {
		return r.connector == connector
	})
	start := startParam(params)
	if start < 0 {
		start = 0
	}
	total := len(all)
	if start > total {
		start = total
	}
	end := start + pageSize
	if end > total {
		end = total
	}
	out := make([]any, 0, end-start)
	for _, r := range all[start:end] {
		out = append(out, r.reply(true))
	}
	if end < total {
		next := end
		c.next = &next
	}
	c.total = &total
	return out, nil
}
