#!/usr/bin/env bash
# compare.sh OLD.json NEW.json - two bench.sh reports side by side: every
# figure, baseline and ratio, old, new and the change in percent.
# `make bench-compare OLD=... NEW=...` runs it.
set -euo pipefail
(($# == 2)) || { echo "usage: $0 OLD.json NEW.json" >&2; exit 2; }
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
exec go run ./bench/report -compare "$1" "$2"
