#!/usr/bin/env bash
# bench.sh - `make bench`: every benchmark of the system in one run, one
# table of figures against baselines measured in the same run.
#
#   bench/bench.sh            # full: about 10 minutes on 2 cores
#   QUICK=1 bench/bench.sh    # under 5 minutes (the real-shape rows on 1 M events)
#   STEPS="tracker ledger" bench/bench.sh   # some rows only (the others show INVALID)
#
# Rows: Postfix end to end (bench/run.sh: none / no-op go-milter /
# leadpush-milter), the milter alone (milter BenchmarkMilterAlone), its peak
# RSS under 20 x 25 MB (bench TestMilterMemory) and under 20 x 10 MB
# link-dense HTML (bench TestMilterMemoryLinks), the tracker against nginx
# and a bare Go handler with wrk (bench TestTrackerBench), ledger writes
# (BenchmarkLedgerWrites), webhook delivery (BenchmarkDeliver), the log
# follower (BenchmarkFollow) and the DSN classifier (BenchmarkParse); and
# the real shape, on a ledger grown to BENCH_LEDGER_EVENTS (10 M; QUICK 1 M):
# ledger writes and a message's timeline (ledger BenchmarkLedgerScale*),
# the tracker with hits over 100 000 messages and 1000 user agents, alone
# and while retention prunes (bench TestTrackerScale).
#
# Raw outputs go to bench/out/run-TS/, the table's numbers to
# bench/out/bench-TS.json (compare two with `make bench-compare OLD=.. NEW=..`).
# Exits 1 when a run was invalid (a step failed, messages deferred, counts
# that do not add up); a missed target is printed as MISSED, with a CPU
# profile of where the time goes, and does not fail the run. Needs root (a
# private Postfix), Postfix, wrk and nginx-light: scripts/deps.sh installs
# what is missing. Everything listens on 127.0.0.1; the servers started are
# stopped when each step ends (go test cleanups, and the trap below).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export PATH=$PATH:/usr/local/go/bin:/usr/sbin
cd "$root"
command -v go >/dev/null || { echo "bench: go not found" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "bench: must run as root (a private Postfix instance)" >&2; exit 1; }
if ! command -v wrk >/dev/null || [[ ! -x /usr/sbin/nginx ]] || ! command -v smtp-source >/dev/null; then
	echo "bench: wrk, nginx or Postfix missing; running scripts/deps.sh" >&2
	scripts/deps.sh || exit 1
fi

quick=${QUICK:-0}
ts=$(date +%Y%m%d-%H%M%S)
out=$here/out
dir=$out/run-$ts
mkdir -p "$dir"
json=$out/bench-$ts.json
cut -d' ' -f1-3 /proc/loadavg >"$dir/load_start"
: >"$dir/status"

if [[ $quick == 1 ]]; then
	count=1 alone_n=2000x scale_writes=50000x
	export BENCH_LEDGER_EVENTS=${BENCH_LEDGER_EVENTS:-1000000}
else
	count=3 alone_n=10000x scale_writes=200000x
	export BENCH_LEDGER_EVENTS=${BENCH_LEDGER_EVENTS:-10000000}
fi
# The ledger of the real shape (ledger.BuildFixture): built once, kept in
# bench/out between runs, copied by the steps that write to it.
export BENCH_FIXTURE_DIR=$out
steps=${STEPS:-postfix alone memory memlinks tracker ledger webhook maillog bounce ledgerscale timeline trackerscale}

