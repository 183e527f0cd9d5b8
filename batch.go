package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"
)

// MaxBatchCommands is the most commands one batch may hold: the portal refuses every command
// beyond it (ERROR_BATCH_LENGTH_EXCEEDED), so Batch rejects a longer list before sending it.
const MaxBatchCommands = 50

// Errors of Batch's validation: nothing was sent. Match them with errors.Is.
var (
	// ErrBatchTooLarge reports a batch of more than MaxBatchCommands commands.
	ErrBatchTooLarge = errors.New("b24oauth: batch has more than 50 commands")

	// ErrInvalidBatch reports a batch the portal could not run as given: no commands, an invalid
	// or nested batch method, keys set on some commands only, or a duplicate key.
	ErrInvalidBatch = errors.New("b24oauth: invalid batch")

	// ErrBatchCommandNotRun is returned by BatchResponse.Decode for a command the portal reported
	// no outcome for: with WithHalt, the commands after the first failing one are not run.
	ErrBatchCommandNotRun = errors.New("b24oauth: batch command was not run")
)

// BatchCommand is one REST v2 call inside a batch.
//
// Key names the command in the reply and in references of later commands
// ("$result[Key][ID]"). Either every command of a batch has a Key or none has: without keys the
// commands are sent as a list and their keys in the reply are "0", "1", ... in order.
//
// Params is what Call accepts (a map, a struct, json.RawMessage or nil: anything that encodes to
// a JSON object). It is sent in the PHP query form the portal parses (fields[TITLE]=...), so a
// string value may hold a reference such as "$result[deal][ID]".
type BatchCommand struct {
	Key    string
	Method string
	Params any
}

// BatchOption configures one Batch call.
type BatchOption func(*batchOptions)

type batchOptions struct {
	halt bool
}

// WithHalt sets whether the portal stops at the first failing command (halt=1). The failing
// command's error is reported; the commands after it are not run and have no outcome. Off by
// default: every command runs whatever the others do.
func WithHalt(halt bool) BatchOption {
	return func(o *batchOptions) { o.halt = halt }
}

// BatchResult is the outcome of one command of a batch.
type BatchResult struct {
	Result json.RawMessage // the command's "result", undecoded; nil when it failed
	Error  *APIError       // the command's error (Status 0), or nil when it succeeded
	Total  int             // result_total of a list method; 0 when absent
	Next   int             // result_next of a list method; 0 when absent
	Time   ResponseTime    // result_time of the command
}

// Decode unmarshals Result into v, or returns the command's *APIError if it failed.
func (r BatchResult) Decode(v any) error {
	if r.Error != nil {
		return r.Error
	}
	if len(r.Result) == 0 {
		return errors.New("b24oauth: the batch command has no result")
	}
	return json.Unmarshal(r.Result, v)
}

// BatchResponse is the reply to a batch: the outcome of each command, by key.
type BatchResponse struct {
	// Keys are the commands' keys in the order they were given ("0", "1", ... for commands
	// without keys), whether or not the portal ran them.
	Keys []string
	// Results holds the outcome of every command the portal reported on, by key. A command not
	// run (after a failure, with WithHalt) has no entry.
	Results map[string]BatchResult
	// Time is the batch request's own time block.
	Time ResponseTime
}

// Get returns the outcome of the command with that key, and false when there is none (no such
// command, or it was not run).
func (r *BatchResponse) Get(key string) (BatchResult, bool) {
	res, ok := r.Results[key]
	return res, ok
}

// Decode unmarshals the result of the command with that key into v. It returns the command's
// *APIError if it failed, and an error matching ErrBatchCommandNotRun if the portal reported no
// outcome for it.
func (r *BatchResponse) Decode(key string, v any) error {
	res, ok := r.Results[key]
	if !ok {
		return fmt.Errorf("%w: %q", ErrBatchCommandNotRun, key)
	}
	return res.Decode(v)
}

// Err returns the errors of the failed commands joined in command order (each an *APIError,
// reachable with errors.As), or nil when every command that ran succeeded.
func (r *BatchResponse) Err() error {
	var errs []error
	for _, k := range r.Keys {
		if res, ok := r.Results[k]; ok && res.Error != nil {
			errs = append(errs, res.Error)
		}
	}
	return errors.Join(errs...)
}

// All returns the outcomes in command order, skipping commands that were not run.
func (r *BatchResponse) All() iter.Seq2[string, BatchResult] {
	return func(yield func(string, BatchResult) bool) {
		for _, k := range r.Keys {
			if res, ok := r.Results[k]; ok {
				if !yield(k, res) {
					return
				}
			}
		}
	}
}

