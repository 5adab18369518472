package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/bench/stats"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// The tracker rows of the real shape (bench.sh step "trackerscale"): the
// same wrk -t2 -c64 against nginx and leadpushd as TestTrackerBench, but
// each request the open pixel of one of BENCH_LEDGER_MESSAGES messages
// (default 100 000) chosen at random, with one of 1000 distinct
// User-Agents chosen at random (a wrk Lua script), after a warm-up run of
// 3 s (QUICK 2 s) not counted in the figures, on a ledger pre-grown
// by ledger.BuildFixture to BENCH_LEDGER_EVENTS events (default 10 000 000;
// cached in BENCH_FIXTURE_DIR, default bench/out, and copied). Each
// leadpushd run starts a fresh leadpushd (so every one starts with cold
// caches) and stops it after; the "prune" runs configure retention so that
// leadpushd prunes the oldest tenth of the fixture's messages (a further
// tenth each run) while wrk runs, starting once the first pruning
// transaction committed: pruning's cost is the ratio of the prune runs to
// the plain pixel runs. Every hit answered must be recorded: recorded new
// events + new events pruned (hits on a message pruned right after) +
// dropped = answered, where new events pruned = events pruned (leadpushd's
// counter) - fixture events gone.
//
// Environment: LEADPUSH_BENCH=1 (skipped otherwise), QUICK=1 (3 s x 1 run
// instead of 10 s x 3), BENCH_SCALE_DURATION and BENCH_SCALE_RUNS override,
// BENCH_TRACKER_SCALE_JSON where to write the raw numbers,
// BENCH_SCALE_PROFILE_DIR where each leadpushd run writes a CPU profile of
// itself (LEADPUSH_CPUPROFILE; bench.sh sets it when the row missed).

// ScaleResult is what TestTrackerScale writes to BENCH_TRACKER_SCALE_JSON.
type ScaleResult struct {
	Duration string             `json:"duration"`
	Runs     int                `json:"runs"`
	Messages int                `json:"messages"`
	Events   int                `json:"fixture_events"`
	UAs      int                `json:"user_agents"`
	Raw      []WrkRun           `json:"runs_raw"`
	Median   map[string]float64 `json:"median_rps"`
	P99      map[string]float64 `json:"median_p99_ms"`
	Served   map[string]int64   `json:"served"`   // open 200, over every leadpushd run
	Recorded map[string]int64   `json:"recorded"` // new open events in the ledger
	Dropped  int64              `json:"dropped"`
	// Pruned is what leadpushd's retention deleted during the prune runs;
	// PrunedNew, of it, events the runs themselves recorded.
	Pruned      map[string]int64   `json:"pruned"`
	PrunedNew   int64              `json:"pruned_new_events"`
	PruneRate   float64            `json:"median_pruned_events_per_s"`
	RecordRate  map[string]float64 `json:"median_recorded_per_s"`
	Valid       bool               `json:"valid"`
	Problems    []string           `json:"problems"`
	AllRecorded bool               `json:"all_recorded"`
	PeakRSSMB   float64            `json:"leadpushd_peak_rss_mb"`
	FixtureSecs float64            `json:"fixture_build_s,omitempty"` // when built in this run
	// DrainS is, per leadpushd run, how long its recording queue took to
	// empty after wrk stopped: recording kept up when it is about zero.
	DrainS map[string][]float64 `json:"drain_s"`
	// KeptUp: recording kept up with the hits in the plain pixel runs
	// (median drain within a tenth of the run plus 1 s).
	KeptUp      bool `json:"recording_kept_up"`
	KeptUpPrune bool `json:"recording_kept_up_prune"`
}

