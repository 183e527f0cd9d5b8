package redisstore_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/b24go/b24oauth"
	"github.com/b24go/b24oauth/b24test"
	"github.com/b24go/b24oauth/internal/fleettest"
	"github.com/b24go/b24oauth/redisstore"
)

// The fleet limiter test's processes: the test binary, re-executed with this environment.
const (
	envLimiterChild = "B24OAUTH_LIMITER_CHILD" // the fake's URL, client ID, secret, OAuth origin, member_id, prefix
	limiterProcs    = 3
	limiterCalls    = 100 // per process, all at once
	limiterBurst    = 10  // the fake's bucket
	limiterDrain    = 50  // per second
)

// Three processes, each with 100 calls at once, share a portal whose bucket holds 10 and drains
// 50 a second, and one Redis: together they stay inside the bucket (at most 2 rejections in
// all) and still use it (at least 95% of the drain rate from the release to the last reply).
func TestLimiterFleet(t *testing.T) {
	if arg := os.Getenv(envLimiterChild); arg != "" {
		limiterChild(t, strings.Split(arg, "\n"))
		return
	}
	client := testClient(t)
	prefix := newPrefix(t, client)
	fake := b24test.NewServer(b24test.WithRateLimit(limiterBurst, limiterDrain))
	t.Cleanup(fake.Close)
	p := fake.AddPortal()
	store, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(context.Background(), fleettest.Installation(fake, p)); err != nil {
		t.Fatal(err)
	}
	arg := strings.Join([]string{fake.URL(), fake.ClientID(), fake.ClientSecret(), fake.OAuthOrigin(), p.MemberID(), prefix,
		"https://" + p.Domain() + "/warm-up"}, "\n")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type proc struct {
		stdin io.WriteCloser
		lines chan string
		out   strings.Builder
	}
	procs := make([]*proc, limiterProcs)
	for i := range procs {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLimiterFleet$", "-test.count=1")
		cmd.Env = append(os.Environ(), envLimiterChild+"="+arg)
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pr := &proc{stdin: stdin, lines: make(chan string, 4)}
		procs[i] = pr
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if msg, ok := strings.CutPrefix(sc.Text(), "limiter: "); ok {
					pr.lines <- msg
				}
			}
			close(pr.lines)
		}()
		t.Cleanup(func() {
			_ = stdin.Close()
			_ = cmd.Wait() // CommandContext kills it at the deadline
		})
	}
	next := func(i int) string {
		select {
		case l, ok := <-procs[i].lines:
			if !ok {
				t.Fatalf("process %d ended early", i)
			}
			return l
		case <-ctx.Done():
			t.Fatalf("process %d: no answer before the deadline", i)
		}
		return ""
	}
	for i := range procs {
		if l := next(i); l != "ready" {
			t.Fatalf("process %d: %q, want ready", i, l)
		}
	}
	for _, pr := range procs {
		if _, err := io.WriteString(pr.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	var ok, failed int
	var first, last int64
	for i := range procs {
		var o, f int
		var s, e int64
		l := next(i)
		if _, err := fmt.Sscanf(l, "done ok=%d failed=%d start=%d end=%d", &o, &f, &s, &e); err != nil {
			t.Fatalf("process %d: %q: %v", i, l, err)
		}
		ok, failed = ok+o, failed+f
		if first == 0 || s < first {
			first = s
		}
		last = max(last, e)
	}
	elapsed := time.Duration(last - first)
	rate := float64(ok-limiterBurst) / elapsed.Seconds()
	t.Logf("%d processes x %d calls: %d ok, %d failed, %d rejections, %v from the release to the last reply, %.1f/s past the burst (%.0f%% of %d/s)",
		limiterProcs, limiterCalls, ok, failed, p.Rejections(), elapsed.Round(time.Millisecond), rate, 100*rate/limiterDrain, limiterDrain)
	if ok != limiterProcs*limiterCalls || failed != 0 {
		t.Errorf("%d calls ok, %d failed; want all %d ok", ok, failed, limiterProcs*limiterCalls)
	}
	if r := p.Rejections(); r > 2 {
		t.Errorf("the portal rejected %d requests, want at most 2", r)
	}
	if rate < 0.95*limiterDrain {
		t.Errorf("achieved %.1f requests/s past the burst, want at least 95%% of %d/s", rate, limiterDrain)
	}
}

// limiterChild is one process of TestLimiterFleet: an App on the shared Redis store and
// limiter; once released (a line on stdin), limiterCalls calls at once.
func limiterChild(t *testing.T, arg []string) {
	if len(arg) != 7 {
		t.Fatalf("child: %d arguments, want 7", len(arg))
	}
	url, clientID, secret, origin, member, prefix, warmURL := arg[0], arg[1], arg[2], arg[3], arg[4], arg[5], arg[6]
	client, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	store, err := redisstore.New(client, redisstore.WithKeyPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	rp := b24oauth.DefaultRestrictionParams()
	rp.RateLimit.BurstLimit, rp.RateLimit.DrainRate = limiterBurst, limiterDrain
	rp.RetryDelay = 10 * time.Millisecond
	hc := b24test.ClientFor(url)
	warmUp(t, hc, warmURL)
	app, err := b24oauth.NewApp(b24oauth.AppConfig{
		ClientID: clientID, ClientSecret: secret, Store: store,
		HTTPClient:   hc,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		OAuthServers: []string{origin},
		Restriction:  &rp,
		RateLimiter:  redisstore.NewLimiter(client, redisstore.WithLimiterKeyPrefix(prefix)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ctx := context.Background()
	c, err := app.ClientForMember(ctx, member)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("limiter: ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("child: waiting for the release: %v", err)
	}
	start := time.Now()
	var ok, failed atomic.Int64
	var end atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < limiterCalls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Call(ctx, "profile", nil); err != nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "child: call:", err)
			} else {
				ok.Add(1)
			}
			for t := time.Now().UnixNano(); ; {
				e := end.Load()
				if t <= e || end.CompareAndSwap(e, t) {
					break
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("limiter: done ok=%d failed=%d start=%d end=%d\n", ok.Load(), failed.Load(), start.UnixNano(), end.Load())
	if n := app.RateLimiterFallbacks(); n != 0 {
		t.Errorf("child: %d requests paced in-process, want 0", n)
	}
}

// warmUp opens, with a request the fake's bucket does not count (a 404 on the portal's host),
// as many connections to the portal as the burst: the TLS handshakes of a cold start would
// otherwise hold the burst's first requests until the next ones are due, and they would reach
// the portal together, which no client-side pacing can prevent.
func warmUp(t *testing.T, hc *http.Client, url string) {
	var wg sync.WaitGroup
	for i := 0; i < limiterBurst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(url)
			if err != nil {
				t.Errorf("child: warm-up: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}()
	}
	wg.Wait()
}