// Batch runs up to MaxBatchCommands REST v2 calls in one request (the "batch" method). Later
// commands may use earlier results through references ("$result[key][ID]").
//
// The commands are checked before anything is sent: an empty list, more than
// MaxBatchCommands commands (ErrBatchTooLarge), an invalid method, a nested batch, keys set on
// some commands only, or a duplicate key is an error matching ErrInvalidBatch or
// ErrBatchTooLarge.
//
// A failing command does not fail Batch: its *APIError is in the reply (see BatchResponse.Err).
// Batch returns an error only when the request as a whole failed (transport, authorization,
// limits), with Call's refresh and retry behaviour. A batch holding any command that writes is
// never re-sent when its fate is unknown. Each command counts as one request against the portal's
// rate limit (the client's limiter takes one token per command), and its reported time against
// its own method's operating limit.
func (b *B24OAuth) Batch(ctx context.Context, cmds []BatchCommand, opts ...BatchOption) (*BatchResponse, error) {
	var o batchOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	payload, keys, readOnly, err := encodeBatch(cmds, o.halt)
	if err != nil {
		return nil, err
	}
	resp, err := b.send(ctx, APIVersionV2, "batch", payload, readOnly, len(cmds))
	if err != nil {
		return nil, err
	}
	out, err := decodeBatch(resp.Result, keys, cmds)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: batch: %w", err)
	}
	out.Time = resp.Time
	b.observeBatch(out, cmds)
	return out, nil
}

// observeBatch tells the limiter what the commands cost: the portal counts each command against
// its method's operating limit, as if it were called alone.
func (b *B24OAuth) observeBatch(resp *BatchResponse, cmds []BatchCommand) {
	for i, k := range resp.Keys {
		r, ok := resp.Results[k]
		switch {
		case !ok:
		case r.Error != nil:
			if r.Error.Code == "OPERATION_TIME_LIMIT" {
				b.limiter.operationTimeLimit(cmds[i].Method, time.Time{})
			}
		case r.Time.OperatingResetAt != 0:
			// Only a time block that has the operating figures says anything about them.
			b.limiter.observe(cmds[i].Method, r.Time.Operating, r.Time.OperatingResetAt)
		}
	}
}

// encodeBatch validates cmds and builds the batch payload: {"cmd": ..., "halt": 0|1}, cmd being
// an object in command order (keyed commands) or a list. Each command is
// "method?php_query"; in a JSON body the strings are sent as they are, not encoded again.
func encodeBatch(cmds []BatchCommand, halt bool) (payload []byte, keys []string, readOnly bool, err error) {
	keys, readOnly, err = checkBatch(cmds)
	if err != nil {
		return nil, nil, false, err
	}
	keyed := cmds[0].Key != ""
	open, closing := byte('['), byte(']')
	if keyed {
		open, closing = '{', '}'
	}
	buf := append(make([]byte, 0, 64*len(cmds)), `{"cmd":`...)
	buf = append(buf, open)
	for i, c := range cmds {
		cmd, err := batchCommandString(c)
		if err != nil {
			return nil, nil, false, fmt.Errorf("b24oauth: batch command %q: %w", keys[i], err)
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		if keyed {
			// Written by hand: the portal runs the commands in the object's key order.
			buf = appendJSONString(buf, keys[i])
			buf = append(buf, ':')
		}
		buf = appendJSONString(buf, cmd)
	}
	buf = append(buf, closing)
	if halt {
		buf = append(buf, `,"halt":1}`...)
	} else {
		buf = append(buf, `,"halt":0}`...)
	}
	return buf, keys, readOnly, nil
}

// checkBatch validates the commands of a batch (v2 or v3) and returns their keys, and whether
// every command only reads.
func checkBatch(cmds []BatchCommand) (keys []string, readOnly bool, err error) {
	switch {
	case len(cmds) == 0:
		return nil, false, fmt.Errorf("%w: no commands", ErrInvalidBatch)
	case len(cmds) > MaxBatchCommands:
		return nil, false, fmt.Errorf("%w (%d commands)", ErrBatchTooLarge, len(cmds))
	}
	keyed := cmds[0].Key != ""
	keys = make([]string, len(cmds))
	seen := make(map[string]bool, len(cmds))
	readOnly = true
	for i, c := range cmds {
		if (c.Key != "") != keyed {
			return nil, false, fmt.Errorf("%w: command %d: set Key on every command or on none", ErrInvalidBatch, i)
		}
		key := c.Key
		if !keyed {
			key = strconv.Itoa(i)
		} else if seen[key] {
			return nil, false, fmt.Errorf("%w: duplicate key %q", ErrInvalidBatch, key)
		}
		seen[key] = true
		keys[i] = key
		if checkMethod(c.Method) != nil {
			return nil, false, fmt.Errorf("%w: command %q: invalid method name %q", ErrInvalidBatch, key, c.Method)
		}
		if m := strings.ToLower(c.Method); m == "batch" || m == "batch.json" {
			return nil, false, fmt.Errorf("%w: command %q: a batch cannot hold a batch", ErrInvalidBatch, key)
		}
		readOnly = readOnly && isReadOnly(c.Method)
	}
	return keys, readOnly, nil
}

// batchCommandString renders one command as "method?query" ("method" without params).
func batchCommandString(c BatchCommand) (string, error) {
	params, err := paramsMap(c.Params)
	if err != nil {
		return "", err
	}
	if len(params) == 0 {
		return c.Method, nil
	}
	q, err := encodePHPQuery(params)
	if err != nil {
		return "", err
	}
	if q == "" {
		return c.Method, nil
	}
	return c.Method + "?" + q, nil
}

// paramsMap decodes params (anything encodeParams accepts) into a map, numbers as json.Number.
func paramsMap(params any) (map[string]any, error) {
	data, err := encodeParams(params)
	if err != nil || data == nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding params: %w", err)
	}
	return m, nil
}

