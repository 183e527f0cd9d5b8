//go:build unix

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// driverConfig is what the driver runs.
type driverConfig struct {
	runs, n, warmup, conc int
	together              bool
	profileDir            string
	pair                  [2]string // the clients of a pair: raw and sdk, or twice the same for an A/A run
}

// pinning says how processes are kept on their cores: taskset with the server on serverCPU and
// every client on clientCPU, or (one core, or no taskset) GOMAXPROCS=1 alone.
type pinning struct {
	taskset              string // path of taskset; empty: not pinned
	serverCPU, clientCPU int
}

func (p pinning) command(self string, args ...string) *exec.Cmd {
	return p.commandOn(p.clientCPU, self, args...)
}

func (p pinning) commandOn(cpu int, self string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if p.taskset != "" {
		cmd = exec.Command(p.taskset, append([]string{"-c", strconv.Itoa(cpu), self}, args...)...)
	} else {
		cmd = exec.Command(self, args...)
	}
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	return cmd
}

func (p pinning) String() string {
	if p.taskset == "" {
		return "not pinned (one core or no taskset), GOMAXPROCS=1"
	}
	return fmt.Sprintf("server on CPU %d, each client on CPU %d (taskset), GOMAXPROCS=1", p.serverCPU, p.clientCPU)
}

func choosePinning() pinning {
	path, err := exec.LookPath("taskset")
	if err != nil || runtime.NumCPU() < 2 {
		return pinning{}
	}
	return pinning{taskset: path, serverCPU: 0, clientCPU: 1}
}

