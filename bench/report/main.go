// Command report turns the raw outputs of one bench.sh run into the table
// of figures, baselines and ratios, and writes every number as JSON; with
// -compare it sets two such JSON files side by side.
//
//	go run ./bench/report -dir bench/out/run-TS -json bench/out/bench-TS.json
//	go run ./bench/report -compare OLD.json NEW.json
//
// The run directory holds status (one "step rc seconds" line per step),
// postfix.json, memory.json and tracker.json (written by the bench tests)
// and the go test -bench outputs alone.txt, ledger.txt, webhook.txt,
// maillog.txt and bounce.txt. It exits 1 when a run was invalid (a step
// failed or its counts do not add up), not when a target was missed; the
// keys of missed rows are written to DIR/missed, one a line.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/leadpush/leadpush/bench/stats"
)

// Row is one line of the table.
type Row struct {
	Key      string  `json:"key"`
	Figure   string  `json:"figure"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline string  `json:"baseline,omitempty"`
	BaseVal  float64 `json:"baseline_value,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Target   string  `json:"target"`
	Met      string  `json:"met"` // "yes", "MISSED", "-" (no target), "INVALID"
	Note     string  `json:"note,omitempty"`
}

// Report is the JSON bench.sh keeps.
type Report struct {
	Time    string                          `json:"time"`
	Quick   bool                            `json:"quick"`
	Machine map[string]string               `json:"machine"`
	Rows    []Row                           `json:"rows"`
	Invalid []string                        `json:"invalid"`
	Steps   map[string]Step                 `json:"steps"`
	Raw     map[string]any                  `json:"raw"`
	GoBench map[string]map[string][]float64 `json:"go_bench"` // benchmark -> unit -> values of each -count run
}

// Step is one line of DIR/status.
type Step struct {
	RC      int     `json:"rc"`
	Seconds float64 `json:"seconds"`
}

func main() {
	dir := flag.String("dir", "", "run directory written by bench.sh")
	out := flag.String("json", "", "where to write the report JSON")
	quick := flag.Bool("quick", false, "the run was QUICK=1")
	compare := flag.Bool("compare", false, "compare two report JSON files: OLD NEW")
	flag.Parse()
	if *compare {
		if flag.NArg() != 2 {
			fmt.Fprintln(os.Stderr, "usage: report -compare OLD.json NEW.json")
			os.Exit(2)
		}
		if err := compareFiles(flag.Arg(0), flag.Arg(1)); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(2)
		}
		return
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: report -dir RUNDIR [-json OUT] [-quick]")
		os.Exit(2)
	}
	r := build(*dir, *quick)
	printTable(os.Stdout, r)
	if *out != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(2)
		}
		fmt.Printf("\nraw numbers: %s\n", *out)
	}
	var missed []string
	for _, row := range r.Rows {
		if row.Met == "MISSED" {
			missed = append(missed, row.Key)
		}
	}
	os.WriteFile(filepath.Join(*dir, "missed"), []byte(strings.Join(missed, "\n")+"\n"), 0o644)
	if len(r.Invalid) > 0 {
		os.Exit(1)
	}
}

func machine() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "goarch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavg_end"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m["mem"] = fmt.Sprintf("%.1f GB", kb/1024/1024)
		}
	}
	return m
}

