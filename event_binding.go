package b24oauth

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
)

// EventBinding is an event the App binds on every portal that installs it (AppConfig.Events).
// Bind ONAPPUNINSTALL to the URL of UninstallHandler when the app's settings have no field for
// it (local REST-only apps).
type EventBinding struct {
	Event   string // "ONCRMDEALADD"
	Handler string // absolute URL where the app serves EventHandler; "": an offline binding
}

// String returns "ONCRMDEALADD -> https://..." or "ONCRMDEALADD (offline)".
func (b EventBinding) String() string {
	if b.Handler == "" {
		return b.Event + " (offline)"
	}
	return b.Event + " -> " + b.Handler
}

// BindError reports the configured events a portal could not bind.
type BindError struct {
	MemberID string
	Failed   []BindFailure
}

// BindFailure is one binding event.bind refused, or could not be asked for.
type BindFailure struct {
	Binding EventBinding
	Err     error // the portal's *APIError, or why it could not be asked
}

// Error names the portal and each binding that failed with its reason.
func (e *BindError) Error() string {
	var b strings.Builder
	b.WriteString("b24oauth: binding events on ")
	b.WriteString(e.MemberID)
	b.WriteString(" failed: ")
	for i, f := range e.Failed {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.String())
	}
	return b.String()
}

// Format prints the error's message (Error) for every verb: never the fields, nor a cause's,
// through fmt's struct printing.
func (e *BindError) Format(f fmt.State, verb rune) { formatError(f, verb, e) }

// String returns the binding and why it failed (the error's message only).
func (f BindFailure) String() string { return f.Binding.String() + ": " + errorText(f.Err) }

// Format prints String for every verb.
func (f BindFailure) Format(s fmt.State, verb rune) { formatRedacted(s, verb, f.String()) }

func errorText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Unwrap returns the failures' errors, for errors.Is and errors.As.
func (e *BindError) Unwrap() []error {
	out := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		out[i] = f.Err
	}
	return out
}

// checkBindings validates AppConfig.Events.
func checkBindings(bs []EventBinding) error {
	seen := make(map[EventBinding]bool, len(bs))
	for _, b := range bs {
		if !validEventCode(b.Event) || b.Event != strings.ToUpper(b.Event) {
			return fmt.Errorf("b24oauth: AppConfig.Events: invalid event %q (want an upper-case event code such as ONCRMDEALADD)", b.Event)
		}
		if b.Handler != "" {
			u, err := url.Parse(b.Handler)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" {
				return fmt.Errorf("b24oauth: AppConfig.Events: %s: the handler must be an absolute http(s) URL", b.Event)
			}
		}
		if seen[b] {
			return fmt.Errorf("b24oauth: AppConfig.Events: %s is listed twice", b)
		}
		seen[b] = true
	}
	return nil
}

// boundEvent is one entry of event.get: {event, handler, auth_type, offline: 0} or {event,
// connector_id, offline: 1}.
type boundEvent struct {
	Event       string  `json:"event"`
	Handler     string  `json:"handler"`
	AuthType    flexInt `json:"auth_type"`
	Offline     flexInt `json:"offline"`
	ConnectorID string  `json:"connector_id"`
}

// covers reports whether the portal's binding e is b (bound without auth_type or connector).
func (e boundEvent) covers(b EventBinding) bool {
	if !strings.EqualFold(e.Event, b.Event) {
		return false
	}
	if b.Handler == "" {
		return e.Offline == 1 && e.ConnectorID == ""
	}
	return e.Offline == 0 && e.Handler == b.Handler && e.AuthType == 0
}

// BindEvents binds AppConfig.Events on memberID's portal with the installation's client (the
// installing administrator's token, which event.bind needs for offline events): event.get,
// then event.bind for each binding the portal lacks, in one batch request. A binding the portal
// reports as already bound (a replica was quicker) counts as bound. It returns how many
// bindings it added and, when some failed, a *BindError naming them. The install handlers call
// it after every accepted install and update; call it yourself to bind on portals installed
// before the bindings were configured.
func (a *App) BindEvents(ctx context.Context, memberID string) (bound int, err error) {
	if len(a.cfg.Events) == 0 {
		return 0, nil
	}
	c, err := a.ClientForMember(ctx, memberID)
	if err != nil {
		return 0, err
	}
	r, err := c.Call(ctx, "event.get", nil)
	if err != nil {
		return 0, fmt.Errorf("b24oauth: event.get on %s: %w", memberID, err)
	}
	var have []boundEvent
	if err := r.Decode(&have); err != nil {
		return 0, fmt.Errorf("b24oauth: event.get on %s: %w", memberID, err)
	}
	var missing []EventBinding
	for _, b := range a.cfg.Events {
		found := false
		for _, e := range have {
			if found = e.covers(b); found {
				break
			}
		}
		if !found {
			missing = append(missing, b)
		}
	}
	berr := &BindError{MemberID: memberID}
	for len(missing) > 0 {
		chunk := missing[:min(len(missing), MaxBatchCommands)]
		missing = missing[len(chunk):]
		cmds := make([]BatchCommand, len(chunk))
		for i, b := range chunk {
			params := map[string]any{"event": b.Event, "handler": b.Handler}
			if b.Handler == "" {
				params = map[string]any{"event": b.Event, "event_type": "offline"}
			}
			cmds[i] = BatchCommand{Key: "b" + strconv.Itoa(i), Method: "event.bind", Params: params}
		}
		resp, err := c.Batch(ctx, cmds)
		for i, b := range chunk {
			var cerr error
			switch {
			case err != nil:
				cerr = err
			default:
				res, ok := resp.Get(cmds[i].Key)
				switch {
				case !ok:
					cerr = ErrBatchCommandNotRun
				case res.Error != nil && !alreadyBound(res.Error):
					cerr = res.Error
				}
			}
			if cerr != nil {
				berr.Failed = append(berr.Failed, BindFailure{Binding: b, Err: cerr})
				continue
			}
			bound++
		}
	}
	if len(berr.Failed) > 0 {
		return bound, berr
	}
	return bound, nil
}

// alreadyBound reports whether event.bind refused a binding because the portal has it, or is
// making it for a concurrent request: "Unable to set event handler: Handler already binded" or
// "...: Process of binding the handler has already started" (ERROR_CORE).
func alreadyBound(e *APIError) bool {
	return strings.EqualFold(e.Code, "ERROR_CORE") && strings.Contains(strings.ToLower(e.Description), "already")
}

// bindEvents runs BindEvents after an accepted install or update: a failure is logged and
// reported to OnBindError, and never fails the install.
func (a *App) bindEvents(ctx context.Context, inst Installation) {
	if len(a.cfg.Events) == 0 {
		return
	}
	n, err := a.BindEvents(ctx, inst.MemberID)
	if err != nil {
		a.log.LogAttrs(ctx, slog.LevelWarn, "b24oauth: binding events failed; the installation is stored",
			slog.String("member_id", inst.MemberID), slog.Any("error", err))
		if a.cfg.OnBindError != nil {
			a.cfg.OnBindError(context.WithoutCancel(ctx), inst, err)
		}
		return
	}
	if n > 0 {
		a.log.LogAttrs(ctx, slog.LevelInfo, "b24oauth: events bound", slog.String("member_id", inst.MemberID), slog.Int("bound", n))
	}
}
