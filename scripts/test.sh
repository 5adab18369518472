#!/usr/bin/env bash
# test.sh - every check and test: installs what is missing (scripts/deps.sh),
# gofmt, go vet, then all tests with the race detector, including the
# integration tests against a real private Postfix, swaks, opendkim and
# headless Chromium. CI=true makes a missing Postfix or Chromium a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/deps.sh
files=$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')
unformatted=$(gofmt -l $files)
if [[ -n $unformatted ]]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
# the patched go-milter (third_party/go-milter/LEADPUSH.md) is its own module
(cd third_party/go-milter && go vet . && go test -race -count=1 .)
go test -race -shuffle=on -count=1 -timeout 30m "$@" ./...
# The README's first command: the demo's whole life of a message, checked.
LEADPUSH_DEMO=1 go test -count=1 -run '^TestDemo$' ./internal/e2e/