func build(dir string, quick bool) *Report {
	r := &Report{Time: time.Now().UTC().Format(time.RFC3339), Quick: quick, Machine: machine(),
		Steps: map[string]Step{}, Raw: map[string]any{}, GoBench: map[string]map[string][]float64{}}
	if b, err := os.ReadFile(filepath.Join(dir, "load_start")); err == nil {
		r.Machine["loadavg_start"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 {
				rc, _ := strconv.Atoi(f[1])
				s, _ := strconv.ParseFloat(f[2], 64)
				r.Steps[f[0]] = Step{RC: rc, Seconds: s}
			}
		}
	}
	stepOK := func(step string) bool {
		s, ok := r.Steps[step]
		if !ok {
			r.Invalid = append(r.Invalid, step+": did not run")
			return false
		}
		if s.RC != 0 {
			r.Invalid = append(r.Invalid, fmt.Sprintf("%s: exit status %d (see %s)", step, s.RC, filepath.Join(dir, step+".log")))
			return false
		}
		return true
	}
	for _, f := range []string{"alone", "ledger", "webhook", "maillog", "bounce", "ledgerscale", "timeline"} {
		if m, err := parseGoBench(filepath.Join(dir, f+".txt")); err == nil {
			for k, v := range m {
				r.GoBench[k] = v
			}
		}
	}
	gb := func(name, unit string) float64 { return stats.Median(r.GoBench[name][unit]) }
	add := func(row Row, ok bool) {
		if !ok || row.Value == 0 || math.IsNaN(row.Value) {
			row.Met = "INVALID"
			row.Note = strings.TrimPrefix(row.Note+"; INVALID run, figures not to be trusted", "; ")
		}
		r.Rows = append(r.Rows, row)
	}
	atLeast := func(v, min float64) string {
		if v >= min {
			return "yes"
		}
		return "MISSED"
	}
	atMost := func(v, max float64) string {
		if v <= max {
			return "yes"
		}
		return "MISSED"
	}

	// Postfix end to end.
	var pf struct {
		Msgs    int `json:"msgs"`
		Runs    int `json:"runs"`
		Summary []struct {
			Config    string  `json:"config"`
			Median    float64 `json:"median_msgs_per_s"`
			RatioNoop float64 `json:"ratio_to_noop"`
			RatioNone float64 `json:"ratio_to_none"`
			CPUms     float64 `json:"cpu_ms_per_msg_median"`
			MilterUs  float64 `json:"milter_cpu_us_per_msg_median"`
		} `json:"summary"`
	}
	pfOK := stepOK("postfix") && readJSON(filepath.Join(dir, "postfix.json"), &pf, r, "postfix")
	sum, cpu, mcpu := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, s := range pf.Summary {
		sum[s.Config], cpu[s.Config], mcpu[s.Config] = s.Median, s.CPUms, s.MilterUs
	}
	lp, noop, none := sum["leadpush-unix"], sum["noop-unix"], sum["none"]
	note := fmt.Sprintf("smtp-source -s 20, %d msgs x %d runs, e2e to the sink; machine CPU %.2f ms/msg (no-op %.2f, none %.2f), "+
		"milter process %.0f µs/msg (no-op %.0f)", pf.Msgs, pf.Runs, cpu["leadpush-unix"], cpu["noop-unix"], cpu["none"],
		mcpu["leadpush-unix"], mcpu["noop-unix"])
	add(Row{Key: "postfix", Figure: "Postfix + leadpush-milter, full tracking", Value: lp, Unit: "msgs/s",
		Baseline: "Postfix + no-op go-milter", BaseVal: noop, Ratio: ratio(lp, noop), Target: ">= 0.90x no-op",
		Met: atLeast(ratio(lp, noop), 0.90), Note: note}, pfOK && noop > 0)
	add(Row{Key: "postfix-none", Figure: "  same, against no milter", Value: lp, Unit: "msgs/s",
		Baseline: "Postfix, no milter", BaseVal: none, Ratio: ratio(lp, none), Target: "reported", Met: "-"}, pfOK && none > 0)
	if rp := sum["replay-unix"]; rp > 0 {
		add(Row{Key: "postfix-floor", Figure: "  floor: a milter replaying leadpush's modifications", Value: rp, Unit: "msgs/s",
			Baseline: "Postfix + no-op go-milter", BaseVal: noop, Ratio: ratio(rp, noop), Target: "reported", Met: "-",
			Note: fmt.Sprintf("noopmilter -replay: same header, envelope and body changes, no work; machine CPU %.2f ms/msg, "+
				"milter process %.0f µs/msg", cpu["replay-unix"], mcpu["replay-unix"])}, pfOK && noop > 0)
		add(Row{Key: "postfix-vs-floor", Figure: "  leadpush against the floor", Value: lp, Unit: "msgs/s",
			Baseline: "Postfix + replaying milter", BaseVal: rp, Ratio: ratio(lp, rp), Target: "reported", Met: "-"}, pfOK)
	}

	// Milter alone.
	aloneOK := stepOK("alone")
	track, rec, nop := gb("BenchmarkMilterAlone/leadpush-track", "msgs/s"), gb("BenchmarkMilterAlone/leadpush-record", "msgs/s"),
		gb("BenchmarkMilterAlone/noop", "msgs/s")
	add(Row{Key: "alone", Figure: "milter alone, recording + full tracking", Value: track, Unit: "msgs/s",
		Baseline: "no-op go-milter", BaseVal: nop, Ratio: ratio(track, nop), Target: ">= 4000 msgs/s", Met: atLeast(track, 4000),
		Note: fmt.Sprintf("go-milter client, 20 connections over a unix socket; %.0f cpu-µs/msg (no-op %.0f)",
			gb("BenchmarkMilterAlone/leadpush-track", "cpu-µs/msg"), gb("BenchmarkMilterAlone/noop", "cpu-µs/msg"))}, aloneOK)
	add(Row{Key: "alone-record", Figure: "  milter alone, recording only", Value: rec, Unit: "msgs/s",
		Baseline: "no-op go-milter", BaseVal: nop, Ratio: ratio(rec, nop), Target: ">= 4000 msgs/s", Met: atLeast(rec, 4000)}, aloneOK)
	nct, ncn := gb("BenchmarkMilterAlone/newconn-leadpush-track", "msgs/s"), gb("BenchmarkMilterAlone/newconn-noop", "msgs/s")
	add(Row{Key: "alone-newconn", Figure: "  milter alone, a new connection per message", Value: nct, Unit: "msgs/s",
		Baseline: "no-op go-milter", BaseVal: ncn, Ratio: ratio(nct, ncn), Target: "reported", Met: "-",
		Note: "as Postfix does when each SMTP session carries one message"}, aloneOK)
	tct, tcn := gb("BenchmarkMilterAlone/tcp-leadpush-track", "msgs/s"), gb("BenchmarkMilterAlone/tcp-noop", "msgs/s")
	add(Row{Key: "alone-tcp", Figure: "  same over TCP (every command answered)", Value: tct, Unit: "msgs/s",
		Baseline: "no-op go-milter", BaseVal: tcn, Ratio: ratio(tct, tcn), Target: "reported", Met: "-"}, aloneOK)

	// Memory.
	var mem struct {
		Sessions int      `json:"sessions"`
		SizeMB   int      `json:"size_mb"`
		Idle     float64  `json:"idle_rss_mb"`
		Peak     float64  `json:"peak_rss_mb"`
		Peak8    float64  `json:"peak_rss_8mb_tracked_mb"`
		Limit    float64  `json:"limit_mb"`
		Valid    bool     `json:"valid"`
		Problems []string `json:"problems"`
		BodyMem  string   `json:"body_memory"`
		MaxTrack string   `json:"max_track_size"`
	}
	memOK := readJSON(filepath.Join(dir, "memory.json"), &mem, r, "memory")
	if memOK && !mem.Valid {
		memOK = false
		r.Invalid = append(r.Invalid, "memory: "+strings.Join(mem.Problems, "; "))
	}
	memOK = stepOK("memory") && memOK
	met := "yes"
	if mem.Peak >= mem.Limit {
		met = "MISSED"
	}
	add(Row{Key: "memory", Figure: fmt.Sprintf("milter peak RSS, %d x %d MB at once", mem.Sessions, mem.SizeMB), Value: mem.Peak, Unit: "MB",
		Baseline: "idle RSS", BaseVal: mem.Idle, Target: fmt.Sprintf("< %.0f MB (20 x 25 MB = 500)", mem.Limit), Met: met,
		Note: fmt.Sprintf("real binary, VmHWM; body_memory %s, max_track_size %s; %.1f MB after 20 x 8 MB tracked", mem.BodyMem, mem.MaxTrack, mem.Peak8)}, memOK)

	// Memory with link-dense bodies: the rewrite memory budget.
	var ml struct {
		Sessions  int      `json:"sessions"`
		Idle      float64  `json:"idle_rss_mb"`
		Peak      float64  `json:"peak_rss_mb"`
		Seconds96 float64  `json:"seconds_9_6mb"`
		Seconds8  float64  `json:"seconds_8mb"`
		Limit     float64  `json:"limit_mb"`
		Valid     bool     `json:"valid"`
		Problems  []string `json:"problems"`
	}
	mlOK := readJSON(filepath.Join(dir, "memlinks.json"), &ml, r, "memlinks")
	if mlOK && !ml.Valid {
		mlOK = false
		r.Invalid = append(r.Invalid, "memlinks: "+strings.Join(ml.Problems, "; "))
	}
	mlOK = stepOK("memlinks") && mlOK
	met = "yes"
	if ml.Peak >= ml.Limit {
		met = "MISSED"
	}
	add(Row{Key: "memlinks", Figure: fmt.Sprintf("milter peak RSS, %d x 10 MB link-dense HTML", ml.Sessions), Value: ml.Peak, Unit: "MB",
		Baseline: "idle RSS", BaseVal: ml.Idle, Target: fmt.Sprintf("<= %.0f MB", ml.Limit), Met: met,
		Note: fmt.Sprintf("real binary, VmHWM; 20 x 9.6 MB (16,000 links, untracked: over max_message_size) in %.1fs, then 20 x 8 MB (13,000 links, tracked) in %.1fs", ml.Seconds96, ml.Seconds8)}, mlOK)

	// Tracker.
	var tr struct {
		Median      map[string]float64 `json:"median_rps"`
		P99         map[string]float64 `json:"median_p99_ms"`
		RecordRate  map[string]float64 `json:"median_recorded_per_s"`
		Served      map[string]int64   `json:"served"`
		Recorded    map[string]int64   `json:"recorded"`
		Dropped     int64              `json:"dropped"`
		Valid       bool               `json:"valid"`
		AllRecorded bool               `json:"all_recorded"`
		Problems    []string           `json:"problems"`
		Duration    string             `json:"duration"`
		Runs        int                `json:"runs"`
		PeakRSSMB   float64            `json:"leadpushd_peak_rss_mb"`
		Raw         []struct {
			Target    string  `json:"target"`
			MachineUs float64 `json:"machine_cpu_us_per_req"`
			ProcUs    float64 `json:"process_cpu_us_per_req"`
		} `json:"runs_raw"`
	}
	trOK := readJSON(filepath.Join(dir, "tracker.json"), &tr, r, "tracker")
	if trOK && !tr.Valid {
		trOK = false
		r.Invalid = append(r.Invalid, "tracker: "+strings.Join(tr.Problems, "; "))
	}
	trOK = stepOK("tracker") && trOK
	ng, bare, open, click := tr.Median["nginx"], tr.Median["bare-go"], tr.Median["leadpushd-open"], tr.Median["leadpushd-click"]
	// machine CPU per request (wrk included), medians over the runs
	cpuReq := func(target string, proc bool) float64 {
		var xs []float64
		for _, w := range tr.Raw {
			if w.Target == target {
				if proc {
					xs = append(xs, w.ProcUs)
				} else {
					xs = append(xs, w.MachineUs)
				}
			}
		}
		return stats.Median(xs)
	}
	p99 := func(k string) string { return fmt.Sprintf("p99 %.1f ms", tr.P99[k]) }
	trMet := func(rt float64) string {
		if !tr.AllRecorded {
			return "MISSED"
		}
		return atLeast(rt, 0.6)
	}
	add(Row{Key: "tracker-open", Figure: "tracker pixel /o/TOKEN.gif (leadpushd)", Value: open, Unit: "req/s",
		Baseline: "nginx, static 43-byte GIF", BaseVal: ng, Ratio: ratio(open, ng), Target: ">= 0.6x nginx, all recorded", Met: trMet(ratio(open, ng)),
		Note: fmt.Sprintf("wrk -t2 -c64 %s x %d; %s (nginx %s); %d opens recorded of %d answered; machine CPU %.1f µs/req "+
			"(leadpushd's process %.1f; nginx %.1f, bare Go %.1f); leadpushd peak RSS %.0f MB", tr.Duration, tr.Runs,
			p99("leadpushd-open"), p99("nginx"), tr.Recorded["open"], tr.Served["open"], cpuReq("leadpushd-open", false),
			cpuReq("leadpushd-open", true), cpuReq("nginx", false), cpuReq("bare-go", false), tr.PeakRSSMB)}, trOK)
	add(Row{Key: "tracker-open-bare", Figure: "  same, against a bare Go handler", Value: open, Unit: "req/s",
		Baseline: "Go net/http, records nothing", BaseVal: bare, Ratio: ratio(open, bare), Target: "reported", Met: "-",
		Note: p99("bare-go")}, trOK)
	add(Row{Key: "tracker-click", Figure: "tracker click /c/TOKEN (302)", Value: click, Unit: "req/s",
		Baseline: "nginx, static 43-byte GIF", BaseVal: ng, Ratio: ratio(click, ng), Target: ">= 0.6x nginx, all recorded", Met: trMet(ratio(click, ng)),
		Note: fmt.Sprintf("%s; %d clicks recorded of %d answered", p99("leadpushd-click"), tr.Recorded["click"], tr.Served["click"])}, trOK)
	recMet := "yes"
	if !tr.AllRecorded {
		recMet = "MISSED"
	}
	add(Row{Key: "tracker-recording", Figure: "  tracker recording during the pixel runs", Value: tr.RecordRate["leadpushd-open"], Unit: "events/s",
		Baseline: "pixels answered", BaseVal: open, Ratio: ratio(tr.RecordRate["leadpushd-open"], open), Target: "recorded = 200 responses", Met: recMet,
		Note: fmt.Sprintf("ledger writer's written_total over each run; %d hits dropped (recording queue full); %.0f events/s in the click runs",
			tr.Dropped, tr.RecordRate["leadpushd-click"])}, trOK)

	// Ledger.
	w, raw := gb("BenchmarkLedgerWrites/writer", "events/s"), gb("BenchmarkLedgerWrites/raw-1000-row-tx", "events/s")
	add(Row{Key: "ledger", Figure: "ledger writes through the batching Writer", Value: w, Unit: "events/s",
		Baseline: "raw SQLite, 1000-row transactions", BaseVal: raw, Ratio: ratio(w, raw), Target: ">= 0.5x raw", Met: atLeast(ratio(w, raw), 0.5),
		Note: "100 000 events"}, stepOK("ledger"))

	// The real shape: a ledger grown to BENCH_LEDGER_EVENTS.
	_, ran1 := r.Steps["ledgerscale"]
	_, ran2 := r.Steps["timeline"]
	_, ran3 := r.Steps["trackerscale"]
	if ran1 || ran2 || ran3 || scaleWanted(dir) {
		grown, empty := gb("BenchmarkLedgerScaleWrites/grown", "us/event"), gb("BenchmarkLedgerScaleWrites/empty", "us/event")
		add(Row{Key: "ledgerscale", Figure: "ledger writes at " + scaleEvents(), Value: grown, Unit: "µs/event",
			Baseline: "same writes, same messages, no events", BaseVal: empty, Ratio: ratio(grown, empty), Target: "<= 1.5x empty",
			Met: atMost(ratio(grown, empty), 1.5),
			Note: fmt.Sprintf("opens and clicks at random over 100 000 messages, through the batching Writer: %.0f events/s (empty %.0f)",
				gb("BenchmarkLedgerScaleWrites/grown", "events/s"), gb("BenchmarkLedgerScaleWrites/empty", "events/s"))}, stepOK("ledgerscale"))
		tl, ev := gb("BenchmarkLedgerScaleTimeline/message", "ms/timeline"), gb("BenchmarkLedgerScaleTimeline/events-message", "ms/query")
		add(Row{Key: "timeline-message", Figure: "leadpushctl message (timeline) at " + scaleEvents(), Value: tl, Unit: "ms",
			Target: "< 10 ms", Met: atMost(tl, 10),
			Note: fmt.Sprintf("Message + Events{MessageID}, read-only handle, random messages; %.0f events a timeline",
				gb("BenchmarkLedgerScaleTimeline/message", "events/timeline"))}, stepOK("timeline"))
		add(Row{Key: "timeline-events", Figure: "leadpushctl events --message at " + scaleEvents(), Value: ev, Unit: "ms",
			Target: "< 10 ms", Met: atMost(ev, 10), Note: "its newest 100 events"}, stepOK("timeline"))
		var ts struct {
			Duration    string               `json:"duration"`
			Runs        int                  `json:"runs"`
			Messages    int                  `json:"messages"`
			Events      int                  `json:"fixture_events"`
			Median      map[string]float64   `json:"median_rps"`
			P99         map[string]float64   `json:"median_p99_ms"`
			Served      map[string]int64     `json:"served"`
			Recorded    map[string]int64     `json:"recorded"`
			Dropped     int64                `json:"dropped"`
			Pruned      map[string]int64     `json:"pruned"`
			PrunedNew   int64                `json:"pruned_new_events"`
			PruneRate   float64              `json:"median_pruned_events_per_s"`
			RecordRate  map[string]float64   `json:"median_recorded_per_s"`
			Valid       bool                 `json:"valid"`
			Problems    []string             `json:"problems"`
			AllRecorded bool                 `json:"all_recorded"`
			PeakRSSMB   float64              `json:"leadpushd_peak_rss_mb"`
			KeptUp      bool                 `json:"recording_kept_up"`
			KeptUpPrune bool                 `json:"recording_kept_up_prune"`
			DrainS      map[string][]float64 `json:"drain_s"`
		}
		tsOK := readJSON(filepath.Join(dir, "trackerscale.json"), &ts, r, "trackerscale")
		if tsOK && !ts.Valid {
			tsOK = false
			r.Invalid = append(r.Invalid, "trackerscale: "+strings.Join(ts.Problems, "; "))
		}
		tsOK = stepOK("trackerscale") && tsOK
		ng, lo, lp := ts.Median["nginx"], ts.Median["leadpushd-open"], ts.Median["leadpushd-open-prune"]
		met := atLeast(ratio(lo, ng), 0.6)
		if !ts.AllRecorded || !ts.KeptUp {
			met = "MISSED"
		}
		add(Row{Key: "trackerscale-open", Figure: "tracker pixel, real shape", Value: lo, Unit: "req/s",
			Baseline: "nginx, static 43-byte GIF", BaseVal: ng, Ratio: ratio(lo, ng), Target: ">= 0.6x nginx, recording keeps up", Met: met,
			Note: fmt.Sprintf("wrk -t2 -c64 %s x %d, hits at random over %d messages and 1000 user agents, ledger of %d events; "+
				"p99 %.1f ms (nginx %.1f); recorded %.0f events/s (kept up: %v; queue drained %.1f s after wrk); %d dropped; leadpushd peak RSS %.0f MB",
				ts.Duration, ts.Runs, ts.Messages, ts.Events, ts.P99["leadpushd-open"], ts.P99["nginx"], ts.RecordRate["leadpushd-open"],
				ts.KeptUp, stats.Median(ts.DrainS["leadpushd-open"]), ts.Dropped, ts.PeakRSSMB)}, tsOK)
		met = atLeast(ratio(lp, lo), 0.9)
		if !ts.AllRecorded || !ts.KeptUpPrune {
			met = "MISSED"
		}
		add(Row{Key: "trackerscale-prune", Figure: "  same, while retention prunes", Value: lp, Unit: "req/s",
			Baseline: "same, no pruning", BaseVal: lo, Ratio: ratio(lp, lo), Target: ">= 0.9x, recording keeps up", Met: met,
			Note: fmt.Sprintf("leadpushd's retention pruning the oldest tenth of the messages each run: %.0f events/s pruned during the runs, "+
				"%d messages and %d events in all; p99 %.1f ms; recorded %.0f events/s (kept up: %v; queue drained %.1f s after wrk)", ts.PruneRate,
				ts.Pruned["message"], ts.Pruned["event"], ts.P99["leadpushd-open-prune"], ts.RecordRate["leadpushd-open-prune"], ts.KeptUpPrune,
				stats.Median(ts.DrainS["leadpushd-open-prune"]))}, tsOK)
		r.Raw["trackerscale"] = rawJSON(dir, "trackerscale.json")
	}

	// Webhooks.
	whOK := stepOK("webhook")
	batch, js := gb("BenchmarkDeliver/batch", "events/s"), gb("BenchmarkDeliver/json", "events/s")
	add(Row{Key: "webhook-batch", Figure: "webhook delivery, batch", Value: batch, Unit: "events/s",
		Target: ">= 20000 events/s", Met: atLeast(batch, 20000), Note: "100 000 events to a local receiver"}, whOK)
	add(Row{Key: "webhook-json", Figure: "webhook delivery, json (one POST each)", Value: js, Unit: "events/s",
		Target: "reported", Met: "-", Note: "100 000 events to a local receiver"}, whOK)
	spread := gb("BenchmarkDeliver/batch-spread", "events/s")
	add(Row{Key: "webhook-batch-spread", Figure: "webhook delivery, batch, every event on its own message", Value: spread, Unit: "events/s",
		Target: ">= 20000 events/s", Met: atLeast(spread, 20000), Note: "100 000 messages, one event each: a batch loads its messages in one query"}, whOK)

	// Log follower, DSN classifier.
	add(Row{Key: "maillog", Figure: "log follower", Value: gb("BenchmarkFollow", "lines/s"), Unit: "lines/s",
		Target: "reported", Met: "-", Note: "1 000 000-line Postfix log, read, parsed, batched"}, stepOK("maillog"))
	add(Row{Key: "bounce", Figure: "DSN classifier", Value: gb("BenchmarkParse", "bounces/s"), Unit: "DSNs/s",
		Target: "reported", Met: "-", Note: fmt.Sprintf("10 010 DSNs (910 x the corpus); %.0f msgs/s all kinds", gb("BenchmarkParse", "msgs/s"))},
		stepOK("bounce"))

	for _, row := range r.Rows {
		if row.Met == "INVALID" {
			dup := false
			for _, s := range r.Invalid {
				if strings.HasPrefix(s, strings.SplitN(row.Key, "-", 2)[0]) {
					dup = true
				}
			}
			if !dup {
				r.Invalid = append(r.Invalid, row.Key+": no figure")
			}
		}
	}
	r.Raw["postfix"], r.Raw["memory"], r.Raw["tracker"] = rawJSON(dir, "postfix.json"), rawJSON(dir, "memory.json"), rawJSON(dir, "tracker.json")
	r.Raw["memlinks"] = rawJSON(dir, "memlinks.json")
	return r
}

