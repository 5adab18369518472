package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/testmsg"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/token"
)

// The memory row of bench.sh: the real leadpush-milter binary, with the
// default body_memory (1 MiB) and max_track_size (10 MiB), takes 20
// concurrent 25 MB messages (a base64 attachment) from go-milter clients;
// its peak RSS (VmHWM in /proc/PID/status) must stay far below 20 x 25 MB.
// A second round sends 20 concurrent 8 MB messages, which are tracked
// (spooled to disk and rewritten).
//
// Environment: LEADPUSH_BENCH=1 (skipped otherwise), BENCH_MEMORY_JSON where
// to write the numbers.

// MemoryResult is what TestMilterMemory writes to BENCH_MEMORY_JSON.
type MemoryResult struct {
	Sessions   int      `json:"sessions"`
	SizeMB     int      `json:"size_mb"`
	IdleRSSMB  float64  `json:"idle_rss_mb"` // VmHWM after start-up
	PeakRSSMB  float64  `json:"peak_rss_mb"` // VmHWM after the 25 MB round
	Peak8MB    float64  `json:"peak_rss_8mb_tracked_mb"`
	Seconds    float64  `json:"seconds"`     // the 25 MB round
	Recorded   int64    `json:"recorded"`    // both rounds
	Rewritten  int64    `json:"rewritten"`   // the 8 MB round
	TooLarge   int64    `json:"too_large"`   // the 25 MB round
	LimitMB    float64  `json:"limit_mb"`    // the bound checked
	BodyMemory string   `json:"body_memory"` // configuration
	MaxTrack   string   `json:"max_track_size"`
	Valid      bool     `json:"valid"`
	Problems   []string `json:"problems"`
}

