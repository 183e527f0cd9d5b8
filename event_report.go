package b24oauth

import (
	"net/http"
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
		if rep.status >= 300 {
			info.Outcome = EventRejected
			if rep.memberID == "" && info.Event != EventAppInstall && info.Event != EventAppUpdate &&
				info.Event != EventAppUninstall && info.Event != eventInstallPage {
				info.Event = "" // the sender's word only
			}
		}
		o.Event(r.Context(), info)
	})
}
