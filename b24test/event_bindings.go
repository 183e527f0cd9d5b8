package b24test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Binding is one event handler registered on a portal with event.bind.
type Binding struct {
	ID         int    // the event_handler_id of the events sent through it
	Event      string // upper case: "ONCRMDEALADD"
	Handler    string // the handler URL; "" for an offline binding
	AuthType   int    // the user the handler is authorized as; 0: the user who caused the event
	Offline    bool   // event_type=offline: the event goes to the offline queue
	Connector  string // auth_connector of an offline binding
	MinTimeout int    // ONOFFLINEEVENT's options[minTimeout], seconds (default 1)
}

// knownEvents are the events event.bind accepts, with the app scope each needs ("" = basic).
var knownEvents = map[string]string{
	"ONAPPINSTALL": "", "ONAPPUPDATE": "", "ONAPPUNINSTALL": "", "ONAPPTEST": "", "ONOFFLINEEVENT": "",
	"ONCRMDEALADD": "crm", "ONCRMDEALUPDATE": "crm", "ONCRMDEALDELETE": "crm",
	"ONTASKADD": "task", "ONTASKUPDATE": "task", "ONTASKDELETE": "task",
}

// registerEventMethods adds the event.* methods to the built-in ones.
func registerEventMethods() {
	builtins["event.bind"] = builtin{"", mEventBind}
	builtins["event.get"] = builtin{"", mEventGet}
	builtins["event.unbind"] = builtin{"", mEventUnbind}
	builtins["event.offline.get"] = builtin{"", mOfflineGet}
	builtins["event.offline.clear"] = builtin{"", mOfflineClear}
	builtins["event.offline.error"] = builtin{"", mOfflineError}
	builtins["event.offline.list"] = builtin{"", mOfflineList}
}

func argError(desc string) *Error {
	return &Error{Code: "ERROR_ARGUMENT", Description: desc, Status: http.StatusBadRequest}
}

func accessDenied(desc string) *Error {
	return &Error{Code: "ACCESS_DENIED", Description: desc, Status: http.StatusForbidden}
}

// pParam reads a parameter whose name the portal matches case-insensitively (it upper-cases
// the keys of event.* parameters).
func pParam(params *phpArray, key string) (any, bool) {
	for _, k := range params.keys {
		if strings.EqualFold(k, key) {
			return params.m[k], true
		}
	}
	return nil, false
}

// pText is pParam for a scalar, trimmed; ok is false when absent or not a scalar.
func pText(params *phpArray, key string) (string, bool) {
	v, ok := pParam(params, key)
	if !ok {
		return "", false
	}
	s, ok := scalarString(v)
	return strings.TrimSpace(s), ok
}

// pInt reads an integer parameter as PHP's intval does ("" and junk are 0).
func pInt(params *phpArray, key string, def int) int {
	s, ok := pText(params, key)
	if !ok {
		return def
	}
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || end == 0 && s[end] == '-') {
		end++
	}
	n, _ := strconv.Atoi(s[:end])
	return n
}