// batchReply is a batch's "result": each member a PHP array, so a JSON object, a list ([] when
// empty, or when the keys are 0..n-1) or null.
type batchReply struct {
	Result      json.RawMessage `json:"result"`
	ResultError json.RawMessage `json:"result_error"`
	ResultTotal json.RawMessage `json:"result_total"`
	ResultNext  json.RawMessage `json:"result_next"`
	ResultTime  json.RawMessage `json:"result_time"`
}

// decodeBatch reads a batch's result into a BatchResponse.
func decodeBatch(raw json.RawMessage, keys []string, cmds []BatchCommand) (*BatchResponse, error) {
	var reply batchReply
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		raw = nil // an empty PHP array: nothing was reported
	}
	if err := json.Unmarshal(raw, &reply); len(raw) > 0 && err != nil {
		return nil, fmt.Errorf("unexpected reply: %w", err)
	}
	results, err := phpArray(reply.Result)
	if err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	errs, err := phpArray(reply.ResultError)
	if err != nil {
		return nil, fmt.Errorf("result_error: %w", err)
	}
	totals, err := phpArray(reply.ResultTotal)
	if err != nil {
		return nil, fmt.Errorf("result_total: %w", err)
	}
	nexts, err := phpArray(reply.ResultNext)
	if err != nil {
		return nil, fmt.Errorf("result_next: %w", err)
	}
	times, err := phpArray(reply.ResultTime)
	if err != nil {
		return nil, fmt.Errorf("result_time: %w", err)
	}
	methods := make(map[string]string, len(keys))
	for i, k := range keys {
		methods[k] = cmds[i].Method
	}
	out := &BatchResponse{Keys: keys, Results: make(map[string]BatchResult, len(keys))}
	for k, v := range results {
		r := out.Results[k]
		r.Result = v
		out.Results[k] = r
	}
	for k, v := range errs {
		r := out.Results[k]
		r.Result = nil
		r.Error = commandError(v, methods[k])
		out.Results[k] = r
	}
	// Totals, nexts and times only complete an outcome already reported.
	for k, v := range totals {
		if r, ok := out.Results[k]; ok {
			var n flexInt
			if err := json.Unmarshal(v, &n); err != nil {
				return nil, fmt.Errorf("result_total[%q]: %w", k, err)
			}
			r.Total = int(n)
			out.Results[k] = r
		}
	}
	for k, v := range nexts {
		if r, ok := out.Results[k]; ok {
			var n flexInt
			if err := json.Unmarshal(v, &n); err != nil {
				return nil, fmt.Errorf("result_next[%q]: %w", k, err)
			}
			r.Next = int(n)
			out.Results[k] = r
		}
	}
	for k, v := range times {
		if r, ok := out.Results[k]; ok {
			if err := json.Unmarshal(v, &r.Time); err != nil {
				return nil, fmt.Errorf("result_time[%q]: %w", k, err)
			}
			out.Results[k] = r
		}
	}
	return out, nil
}

// phpArray decodes a PHP array as json_encode writes it: an object, or a list whose keys are
// its indexes ("0", "1", ...). null and absent are empty.
func phpArray(raw json.RawMessage) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if (raw[0] == '{' || raw[0] == '[') && jsonCount(raw, MaxBatchCommands) > MaxBatchCommands {
		// A batch has at most 50 commands; decoding every entry of a forged reply would cost
		// many times its bytes.
		return nil, fmt.Errorf("%w: more than %d entries", ErrResponseTooLarge, MaxBatchCommands)
	}
	switch raw[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		return m, nil
	case '[':
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, err
		}
		m := make(map[string]json.RawMessage, len(list))
		for i, v := range list {
			m[strconv.Itoa(i)] = v
		}
		return m, nil
	}
	return nil, errors.New("not a JSON object or list")
}

// commandError turns an entry of result_error into an *APIError. The portal sends
// {"error":"CODE","error_description":"..."}; anything else is kept as the description.
func commandError(raw json.RawMessage, method string) *APIError {
	e := &APIError{Method: method, Version: APIVersionV2}
	var body struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
		Argument         string          `json:"argument"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		e.Description = string(raw)
		return e
	}
	e.Description, e.Argument = body.ErrorDescription, body.Argument
	if len(body.Error) > 0 && body.Error[0] == '{' {
		var v3 struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(body.Error, &v3) == nil {
			e.Code = v3.Code
			if e.Description == "" {
				e.Description = v3.Message
			}
		}
	} else {
		_ = json.Unmarshal(body.Error, &e.Code)
	}
	return e
}
