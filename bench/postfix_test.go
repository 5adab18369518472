// Package bench measures leadpush-milter through a real, private Postfix
// (internal/postfixlab) with smtp-source, against baselines measured in the
// same run: Postfix without a milter, and bench/noopmilter, a go-milter that
// negotiates like ours and does nothing. See run.sh.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/token"
)

// Environment:
//
//	LEADPUSH_BENCH=1   run at all (the test is skipped otherwise)
//	QUICK=1            1000 messages, 1 run
//	BENCH_MSGS, BENCH_RUNS, BENCH_SESSIONS   override (default 5000, 3, 20)
//	BENCH_TRANSPORTS   "unix" (default), "inet" or "unix inet"
//	BENCH_JSON         where to write the raw numbers (default bench-results.json in the temp dir, logged)

const (
	benchLinks = 20
	warmupMsgs = 200
	drainLimit = 300 * time.Second
)

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// payload is the message smtp-source sends (-F): LF line ends (smtp-source
// adds the CR), a ~20 KB HTML body with benchLinks links, X-Leadpush-Tag.
func payload() string {
	var b strings.Builder
	b.WriteString("From: Example News <a@example.com>\nTo: b@example.org\nSubject: Your weekly digest\n" +
		"MIME-Version: 1.0\nContent-Type: text/html; charset=UTF-8\nX-Leadpush-Tag: \"weekly digest\"\n\n" +
		"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Your weekly digest</title></head>\n<body>\n")
	head := b.Len()
	para := "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>\n"
	for i := 0; i < benchLinks; i++ {
		fmt.Fprintf(&b, "<h2>Article %d</h2>\n", i+1)
		for b.Len()-head < (i+1)*19500/benchLinks {
			b.WriteString(para)
		}
		fmt.Fprintf(&b, "<p><a href=\"https://www.example.com/articles/%d?utm_source=digest&amp;utm_medium=email\">Read article %d</a></p>\n", i+1, i+1)
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

// sink is a counting SMTP server: it keeps nothing but the number of
// messages, their bytes, the time of the last one, and a copy of the first
// message after Mark (to check what the milter did).
type sink struct {
	ln       net.Listener
	count    atomic.Int64
	bytes    atomic.Int64
	last     atomic.Int64 // unix ns of the last accepted DATA
	wg       sync.WaitGroup
	mu       sync.Mutex
	sample   []byte
	want     bool
	conns    map[net.Conn]struct{}
	changed  chan struct{}
	closedMu sync.Once
}

func newSink(t *testing.T) *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln, conns: map[net.Conn]struct{}{}, changed: make(chan struct{}, 1)}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *sink) close() {
	s.closedMu.Do(func() {
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// mark asks for a copy of the next message.
func (s *sink) mark() {
	s.mu.Lock()
	s.sample, s.want = nil, true
	s.mu.Unlock()
}

func (s *sink) sampled() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sample
}

func (s *sink) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		// With PIPELINING the client sends several commands at once:
		// flush only when it waits for us.
		if r.Buffered() > 0 {
			return true
		}
		return w.Flush() == nil
	}
	if !reply("220 sink.localdomain ESMTP") {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			w.WriteString("250-sink.localdomain\r\n250-PIPELINING\r\n250-8BITMIME\r\n")
			if !reply("250 SIZE 104857600") {
				return
			}
		case strings.HasPrefix(cmd, "DATA"):
			if !reply("354 go ahead") {
				return
			}
			n, keep, data := int64(0), false, []byte(nil)
			s.mu.Lock()
			keep, s.want = s.want, false
			s.mu.Unlock()
			for {
				l, err := r.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				n += int64(len(l))
				if keep {
					data = append(data, l...)
				}
			}
			s.bytes.Add(n)
			s.last.Store(time.Now().UnixNano())
			s.count.Add(1)
			if keep {
				s.mu.Lock()
				s.sample = data
				s.mu.Unlock()
			}
			select {
			case s.changed <- struct{}{}:
			default:
			}
			if !reply("250 2.0.0 Ok: queued") {
				return
			}
		case strings.HasPrefix(cmd, "QUIT"):
			reply("221 2.0.0 Bye")
			w.Flush()
			return
		default: // HELO, MAIL, RCPT, RSET, NOOP
			if !reply("250 2.0.0 Ok") {
				return
			}
		}
	}
}