// mEventBind is event.bind: event, handler, auth_type, event_type (online|offline),
// auth_connector, options[minTimeout]. Errors as the official docs list them (the RU edition is
// the complete one): a second identical binding is 400 ERROR_CORE "Unable to set event
// handler: Handler already binded".
func mEventBind(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	admin := p.users[c.user]
	name, _ := pText(params, "event")
	name = strings.ToUpper(name)
	if name == "" {
		return nil, argError("Argument 'EVENT' is null or empty")
	}
	eventType, _ := pText(params, "event_type")
	eventType = strings.ToLower(eventType)
	if eventType == "" {
		eventType = "online"
	}
	if eventType != "online" && eventType != "offline" {
		return nil, argError("Value must be one of {online|offline}")
	}
	offline := eventType == "offline"
	if offline && !admin {
		return nil, accessDenied("Access denied! Offline events binding requires administrator access rights")
	}
	authType := pInt(params, "auth_type", 0)
	if !offline {
		if authType != 0 && authType != c.user && !admin {
			return nil, accessDenied("Access denied! Event binding with AUTH_TYPE requires administrator access rights")
		}
		if !admin {
			authType = c.user
		}
	} else {
		authType = 0
	}
	handler := ""
	if !offline {
		handler, _ = pText(params, "handler")
		if handler == "" {
			return nil, argError("Argument 'HANDLER' is null or empty")
		}
		u, err := url.Parse(handler)
		if err != nil || u.Host == "" || !strings.Contains(u.Hostname(), ".") {
			return nil, &Error{Code: "ERROR_WRONG_HANDLER_URL", Description: "Wrong handler URL", Status: http.StatusBadRequest}
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, &Error{Code: "ERROR_UNSUPPORTED_PROTOCOL", Description: "Unsupported handler protocol", Status: http.StatusBadRequest}
		}
	}
	scope, known := knownEvents[name]
	if !known || !p.hasScope(scope) {
		return nil, &Error{Code: "ERROR_EVENT_NOT_FOUND", Description: "Event not found", Status: http.StatusBadRequest}
	}
	if offline && name == "ONOFFLINEEVENT" {
		return nil, argError("Offline event cannot be registered for this event.")
	}
	connector := ""
	if offline {
		connector, _ = pText(params, "auth_connector")
	}
	for _, b := range p.bindings {
		if b.Event == name && b.Offline == offline && b.Handler == handler && b.AuthType == authType && b.Connector == connector {
			return nil, &Error{Code: "ERROR_CORE", Description: "Unable to set event handler: Handler already binded", Status: http.StatusBadRequest}
		}
	}
	minTimeout := 1
	if opts, ok := pParam(params, "options"); ok {
		if a, ok := opts.(*phpArray); ok {
			minTimeout = pInt(a, "minTimeout", 1)
		}
	}
	p.nextBinding++
	p.bindings = append(p.bindings, &Binding{
		ID: 10 + p.nextBinding, Event: name, Handler: handler, AuthType: authType,
		Offline: offline, Connector: connector, MinTimeout: minTimeout,
	})
	return true, nil
}

// mEventGet is event.get: the app's bindings (a non-administrator sees only its own online
// ones), shaped as the portal shows them: {event, handler, auth_type, offline: 0} or {event,
// connector_id, offline: 1}.
func mEventGet(c *callCtx, _ *phpArray) (any, *Error) {
	admin := c.p.users[c.user]
	out := []any{}
	for _, b := range c.p.bindings {
		if !admin && (b.Offline || b.AuthType != c.user) {
			continue
		}
		if b.Offline {
			out = append(out, map[string]any{"event": b.Event, "connector_id": b.Connector, "offline": 1})
			continue
		}
		out = append(out, map[string]any{"event": b.Event, "handler": b.Handler, "auth_type": strconv.Itoa(b.AuthType), "offline": 0})
	}
	return out, nil
}

// mEventUnbind is event.unbind: removes the bindings matching the parameters given (event,
// handler, auth_type; event_type selects online or offline ones) and returns {"count": n}.
func mEventUnbind(c *callCtx, params *phpArray) (any, *Error) {
	p := c.p
	admin := p.users[c.user]
	eventType, _ := pText(params, "event_type")
	offline := strings.EqualFold(eventType, "offline")
	if offline && !admin {
		return nil, accessDenied("Access denied! Offline events unbinding requires administrator access rights")
	}
	name, hasName := pText(params, "event")
	handler, hasHandler := pText(params, "handler")
	_, hasAuthType := pParam(params, "auth_type")
	authType := pInt(params, "auth_type", 0)
	if hasAuthType && authType != c.user && !admin {
		return nil, accessDenied("Access denied! Event unbinding with AUTH_TYPE requires administrator access rights")
	}
	kept := p.bindings[:0:0]
	count := 0
	for _, b := range p.bindings {
		match := b.Offline == offline &&
			(!hasName || name == "" || strings.EqualFold(b.Event, name)) &&
			(offline || !hasHandler || handler == "" || b.Handler == handler) &&
			(offline || !hasAuthType || b.AuthType == authType) &&
			(admin || b.AuthType == c.user)
		if match {
			count++
			continue
		}
		kept = append(kept, b)
	}
	p.bindings = kept
	return map[string]any{"count": count}, nil
}

// Bindings returns the app's event bindings on the portal, in the order they were made.
func (p *Portal) Bindings() []Binding {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	out := make([]Binding, len(p.bindings))
	for i, b := range p.bindings {
		out[i] = *b
	}
	return out
}

// dropAppDataLocked forgets what the app registered on the portal: removing the app removes its
// event handlers and its offline queue.
func (p *Portal) dropAppDataLocked() {
	p.bindings = nil
	p.offline = nil
	p.lastSignal = nil
}
