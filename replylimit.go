package b24oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// The bounds on what the client reads, so that a hostile or broken portal (or anything posing as
// one) cannot make the process run out of memory. A real portal never reaches them: its largest
// reply, a batch of 50 list pages of 50 rows each, is a few MiB.
const (
	// DefaultMaxResponseBytes is the largest REST reply (v2, v3, batch, list page) a client
	// reads unless WithMaxResponseBytes says otherwise: 32 MiB.
	DefaultMaxResponseBytes = 32 << 20

	// DefaultResponseBudgetBytes is the size of the budget shared by every client of the
	// process that has no WithResponseBudget of its own: 256 MiB (see ResponseBudget).
	DefaultResponseBudgetBytes = 256 << 20

	// freeReplyBytes of a reply are read without the budget: most replies end within them.
	freeReplyBytes = 64 << 10

	// maxPageRows bounds the rows of one list page (a v2 page has 50, a v3 page up to 1000).
	maxPageRows = 1000
	// maxValidationErrors bounds the field errors decoded from one v3 error reply.
	maxValidationErrors = 256
)

// ErrResponseTooLarge reports a reply larger than its bound: DefaultMaxResponseBytes (or
// WithMaxResponseBytes) for a REST reply, 64 KiB for a reply of the OAuth server. The rest of
// the reply is not read, and the request is not retried: the portal did run it. Match it with
// errors.Is.
var ErrResponseTooLarge = errors.New("b24oauth: the reply is larger than allowed")

// tooLarge is ErrResponseTooLarge with the bound that was exceeded.
func tooLarge(limit int64) error {
	return fmt.Errorf("%w (%d bytes)", ErrResponseTooLarge, limit)
}

// ResponseBudget bounds the memory of the replies being read at once by the clients sharing it.
//
// The first 64 KiB of a reply are read freely (most replies are smaller). A longer reply then
// takes from the budget, before reading on, as much as it may grow to (its Content-Length, or
// the client's reply bound when the portal sent none), and gives it back once it is decoded. A
// reply that finds the budget taken waits for it, within its context. So the bytes of long
// replies in memory at once never exceed the budget, however many calls run concurrently.
//
// A reply holds its share while it is read and decoded, which the HTTP client's Timeout bounds
// (90 s by default): a portal that sends a long reply slowly delays other long replies, but
// cannot make the process hold more. A reply bound larger than the budget takes all of it.
//
// Every client without WithResponseBudget shares one budget of DefaultResponseBudgetBytes per
// process. A ResponseBudget is safe for concurrent use.
type ResponseBudget struct {
	size int64
	sem  *semaphore.Weighted
}

// NewResponseBudget returns a budget of maxBytes (DefaultResponseBudgetBytes when maxBytes is
// 0 or less), to share between clients with WithResponseBudget.
func NewResponseBudget(maxBytes int64) *ResponseBudget {
	if maxBytes <= 0 {
		maxBytes = DefaultResponseBudgetBytes
	}
	return &ResponseBudget{size: maxBytes, sem: semaphore.NewWeighted(maxBytes)}
}

// processBudget is the budget of the clients that were given none.
var processBudget = NewResponseBudget(DefaultResponseBudgetBytes)

// testHookBudgetWait, when set (tests), is called when a reply is about to wait for the budget.
var testHookBudgetWait atomic.Pointer[func()]

// acquire takes n bytes of the budget (all of it when n is larger), waiting while they are taken,
// and returns how much it took.
func (b *ResponseBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, b.size)
	if b.sem.TryAcquire(n) {
		return n, nil
	}
	if hook := testHookBudgetWait.Load(); hook != nil {
		(*hook)()
	}
	if err := b.sem.Acquire(ctx, n); err != nil {
		return 0, err
	}
	return n, nil
}

// release gives back what acquire took.
func (b *ResponseBudget) release(n int64) {
	if n > 0 {
		b.sem.Release(n)
	}
}

// readReply reads resp's body, at most limit bytes: a longer body is ErrResponseTooLarge, found
// from its Content-Length before anything is read when the portal sent one. Past its first
// freeReplyBytes, the body is read under budget; held is what it took, which the caller gives
// back (budget.release) once done with the bytes, also when err is not nil.
func readReply(ctx context.Context, resp *http.Response, limit int64, budget *ResponseBudget) (body []byte, held int64, err error) {
	return readReplyInto(ctx, resp, limit, budget, nil)
}

// readReplyInto is readReply reading into scratch (its capacity; at most freeReplyBytes) when
// the reply fits in it or its length is unknown. body is then scratch's array, until the reply
// outgrows it.
func readReplyInto(ctx context.Context, resp *http.Response, limit int64, budget *ResponseBudget, scratch []byte) (body []byte, held int64, err error) {
	cl := resp.ContentLength
	if cl > limit {
		return nil, 0, tooLarge(limit)
	}
	var buf []byte
	switch {
	case scratch != nil && cl < int64(cap(scratch)): // also a reply of unknown length (cl < 0)
		buf = scratch[:0]
	case cl >= 0:
		buf = make([]byte, 0, min(cl, freeReplyBytes)+1) // +1: room to read the EOF without growing
	default:
		buf = make([]byte, 0, 512)
	}
	for {
		if len(buf) == cap(buf) {
			next := min(2*int64(cap(buf)), limit+1)
			if int64(len(buf)) >= freeReplyBytes && limit > freeReplyBytes && held == 0 {
				want := limit + 1
				if cl >= 0 {
					want = cl + 1
				}
				if held, err = budget.acquire(ctx, want); err != nil {
					return nil, 0, err
				}
				if cl >= 0 {
					next = cl + 1
				}
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		n, rerr := resp.Body.Read(buf[len(buf):min(int64(cap(buf)), limit+1)])
		buf = buf[:len(buf)+n]
		switch {
		case int64(len(buf)) > limit:
			return nil, held, tooLarge(limit)
		case rerr == io.EOF:
			return buf, held, nil
		case rerr != nil:
			return nil, held, rerr
		}
	}
}

// pooledReplyBytes is the capacity of the buffers in replyBufs: replies up to 16 KiB (a
// record, a short list) are read without allocating. It stays within freeReplyBytes, so that a
// reply reads as much without the budget as it would otherwise.
const pooledReplyBytes = 16 << 10

// replyBufs holds buffers (*[]byte of pooledReplyBytes capacity) to read replies into. A
// buffer goes back once its reply is decoded: nothing decoded refers to it (strings and
// json.RawMessage values are copies).
var replyBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, pooledReplyBytes)
	return &b
}}

// jsonCount returns the number of members of the JSON object, or elements of the JSON array, raw
// (valid JSON, as decoded before), counting no further than limit+1: a cheap check, before a
// decode that allocates per element, that a reply holds no more than a real one.
func jsonCount(raw []byte, limit int) int {
	depth, commas := 0, 0
	inString, escaped, nonEmpty := false, false, false
	for _, c := range raw {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		if depth == 1 && c != ']' && c != '}' && c != ',' {
			nonEmpty = true
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		case ',':
			if depth == 1 {
				if commas++; commas >= limit {
					return commas + 1
				}
			}
		}
	}
	if !nonEmpty {
		return 0
	}
	return commas + 1
}