// proc is a milter process started for the benchmark.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func startProc(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	logf := filepath.Join(dir, name+".log")
	f, err := os.Create(logf)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &proc{name: name, cmd: cmd, log: logf}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		b, _ := os.ReadFile(logf)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s exited; last log line: %s", name, lines[len(lines)-1])
	})
	return p
}

// waitDial waits until addr ("unix:/path" or "inet:host:port") accepts.
func waitDial(t *testing.T, addr string) {
	t.Helper()
	network, a, _ := strings.Cut(addr, ":")
	if network == "inet" {
		network = "tcp"
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout(network, a, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("milter on %s not up after 15s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func goTool(t *testing.T) string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not found")
	}
	return p
}

// config is one column of the table.
type config struct {
	Name   string `json:"name"`
	Milter string `json:"milter"` // Postfix milter address; "" none
	// metrics is leadpush-milter's /metrics URL ("" for others)
	metrics string
	pid     int  // the milter process, 0 for none
	tracked bool // delivered messages carry leadpush-milter's modifications
}

// Run is one measured run.
type Run struct {
	Config    string  `json:"config"`
	Run       int     `json:"run"`
	Msgs      int     `json:"msgs"`
	E2E       float64 `json:"e2e_msgs_per_s"`    // msgs / (last delivery at the sink - smtp-source start)
	Inject    float64 `json:"inject_msgs_per_s"` // msgs / smtp-source wall time
	InjectS   float64 `json:"inject_s"`
	E2ES      float64 `json:"e2e_s"`
	Deferred  int     `json:"deferred"`
	Bounced   int     `json:"bounced"`
	Recorded  int64   `json:"recorded,omitempty"`  // leadpush: ledger records added in the run
	Rewritten int64   `json:"rewritten,omitempty"` // leadpush: bodies rewritten in the run
	// CPU time per message from send to drain: the whole machine's busy
	// time (Postfix, smtp-source, the sink, the milter) and the milter
	// process's own. Unlike msgs/s they barely move with the machine's
	// other load, and they say where a difference between configs goes.
	CPUms       float64 `json:"cpu_ms_per_msg"`
	MilterCPUus float64 `json:"milter_cpu_us_per_msg,omitempty"`
}

// Summary is one row of the table.
type Summary struct {
	Config      string  `json:"config"`
	Median      float64 `json:"median_msgs_per_s"`
	Min         float64 `json:"min_msgs_per_s"`
	Max         float64 `json:"max_msgs_per_s"`
	InjectMed   float64 `json:"inject_median_msgs_per_s"`
	RatioNoop   float64 `json:"ratio_to_noop,omitempty"`
	RatioReplay float64 `json:"ratio_to_replay,omitempty"` // leadpush against the replaying floor
	RatioNone   float64 `json:"ratio_to_none"`
	CPUms       float64 `json:"cpu_ms_per_msg_median"`
	MilterCPUus float64 `json:"milter_cpu_us_per_msg_median,omitempty"`
	Transport   string  `json:"transport,omitempty"`
	MilterAddr  string  `json:"milter_addr,omitempty"`
	RunsCounted int     `json:"runs"`
}

func TestPostfixBench(t *testing.T) {
	if os.Getenv("LEADPUSH_BENCH") != "1" {
		t.Skip("set LEADPUSH_BENCH=1 (see bench/run.sh)")
	}
	postfixlab.Require(t)
	smtpSource, err := exec.LookPath("smtp-source")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/smtp-source"); e != nil {
			t.Fatal("smtp-source not found (package postfix; run scripts/deps.sh)")
		}
		smtpSource = "/usr/sbin/smtp-source"
	}
	msgs, runs := envInt(t, "BENCH_MSGS", 5000), envInt(t, "BENCH_RUNS", 3)
	if os.Getenv("QUICK") == "1" {
		msgs, runs = envInt(t, "BENCH_MSGS", 1000), envInt(t, "BENCH_RUNS", 1)
	}
	sessions := envInt(t, "BENCH_SESSIONS", 20)
	transports := strings.Fields(os.Getenv("BENCH_TRANSPORTS"))
	if len(transports) == 0 {
		transports = []string{"unix"}
	}

	// Build both milters.
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	for _, b := range [][2]string{{"noopmilter", "./bench/noopmilter"}, {"leadpush-milter", "./cmd/leadpush-milter"}} {
		cmd := exec.Command(goTool(t), "build", "-o", filepath.Join(bin, b[0]), b[1])
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	pl := filepath.Join(tmp, "payload.eml")
	if err := os.WriteFile(pl, []byte(payload()), 0o644); err != nil {
		t.Fatal(err)
	}

	// Milters: for each transport a noop and a leadpush-milter.
	sock := postfixlab.SocketDir(t)
	configs := []config{{Name: "none"}}
	for _, tr := range transports {
		addr := func(name string) string {
			if tr == "unix" {
				return "unix:" + filepath.Join(sock, name+".sock")
			}
			return "inet:127.0.0.1:" + strconv.Itoa(freePort(t))
		}
		noopAddr, lpAddr := addr("noop"), addr("leadpush")
		// BENCH_NO_VERP=1 leaves the bounce domain out: no VERP return
		// path, to see what a unique envelope sender per message costs
		// Postfix.
		bounceSection := "[bounce]\ndomain = \"bounces.example.com\"\n"
		if os.Getenv("BENCH_NO_VERP") == "1" {
			bounceSection = ""
		}
		noop := startProc(t, tmp, "noopmilter-"+tr, filepath.Join(bin, "noopmilter"), "-listen", noopAddr)
		mport := freePort(t)
		dataDir := filepath.Join(tmp, "leadpush-"+tr)
		cfgFile := filepath.Join(tmp, "leadpush-"+tr+".toml")
		toml := fmt.Sprintf(`[store]
path = %q
[log]
level = "warn"
[milter]
listen = %q
trusted_networks = ["127.0.0.0/8"]
temp_dir = %q
metrics_listen = "127.0.0.1:%d"
[tracking]
base_url = "https://t.example.com"
keys = [%q]
%s`, filepath.Join(dataDir, "leadpush.db"), lpAddr, tmp, mport, token.NewKey("bench"), bounceSection)
		if err := os.WriteFile(cfgFile, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		if d := os.Getenv("BENCH_MILTER_PROFILE_DIR"); d != "" {
			t.Setenv("LEADPUSH_CPUPROFILE", filepath.Join(d, "leadpush-milter-"+tr+".cpu")) // written when it stops
		}
		lp := startProc(t, tmp, "leadpush-milter-"+tr, filepath.Join(bin, "leadpush-milter"), "-config", cfgFile)
		waitDial(t, noopAddr)
		waitDial(t, lpAddr)
		configs = append(configs,
			config{Name: "noop-" + tr, Milter: noopAddr, pid: noop.cmd.Process.Pid},
			config{Name: "leadpush-" + tr, Milter: lpAddr, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport),
				pid: lp.cmd.Process.Pid, tracked: true})
	}

	sk := newSink(t)
	lab := postfixlab.Start(t, postfixlab.Options{
		RelayHost: "[127.0.0.1]:" + strconv.Itoa(sk.ln.Addr().(*net.TCPAddr).Port),
		Logf:      func(string, ...any) {},
	})
	t.Logf("postfix %s, smtpd %s, sink %s, %d msgs x %d runs, %d sessions, configs %v",
		lab.Postconf(t, "-h", "mail_version"), lab.SMTPAddr, sk.ln.Addr(), msgs, runs, sessions, names(configs))

	send := func(n int) (time.Duration, error) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), drainLimit)
		defer cancel()
		out, err := exec.CommandContext(ctx, smtpSource, "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(n),
			"-f", "a@example.com", "-t", "b@example.org", "-F", pl, lab.SMTPAddr).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("smtp-source: %w: %s", err, tailOf(string(out), 5))
		}
		return time.Since(start), nil
	}
	drain := func(want int64) {
		deadline := time.Now().Add(drainLimit)
		for sk.count.Load() < want || !queueEmpty(lab.Dir) {
			if time.Now().After(deadline) {
				t.Fatalf("not drained after %v: sink has %d of %d, queue empty %v%s", drainLimit, sk.count.Load(), want,
					queueEmpty(lab.Dir), tailFile(lab.MailLog, 20))
			}
			select {
			case <-sk.changed:
			case <-time.After(50 * time.Millisecond):
			}
		}
		if got := sk.count.Load(); got != want {
			t.Fatalf("sink counted %d messages, want %d", got, want)
		}
	}

	// The floor: for each transport, noopmilter -replay makes the
	// modifications leadpush-milter made to one probe message, without
	// the work. What Postfix spends on a tracked message shows in its row;
	// leadpush-milter's own cost is the difference between the two.
	if os.Getenv("BENCH_NO_REPLAY") != "1" {
		var floors []config
		for _, c := range configs {
			if !c.tracked {
				continue
			}
			tr := strings.TrimPrefix(c.Name, "leadpush-")
			lab.Postconf(t, "-e", "smtpd_milters="+c.Milter)
			lab.Reload(t)
			c0 := sk.count.Load()
			sk.mark()
			if _, err := send(1); err != nil {
				t.Fatalf("probe through %s: %v", c.Name, err)
			}
			drain(c0 + 1)
			probe := filepath.Join(tmp, "probe-"+tr+".eml")
			if err := os.WriteFile(probe, sk.sampled(), 0o644); err != nil {
				t.Fatal(err)
			}
			addr := "inet:127.0.0.1:" + strconv.Itoa(freePort(t))
			if tr == "unix" {
				addr = "unix:" + filepath.Join(sock, "replay.sock")
			}
			rp := startProc(t, tmp, "replaymilter-"+tr, filepath.Join(bin, "noopmilter"), "-listen", addr, "-replay", probe)
			waitDial(t, addr)
			floors = append(floors, config{Name: "replay-" + tr, Milter: addr, pid: rp.cmd.Process.Pid, tracked: true})
		}
		configs = append(configs, floors...)
	}

	var results []Run
	current := "?"
	for r := 1; r <= runs; r++ {
		// Configs alternate within each round, so that drift (other load on
		// the machine) spreads over all of them.
		order := slices.Clone(configs)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, c := range order {
			if c.Milter != current {
				lab.Postconf(t, "-e", "smtpd_milters="+c.Milter)
				lab.Reload(t)
				current = c.Milter
				c0 := sk.count.Load()
				if _, err := send(warmupMsgs); err != nil {
					t.Fatalf("%s warm-up: %v%s", c.Name, err, tailFile(lab.MailLog, 20))
				}
				drain(c0 + warmupMsgs)
			}
			rec0, rew0 := scrape(t, c.metrics)
			logOff := fileSize(lab.MailLog)
			c0 := sk.count.Load()
			sk.mark()
			cpu0, mcpu0 := machineCPU(t), procCPU(t, c.pid)
			start := time.Now()
			inj, err := send(msgs)
			if err != nil {
				t.Fatalf("%s run %d: %v%s", c.Name, r, err, tailFile(lab.MailLog, 20))
			}
			drain(c0 + int64(msgs))
			cpu1, mcpu1 := machineCPU(t), procCPU(t, c.pid)
			e2e := time.Duration(sk.last.Load() - start.UnixNano())
			deferred, bounced := countStatus(lab.MailLog, logOff)
			rec1, rew1 := scrape(t, c.metrics)
			res := Run{Config: c.Name, Run: r, Msgs: msgs, E2E: float64(msgs) / e2e.Seconds(), Inject: float64(msgs) / inj.Seconds(),
				InjectS: inj.Seconds(), E2ES: e2e.Seconds(), Deferred: deferred, Bounced: bounced, Recorded: rec1 - rec0, Rewritten: rew1 - rew0,
				CPUms: float64((cpu1 - cpu0).Microseconds()) / 1000 / float64(msgs), MilterCPUus: float64((mcpu1 - mcpu0).Microseconds()) / float64(msgs)}
			results = append(results, res)
			t.Logf("%-15s run %d: %d msgs, e2e %.1f msgs/s, inject %.1f msgs/s, deferred %d, bounced %d, recorded %d, rewritten %d, cpu %.2f ms/msg, milter %.0f µs/msg",
				c.Name, r, msgs, res.E2E, res.Inject, deferred, bounced, res.Recorded, res.Rewritten, res.CPUms, res.MilterCPUus)
			if deferred+bounced > 0 {
				t.Fatalf("%s run %d: %d deferred, %d bounced%s", c.Name, r, deferred, bounced, tailFile(lab.MailLog, 20))
			}
			checkSample(t, c, sk.sampled())
			if c.metrics != "" && (res.Recorded != int64(msgs) || res.Rewritten != int64(msgs)) {
				t.Fatalf("%s run %d: leadpush-milter recorded %d and rewrote %d of %d messages", c.Name, r, res.Recorded, res.Rewritten, msgs)
			}
		}
	}

	sums := summarize(configs, results)
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "\nPostfix %s, smtp-source -s %d -m %d -F payload.eml (20 KB HTML, %d links), %d run(s), e2e msgs/s\n\n",
		lab.Postconf(t, "-h", "mail_version"), sessions, msgs, benchLinks, runs)
	fmt.Fprintf(&tbl, "| config | msgs/s median | min..max | inject median | ratio to no-op | ratio to replay | ratio to no milter | CPU ms/msg | milter CPU µs/msg |\n|---|---|---|---|---|---|---|---|---|\n")
	opt := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, s := range sums {
		fmt.Fprintf(&tbl, "| %s | %.0f | %.0f..%.0f | %.0f | %s | %s | %.2f | %.2f | %.0f |\n", s.Config, s.Median, s.Min, s.Max, s.InjectMed,
			opt(s.RatioNoop), opt(s.RatioReplay), s.RatioNone, s.CPUms, s.MilterCPUus)
	}
	t.Log(tbl.String())
	fmt.Println(tbl.String()) // for run.sh, which tees it
	out := os.Getenv("BENCH_JSON")
	if out == "" {
		out = filepath.Join(os.TempDir(), "leadpush-bench-"+time.Now().Format("20060102-150405")+".json")
	}
	b, _ := json.MarshalIndent(map[string]any{
		"time": time.Now().UTC().Format(time.RFC3339), "msgs": msgs, "runs": runs, "sessions": sessions,
		"cores": runtime.NumCPU(), "runs_raw": results, "summary": sums,
	}, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("raw numbers: %s", out)
}

