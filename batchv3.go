package b24oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// BatchV3 runs up to MaxBatchCommands REST v3 calls in one request: a POST to
// https://<domain>/rest/api/batch whose commands are {"method": ..., "query": <params>} in
// order. Params of each command is what CallV3 accepts (a map, a struct, json.RawMessage or nil);
// it is sent as JSON, as the command's own body would be.
//
// The reply is read as Batch's: Keys in command order ("0", "1", ... without keys), and a
// result per key. The commands are checked before anything is sent, as Batch checks them (at
// most MaxBatchCommands, ErrBatchTooLarge; keys on all commands or none, valid methods, no
// nested batch; ErrInvalidBatch).
//
// What a failing command does is not documented, so both ways are handled, and either way the
// caller gets that command's *APIError (errors.As): when the portal fails the batch whole (the
// official JS SDK's reading), BatchV3 returns it as its error; when the command's slot of the
// result holds {"error": {...}}, it is that key's BatchResult.Error, never its Result. The batch
// counts one request per command against the client's rate limiter. WithHalt has no effect.
func (b *B24OAuth) BatchV3(ctx context.Context, cmds []BatchCommand, opts ...BatchOption) (*BatchResponse, error) {
	payload, keys, readOnly, err := encodeBatchV3(cmds)
	if err != nil {
		return nil, err
	}
	resp, err := b.send(ctx, APIVersionV3, "batch", payload, readOnly, len(cmds))
	if err != nil {
		return nil, err
	}
	out, err := decodeBatchV3(resp.Result, keys, cmds)
	if err != nil {
		return nil, fmt.Errorf("b24oauth: batch (v3): %w", err)
	}
	out.Time = resp.Time
	return out, nil
}

// encodeBatchV3 validates cmds and builds the v3 batch payload. The commands go as an object
// keyed "0", "1", ... (the form the official JS SDK sends, which leaves room for the auth field
// beside them) in command order.
func encodeBatchV3(cmds []BatchCommand) (payload []byte, keys []string, readOnly bool, err error) {
	keys, readOnly, err = checkBatch(cmds)
	if err != nil {
		return nil, nil, false, err
	}
	buf := append(make([]byte, 0, 64*len(cmds)), '{')
	for i, c := range cmds {
		query, err := encodeParams(c.Params)
		if err != nil {
			return nil, nil, false, fmt.Errorf("b24oauth: batch command %q: %w", keys[i], err)
		}
		if query == nil {
			query = []byte("{}")
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendQuote(buf, strconv.Itoa(i))
		buf = append(buf, `:{"method":`...)
		buf = appendJSONString(buf, c.Method)
		buf = append(buf, `,"query":`...)
		buf = append(buf, query...)
		buf = append(buf, '}')
	}
	return append(buf, '}'), keys, readOnly, nil
}

// decodeBatchV3 reads a v3 batch's result, an array in command order, into a BatchResponse. A
// slot {"error": {"code": ...}} is that command's *APIError.
func decodeBatchV3(raw json.RawMessage, keys []string, cmds []BatchCommand) (*BatchResponse, error) {
	raw = bytes.TrimSpace(raw)
	out := &BatchResponse{Keys: keys, Results: make(map[string]BatchResult, len(keys))}
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return out, nil
	}
	if raw[0] != '[' {
		return nil, fmt.Errorf("the result is not a list")
	}
	if jsonCount(raw, MaxBatchCommands) > len(keys) {
		return nil, fmt.Errorf("%w: more results than commands", ErrResponseTooLarge)
	}
	var slots []json.RawMessage
	if err := json.Unmarshal(raw, &slots); err != nil {
		return nil, fmt.Errorf("decoding result: %w", err)
	}
	for i, slot := range slots {
		if e := slotError(slot, cmds[i].Method); e != nil {
			out.Results[keys[i]] = BatchResult{Error: e}
			continue
		}
		out.Results[keys[i]] = BatchResult{Result: slot}
	}
	return out, nil
}

// slotError returns the *APIError a v3 batch slot holds ({"error": {"code", "message",
// "validation"}} and nothing else of note), or nil for a result.
func slotError(slot json.RawMessage, method string) *APIError {
	slot = bytes.TrimSpace(slot)
	if len(slot) == 0 || slot[0] != '{' {
		return nil
	}
	var body struct {
		Error *struct {
			Code       string          `json:"code"`
			Message    string          `json:"message"`
			Validation json.RawMessage `json:"validation"`
		} `json:"error"`
	}
	if json.Unmarshal(slot, &body) != nil || body.Error == nil || body.Error.Code == "" {
		return nil
	}
	e := &APIError{Method: method, Version: APIVersionV3, Code: body.Error.Code}
	e.Validation, e.Description = decodeValidation(body.Error.Validation, body.Error.Message)
	return e
}
