package b24oauth

import (
	"net/http"
	"sync"
	"time"
)

// eventInstallPage is EventInfo.Event for the install page POST of an app with a UI.
const eventInstallPage = "install_page"

// eventReport is what an event handler tells AppConfig.Observer: nil without an Observer (its
// methods then do nothing).
type eventReport struct {
	event    string // the event's name, once it is one the handler knows or was verified
	memberID string // once the event was verified
	status   int
	reason   string
	nothing  bool // answered 200 without acting on it: reported as rejected
}

// named records the event's name.
func (rep *eventReport) named(event string) {
	if rep != nil {
		rep.event = event
	}
}

// verified records the member_id of an event found genuine.
func (rep *eventReport) verified(memberID string) {
	if rep != nil {
		rep.memberID = memberID
	}
}

// rejected records the answer to a refused event.
func (rep *eventReport) rejected(e *eventError) {
	if rep != nil {
		rep.status, rep.reason = e.status, e.reason
	}
}

// ignored records an event answered 200 that changed nothing and was not verified (an
// uninstall of a portal not installed): anyone can send one, so it must not count as accepted.
func (rep *eventReport) ignored(reason string) {
	if rep != nil {
		rep.reason, rep.nothing = reason, true
	}
}

// maxEventNames bounds the ordinary event names an App reports besides those of
// AppConfig.Events. An event's name is verified with the application token only, which on
// current portals every user can read from an app page: without a bound, one user could make
// EventInfo.Event, a metric attribute, take any number of values.
const maxEventNames = 64

// eventNames is the set of ordinary event names an App has reported.
type eventNames struct {
	mu     sync.Mutex
	known  map[string]bool // true: from AppConfig.Events
	learnt int             // names not from AppConfig.Events
}

// reportedEventName is EventInfo.Event for a verified ordinary event named name: name if it is
// an event code that AppConfig.Events binds or one of the first maxEventNames others the App
// saw, else "".
func (a *App) reportedEventName(name string) string {
	if !validEventCode(name) {
		return "" // an offline event's name is the portal's reply, unchecked so far
	}
	n := &a.eventNames
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.known == nil {
		n.known = make(map[string]bool, len(a.cfg.Events))
		for _, b := range a.cfg.Events {
			n.known[b.Event] = true
		}
	}
	if _, ok := n.known[name]; ok {
		return name
	}
	if n.learnt >= maxEventNames {
		return ""
	}
	n.known[name] = false
	n.learnt++
	return name
}

// eventEndpoint is the handler serving events with serve, reporting each to the Observer.
func (a *App) eventEndpoint(serve func(http.ResponseWriter, *http.Request, *eventReport)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o := a.cfg.Observer
		if o == nil {
			serve(w, r, nil)
			return
		}
		start := time.Now()
		rep := &eventReport{status: http.StatusOK}
		serve(w, r, rep)
		info := EventInfo{Event: rep.event, MemberID: rep.memberID, Outcome: EventAccepted,
			Status: rep.status, Reason: rep.reason, Duration: time.Since(start)}
		if rep.status >= 300 || rep.nothing {
			info.Outcome = EventRejected
		}
		switch info.Event {
		case "", EventAppInstall, EventAppUpdate, EventAppUninstall, eventInstallPage:
		default:
			if rep.memberID == "" {
				info.Event = "" // the sender's word only
			} else {
				info.Event = a.reportedEventName(info.Event)
			}
		}
		o.Event(r.Context(), info)
	})
}
