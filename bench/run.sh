#!/usr/bin/env bash
# run.sh - leadpush-milter through a private Postfix, against baselines
# measured in the same run: Postfix without a milter and bench/noopmilter
# (a go-milter negotiating like ours). smtp-source -s 20 -m 5000 -F with a
# 20 KB HTML payload (20 links, X-Leadpush-Tag), relayed to a counting sink.
#
#   bench/run.sh                       # 5000 msgs x 3 runs, unix socket
#   QUICK=1 bench/run.sh               # 1000 msgs x 1 run
#   BENCH_RUNS=5 BENCH_TRANSPORTS="unix inet" bench/run.sh
#   bench/run.sh alone                 # the in-process milter benchmarks instead
#
# Needs root, Postfix and smtp-source (scripts/deps.sh installs them). The
# table goes to stdout; raw numbers to $BENCH_JSON (default
# ${TMPDIR:-/tmp}/leadpush-bench-<timestamp>.json, with the go test log beside it). Everything is on 127.0.0.1; Postfix, the
# milters and the sink are stopped when the test ends (go test cleanups).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
command -v go >/dev/null || { echo "run.sh: go not found" >&2; exit 1; }

if [[ ${1:-} == alone ]]; then
	shift
	cd "$root"
	exec go test -run '^$' -bench 'MilterAlone' -benchtime "${BENCHTIME:-10000x}" -count "${COUNT:-3}" "$@" ./milter/
fi

if ! command -v postfix >/dev/null || ! command -v smtp-source >/dev/null || ! command -v swaks >/dev/null; then
	echo "run.sh: Postfix tools missing; running scripts/deps.sh" >&2
	"$root/scripts/deps.sh"
fi
[[ $(id -u) -eq 0 ]] || { echo "run.sh: must run as root (private Postfix instance)" >&2; exit 1; }

export LEADPUSH_BENCH=1
export BENCH_JSON=${BENCH_JSON:-${TMPDIR:-/tmp}/leadpush-bench-$(date +%Y%m%d-%H%M%S).json}
timeout=${BENCH_TIMEOUT:-60m}
cd "$root"
go test -count=1 -timeout "$timeout" -run '^TestPostfixBench$' -v ./bench/ | tee "${BENCH_JSON%.json}.log" |
	grep -E '^\||^Postfix|run [0-9]+:|raw numbers|FAIL|ok|PASS' || true
test "${PIPESTATUS[0]}" -eq 0
