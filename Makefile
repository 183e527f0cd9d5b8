# Every Go module of the repository: the root (b24oauth, b24test, storetest, sealstore), the
# two store modules, otelb24 (OpenTelemetry), the example server examples/multitenant (its own
# module: it requires otelb24 and Prometheus, which the core must not) and the release tool
# internal/modproxy (go.work lists the same). Each target runs in every module and fails if
# any module fails.
#
# The store modules' integration tests need B24OAUTH_TEST_POSTGRES and B24OAUTH_TEST_REDIS
# (they skip without them); `make services` starts local servers, and .ci/run sets both.

MODULES := . pgstore redisstore otelb24 examples/multitenant internal/modproxy

# The integration tests talk to the local servers unless told otherwise (`make services` starts
# them). Set a variable to an empty value to skip its store's integration tests.
B24OAUTH_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
B24OAUTH_TEST_REDIS    ?= 127.0.0.1:6379
export B24OAUTH_TEST_POSTGRES B24OAUTH_TEST_REDIS
GO      ?= go
SHELL   := /bin/bash

.PHONY: all test test-oldest vet lint bench bench-process fuzz fuzz-short services modcheck tidy set-version

all: lint test

# go vet, then the tests with the race detector, in every module. A failing module does not
# stop the others; the target fails at the end if any did.
test:
	@failed=""; \
	for m in $(MODULES); do \
		echo "==> $$m: go vet ./..."; \
		(cd $$m && $(GO) vet ./...) || failed="$$failed $$m(vet)"; \
		echo "==> $$m: go test -race -count=1 ./..."; \
		(cd $$m && $(GO) test -race -count=1 ./...) || failed="$$failed $$m(test)"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# The oldest Go the modules promise (go.mod says 1.23): every module's tests under that
# toolchain, fetched through the module proxy on first use.
OLDEST_GO ?= go1.23.0
test-oldest:
	@failed=""; \
	for m in $(MODULES); do \
		echo "==> $$m: GOTOOLCHAIN=$(OLDEST_GO) go test -count=1 ./..."; \
		(cd $$m && GOTOOLCHAIN=$(OLDEST_GO) $(GO) test -count=1 ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED under $(OLDEST_GO):$$failed"; exit 1; fi

vet:
	@failed=""; \
	for m in $(MODULES); do \
		echo "==> $$m: go vet ./..."; \
		(cd $$m && $(GO) vet ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "go vet FAILED in:$$failed"; exit 1; fi

# gofmt over the whole tree (all modules), then go vet in every module.
lint:
	@echo "==> gofmt -l ."; \
	unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "not gofmt'ed:"; echo "$$unformatted"; exit 1; fi
	@$(MAKE) --no-print-directory vet

# Benchmarks of every module (the store benchmarks report p50-ns and p99-ns of an Update).
bench:
	@failed=""; \
	for m in $(MODULES); do \
		echo "==> $$m: go test -run '^$$' -bench . -benchmem ./..."; \
		(cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# What a call costs a whole process (issue 10), SDK against a hand-written net/http client:
# internal/processbench starts a loopback HTTPS server, then RUNS pairs of client processes,
# raw and sdk (20,000 calls each after a warm-up, 64 in flight, each pinned to one core), and
# prints each pair's CPU-per-call and throughput ratios and the medians. Not part of `make test`;
# it fails on errors only, never on a ratio. TOGETHER=1 runs a pair's clients at the same time
# (less noise on a busy machine); PROFILE=dir (PROFILE=1: /tmp/b24oauth-processbench) also
# writes CPU and allocation profiles of one more run of each client; PAIR=raw,raw measures
# the benchmark's own noise (an A/A ratio).
RUNS ?= 7
PROFILE_DIR = $(if $(filter 1,$(PROFILE)),/tmp/b24oauth-processbench,$(PROFILE))
bench-process:
	$(GO) run ./internal/processbench -runs $(RUNS) $(if $(TOGETHER),-together) $(if $(PAIR),-pair $(PAIR)) $(if $(PROFILE),-profile $(PROFILE_DIR))

# Every fuzz target of every module (FuzzLifecycleHandlers in the root so far), FUZZTIME each.
# go test -fuzz takes one package and one target at a time, so the targets are listed first.
# The seed corpus of each target already runs as a test in `make test`.
FUZZTIME ?= 30s
fuzz:
	@failed=""; found=0; \
	for m in $(MODULES); do \
		for pkg in $$(cd $$m && $(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); do \
			for target in $$(cd $$m && $(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
				found=1; \
				echo "==> $$pkg: go test -run '^$$' -fuzz='^$$target$$' -fuzztime=$(FUZZTIME)"; \
				(cd $$m && $(GO) test -run '^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg) || failed="$$failed $$pkg.$$target"; \
			done; \
		done; \
	done; \
	if [ $$found = 0 ]; then echo "no fuzz targets yet"; fi; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi

# A short run of every fuzz target (10 s each), for CI.
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# A user's `go get` of every module at the version version.go names, as if HEAD were tagged:
# a file:// module proxy built from HEAD (committed files only), then a fresh module outside
# the repository fetches, builds and tidies every module through it (.ci/modcheck, RELEASING.md).
modcheck:
	@GO=$(GO) bash .ci/modcheck

# go mod tidy in every module of the working tree (plain `go mod tidy` in a store module looks
# for the unreleased core on proxy.golang.org; this serves it from the working tree).
tidy:
	@GO=$(GO) bash .ci/modcheck tidy

# Set the release version: version.go's Version, every module's requirement of the core and
# go.work's replace of it (make set-version VERSION=0.2.0; RELEASING.md). The tool builds on
# its own (GOWORK=off), so a workspace that no longer loads can still be set right.
set-version:
	@if [ -z "$(VERSION)" ]; then echo "usage: make set-version VERSION=X.Y.Z"; exit 1; fi
	cd internal/modproxy && GOWORK=off $(GO) run . set-version -root ../.. $(VERSION)

# Start PostgreSQL and Redis if they are down (idempotent); prints the variables to export.
services:
	@bash .ci/run services
