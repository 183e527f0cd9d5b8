//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/b24go/b24oauth"
)

// clientConfig is what one client run does.
type clientConfig struct {
	kind       string // "raw" or "sdk"
	addr       string // the server's host:port
	caFile     string // the server's certificate
	n          int    // measured calls
	warmup     int    // calls before the measurement
	conc       int    // calls in flight
	cpuProfile string
	memProfile string
	// sync: the driver runs this client beside another one and starts their measurements
	// together (-sync); in is where the driver's lines ("go", "stop") come from.
	sync bool
	in   io.Reader
}

// result is what a client run prints, as one JSON line.
type result struct {
	Kind          string  `json:"kind"`
	Calls         int     `json:"calls"`
	CPUNsPerCall  float64 `json:"cpu_ns_per_call"`
	CallsPerSec   float64 `json:"calls_per_sec"`
	AllocsPerCall float64 `json:"allocs_per_call"`
	BytesPerCall  float64 `json:"bytes_per_call"`
	GCs           uint32  `json:"gcs"`
	Dials         int64   `json:"dials"` // connections opened during the measurement
	UserNsPerCall float64 `json:"user_ns_per_call"`
	SysNsPerCall  float64 `json:"sys_ns_per_call"`
	CtxSwPerCall  float64 `json:"ctxsw_per_call"` // voluntary context switches: the process blocked (epoll, futex)
	GOMAXPROCS    int     `json:"gomaxprocs"`
}

// The call both clients make, and the token they send.
const (
	method      = "crm.deal.get"
	accessToken = "processbench-access-token-0123456789abcdef"
	maxReply    = 32 << 20 // what the raw client reads at most: the SDK's default bound
)

// deal is the part of the result a caller decodes.
type deal struct {
	ID    string `json:"ID"`
	Title string `json:"TITLE"`
	Stage string `json:"STAGE_ID"`
}

// caller makes one call and decodes its result.
type caller func(ctx context.Context) (deal, error)

