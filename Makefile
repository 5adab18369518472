# Leadpush. `make demo` runs the main job end to end; `make test` runs every
# check and test. Both install what is missing (Debian 12, as root).
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN ?= bin

.PHONY: all build deps demo test check unit e2e fuzz clean bench bench-compare deb

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	scripts/deps.sh

# The Debian package, $(BIN)/leadpush_VERSION_amd64.deb (scripts/deb.sh:
# nfpm at a pinned version; VERSION=1.2.3 make deb to choose the version).
# packaging/deb_test.go builds it and checks it with dpkg-deb and lintian.
deb:
	OUT=$(BIN) scripts/deb.sh

# A private Postfix on loopback with leadpush-milter, leadpushd and the
# embedded SQLite ledger: a message's whole life, from the seed's swaks
# example to its delivery, open, click, unsubscribe, a real bounce, and both
# webhook formats.
demo:
	scripts/demo.sh

# gofmt and vet, unit tests with the race detector, then the integration
# tests against real Postfix (CI=true makes a missing Postfix a failure).
test:
	scripts/test.sh

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -shuffle=on -count=1 $$($(GO) list ./... | grep -v /internal/e2e)

e2e: deps
	$(GO) test -count=1 -v ./internal/e2e/

# Short runs of every fuzzer (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

clean:
	rm -rf $(BIN)

# One table of the whole system's speed and memory, each figure against a
# baseline measured in the same run (QUICK=1: under 3 minutes); raw numbers
# in bench/out/bench-TS.json. See bench/bench.sh.
bench: deps
	bench/bench.sh

# make bench-compare OLD=bench/out/bench-A.json NEW=bench/out/bench-B.json
bench-compare:
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make bench-compare OLD=old.json NEW=new.json"; exit 2; }
	bench/compare.sh $(OLD) $(NEW)
