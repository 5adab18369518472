#!/usr/bin/env bash
# demo.sh - the main job end to end: installs what is missing, starts a
# private loopback Postfix with leadpush-milter, leadpushd and the embedded
# SQLite ledger, and walks a message's whole life (internal/e2e TestDemo):
# the seed's swaks example over STARTTLS + AUTH LOGIN, its delivery from the
# mail log, an open and a click with a browser's user agent, a one-click
# unsubscribe, a real Postfix bounce through the pipe transport, and both
# webhook formats as a local receiver got them. Leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/deps.sh
CI=true LEADPUSH_DEMO=1 go test -count=1 -run '^TestDemo$' -v ./internal/e2e/ | scripts/demo-filter.sh
