package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/bench/stats"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
	"github.com/leadpush/leadpush/tracker"
)

// The tracker row of bench.sh: wrk -t2 -c64 (keep-alive) against nginx
// serving a static 43-byte GIF, a bare Go net/http handler writing the same
// GIF and recording nothing, and leadpushd's /o/TOKEN.gif and /c/TOKEN. After
// the runs leadpushd is stopped with SIGTERM (it flushes) and the events in
// its ledger must equal the 200 (302) responses it served; wrk's own count of
// good responses must agree within the requests in flight when it stopped.
//
// Environment: LEADPUSH_BENCH=1 (skipped otherwise), QUICK=1 (3 s x 1 run
// instead of 10 s x 3), BENCH_TRACKER_DURATION and BENCH_TRACKER_RUNS
// override, BENCH_TRACKER_JSON where to write the raw numbers.

const wrkConns = 64

// gif43 is a transparent 1x1 GIF of 43 bytes, the size of the tracker's.
var gif43 = []byte{
	'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0,
	0, 0, 0, 0xff, 0xff, 0xff,
	0x21, 0xf9, 4, 1, 0, 0, 0, 0,
	0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0,
	2, 2, 0x44, 0x01, 0,
	0x3b,
}

// WrkRun is one wrk run.
type WrkRun struct {
	Target   string  `json:"target"`
	Run      int     `json:"run"`
	Requests int64   `json:"requests"`
	Non2xx3  int64   `json:"non_2xx_3xx"`
	SockErrs int64   `json:"socket_errors"`
	RPS      float64 `json:"requests_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	// Recorded is the rate leadpushd's ledger writer wrote events at
	// during the run (leadpushd runs only): its sustained recording
	// throughput when the recording queue stays full.
	Recorded float64 `json:"recorded_per_s,omitempty"`
	Depth    float64 `json:"queue_depth_after,omitempty"` // recording queue depth when wrk stopped
	// Busy CPU of the whole machine (wrk included) per request, and of
	// leadpushd's process: steadier than requests/s on a shared VM.
	MachineUs float64 `json:"machine_cpu_us_per_req"`
	ProcUs    float64 `json:"process_cpu_us_per_req,omitempty"`
}

// TrackerResult is what TestTrackerBench writes to BENCH_TRACKER_JSON.
type TrackerResult struct {
	Duration string             `json:"duration"`
	Runs     int                `json:"runs"`
	Conns    int                `json:"connections"`
	Raw      []WrkRun           `json:"runs_raw"`
	Median   map[string]float64 `json:"median_rps"`
	P99      map[string]float64 `json:"median_p99_ms"`
	Served   map[string]int64   `json:"served"`   // leadpushd's own count: open 200, click 302
	Recorded map[string]int64   `json:"recorded"` // ledger events: open, click
	WrkGood  map[string]int64   `json:"wrk_good"` // wrk's requests - non-2xx/3xx, summed over runs
	Dropped  int64              `json:"dropped"`  // leadpush_tracker_dropped_hits_total
	// RecordRate is the median rate the ledger writer wrote events at
	// during the leadpushd runs.
	RecordRate map[string]float64 `json:"median_recorded_per_s"`
	// Valid: the counts add up (recorded + dropped = served, wrk agrees,
	// no error answers). Hits dropped are a missed target, not an invalid
	// run.
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems"` // why not
	// AllRecorded: every hit answered was recorded (the row's target).
	AllRecorded bool   `json:"all_recorded"`
	NginxWork   string `json:"nginx_workers"`
	// PeakRSSMB is leadpushd's peak resident memory over the runs.
	PeakRSSMB float64 `json:"leadpushd_peak_rss_mb"`
}