func TestTrackerScale(t *testing.T) {
	if os.Getenv("LEADPUSH_BENCH") != "1" {
		t.Skip("set LEADPUSH_BENCH=1 (see bench/bench.sh)")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk not found (Debian package wrk; scripts/deps.sh installs it)")
	}
	nginx := "/usr/sbin/nginx"
	if _, err := os.Stat(nginx); err != nil {
		t.Fatal("/usr/sbin/nginx not found (Debian package nginx-light; scripts/deps.sh installs it)")
	}
	dur, runs, warm := "10s", envInt(t, "BENCH_SCALE_RUNS", 3), "3s"
	if os.Getenv("QUICK") == "1" {
		dur, runs, warm = "3s", envInt(t, "BENCH_SCALE_RUNS", 1), "2s"
	}
	if d := os.Getenv("BENCH_SCALE_DURATION"); d != "" {
		dur = d
	}
	nMsgs, nEvents := envInt(t, "BENCH_LEDGER_MESSAGES", 100_000), envInt(t, "BENCH_LEDGER_EVENTS", 10_000_000)
	tmp := t.TempDir()
	res := ScaleResult{Duration: dur, Runs: runs, Messages: nMsgs, Events: nEvents, UAs: 1000, Median: map[string]float64{},
		P99: map[string]float64{}, Served: map[string]int64{}, Pruned: map[string]int64{}, RecordRate: map[string]float64{},
		DrainS: map[string][]float64{}}

	// The fixture (token ids, as ledger's BenchmarkLedgerScale* use), copied.
	fxDir := os.Getenv("BENCH_FIXTURE_DIR")
	if fxDir == "" {
		fxDir = "out"
	}
	t0 := time.Now()
	fx, built, err := ledger.CachedFixture(fxDir, ledger.Fixture{Messages: nMsgs, Events: nEvents, Name: "token",
		NewMessageID: token.NewMessageID})
	if err != nil {
		t.Fatal(err)
	}
	if built {
		res.FixtureSecs = time.Since(t0).Seconds()
		t.Logf("built fixture %s in %v", fx, time.Since(t0).Round(time.Second))
	}
	db := filepath.Join(tmp, "data", "leadpush.db")
	t0 = time.Now()
	if err := ledger.CopyLedger(fx, db); err != nil {
		t.Fatal(err)
	}
	t.Logf("copied the fixture in %v", time.Since(t0).Round(time.Millisecond))
	store, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	msgs, err := store.Messages(ctx, ledger.Filter{Limit: nMsgs})
	if err != nil {
		t.Fatal(err)
	}
	baseSeq, err := store.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	if len(msgs) != nMsgs || baseSeq != int64(nEvents) {
		t.Fatalf("fixture: %d messages, last seq %d; want %d, %d", len(msgs), baseSeq, nMsgs, nEvents)
	}
	oldest, newest := msgs[len(msgs)-1].CreatedAt, msgs[0].CreatedAt

	// Tokens for every message, and the wrk script choosing among them.
	key := token.NewKey("bench")
	kr, err := token.ParseKeyring([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	var opens []string
	for _, m := range msgs {
		o, err := kr.Sign(token.Claims{Kind: token.Open, MessageID: m.ID, Recipient: m.Recipients[0]})
		if err != nil {
			t.Fatal(err)
		}
		opens = append(opens, "/o/"+o+".gif")
	}
	var uas []string
	for _, ua := range ledger.FixtureUserAgents(1000) {
		uas = append(uas, ua.Raw)
	}
	openScript := wrkScaleScript(t, tmp, "opens", opens, uas)

	bin := filepath.Join(tmp, "leadpushd")
	build := exec.Command(goTool(t), "build", "-o", bin, "./cmd/leadpushd")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build leadpushd: %v\n%s", err, out)
	}
	ngBase := startNginx(t, tmp, nginx)

	// leadpushd runs: a fresh process each, retention off or pruning.
	lpPort, admPort := freePort(t), freePort(t)
	lpBase, admBase := fmt.Sprintf("http://127.0.0.1:%d", lpPort), fmt.Sprintf("http://127.0.0.1:%d", admPort)
	pruneRuns := 0
	startLPD := func(name string, prune bool) *server {
		retention := `messages = "0s"`
		if prune {
			// The oldest tenth of the messages, a further tenth each run.
			pruneRuns++
			horizon := oldest.Add(newest.Sub(oldest) * time.Duration(pruneRuns) / 10)
			retention = fmt.Sprintf("messages = %q\ninterval = \"1s\"", fmt.Sprintf("%dh", int(time.Since(horizon).Hours())))
		}
		cfg := filepath.Join(tmp, name+".toml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[store]
path = %q
[log]
level = "info"
format = "json"
[milter]
listen = "unix:%s/milter.sock"
[tracking]
base_url = %q
keys = [%q]
[tracker]
listen = "127.0.0.1:%d"
[admin]
listen = "127.0.0.1:%d"
[retention]
%s
`, db, tmp, lpBase, key, lpPort, admPort, retention)), 0o600); err != nil {
			t.Fatal(err)
		}
		if d := os.Getenv("BENCH_SCALE_PROFILE_DIR"); d != "" {
			t.Setenv("LEADPUSH_CPUPROFILE", filepath.Join(d, name+".cpu"))
		}
		s := startServer(t, tmp, name, bin, "-config", cfg)
		waitHTTP(t, admBase+"/healthz")
		if prune { // wait for the first pruning transaction
			deadline := time.Now().Add(60 * time.Second)
			for scrapeAll(t, admBase+"/metrics")[`leadpush_retention_pruned_total{kind="event"}`] == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%s: nothing pruned within 60 s of starting", name)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		return s
	}
	targets := []struct {
		name, base, script string
		prune              bool
	}{
		{"nginx", ngBase, openScript, false},
		{"leadpushd-open", lpBase, openScript, false},
		{"leadpushd-open-prune", lpBase, openScript, true},
	}
	var pruneRates []float64
	for r := 1; r <= runs; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, tg := range order {
			lpd := strings.HasPrefix(tg.name, "leadpushd")
			var srv *server
			var before map[string]float64
			pid := 0
			if lpd {
				srv = startLPD(fmt.Sprintf("%s-%d", tg.name, r), tg.prune)
				pid = srv.cmd.Process.Pid
				// Warm up: a tracker that has run a while has parsed the
				// user agents it keeps seeing (1000 fit its cache);
				// messages mostly miss its cache whatever the warm-up.
				if out, err := exec.Command(wrk, "-t2", "-c"+strconv.Itoa(wrkConns), "-d"+warm, "-s", tg.script, tg.base).CombinedOutput(); err != nil {
					t.Fatalf("wrk warm-up %s: %v\n%s", tg.name, err, out)
				}
				before = scrapeAll(t, admBase+"/metrics")
			}
			cpu0, proc0 := machineCPU(t), procCPU(t, pid)
			t0 := time.Now()
			out, err := exec.Command(wrk, "-t2", "-c"+strconv.Itoa(wrkConns), "-d"+dur, "--latency", "-s", tg.script, tg.base).CombinedOutput()
			el := time.Since(t0)
			cpu1, proc1 := machineCPU(t), procCPU(t, pid)
			if err != nil {
				t.Fatalf("wrk %s: %v\n%s", tg.name, err, out)
			}
			w, err := parseWrk(string(out))
			if err != nil {
				t.Fatalf("wrk %s: %v\n%s", tg.name, err, out)
			}
			w.Target, w.Run = tg.name, r
			if w.Requests > 0 {
				w.MachineUs = float64((cpu1 - cpu0).Microseconds()) / float64(w.Requests)
				w.ProcUs = float64((proc1 - proc0).Microseconds()) / float64(w.Requests)
			}
			var pruneNote string
			if lpd {
				after := scrapeAll(t, admBase+"/metrics")
				w.Recorded = (after["leadpush_ledger_writer_written_total"] - before["leadpush_ledger_writer_written_total"]) / el.Seconds()
				w.Depth = after["leadpush_tracker_queue_depth"]
				res.PeakRSSMB = max(res.PeakRSSMB, vmHWM(t, pid))
				// Let it record what it queued (bounded), then stop it:
				// how long that takes says whether recording kept up.
				d0 := time.Now()
				for deadline := d0.Add(5 * time.Minute); ; {
					m := scrapeAll(t, admBase+"/metrics")
					if m["leadpush_tracker_queue_depth"] == 0 && m["leadpush_ledger_writer_queued"] == 0 {
						break
					}
					if time.Now().After(deadline) {
						res.Problems = append(res.Problems, fmt.Sprintf("%s run %d: recording queue not drained 5 min after wrk", tg.name, r))
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				drain := time.Since(d0).Seconds()
				res.DrainS[tg.name] = append(res.DrainS[tg.name], drain)
				pruneNote += fmt.Sprintf("; queue drained in %.1f s after wrk", drain)
				srv.stop(t) // the counters below are final once it has stopped
				res.Served["open"] += int64(after[`leadpush_tracker_hits_total{code="200",endpoint="open"}`])
				res.Dropped += int64(after["leadpush_tracker_dropped_hits_total"])
				// What retention pruned, to the end: the passes' log lines
				// (it went on between the scrape above and the stop).
				for kind, n := range prunedLogged(t, filepath.Join(tmp, srv.name+".log")) {
					res.Pruned[kind] += n
				}
				if tg.prune {
					ev := after[`leadpush_retention_pruned_total{kind="event"}`] - before[`leadpush_retention_pruned_total{kind="event"}`]
					pruneRates = append(pruneRates, ev/el.Seconds())
					pruneNote += fmt.Sprintf("; pruned %.0f events during the run (%.0f/s), %d messages in all so far",
						ev, ev/el.Seconds(), res.Pruned["message"])
				}
			}
			res.Raw = append(res.Raw, w)
			t.Logf("%-20s run %d: %8.0f req/s, p50 %.2f ms, p99 %.2f ms, %d requests, %d non-2xx/3xx, %d socket errors; recorded %.0f events/s, queue %.0f; cpu %.1f µs/req (process %.1f)%s",
				tg.name, r, w.RPS, w.P50ms, w.P99ms, w.Requests, w.Non2xx3, w.SockErrs, w.Recorded, w.Depth, w.MachineUs, w.ProcUs, pruneNote)
			if w.Non2xx3 > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%s run %d: %d non-2xx/3xx responses", tg.name, r, w.Non2xx3))
			}
		}
	}
	for _, tg := range targets {
		var rps, p99, rec []float64
		for _, w := range res.Raw {
			if w.Target == tg.name {
				rps, p99, rec = append(rps, w.RPS), append(p99, w.P99ms), append(rec, w.Recorded)
			}
		}
		res.Median[tg.name], res.P99[tg.name] = stats.Median(rps), stats.Median(p99)
		if strings.HasPrefix(tg.name, "leadpushd") {
			res.RecordRate[tg.name] = stats.Median(rec)
		}
	}
	res.PruneRate = stats.Median(pruneRates)
	// Recording kept up when what was queued when wrk stopped was written
	// within a tenth of the run and a second (a batch, its linger):
	// the rate written during a short run depends on where the batches
	// fell.
	runDur, _ := time.ParseDuration(dur)
	slack := runDur.Seconds()/10 + 1
	res.KeptUp = stats.Median(res.DrainS["leadpushd-open"]) <= slack
	res.KeptUpPrune = stats.Median(res.DrainS["leadpushd-open-prune"]) <= slack

	// Count: the new events, and the fixture's events the pruning took.
	store, err = ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	res.Recorded = map[string]int64{}
	for _, typ := range []ledger.EventType{ledger.Open} {
		n, err := store.CountEvents(ctx, baseSeq, -1, []ledger.EventType{typ})
		if err != nil {
			t.Fatal(err)
		}
		res.Recorded[string(typ)] = n
	}
	left, err := store.CountEvents(ctx, 0, baseSeq, ledger.EventTypes)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	res.PrunedNew = res.Pruned["event"] - (int64(nEvents) - left)
	served, recorded := res.Served["open"], res.Recorded["open"]
	if recorded+res.PrunedNew+res.Dropped != served || res.PrunedNew < 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d new events recorded + %d of them pruned + %d dropped, leadpushd answered %d",
			recorded, res.PrunedNew, res.Dropped, served))
	}
	if pruneRuns > 0 && res.Pruned["event"] == 0 {
		res.Problems = append(res.Problems, "the prune runs pruned nothing")
	}
	res.Valid = len(res.Problems) == 0
	res.AllRecorded = res.Dropped == 0
	if !res.KeptUp || !res.KeptUpPrune {
		t.Logf("TARGET MISSED: recording did not keep up: queue drained in %.1f s after wrk (%.1f s while pruning), more than %.1f s",
			stats.Median(res.DrainS["leadpushd-open"]), stats.Median(res.DrainS["leadpushd-open-prune"]), slack)
	}
	t.Logf("served %v, recorded %v (+%d pruned after recording), dropped %d, pruned %v; leadpushd peak RSS %.1f MB",
		res.Served, res.Recorded, res.PrunedNew, res.Dropped, res.Pruned, res.PeakRSSMB)
	if !res.AllRecorded {
		t.Logf("TARGET MISSED: %d hits dropped (recording queue full)", res.Dropped)
	}
	for _, p := range res.Problems {
		t.Errorf("INVALID: %s", p)
	}
	if p := os.Getenv("BENCH_TRACKER_SCALE_JSON"); p != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// prunedLogged sums what leadpushd's retention logged it pruned (JSON
// log lines "retention: pruned"), by kind.
func prunedLogged(t *testing.T, log string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		var e struct {
			Msg                       string `json:"msg"`
			Messages, Events, Inbound int64
		}
		if json.Unmarshal([]byte(l), &e) != nil || e.Msg != "retention: pruned" {
			continue
		}
		out["message"] += e.Messages
		out["event"] += e.Events
		out["inbound"] += e.Inbound
	}
	return out
}

// wrkScaleScript writes a wrk Lua script that requests one of paths at
// random with one of uas at random as its User-Agent; each wrk thread
// seeds its own generator.
func wrkScaleScript(t *testing.T, dir, name string, paths, uas []string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("local paths = {\n")
	for _, p := range paths {
		fmt.Fprintf(&b, "  %q,\n", p)
	}
	b.WriteString("}\nlocal uas = {\n")
	for _, ua := range uas {
		fmt.Fprintf(&b, "  %q,\n", ua)
	}
	b.WriteString(`}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("id", n)
end
function init(args)
  math.randomseed(os.time() * 100 + id)
end
request = function()
  return wrk.format(nil, paths[math.random(#paths)], { ["User-Agent"] = uas[math.random(#uas)] })
end
`)
	f := filepath.Join(dir, name+".lua")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