// drive starts the server, runs cfg.runs pairs of client processes and prints their figures.
// Within a pair, the client that goes first alternates, so that a drift of the machine's speed
// (another process, the host) does not favour one of them. With cfg.together, the two clients
// of a pair run at the same time, sharing the client core: both then see the same machine,
// which takes out most of that drift (each gets about half the core, so their calls per second
// are half what they are alone).
func drive(cfg driverConfig) error {
	if cfg.runs <= 0 {
		return errors.New("-runs must be positive")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "processbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := writeCert(dir)
	if err != nil {
		return err
	}
	pin := choosePinning()
	addr, stop, err := startServer(pin, self, certFile, keyFile)
	if err != nil {
		return err
	}
	defer stop()

	how := "one after the other"
	if cfg.together {
		how = "together"
	}
	fmt.Printf("processbench: %d pairs (%s) of %d calls after %d warm-up calls, %d in flight, HTTPS/1.1 on %s; %s\n",
		cfg.runs, how, cfg.n, cfg.warmup, cfg.conc, addr, pin)
	clientArgs := func(kind string, extra ...string) []string {
		return append([]string{"-mode", "client", "-client", kind, "-addr", addr, "-ca", certFile,
			"-n", strconv.Itoa(cfg.n), "-warmup", strconv.Itoa(cfg.warmup), "-c", strconv.Itoa(cfg.conc)}, extra...)
	}
	// usr/sys splits a client's CPU per call into user and kernel time; csw is its voluntary
	// context switches per call (how often the process slept waiting for the network).
	const row = "%6s %12s %12s %9s %11s %11s %10s %10s %10s %7s %7s %13s %13s %7s %7s\n"
	a, b := cfg.pair[0], cfg.pair[1]
	if a == b {
		a, b = a+"1", b+"2"
	}
	fmt.Printf(row, "pair", a+" cpu/call", b+" cpu/call", "cpu ratio", a+" calls/s", b+" calls/s", "tput ratio",
		a+" allocs", b+" allocs", a+" GCs", b+" GCs", a+" usr/sys", b+" usr/sys", a+" csw", b+" csw")
	line := func(name string, raw, sdk result, cpuRatio, tputRatio float64) {
		fmt.Printf(row, name, micros(raw.CPUNsPerCall), micros(sdk.CPUNsPerCall), ratio(cpuRatio),
			fmt.Sprintf("%.0f", raw.CallsPerSec), fmt.Sprintf("%.0f", sdk.CallsPerSec), ratio(tputRatio),
			fmt.Sprintf("%.1f", raw.AllocsPerCall), fmt.Sprintf("%.1f", sdk.AllocsPerCall),
			strconv.Itoa(int(raw.GCs)), strconv.Itoa(int(sdk.GCs)),
			userSys(raw), userSys(sdk), fmt.Sprintf("%.2f", raw.CtxSwPerCall), fmt.Sprintf("%.2f", sdk.CtxSwPerCall))
	}
	var raws, sdks []result
	var cpuRatios, tputRatios []float64
	var dials int64
	for i := range cfg.runs {
		// The pair's first client goes first in odd pairs, second in even ones.
		first, second := 0, 1
		if i%2 == 1 {
			first, second = 1, 0
		}
		var extra []string
		if cfg.together {
			extra = []string{"-sync"}
		}
		var args [2][]string
		args[first], args[second] = clientArgs(cfg.pair[0], extra...), clientArgs(cfg.pair[1], extra...)
		got, err := runPair(pin, self, args, cfg.together)
		if err != nil {
			return fmt.Errorf("pair %d: %w", i+1, err)
		}
		raw, sdk := got[first], got[second]
		dials += raw.Dials + sdk.Dials
		raws, sdks = append(raws, raw), append(sdks, sdk)
		cpuRatio, tputRatio := sdk.CPUNsPerCall/raw.CPUNsPerCall, sdk.CallsPerSec/raw.CallsPerSec
		cpuRatios, tputRatios = append(cpuRatios, cpuRatio), append(tputRatios, tputRatio)
		line(strconv.Itoa(i+1), raw, sdk, cpuRatio, tputRatio)
	}
	// The median row: each column's median (the ratios' too, not a ratio of medians).
	mraw, msdk := medianResult(raws), medianResult(sdks)
	line("median", mraw, msdk, median(cpuRatios), median(tputRatios))
	lo, hi := medianInterval(cpuRatios)
	fmt.Printf("%s/%s CPU per call: median of the pairs' ratios %.3fx (95%% bootstrap interval %.3fx to %.3fx; pairs %.3fx to %.3fx); throughput ratio %.3fx\n",
		b, a, median(cpuRatios), lo, hi, slices.Min(cpuRatios), slices.Max(cpuRatios), median(tputRatios))
	fmt.Printf("bytes allocated per call: %s %.0f, %s %.0f\n", a, mraw.BytesPerCall, b, msdk.BytesPerCall)
	if dials > 0 {
		fmt.Printf("note: %d connection(s) opened during the measurements, each a TLS handshake in the figures\n", dials)
	}

	if cfg.profileDir != "" {
		return writeProfiles(pin, self, cfg.profileDir, clientArgs)
	}
	return nil
}

// runPair runs the two client processes args describe, one after the other or together, and
// returns their results in the same order. Together, the clients start their measurements at
// the same moment and both keep calling until both are done (see the client's -sync), so each
// measures its calls with the other on the core all the way through.
func runPair(pin pinning, self string, args [2][]string, together bool) ([2]result, error) {
	var got [2]result
	if !together {
		for i := range args {
			r, err := runProcess(pin, self, args[i])
			if err != nil {
				return got, err
			}
			got[i] = r
		}
		return got, nil
	}
	var clients [2]*syncedClient
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.kill()
			}
		}
	}()
	for i := range args {
		c, err := startSynced(pin, self, args[i])
		if err != nil {
			return got, err
		}
		clients[i] = c
	}
	for _, c := range clients {
		if err := c.expect("ready"); err != nil {
			return got, err
		}
	}
	for _, c := range clients {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return got, err
		}
	}
	for i, c := range clients {
		r, err := c.result()
		if err != nil {
			return got, err
		}
		got[i] = r
	}
	var errs [2]error
	for i, c := range clients {
		errs[i] = c.stop()
		clients[i] = nil
	}
	return got, errors.Join(errs[0], errs[1])
}