// scaleWanted reports whether the run's steps included the real-shape rows
// (a run of older steps, or STEPS without them, leaves them out).
func scaleWanted(dir string) bool {
	for _, f := range []string{"trackerscale.json", "timeline.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// scaleEvents is the size of the grown ledger, as bench.sh passed it.
func scaleEvents() string {
	n, err := strconv.Atoi(os.Getenv("BENCH_LEDGER_EVENTS"))
	if err != nil || n <= 0 {
		return "10 M events"
	}
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%d M events", n/1_000_000)
	}
	return fmt.Sprintf("%d events", n)
}

func rawJSON(dir, name string) any {
	var v any
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || json.Unmarshal(b, &v) != nil {
		return nil
	}
	return v
}

func readJSON(path string, v any, r *Report, step string) bool {
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		r.Invalid = append(r.Invalid, fmt.Sprintf("%s: %v", step, err))
		return false
	}
	return true
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads go test -bench output: benchmark (without the
// GOMAXPROCS suffix) -> unit -> the value of each run.
func parseGoBench(path string) (map[string]map[string][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]map[string][]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || !strings.HasPrefix(fs[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(fs[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(fs[0], "")
		if out[name] == nil {
			out[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(fs); i += 2 {
			v, err := strconv.ParseFloat(fs[i], 64)
			if err == nil {
				out[name][fs[i+1]] = append(out[name][fs[i+1]], v)
			}
		}
	}
	return out, sc.Err()
}

func num(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 100:
		return groupDigits(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

func groupDigits(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func printTable(w *os.File, r *Report) {
	mode := "full"
	if r.Quick {
		mode = "QUICK=1"
	}
	fmt.Fprintf(w, "\nLeadpush benchmarks (%s), %s; nproc %s, %s, %s RAM; load average %s at start, %s at end\n\n",
		mode, r.Time, r.Machine["nproc"], r.Machine["cpu"], r.Machine["mem"], r.Machine["loadavg_start"], r.Machine["loadavg_end"])
	hdr := []string{"figure", "value", "baseline (same run)", "baseline value", "ratio", "target", "met?"}
	rows := [][]string{hdr}
	for _, row := range r.Rows {
		rt := "-"
		if row.Ratio != 0 {
			rt = fmt.Sprintf("%.2fx", row.Ratio)
		}
		base := row.Baseline
		if base == "" {
			base = "-"
		}
		rows = append(rows, []string{row.Figure, num(row.Value) + " " + row.Unit, base, num(row.BaseVal), rt, row.Target, row.Met})
	}
	width := make([]int, len(hdr))
	for _, rw := range rows {
		for i, c := range rw {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(rw []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range rw {
			pad := width[i] - len([]rune(c))
			if i == 1 || i == 3 || i == 4 {
				b.WriteString(" " + strings.Repeat(" ", pad) + c + " |")
			} else {
				b.WriteString(" " + c + strings.Repeat(" ", pad) + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	sep := make([]string, len(hdr))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	fmt.Fprintln(w, "|"+strings.ReplaceAll(" "+strings.Join(sep, " | ")+" ", " ", "-")+"|")
	for _, rw := range rows[1:] {
		line(rw)
	}
	fmt.Fprintln(w, "\nnotes:")
	for _, row := range r.Rows {
		if row.Note != "" {
			fmt.Fprintf(w, "  %-17s %s\n", row.Key+":", row.Note)
		}
	}
	var missed []string
	for _, row := range r.Rows {
		if row.Met == "MISSED" {
			missed = append(missed, fmt.Sprintf("%s (%s %s, target %s)", row.Key, num(row.Value), row.Unit, row.Target))
		}
	}
	steps := make([]string, 0, len(r.Steps))
	for k, s := range r.Steps {
		steps = append(steps, fmt.Sprintf("%s %.0fs", k, s.Seconds))
	}
	sort.Strings(steps)
	fmt.Fprintf(w, "  %-17s %s\n", "step times:", strings.Join(steps, ", "))
	fmt.Println()
	if len(missed) > 0 {
		fmt.Fprintf(w, "MISSED targets: %s\n", strings.Join(missed, "; "))
	} else {
		fmt.Fprintln(w, "every target met")
	}
	for _, s := range r.Invalid {
		fmt.Fprintf(w, "INVALID: %s\n", s)
	}
}

// compareFiles prints old, new and the change of every row figure and
// baseline of two reports.
func compareFiles(oldPath, newPath string) error {
	load := func(p string) (*Report, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return &r, nil
	}
	o, err := load(oldPath)
	if err != nil {
		return err
	}
	n, err := load(newPath)
	if err != nil {
		return err
	}
	old := map[string]Row{}
	for _, row := range o.Rows {
		old[row.Key] = row
	}
	fmt.Printf("old: %s (%s, nproc %s, %s)\nnew: %s (%s, nproc %s, %s)\n\n", oldPath, o.Time, o.Machine["nproc"], o.Machine["cpu"],
		newPath, n.Time, n.Machine["nproc"], n.Machine["cpu"])
	fmt.Printf("| %-46s | %-9s | %14s | %14s | %8s | %-7s |\n", "figure", "unit", "old", "new", "change", "met?")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 48), strings.Repeat("-", 11), strings.Repeat("-", 16),
		strings.Repeat("-", 16), strings.Repeat("-", 10), strings.Repeat("-", 9))
	for _, row := range n.Rows {
		pr := func(name, unit string, ov, nv float64, met string) {
			ch := "-"
			if ov != 0 && nv != 0 {
				ch = fmt.Sprintf("%+.1f%%", (nv-ov)/ov*100)
			}
			fmt.Printf("| %-46s | %-9s | %14s | %14s | %8s | %-7s |\n", name, unit, num(ov), num(nv), ch, met)
		}
		or := old[row.Key]
		pr(strings.TrimSpace(row.Figure), row.Unit, or.Value, row.Value, row.Met)
		if row.Baseline != "" {
			pr("  baseline: "+row.Baseline, row.Unit, or.BaseVal, row.BaseVal, "")
		}
		if row.Ratio != 0 {
			pr("  ratio", "x", or.Ratio, row.Ratio, "")
		}
	}
	return nil
}
