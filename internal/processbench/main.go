//go:build unix

// Command processbench measures what a whole process pays per REST call through the SDK,
// against a hand-written net/http client doing the same calls (issue 10): in-process
// benchmarks miss what GC, goroutines and timers cost a process over thousands of calls.
//
// It has three modes. The driver (the default, what `make bench-process` runs) starts a server
// process, then runs client processes in pairs, one raw and one sdk each, and prints every
// pair's ratios and the medians:
//
//	go run ./internal/processbench                  # 7 pairs of 20,000 calls, 64 in flight
//	go run ./internal/processbench -runs 11 -n 50000
//	go run ./internal/processbench -together        # a pair's clients side by side: less noise
//	go run ./internal/processbench -together -pair raw,raw   # the benchmark's own noise (A/A)
//	go run ./internal/processbench -profile /tmp/pb # also writes CPU and allocation profiles
//
// The server (-mode server) answers POST /rest/<method> over HTTPS on loopback with a
// Bitrix24 v2 reply, the same bytes for both clients. HTTPS rather than plain HTTP (and the
// SDK's WithInsecureHTTP): it is how the SDK talks to a portal, and the TLS cost, the same for
// both clients, is part of what a call costs in production.
//
// A client (-mode client -client raw|sdk) makes -n calls of crm.deal.get, -c in flight, after
// -warmup calls that open the connections and fill the pools, and prints one JSON line: its
// own CPU time per call (getrusage user+sys), calls per second, allocations and bytes per call,
// and GC cycles, all measured after the warm-up. The raw client marshals {"auth":...,"id":1},
// POSTs it, reads the reply (bounded) and decodes it into a struct with result as
// json.RawMessage; the sdk client calls b24oauth.Call with the same params. Both then decode
// the result into the same struct, as a caller would.
//
// With -sync (how -together runs them) a client prints "ready" after its warm-up, starts
// measuring when the driver writes "go" to its stdin, prints its result, and then keeps making
// calls until "stop": both clients of a pair measure the same window under the same load, and
// neither finishes its window with the core to itself.
//
// Each client is a fresh process pinned to one core (taskset -c, when there are two cores and
// taskset is there; GOMAXPROCS=1 always), the server to another. The two clients share one
// http.Client configuration (see newHTTPClient: HTTP/1.1, a connection per call in flight, all
// opened during the warm-up); the SDK's limiter runs at its defaults (DefaultRestrictionParams)
// except for the bucket, raised so that it never throttles (see sdkRestriction), and no
// Observer is set.
//
// The driver's exit status is non-zero only on errors (a client or the server failing), never
// on a ratio.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	var (
		mode   = flag.String("mode", "driver", "driver, server or client")
		client = flag.String("client", "", "client mode: raw or sdk")
		n      = flag.Int("n", 20000, "calls per client run, after the warm-up")
		warmup = flag.Int("warmup", 2000, "calls before the measurement starts")
		conc   = flag.Int("c", 64, "calls in flight")
		runs   = flag.Int("runs", 7, "driver: pairs of client runs (raw and sdk)")
		tog    = flag.Bool("together", false, "driver: run the two clients of a pair at the same time on the client core (less noise from the machine's drift)")
		prof   = flag.String("profile", "", "driver: a directory to write CPU and allocation profiles of one more run of each client to")
		addr   = flag.String("addr", "", "client: the server's address (host:port)")
		caFile = flag.String("ca", "", "client: the server's certificate (PEM); server: its certificate")
		key    = flag.String("key", "", "server: its private key (PEM)")
		cpuOut = flag.String("cpuprofile", "", "client: write a CPU profile of the measured calls to this file")
		memOut = flag.String("memprofile", "", "client: write an allocation profile (every allocation sampled) of the measured calls to this file")
		synced = flag.Bool("sync", false, "client: print \"ready\" after the warm-up, start measuring on \"go\" from stdin, then keep calling until \"stop\" (how the driver runs -together)")
		pair   = flag.String("pair", "raw,sdk", "driver: the two clients of a pair; raw,raw or sdk,sdk measure the benchmark's own noise")
	)
	flag.Parse()
	var err error
	switch *mode {
	case "driver":
		kinds := strings.Split(*pair, ",")
		if len(kinds) != 2 {
			err = fmt.Errorf("-pair %q: want two clients, such as raw,sdk", *pair)
			break
		}
		err = drive(driverConfig{runs: *runs, n: *n, warmup: *warmup, conc: *conc, together: *tog, profileDir: *prof,
			pair: [2]string{kinds[0], kinds[1]}})
	case "server":
		err = serve(*caFile, *key)
	case "client":
		err = runClient(clientConfig{
			kind: *client, addr: *addr, caFile: *caFile, n: *n, warmup: *warmup, conc: *conc,
			cpuProfile: *cpuOut, memProfile: *memOut, sync: *synced, in: os.Stdin,
		}, os.Stdout)
	default:
		err = fmt.Errorf("unknown -mode %q (want driver, server or client)", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "processbench:", err)
		os.Exit(1)
	}
}