# Every process a step starts is in its own process group (setsid); on exit
# or interrupt whatever is left of it is killed, by group id. Postfix's
# master starts its own session: the steps get a private TMPDIR, and a
# private instance in it (postfixlab-*) whose master outlived its test is
# stopped by its pid file. The TMPDIR is removed at the end.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/leadpush-bench-XXXXXX") || exit 1
chmod 755 "$TMPDIR" # Postfix and nginx workers must traverse it
export TMPDIR
current=
stop_new_postfix() {
	local d pid
	for d in "$TMPDIR"/postfixlab-*; do
		[[ -d $d ]] || continue
		pid=$(tr -dc 0-9 <"$d/spool/pid/master.pid" 2>/dev/null) || continue
		if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
			echo "bench: stopping leftover Postfix master $pid ($d)" >&2
			kill -TERM "$pid" 2>/dev/null
		fi
	done
}
cleanup() {
	if [[ -n $current ]] && kill -0 "$current" 2>/dev/null; then
		kill -TERM -- "-$current" 2>/dev/null
		sleep 2
		kill -KILL -- "-$current" 2>/dev/null
	fi
	stop_new_postfix
	rm -rf "$TMPDIR"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

# step NAME TIMEOUT CMD...: runs CMD with its output in DIR/NAME.log (and
# DIR/NAME.txt for go test -bench output), records "NAME rc seconds".
step() {
	local name=$1 limit=$2
	shift 2
	echo "== $name: $*" >&2
	local t0=$SECONDS rc
	setsid timeout --kill-after=10s "$limit" "$@" >"$dir/$name.log" 2>&1 &
	current=$!
	wait "$current"
	rc=$?
	current=
	((rc != 0)) && stop_new_postfix
	cp "$dir/$name.log" "$dir/$name.txt"
	echo "$name $rc $((SECONDS - t0))" >>"$dir/status"
	if ((rc != 0)); then
		echo "bench: $name failed (exit $rc); last lines of $dir/$name.log:" >&2
		tail -n 15 "$dir/$name.log" >&2
	else
		grep -E '^Benchmark|run [0-9]+:|peak RSS|served ' "$dir/$name.log" | sed 's/^/   /' >&2 || true
	fi
}

gobench() { # gobench NAME TIMEOUT PKG REGEX BENCHTIME
	step "$1" "$2" go test -count="$count" -run '^$' -bench "$4" -benchtime "$5" -timeout "$2" "$3"
}

go build -o /dev/null ./cmd/... || exit 1
for s in $steps; do
	case $s in
	postfix) step postfix 9m env QUICK="$quick" BENCH_JSON="$dir/postfix.json" BENCH_TIMEOUT=8m bench/run.sh ;;
	alone) gobench alone 4m ./milter/ '^BenchmarkMilterAlone$' "$alone_n" ;;
	memory) step memory 3m env LEADPUSH_BENCH=1 BENCH_MEMORY_JSON="$dir/memory.json" \
		go test -count=1 -timeout 3m -run '^TestMilterMemory$' -v ./bench/ ;;
	memlinks) step memlinks 4m env LEADPUSH_BENCH=1 BENCH_MEMORY_LINKS_JSON="$dir/memlinks.json" \
		go test -count=1 -timeout 4m -run '^TestMilterMemoryLinks$' -v ./bench/ ;;
	tracker) step tracker 5m env LEADPUSH_BENCH=1 QUICK="$quick" BENCH_TRACKER_JSON="$dir/tracker.json" \
		go test -count=1 -timeout 5m -run '^TestTrackerBench$' -v ./bench/ ;;
	ledger) gobench ledger 3m ./ledger/ '^BenchmarkLedgerWrites$' 100000x ;;
	webhook) gobench webhook 4m ./notify/webhook/ '^BenchmarkDeliver$' 100000x ;;
	maillog) gobench maillog 3m ./notify/maillog/ '^BenchmarkFollow$' 1x ;;
	bounce) gobench bounce 3m ./notify/bounce/ '^BenchmarkParse$' 910x ;; # 910 x 11 DSNs = 10 010
	# The real shape: the first builds the fixture when it is not cached
	# (about 10 minutes for 10 M events on 2 busy cores).
	ledgerscale) step ledgerscale 40m env LEADPUSH_BENCH=1 go test -count="$count" -run '^$' \
		-bench '^BenchmarkLedgerScaleWrites$' -benchtime "$scale_writes" -timeout 40m ./ledger/ ;;
	timeline) step timeline 30m env LEADPUSH_BENCH=1 go test -count="$count" -run '^$' \
		-bench '^BenchmarkLedgerScaleTimeline$' -benchtime 2000x -timeout 30m ./ledger/ ;;
	trackerscale) step trackerscale 40m env LEADPUSH_BENCH=1 QUICK="$quick" BENCH_TRACKER_SCALE_JSON="$dir/trackerscale.json" \
		go test -count=1 -timeout 40m -run '^TestTrackerScale$' -v ./bench/ ;;
	*) echo "bench: unknown step $s" >&2; exit 2 ;;
	esac