// syncedClient is a client process run with -sync, and the pipes the driver talks to it over.
type syncedClient struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startSynced(pin pinning, self string, args []string) (*syncedClient, error) {
	cmd := pin.command(self, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &syncedClient{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}, nil
}

// expect reads the client's next line, which must be want.
func (c *syncedClient) expect(want string) error {
	if !c.lines.Scan() || c.lines.Text() != want {
		return fmt.Errorf("client %v: want %q, got %q (%v)", c.cmd.Args, want, c.lines.Text(), c.lines.Err())
	}
	return nil
}

// result reads the line of figures the client prints when its measurement ends.
func (c *syncedClient) result() (result, error) {
	if !c.lines.Scan() {
		return result{}, fmt.Errorf("client %v: no result (%v)", c.cmd.Args, c.lines.Err())
	}
	var r result
	if err := json.Unmarshal(c.lines.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("decoding %q: %w", c.lines.Text(), err)
	}
	return r, nil
}

// stop tells the client to stop calling and waits for it to exit.
func (c *syncedClient) stop() error {
	_, err := io.WriteString(c.stdin, "stop\n")
	c.stdin.Close()
	return errors.Join(err, c.cmd.Wait())
}

// kill ends a client the driver gave up on.
func (c *syncedClient) kill() {
	c.stdin.Close()
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

// medianInterval is a 95% bootstrap interval of the median of v: how far the median of pairs
// like these could be from the one measured, on a machine as noisy. Its resampling is seeded,
// so the same figures always give the same interval.
func medianInterval(v []float64) (lo, hi float64) {
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	medians := make([]float64, resamples)
	sample := make([]float64, len(v))
	for i := range medians {
		for j := range sample {
			sample[j] = v[rng.IntN(len(v))]
		}
		medians[i] = median(sample)
	}
	slices.Sort(medians)
	return medians[resamples*25/1000], medians[resamples*975/1000-1]
}

// writeProfiles runs each client twice more: once with a CPU profile, once with an allocation
// profile (kept apart: sampling every allocation slows the calls down).
func writeProfiles(pin pinning, self, dir string, clientArgs func(string, ...string) []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, kind := range []string{"raw", "sdk"} {
		cpuFile, memFile := filepath.Join(dir, kind+".cpu.pprof"), filepath.Join(dir, kind+".alloc.pprof")
		if _, err := runProcess(pin, self, clientArgs(kind, "-cpuprofile", cpuFile)); err != nil {
			return fmt.Errorf("%s client, CPU profile: %w", kind, err)
		}
		if _, err := runProcess(pin, self, clientArgs(kind, "-memprofile", memFile)); err != nil {
			return fmt.Errorf("%s client, allocation profile: %w", kind, err)
		}
		fmt.Printf("profiles: %s %s\n", cpuFile, memFile)
	}
	fmt.Printf("read them with: go tool pprof -top %s   (alloc: go tool pprof -sample_index=alloc_objects -top %s)\n",
		filepath.Join(dir, "sdk.cpu.pprof"), filepath.Join(dir, "sdk.alloc.pprof"))
	return nil
}

// startServer starts the server process and returns its address and a function that stops it.
func startServer(pin pinning, self, certFile, keyFile string) (addr string, stop func(), err error) {
	cmd := pin.commandOn(pin.serverCPU, self, "-mode", "server", "-ca", certFile, "-key", keyFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		stdin.Close() // the server exits when its stdin closes
		_ = cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		stop()
		return "", nil, fmt.Errorf("server did not start: %q: %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addr, stop, nil
}

// runProcess runs one client process and decodes the line it prints.
func runProcess(pin pinning, self string, args []string) (result, error) {
	cmd := pin.command(self, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return result{}, err
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return result{}, fmt.Errorf("decoding %q: %w", out.String(), err)
	}
	return r, nil
}

// medianResult is the median of each figure of rs.
func medianResult(rs []result) result {
	col := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return median(v)
	}
	return result{
		CPUNsPerCall:  col(func(r result) float64 { return r.CPUNsPerCall }),
		CallsPerSec:   col(func(r result) float64 { return r.CallsPerSec }),
		AllocsPerCall: col(func(r result) float64 { return r.AllocsPerCall }),
		BytesPerCall:  col(func(r result) float64 { return r.BytesPerCall }),
		GCs:           uint32(col(func(r result) float64 { return float64(r.GCs) })),
		UserNsPerCall: col(func(r result) float64 { return r.UserNsPerCall }),
		SysNsPerCall:  col(func(r result) float64 { return r.SysNsPerCall }),
		CtxSwPerCall:  col(func(r result) float64 { return r.CtxSwPerCall }),
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func micros(ns float64) string { return fmt.Sprintf("%.1fµs", ns/1e3) }

func userSys(r result) string {
	return fmt.Sprintf("%.1f/%.1f", r.UserNsPerCall/1e3, r.SysNsPerCall/1e3)
}

func ratio(r float64) string { return fmt.Sprintf("%.3fx", r) }