// clockTick is the unit of /proc CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// machineCPU is the busy CPU time of the whole machine so far: every
// field of /proc/stat's cpu line but idle and iowait.
func machineCPU(t *testing.T) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		t.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is counted in user already
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("/proc/stat: %v", err)
		}
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// procCPU is the user and system CPU time of process pid so far, 0 for
// pid 0.
func procCPU(t *testing.T, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// the command name in parentheses may hold spaces: fields start after ")"
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: too short", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(utime+stime) * clockTick
}

func names(cs []config) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func summarize(configs []config, results []Run) []Summary {
	med := func(xs []float64) float64 {
		slices.Sort(xs)
		if len(xs)%2 == 1 {
			return xs[len(xs)/2]
		}
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	byName := map[string]*Summary{}
	var out []Summary
	for _, c := range configs {
		var e, inj, cpu, mcpu []float64
		for _, r := range results {
			if r.Config == c.Name {
				e, inj = append(e, r.E2E), append(inj, r.Inject)
				cpu, mcpu = append(cpu, r.CPUms), append(mcpu, r.MilterCPUus)
			}
		}
		if len(e) == 0 {
			continue
		}
		s := Summary{Config: c.Name, Median: med(slices.Clone(e)), Min: slices.Min(e), Max: slices.Max(e), InjectMed: med(inj),
			MilterAddr: c.Milter, RunsCounted: len(e), CPUms: med(cpu), MilterCPUus: med(mcpu)}
		if tr, ok := strings.CutPrefix(c.Milter, "unix:"); ok && tr != "" {
			s.Transport = "unix"
		} else if c.Milter != "" {
			s.Transport = "inet"
		}
		out = append(out, s)
	}
	for i := range out {
		byName[out[i].Config] = &out[i]
	}
	for i := range out {
		s := &out[i]
		if none := byName["none"]; none != nil {
			s.RatioNone = s.Median / none.Median
		}
		_, tr, ok := strings.Cut(s.Config, "-")
		if ok {
			if noop := byName["noop-"+tr]; noop != nil {
				s.RatioNoop = s.Median / noop.Median
			}
			if rp := byName["replay-"+tr]; rp != nil && strings.HasPrefix(s.Config, "leadpush-") {
				s.RatioReplay = s.Median / rp.Median
			}
		}
	}
	return out
}

// checkSample checks one delivered message of a run: the control header is
// gone through leadpush-milter, and the links are rewritten.
func checkSample(t *testing.T, c config, msg []byte) {
	t.Helper()
	if msg == nil {
		t.Fatalf("%s: no sample message at the sink", c.Name)
	}
	s := string(msg)
	tracked := strings.Count(s, "https://t.example.com/c/") == benchLinks && strings.Contains(s, "List-Unsubscribe:") &&
		!strings.Contains(s, "X-Leadpush-Tag:")
	if c.tracked != tracked {
		t.Fatalf("%s: delivered message tracked=%v:\n%s", c.Name, tracked, tailOf(s, 0))
	}
}

// scrape returns leadpush-milter's recorded and rewritten counters; zeros
// for an empty URL.
func scrape(t *testing.T, url string) (recorded, rewritten int64) {
	t.Helper()
	if url == "" {
		return 0, 0
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	val := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("metrics: no %s", name)
		}
		f, _ := strconv.ParseFloat(m[1], 64)
		return int64(f)
	}
	return val("leadpush_milter_messages_recorded_total"), val("leadpush_milter_bodies_rewritten_total")
}

// queueEmpty reports whether the lab's queue holds no message files.
func queueEmpty(labDir string) bool {
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		empty := true
		filepath.WalkDir(filepath.Join(labDir, "spool", q), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				empty = false
				return fs.SkipAll
			}
			return nil
		})
		if !empty {
			return false
		}
	}
	return true
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// countStatus counts status=deferred and status=bounced lines of the
// maillog after offset.
func countStatus(p string, off int64) (deferred, bounced int) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	f.Seek(off, io.SeekStart)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "status=deferred") {
			deferred++
		}
		if strings.Contains(l, "status=bounced") || strings.Contains(l, "milter-reject") {
			bounced++
		}
	}
	return deferred, bounced
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	return "\n--- " + p + " ---\n" + tailOf(string(b), n)
}

// tailOf returns the last n lines of s (all of them for n 0).
func tailOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
