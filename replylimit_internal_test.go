package b24oauth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
)

// TestBudgetHoldsBackLongReplies: while one long reply holds the budget, another reads no
// further than its free part: it waits, and reads on once the first is done. Replies read into
// a buffer of their own, or (as post does) into a pooled one first.
func TestBudgetHoldsBackLongReplies(t *testing.T) {
	t.Run("own buffer", func(t *testing.T) { testBudgetHoldsBackLongReplies(t, func() []byte { return nil }) })
	t.Run("pooled buffer", func(t *testing.T) {
		testBudgetHoldsBackLongReplies(t, func() []byte { return make([]byte, 0, pooledReplyBytes) })
	})
}

func testBudgetHoldsBackLongReplies(t *testing.T, scratch func() []byte) {
	const limit = 1 << 20
	budget := NewResponseBudget(limit + 1) // room for one long reply of unknown length
	waiting := make(chan struct{}, 1)
	setBudgetHook(t, func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	})

	type read struct {
		body []byte
		held int64
		err  error
	}
	start := func(r io.Reader) <-chan read {
		done := make(chan read, 1)
		go func() {
			resp := &http.Response{ContentLength: -1, Body: io.NopCloser(r)}
			body, held, err := readReplyInto(context.Background(), resp, limit, budget, scratch())
			done <- read{body, held, err}
		}()
		return done
	}
	free := bytes.Repeat([]byte("x"), freeReplyBytes) // fills the free part: a byte more needs the budget
	pr1, pw1 := io.Pipe()
	pr2, pw2 := io.Pipe()
	done1, done2 := start(pr1), start(pr2)

	// The first reply reads past its free part: it takes the budget.
	if _, err := pw1.Write(free); err != nil {
		t.Fatal(err)
	}
	if _, err := pw1.Write([]byte("more")); err != nil { // read, so the budget is taken
		t.Fatal(err)
	}
	// The second reads its free part, then must wait; its next bytes are not read meanwhile.
	if _, err := pw2.Write(free); err != nil {
		t.Fatal(err)
	}
	wrote2 := make(chan error, 1)
	go func() { _, err := pw2.Write([]byte("more")); wrote2 <- err }()
	select {
	case <-waiting:
	case err := <-wrote2:
		t.Fatalf("the second reply read past its free part while the budget was taken (%v)", err)
	}

	pw1.Close()
	r1 := <-done1
	if r1.err != nil || len(r1.body) != len(free)+4 || r1.held != limit+1 {
		t.Fatalf("first reply: %d bytes, held %d, err %v", len(r1.body), r1.held, r1.err)
	}
	budget.release(r1.held)
	if err := <-wrote2; err != nil {
		t.Fatal(err)
	}
	pw2.Close()
	r2 := <-done2
	if r2.err != nil || len(r2.body) != len(free)+4 {
		t.Fatalf("second reply: %d bytes, err %v", len(r2.body), r2.err)
	}
	budget.release(r2.held)
	if !budget.sem.TryAcquire(budget.size) {
		t.Error("the budget was not given back in full")
	}
}

// TestBudgetWaitEndsWithTheContext: a reply waiting for the budget gives up with its context.
func TestBudgetWaitEndsWithTheContext(t *testing.T) {
	budget := NewResponseBudget(1 << 20)
	if !budget.sem.TryAcquire(1 << 20) {
		t.Fatal("fresh budget is taken")
	}
	ctx, cancel := context.WithCancel(context.Background())
	setBudgetHook(t, cancel)
	resp := &http.Response{ContentLength: -1, Body: io.NopCloser(bytes.NewReader(make([]byte, 2*freeReplyBytes)))}
	_, held, err := readReply(ctx, resp, 1<<20, budget)
	if !errors.Is(err, context.Canceled) || held != 0 {
		t.Errorf("err = %v, held %d; want context.Canceled, nothing held", err, held)
	}
}

func setBudgetHook(t *testing.T, fn func()) {
	testHookBudgetWait.Store(&fn)
	t.Cleanup(func() { testHookBudgetWait.Store(nil) })
}

func TestJSONCount(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{`[]`, 0}, {`{}`, 0}, {` [ ] `, 0}, {`[1]`, 1}, {`[1,2,3]`, 3}, {`{"a":1,"b":[1,2,{"c":3}]}`, 2},
		{`["a,b","c\",d",{"x":"]"}]`, 3}, {`[[],[],{}]`, 3}, {`["\\",1]`, 2}, {`[1,2,3,4,5,6]`, 4},
	} {
		if got := jsonCount([]byte(c.in), 3); got != c.want {
			t.Errorf("jsonCount(%s, 3) = %d; want %d", c.in, got, c.want)
		}
	}
}