func TestTrackerBench(t *testing.T) {
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
	dur, runs := "10s", envInt(t, "BENCH_TRACKER_RUNS", 3)
	if os.Getenv("QUICK") == "1" {
		dur, runs = "3s", envInt(t, "BENCH_TRACKER_RUNS", 1)
	}
	if d := os.Getenv("BENCH_TRACKER_DURATION"); d != "" {
		dur = d
	}
	tmp := t.TempDir()

	// leadpushd with a ledger holding trackerMessages messages, and tokens for them.
	bin := buildProgram(t, tmp, "leadpushd")
	key, db, opens, clicks := trackerLedger(t, tmp)
	lpPort, admPort := freePort(t), freePort(t)
	cfg := filepath.Join(tmp, "leadpush.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[store]
path = %q
[log]
level = "warn"
[milter]
listen = "unix:%s/milter.sock"
[tracking]
base_url = "http://127.0.0.1:%d"
keys = [%q]
[tracker]
listen = "127.0.0.1:%d"
[admin]
listen = "127.0.0.1:%d"
`, db, tmp, lpPort, key, lpPort, admPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	lpd := startServer(t, tmp, "leadpushd", bin, "-config", cfg)
	lpdProc := lpd // for its CPU time; the loop below shadows lpd
	lpBase := fmt.Sprintf("http://127.0.0.1:%d", lpPort)
	admBase := fmt.Sprintf("http://127.0.0.1:%d", admPort) // /healthz, /metrics
	waitHTTP(t, admBase+"/healthz")

	ngBase := startNginx(t, tmp, nginx)

	// The bare Go handler, with the tracker's HTTP server settings.
	bareLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bare := tracker.NewHTTPServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "image/gif")
		h.Set("Content-Length", "43")
		h.Set("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0")
		w.WriteHeader(http.StatusOK)
		w.Write(gif43)
	}))
	go bare.Serve(bareLn)
	t.Cleanup(func() { bare.Close() })
	bareBase := "http://" + bareLn.Addr().String()

	// All targets get the same requests: the open pixels of the messages
	// in turn (nginx and the bare handler answer any /o/ path with the GIF).
	openScript, clickScript := wrkScript(t, tmp, "opens", opens), wrkScript(t, tmp, "clicks", clicks)
	targets := []struct{ name, base, script string }{
		{"nginx", ngBase, openScript},
		{"bare-go", bareBase, openScript},
		{"leadpushd-open", lpBase, openScript},
		{"leadpushd-click", lpBase, clickScript},
	}
	// Each answers what we expect. Every message is opened once first, so
	// that no click counts as its message's first open.
	for _, tg := range targets[:2] {
		if code := get(t, tg.base+opens[0]); code != http.StatusOK {
			t.Fatalf("%s: GET %s: %d, want 200", tg.name, tg.base+opens[0], code)
		}
	}
	for _, p := range opens {
		if code := get(t, lpBase+p); code != http.StatusOK {
			t.Fatalf("leadpushd: GET %s: %d, want 200", p, code)
		}
	}
	if code := get(t, lpBase+clicks[0]); code != http.StatusFound {
		t.Fatalf("leadpushd: GET %s: %d, want 302", clicks[0], code)
	}
	res := TrackerResult{Duration: dur, Runs: runs, Conns: wrkConns, Median: map[string]float64{}, P99: map[string]float64{},
		RecordRate: map[string]float64{},
		WrkGood:    map[string]int64{}, NginxWork: "2"}
	// the checks above
	res.WrkGood["leadpushd-open"], res.WrkGood["leadpushd-click"] = int64(len(opens)), 1
	for r := 1; r <= runs; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, tg := range order {
			lpd := strings.HasPrefix(tg.name, "leadpushd")
			var written0 float64
			if lpd {
				written0 = scrapeAll(t, admBase+"/metrics")["leadpush_ledger_writer_written_total"]
			}
			pid := 0
			if lpd {
				pid = lpdProc.cmd.Process.Pid
			}
			cpu0, proc0 := machineCPU(t), procCPU(t, pid)
			t0 := time.Now()
			out, err := runWrk(wrk, dur, tg.script, tg.base)
			el := time.Since(t0)
			cpu1, proc1 := machineCPU(t), procCPU(t, pid)
			var after map[string]float64
			if lpd {
				after = scrapeAll(t, admBase+"/metrics")
			}
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
			if lpd {
				w.Recorded = (after["leadpush_ledger_writer_written_total"] - written0) / el.Seconds()
				w.Depth = after["leadpush_tracker_queue_depth"]
			}
			res.Raw = append(res.Raw, w)
			res.WrkGood[tg.name] += w.Requests - w.Non2xx3
			t.Logf("%-16s run %d: %8.0f req/s, p50 %.2f ms, p99 %.2f ms, %d requests, %d non-2xx/3xx, %d socket errors; recorded %.0f events/s, queue %.0f; cpu %.1f µs/req (process %.1f)",
				tg.name, r, w.RPS, w.P50ms, w.P99ms, w.Requests, w.Non2xx3, w.SockErrs, w.Recorded, w.Depth, w.MachineUs, w.ProcUs)
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

	// What leadpushd says it served, then stop it (it flushes) and count.
	m := scrapeAll(t, admBase+"/metrics")
	res.Served = map[string]int64{
		"open":  int64(m[`leadpush_tracker_hits_total{code="200",endpoint="open"}`]),
		"click": int64(m[`leadpush_tracker_hits_total{code="302",endpoint="click"}`]),
	}
	res.Dropped = int64(m["leadpush_tracker_dropped_hits_total"])
	res.PeakRSSMB = vmHWM(t, lpdProc.cmd.Process.Pid)
	lpd.stop(t)
	res.Recorded = countEvents(t, db)
	check := func(ok bool, format string, args ...any) {
		if !ok {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	var served, recorded int64
	for _, kind := range []string{"open", "click"} {
		served, recorded = served+res.Served[kind], recorded+res.Recorded[kind]
		ans, good := res.Served[kind], res.WrkGood["leadpushd-"+kind]
		// wrk does not count the requests in flight when it stops: up to
		// one per connection and run more were answered than it counted.
		check(good <= ans && ans <= good+int64(wrkConns*runs),
			"%s: wrk counted %d good responses, leadpushd answered %d (allowed: up to %d more)", kind, good, ans, wrkConns*runs)
	}
	// Every hit answered is recorded or counted as dropped.
	check(recorded+res.Dropped == served, "%d events recorded + %d dropped, leadpushd answered %d", recorded, res.Dropped, served)
	res.Valid = len(res.Problems) == 0
	res.AllRecorded = res.Dropped == 0 && res.Recorded["open"] == res.Served["open"] && res.Recorded["click"] == res.Served["click"]
	t.Logf("served %v, recorded %v, wrk good %v, dropped %d; leadpushd peak RSS %.1f MB", res.Served, res.Recorded,
		res.WrkGood, res.Dropped, res.PeakRSSMB)
	if !res.AllRecorded {
		t.Logf("TARGET MISSED: %d of %d hits answered were recorded, %d dropped (recording queue full)", recorded, served, res.Dropped)
	}
	for _, p := range res.Problems {
		t.Errorf("INVALID: %s", p)
	}
	if p := os.Getenv("BENCH_TRACKER_JSON"); p != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startNginx starts nginx (binary nginx) in the foreground with its own
// prefix in tmp and 2 workers (the machine's cores), serving the 43-byte
// GIF for any /o/ path; the test's cleanup stops it. It returns its base
// URL.
func startNginx(t *testing.T, tmp, nginx string) string {
	t.Helper()
	ngPort := freePort(t)
	// nginx's workers run as nobody: the document root is outside the
	// test's private temp dir.
	www, err := os.MkdirTemp("", "leadpush-bench-www-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(www) })
	if err := os.Chmod(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(www, "o"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "o", "x.gif"), gif43, 0o644); err != nil {
		t.Fatal(err)
	}
	ngConf := filepath.Join(tmp, "nginx.conf")
	if err := os.WriteFile(ngConf, []byte(fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_requests 100000000;
	keepalive_timeout 60s;
	server {
		listen 127.0.0.1:%[2]d;
		root %[3]s;
		location /o/ { default_type image/gif; try_files /o/x.gif =404;
			add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0"; }
	}
}
`, tmp, ngPort, www)), 0o644); err != nil {
		t.Fatal(err)
	}
	startServer(t, tmp, "nginx", nginx, "-p", tmp, "-c", ngConf, "-e", filepath.Join(tmp, "nginx-error.log"))
	ngBase := fmt.Sprintf("http://127.0.0.1:%d", ngPort)
	waitHTTP(t, ngBase+"/o/x.gif")
	return ngBase
}