done

qflag=
[[ $quick == 1 ]] && qflag=-quick
go run ./bench/report -dir "$dir" -json "$json" $qflag
rc=$?

# pptop [BIN] PROFILE: the hottest functions, then our own by cumulative time.
pptop() {
	echo "   flat (top 10):"
	go tool pprof -top -nodecount=10 "$@" 2>/dev/null | grep -E '^ +[0-9.]+m?s ' | sed 's/^/   /'
	echo "   cumulative, leadpush code and its libraries (top 15):"
	go tool pprof -top -cum -nodecount=400 "$@" 2>/dev/null |
		grep -E 'leadpush/|go-milter|modernc.org/sqlite\.|uap-go|net/http\.\(\*conn\)\.serve|x/net/html' | head -n 15 | sed 's/^/   /'
}

# A CPU profile for each missed target: where the time goes.
profile() { # profile NAME PKG REGEX BENCHTIME
	local p=$dir/$1.cpu
	if go test -count=1 -run '^$' -bench "$3" -benchtime "$4" -cpuprofile "$p" -o "$dir/$1.test" "$2" >"$dir/$1.profile.log" 2>&1; then
		echo "-- $1: go test -bench '$3' -cpuprofile $p $2; go tool pprof -top $dir/$1.test $p"
		pptop "$dir/$1.test" "$p"
	else
		echo "-- $1: profiling failed, see $dir/$1.profile.log"
	fi
}
if [[ -s $dir/missed ]] && grep -q . "$dir/missed"; then
	echo
	echo "Profiles of the missed targets (kept in $dir):"
	while read -r key; do
		case $key in
		postfix | alone*) profile milter ./milter/ '^BenchmarkMilterAlone$/leadpush-track' 3000x ;;
		trackerscale)
			mkdir -p "$dir/trackerscale-prof"
			step trackerscale-profile 20m env LEADPUSH_BENCH=1 QUICK=1 BENCH_SCALE_RUNS=1 \
				BENCH_SCALE_PROFILE_DIR="$dir/trackerscale-prof" \
				go test -count=1 -timeout 20m -run '^TestTrackerScale$' -v ./bench/
			for p in "$dir"/trackerscale-prof/*.cpu; do
				[[ -s $p ]] || continue
				echo "-- trackerscale: leadpushd under wrk, real shape ($(basename "$p" .cpu)); go tool pprof -top $p"
				pptop "$p"
			done ;;
		tracker*)
			target=open
			[[ $key == tracker-click ]] && target=click
			step "tracker-profile-$target" 2m env LEADPUSH_BENCH=1 BENCH_TRACKER_TARGET=$target \
				BENCH_TRACKER_PROFILE="$dir/tracker-$target.cpu" \
				go test -count=1 -timeout 2m -run '^TestTrackerProfile$' -v -o "$dir/tracker.test" ./bench/
			echo "-- tracker ($target): leadpushd's tracker in process under wrk -c64; go tool pprof -top $dir/tracker-$target.cpu"
			pptop "$dir/tracker-$target.cpu" ;;
		ledger) profile ledger ./ledger/ '^BenchmarkLedgerWrites$/writer' 100000x ;;
		ledgerscale) LEADPUSH_BENCH=1 profile ledgerscale ./ledger/ '^BenchmarkLedgerScaleWrites$/grown' "$scale_writes" ;;
		timeline) LEADPUSH_BENCH=1 profile timeline ./ledger/ '^BenchmarkLedgerScaleTimeline$/message' 2000x ;;
		webhook*) profile webhook ./notify/webhook/ '^BenchmarkDeliver$/batch' 100000x ;;
		memory) echo "-- memory: see $dir/memory.log" ;;
		memlinks) echo "-- memlinks: see $dir/memlinks.log" ;;
		esac
	done < <(sed '/^tracker-click/!s/-.*//; s/^postfix$/alone/' "$dir/missed" | sort -u)
fi
echo
echo "raw outputs: $dir"
echo "table numbers: $json"
exit $rc