func TestMilterMemory(t *testing.T) {
	if os.Getenv("LEADPUSH_BENCH") != "1" {
		t.Skip("set LEADPUSH_BENCH=1 (see bench/bench.sh)")
	}
	const sessions, size = 20, 25 << 20
	srv, addr, metrics := startMemoryMilter(t, "body_memory = \"1MiB\"\nmax_track_size = \"10MiB\"\n")
	res := MemoryResult{Sessions: sessions, SizeMB: size >> 20, BodyMemory: "1MiB", MaxTrack: "10MiB", LimitMB: 200}
	res.IdleRSSMB = vmHWM(t, srv.cmd.Process.Pid)

	round := func(size int, tracked bool) time.Duration {
		el, problems := concurrentRound(addr, testmsg.Big(size), sessions, 60*time.Second, tracked, fmt.Sprintf("%d MB", size>>20))
		res.Problems = append(res.Problems, problems...)
		return el
	}
	el := round(size, false)
	res.Seconds = el.Seconds()
	res.PeakRSSMB = vmHWM(t, srv.cmd.Process.Pid)
	round(8<<20, true)
	res.Peak8MB = vmHWM(t, srv.cmd.Process.Pid)

	// The recorder writes in the background: wait for both rounds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := scrapeAll(t, metrics)
		res.Recorded = int64(m["leadpush_milter_messages_recorded_total"])
		res.Rewritten = int64(m["leadpush_milter_bodies_rewritten_total"])
		res.TooLarge = int64(m["leadpush_milter_bodies_too_large_total"])
		if res.Recorded >= 2*sessions || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	check := func(ok bool, format string, args ...any) {
		if !ok {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	check(res.Recorded == 2*sessions, "recorded %d messages, want %d", res.Recorded, 2*sessions)
	check(res.Rewritten == sessions, "rewrote %d bodies, want %d (the 8 MB round)", res.Rewritten, sessions)
	check(res.PeakRSSMB > 0 && res.PeakRSSMB < res.LimitMB, "peak RSS %.1f MB, want < %.0f MB", res.PeakRSSMB, res.LimitMB)
	res.Valid = len(res.Problems) == 0
	t.Logf("%d x %d MB in %.1fs: peak RSS %.1f MB (idle %.1f MB; after 20 x 8 MB tracked %.1f MB); recorded %d, rewritten %d, too large %d",
		sessions, size>>20, res.Seconds, res.PeakRSSMB, res.IdleRSSMB, res.Peak8MB, res.Recorded, res.Rewritten, res.TooLarge)
	for _, p := range res.Problems {
		t.Errorf("INVALID: %s", p)
	}
	if p := os.Getenv("BENCH_MEMORY_JSON"); p != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// vmHWM returns the peak resident set size of process pid, in MB.
func vmHWM(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// sendBig sends one message with body on a new milter connection, as
// Postfix does, and returns how many body bytes the milter replaced.
func sendBig(c *gomilter.Client, body []byte) (int, error) {
	s, err := c.Session()
	if err != nil {
		return 0, err
	}
	defer s.Close()
	if err := s.Macros(gomilter.CodeConn, "j", "lab.localdomain"); err != nil {
		return 0, err
	}
	if _, err := s.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"); err != nil {
		return 0, err
	}
	if _, err := s.Helo("localhost"); err != nil {
		return 0, err
	}
	if _, err := s.Mail("<reports@example.com>", nil); err != nil {
		return 0, err
	}
	if _, err := s.Rcpt("<customer@example.org>", nil); err != nil {
		return 0, err
	}
	for _, h := range [][2]string{
		{"From", "reports@example.com"}, {"To", "customer@example.org"}, {"Subject", "Your monthly report"},
		{"MIME-Version", "1.0"}, {"Content-Type", `multipart/mixed; boundary="b1"`}, {"X-Leadpush-Tag", "report"},
	} {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			return 0, err
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return 0, err
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "4AbCdEfGh"); err != nil {
		return 0, err
	}
	mods, act, err := s.BodyReadFrom(bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if act.Code != gomilter.ActContinue && act.Code != gomilter.ActAccept {
		return 0, fmt.Errorf("end of message: action %c", act.Code)
	}
	n := 0
	for _, m := range mods {
		if m.Code == gomilter.ActReplBody {
			n += len(m.Body)
		}
	}
	return n, nil
}

// buildProgram builds ./cmd/NAME into dir and returns the binary's path.
func buildProgram(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	build := exec.Command(goTool(t), "build", "-o", bin, "./cmd/"+name)
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

// startMemoryMilter builds and starts leadpush-milter on a TCP socket with
// tracking, VERP and its metrics listener (extraMilter is added to its
// [milter] section) and returns the running server, its milter address
// and its metrics URL.
func startMemoryMilter(t *testing.T, extraMilter string) (srv *server, addr, metrics string) {
	t.Helper()
	tmp := t.TempDir()
	bin := buildProgram(t, tmp, "leadpush-milter")
	port, mport := freePort(t), freePort(t)
	cfg := filepath.Join(tmp, "leadpush.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[store]
path = %q
[log]
level = "warn"
[milter]
listen = "inet:127.0.0.1:%d"
trusted_networks = ["127.0.0.0/8"]
temp_dir = %q
metrics_listen = "127.0.0.1:%d"
%s[tracking]
base_url = "https://t.example.com"
keys = [%q]
[bounce]
domain = "bounces.example.com"
`, filepath.Join(tmp, "data", "leadpush.db"), port, tmp, mport, extraMilter, token.NewKey("bench"))), 0o600); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, tmp, "leadpush-milter", bin, "-config", cfg)
	addr = "127.0.0.1:" + strconv.Itoa(port)
	waitDial(t, "inet:"+addr)
	metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
	waitHTTP(t, metrics)
	return srv, addr, metrics
}

// concurrentRound sends body to the milter at addr in sessions concurrent
// sessions and returns how long they took and what went wrong, each
// problem named by label: an error, or a body tracked when it should not
// be (or not when it should).
func concurrentRound(addr string, body []byte, sessions int, timeout time.Duration, tracked bool, label string) (time.Duration, []string) {
	c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
			gomilter.OptRemoveRcpt | gomilter.OptAddRcpt,
		ReadTimeout: timeout, WriteTimeout: timeout,
	})
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	start := time.Now()
	for range sessions {
		wg.Go(func() {
			replaced, err := sendBig(c, body)
			if err == nil && tracked != (replaced > 0) {
				err = fmt.Errorf("%s: replaced %d body bytes, want tracked=%v", label, replaced, tracked)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	var problems []string
	for err := range errs {
		problems = append(problems, err.Error())
	}
	return time.Since(start), problems
}
