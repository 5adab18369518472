#!/usr/bin/env bash
# demo.sh - the main job end to end: installs what is missing, starts a
# private loopback Postfix with leadpush-milter and the embedded SQLite
# ledger, sends the seed's swaks example over STARTTLS + AUTH LOGIN, and
# prints what the recipient received and what Leadpush recorded. Leaves no
# process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
scripts/deps.sh
CI=true LEADPUSH_DEMO=1 go test -count=1 -run '^TestDemo$' -v ./internal/e2e/ | scripts/demo-filter.sh