// runClient makes cfg.warmup calls, then cfg.n measured ones, and writes the result to out.
func runClient(cfg clientConfig, out io.Writer) error {
	if cfg.n <= 0 || cfg.conc <= 0 || cfg.warmup < 0 {
		return errors.New("-n and -c must be positive, -warmup not negative")
	}
	hc, dials, err := newHTTPClient(cfg.caFile, cfg.conc)
	if err != nil {
		return err
	}
	var call caller
	switch cfg.kind {
	case "raw":
		call = rawCaller(hc, "https://"+cfg.addr+"/rest/")
	case "sdk":
		if call, err = sdkCaller(hc, cfg.addr); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown -client %q (want raw or sdk)", cfg.kind)
	}
	ctx := context.Background()
	if err := runCalls(ctx, call, cfg.warmup, cfg.conc); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var lines *bufio.Scanner
	if cfg.sync {
		// Tell the driver the warm-up is done, and start measuring when it says so: both
		// clients of a pair then start at the same moment.
		lines = bufio.NewScanner(cfg.in)
		if _, err := fmt.Fprintln(out, "ready"); err != nil {
			return err
		}
		if !lines.Scan() || lines.Text() != "go" {
			return fmt.Errorf("sync: want \"go\" from the driver, got %q (%v)", lines.Text(), lines.Err())
		}
	}
	if cfg.memProfile != "" {
		runtime.MemProfileRate = 1 // every allocation: exact counts per site (and slower calls)
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	runtime.GC() // every run starts its measurement from the same heap
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ru0, start, dials0 := rusage(), time.Now(), dials.Load()

	err = runCalls(ctx, call, cfg.n, cfg.conc)

	ru, elapsed, dialed := rusage().minus(ru0), time.Since(start), dials.Load()-dials0
	cpu := ru.user + ru.sys
	runtime.ReadMemStats(&after)
	if cfg.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	if cfg.memProfile != "" {
		if err := writeHeapProfile(cfg.memProfile); err != nil {
			return err
		}
	}
	n := float64(cfg.n)
	res := result{
		Kind:          cfg.kind,
		Calls:         cfg.n,
		CPUNsPerCall:  float64(cpu.Nanoseconds()) / n,
		CallsPerSec:   n / elapsed.Seconds(),
		AllocsPerCall: float64(after.Mallocs-before.Mallocs) / n,
		BytesPerCall:  float64(after.TotalAlloc-before.TotalAlloc) / n,
		GCs:           after.NumGC - before.NumGC,
		Dials:         dialed,
		UserNsPerCall: float64(ru.user.Nanoseconds()) / n,
		SysNsPerCall:  float64(ru.sys.Nanoseconds()) / n,
		CtxSwPerCall:  float64(ru.ctxsw) / n,
		GOMAXPROCS:    runtime.GOMAXPROCS(0),
	}
	if err := json.NewEncoder(out).Encode(res); err != nil || !cfg.sync {
		return err
	}
	// The other client may still be measuring: keep the load it shares the core with the same
	// until the driver says both are done, so that neither runs the end of its measurement on a
	// core of its own (calls are cheaper there: no other process evicts their caches).
	done := make(chan struct{})
	go func() {
		for lines.Scan() && lines.Text() != "stop" {
		}
		close(done)
	}()
	return runUntil(ctx, call, cfg.conc, done)
}

// runUntil makes calls, conc at a time, until done is closed, and returns the first error.
func runUntil(ctx context.Context, call caller, conc int, done <-chan struct{}) error {
	return callWhile(ctx, call, conc, func() bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	})
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runCalls makes n calls, conc at a time, and returns the first error.
func runCalls(ctx context.Context, call caller, n, conc int) error {
	var next atomic.Int64
	return callWhile(ctx, call, conc, func() bool { return next.Add(1) <= int64(n) })
}

// callWhile makes calls, conc at a time, for as long as more says (each call asks it once),
// and returns the first error: a failed call, or a deal decoded wrong. After one, the others
// stop too.
func callWhile(ctx context.Context, call caller, conc int, more func() bool) error {
	var failed atomic.Bool
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() && more() {
				d, err := call(ctx)
				if err == nil && d.ID != "1" {
					err = fmt.Errorf("decoded deal %+v, want ID 1", d)
				}
				if err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// newHTTPClient is the http.Client both clients use: the standard transport trusting the
// server's certificate, over HTTP/1.1, with a 90 s timeout (the SDK's default) and no redirects
// followed. It keeps a connection per call in flight and never opens more: the warm-up opens
// them all, and a connection opened and closed during the measurement (the transport dials
// when a call finds none idle, and closes what its idle pool has no room for) would add a TLS
// handshake's noise to it. dials counts the connections it opens. HTTP/1.1 rather than HTTP/2
// (which the SDK's default transport negotiates with a portal that offers it), so that the
// figures do not depend on how HTTP/2 multiplexes 64 calls over one connection.
func newHTTPClient(caFile string, conc int) (hc *http.Client, dials *atomic.Int64, err error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, nil, fmt.Errorf("%s: no certificate", caFile)
	}
	dials = new(atomic.Int64)
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}
	t.TLSClientConfig = &tls.Config{RootCAs: pool}
	t.ForceAttemptHTTP2 = false
	t.MaxConnsPerHost, t.MaxIdleConnsPerHost, t.MaxIdleConns = conc, conc, conc
	return &http.Client{
		Transport:     t,
		Timeout:       90 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, dials, nil
}

// rawReply is a v2 reply as a careful hand-written client decodes it.
type rawReply struct {
	Result           json.RawMessage `json:"result"`
	Error            string          `json:"error"`
	ErrorDescription string          `json:"error_description"`
	Time             struct {
		Start            float64 `json:"start"`
		Finish           float64 `json:"finish"`
		Duration         float64 `json:"duration"`
		Processing       float64 `json:"processing"`
		DateStart        string  `json:"date_start"`
		DateFinish       string  `json:"date_finish"`
		Operating        float64 `json:"operating"`
		OperatingResetAt int64   `json:"operating_reset_at"`
	} `json:"time"`
}

// rawCaller POSTs {"auth":...,"id":1} to endpoint+method with plain net/http.
func rawCaller(hc *http.Client, endpoint string) caller {
	return func(ctx context.Context) (deal, error) {
		body, err := json.Marshal(map[string]any{"auth": accessToken, "id": 1})
		if err != nil {
			return deal{}, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+method, bytes.NewReader(body))
		if err != nil {
			return deal{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return deal{}, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
		if err != nil {
			return deal{}, err
		}
		if len(data) > maxReply {
			return deal{}, errors.New("reply too large")
		}
		var r rawReply
		if err := json.Unmarshal(data, &r); err != nil {
			return deal{}, err
		}
		if resp.StatusCode != http.StatusOK || r.Error != "" {
			return deal{}, fmt.Errorf("HTTP %d: %s: %s", resp.StatusCode, r.Error, r.ErrorDescription)
		}
		var d deal
		err = json.Unmarshal(r.Result, &d)
		return d, err
	}
}

// sdkRestriction is the limiter the sdk client runs with: DefaultRestrictionParams (adaptive
// bucket, operating limit of 480 s per 10 min, 3 retries), except for the bucket, raised from 50
// requests draining 2 a second to a million draining a million a second: the limiter's code runs
// on every call (the operating-limit gate, the bucket's AllowN), but it never holds a call back,
// so what is measured is its cost, not its pace.
func sdkRestriction() b24oauth.RestrictionParams {
	rp := b24oauth.DefaultRestrictionParams()
	rp.RateLimit.BurstLimit = 1e6
	rp.RateLimit.DrainRate = 1e6
	return rp
}

// sdkCaller calls method through a b24oauth client with a valid token, no Observer and the
// default logger (slog.Default(), whose debug level is off).
func sdkCaller(hc *http.Client, addr string) (caller, error) {
	c, err := b24oauth.New(b24oauth.OAuthParams{
		MemberID:     "processbench",
		Domain:       addr,
		AccessToken:  accessToken,
		RefreshToken: "processbench-refresh-token",
		Expires:      time.Now().Add(24 * time.Hour).Unix(),
	}, b24oauth.OAuthSecret{ClientID: "app.processbench", ClientSecret: "processbench-secret"},
		b24oauth.WithHTTPClient(hc), b24oauth.WithRestrictionParams(sdkRestriction()))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (deal, error) {
		resp, err := c.Call(ctx, method, map[string]any{"id": 1})
		if err != nil {
			return deal{}, err
		}
		var d deal
		err = resp.Decode(&d)
		return d, err
	}, nil
}

// usage is what getrusage says the process has used so far.
type usage struct {
	user, sys time.Duration
	ctxsw     int64 // voluntary context switches
}

func (u usage) minus(v usage) usage {
	return usage{user: u.user - v.user, sys: u.sys - v.sys, ctxsw: u.ctxsw - v.ctxsw}
}

func rusage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	return usage{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano()), ctxsw: int64(ru.Nvcsw)}
}
