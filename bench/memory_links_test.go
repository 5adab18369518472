package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/testmsg"
)

// The memory-links row of bench.sh: the real leadpush-milter binary, with
// its defaults (body_memory 1 MiB, max_track_size 10 MiB, max_message_size
// 10240000, the 64 MiB rewrite memory budget), takes 20 concurrent 9.6 MB
// link-dense HTML messages (16,000 links each: rewritten, they would pass
// max_message_size, so they pass untracked), then 20 concurrent 8 MB ones
// (13,000 links: tracked). Without the budget, 8 such messages at once took
// the milter to 1.27 GB. Its peak RSS (VmHWM) must stay under 300 MB.
//
// Environment: LEADPUSH_BENCH=1 (skipped otherwise), BENCH_MEMORY_LINKS_JSON
// where to write the numbers.

// MemoryLinksResult is what TestMilterMemoryLinks writes.
type MemoryLinksResult struct {
	Sessions   int      `json:"sessions"`
	IdleRSSMB  float64  `json:"idle_rss_mb"`
	PeakRSSMB  float64  `json:"peak_rss_mb"`       // VmHWM after both rounds
	Peak96MB   float64  `json:"peak_rss_9_6mb_mb"` // VmHWM after the 9.6 MB round
	Seconds96  float64  `json:"seconds_9_6mb"`     // the 9.6 MB round
	Seconds8   float64  `json:"seconds_8mb"`       // the 8 MB round
	Rewritten  int64    `json:"rewritten"`         // the 8 MB round
	TooBig     int64    `json:"rewrites_too_big"`  // the 9.6 MB round
	BudgetWait int64    `json:"budget_timeouts"`   // should be 0
	LimitMB    float64  `json:"limit_mb"`          // the bound checked
	Valid      bool     `json:"valid"`
	Problems   []string `json:"problems"`
}

func TestMilterMemoryLinks(t *testing.T) {
	if os.Getenv("LEADPUSH_BENCH") != "1" {
		t.Skip("set LEADPUSH_BENCH=1 (see bench/bench.sh)")
	}
	const sessions = 20
	srv, addr, metrics := startMemoryMilter(t, "")
	res := MemoryLinksResult{Sessions: sessions, LimitMB: 300}
	res.IdleRSSMB = vmHWM(t, srv.cmd.Process.Pid)

	round := func(size, links int, tracked bool) time.Duration {
		el, problems := concurrentRound(addr, testmsg.Links(size, links), sessions, 120*time.Second, tracked, fmt.Sprintf("%d bytes", size))
		res.Problems = append(res.Problems, problems...)
		return el
	}
	res.Seconds96 = round(9_600_000, 16_000, false).Seconds()
	res.Peak96MB = vmHWM(t, srv.cmd.Process.Pid)
	res.Seconds8 = round(8_000_000, 13_000, true).Seconds()
	res.PeakRSSMB = vmHWM(t, srv.cmd.Process.Pid)

	m := scrapeAll(t, metrics)
	res.Rewritten = int64(m["leadpush_milter_bodies_rewritten_total"])
	res.TooBig = int64(m["leadpush_milter_rewrites_too_big_total"])
	res.BudgetWait = int64(m["leadpush_milter_budget_timeouts_total"])
	check := func(ok bool, format string, args ...any) {
		if !ok {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	check(res.Rewritten == sessions, "rewrote %d bodies, want %d (the 8 MB round)", res.Rewritten, sessions)
	check(res.TooBig == sessions, "%d rewrites too big, want %d (the 9.6 MB round)", res.TooBig, sessions)
	check(res.PeakRSSMB > 0 && res.PeakRSSMB < res.LimitMB, "peak RSS %.1f MB, want < %.0f MB", res.PeakRSSMB, res.LimitMB)
	res.Valid = len(res.Problems) == 0
	t.Logf("20 x 9.6 MB link-dense in %.1fs, then 20 x 8 MB in %.1fs: peak RSS %.1f MB (%.1f MB after the first round; idle %.1f MB); rewritten %d, too big %d, budget timeouts %d",
		res.Seconds96, res.Seconds8, res.PeakRSSMB, res.Peak96MB, res.IdleRSSMB, res.Rewritten, res.TooBig, res.BudgetWait)
	for _, p := range res.Problems {
		t.Errorf("INVALID: %s", p)
	}
	if p := os.Getenv("BENCH_MEMORY_LINKS_JSON"); p != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
