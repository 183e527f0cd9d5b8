package b24oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

type idempotencyKeyCtx struct{}

// ContextWithIdempotencyKey returns a context under which CallV3 sends key as the
// Idempotency-Key of a write, instead of a fresh random one. Use it to retry a write across
// process restarts: the portal keeps the reply to a key for 24 hours and replays it (see
// Response.Replayed) without executing the write again. key is 1 to 255 printable ASCII
// characters; a call with any other key fails before anything is sent. One key is for one
// request: a portal refuses it for a different method.
func ContextWithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKeyCtx{}, key)
}

// idempotencyKey returns the Idempotency-Key for a v3 write: the context's, or a new random one.
func idempotencyKey(ctx context.Context) (string, error) {
	if k, ok := ctx.Value(idempotencyKeyCtx{}).(string); ok {
		if len(k) == 0 || len(k) > 255 {
			return "", fmt.Errorf("b24oauth: an Idempotency-Key has 1 to 255 characters, not %d", len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				return "", fmt.Errorf("b24oauth: an Idempotency-Key is printable ASCII")
			}
		}
		return k, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("b24oauth: generating an Idempotency-Key: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