// trackerMessages is how many messages the tracker runs spread their hits
// over (one per wrk connection): the tracker shards its recording by
// message.
const trackerMessages = wrkConns

// browserUA is the User-Agent wrk sends, to every target.
const browserUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"

// trackerLedger writes a ledger holding trackerMessages messages and returns
// the key and, for each message, the path of its open pixel and of a click.
func trackerLedger(t *testing.T, tmp string) (key, db string, opens, clicks []string) {
	t.Helper()
	key = token.NewKey("bench")
	kr, err := token.ParseKeyring([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	db = filepath.Join(tmp, "data", "leadpush.db")
	store, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var msgs []*ledger.Message
	for i := range trackerMessages {
		id := token.NewMessageID()
		rcpt := fmt.Sprintf("reader%d@example.org", i)
		msgs = append(msgs, &ledger.Message{ID: id, EnvelopeFrom: "news@example.com", Recipients: []string{rcpt},
			Subject: "Your weekly digest", Tracking: "all", CreatedAt: time.Now().Add(-time.Hour)})
		o, err := kr.Sign(token.Claims{Kind: token.Open, MessageID: id, Recipient: rcpt})
		if err != nil {
			t.Fatal(err)
		}
		c, err := kr.Sign(token.Claims{Kind: token.Click, MessageID: id, Recipient: rcpt,
			URL: fmt.Sprintf("https://www.example.com/articles/%d?utm_source=digest&utm_medium=email", i)})
		if err != nil {
			t.Fatal(err)
		}
		opens, clicks = append(opens, "/o/"+o+".gif"), append(clicks, "/c/"+c)
	}
	if err := store.Record(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	return key, db, opens, clicks
}

// wrkScript writes a wrk Lua script that requests paths in turn.
func wrkScript(t *testing.T, dir, name string, paths []string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("local paths = {\n")
	for _, p := range paths {
		fmt.Fprintf(&b, "  %q,\n", p)
	}
	b.WriteString("}\nlocal i = math.random(#paths)\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(nil, paths[i])\nend\n")
	f := filepath.Join(dir, name+".lua")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// runWrk runs wrk -t2 -c64 --latency against base with the script.
func runWrk(wrk, dur, script, base string) ([]byte, error) {
	return exec.Command(wrk, "-t2", "-c"+strconv.Itoa(wrkConns), "-d"+dur, "--latency", "-H", "User-Agent: "+browserUA,
		"-s", script, base).CombinedOutput()
}

// TestTrackerProfile is what bench.sh runs when the tracker missed its
// target: leadpushd's tracker (tracker.New with the ledger Writer, as
// leadpushd wires it) in this process under wrk -t2 -c64 for 5 s on the
// pixel (BENCH_TRACKER_TARGET=click: the click redirect), with a CPU profile written to BENCH_TRACKER_PROFILE ("none": no
// profile, for comparing builds) and the CPU a request took.
// BENCH_TRACKER_GROW=N first fills the ledger with N events, as a ledger
// that has run for a while holds (the benchmark's own runs grow it too).
func TestTrackerProfile(t *testing.T) {
	prof := os.Getenv("BENCH_TRACKER_PROFILE")
	if os.Getenv("LEADPUSH_BENCH") != "1" || prof == "" {
		t.Skip("set LEADPUSH_BENCH=1 and BENCH_TRACKER_PROFILE=FILE")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk not found")
	}
	tmp := t.TempDir()
	key, db, opens, clicks := trackerLedger(t, tmp)
	paths, want := opens, http.StatusOK
	switch target := os.Getenv("BENCH_TRACKER_TARGET"); target {
	case "", "open":
	case "click":
		paths, want = clicks, http.StatusFound
	default:
		t.Fatalf("BENCH_TRACKER_TARGET=%q: want open or click", target)
	}
	kr, err := token.ParseKeyring([]string{key})
	if err != nil {
		t.Fatal(err)
	}
	if n := os.Getenv("BENCH_TRACKER_GROW"); n != "" {
		if _, err := strconv.Atoi(n); err != nil {
			t.Fatalf("BENCH_TRACKER_GROW=%q: want a number of events", n)
		}
		k, _ := strconv.Atoi(n)
		t0 := time.Now()
		if err := ledger.GrowSQLite(db, k); err != nil {
			t.Fatal(err)
		}
		t.Logf("grew to %s events in %v", n, time.Since(t0))
	}
	store, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	wopt := tracker.LedgerWriterOptions()
	wopt.SpoolDir = filepath.Join(tmp, "spool")
	w := ledger.NewWriter(store, wopt)
	tr, err := tracker.New(tracker.Options{Keyring: kr, Recorder: w, Messages: store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := tracker.NewHTTPServer("", tr.Handler())
	go hs.Serve(ln)
	base := "http://" + ln.Addr().String()
	for _, p := range paths {
		if code := get(t, base+p); code != want {
			t.Fatalf("GET %s: %d, want %d", p, code, want)
		}
	}
	if prof != "none" {
		f, err := os.Create(prof)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	m0, p0 := machineCPU(t), procCPU(t, os.Getpid())
	out, err := runWrk(wrk, "5s", wrkScript(t, tmp, "paths", paths), base)
	m1, p1 := machineCPU(t), procCPU(t, os.Getpid())
	pprof.StopCPUProfile() // nothing when none was started
	hs.Close()
	cancel()
	<-done
	w.Close(context.Background())
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		t.Fatal(err)
	}
	n := float64(r.Requests)
	t.Logf("in process: %.0f req/s, p99 %.2f ms, cpu %.1f us/req (this process %.1f); profile %s", r.RPS, r.P99ms,
		float64((m1-m0).Microseconds())/n, float64((p1-p0).Microseconds())/n, prof)
}

// server is a process the benchmark started; stop sends SIGTERM and waits.
type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer starts a process with its output in dir/name.log; the test's
// cleanup stops it (SIGTERM, then SIGKILL after 15 s).
func startServer(t *testing.T, dir, name string, args ...string) *server {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop within 15 s of SIGTERM; killed", s.name)
		s.cmd.Process.Kill()
		<-s.done
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitHTTP waits until url answers at all (15 s at most).
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not up after 15 s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	wrkReqs    = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkNon     = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSock    = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
)

// parseWrk reads the numbers of one wrk --latency report.
func parseWrk(out string) (WrkRun, error) {
	var w WrkRun
	m := wrkReqs.FindStringSubmatch(out)
	r := wrkRPS.FindStringSubmatch(out)
	if m == nil || r == nil {
		return w, fmt.Errorf("no request count or rate in wrk output")
	}
	w.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	w.RPS, _ = strconv.ParseFloat(r[1], 64)
	if m := wrkNon.FindStringSubmatch(out); m != nil {
		w.Non2xx3, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSock.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			w.SockErrs += n
		}
	}
	for _, m := range wrkLatency.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			w.P50ms = v
		} else {
			w.P99ms = v
		}
	}
	if w.Requests == 0 || w.RPS == 0 {
		return w, fmt.Errorf("wrk made no requests")
	}
	return w, nil
}

// scrapeAll returns every sample of a Prometheus text page, keyed by the
// metric name with its labels as written.
func scrapeAll(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// countEvents counts the ledger's events by type.
func countEvents(t *testing.T, path string) map[string]int64 {
	t.Helper()
	s, err := ledger.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[string]int64{}
	for _, typ := range ledger.EventTypes {
		n, err := s.CountEvents(context.Background(), 0, -1, []ledger.EventType{typ})
		if err != nil {
			t.Fatalf("count events: %v", err)
		}
		if n > 0 {
			out[string(typ)] = n
		}
	}
	return out
}
