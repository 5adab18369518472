// Package e2e runs Leadpush's programs, as built, against a real private
// Postfix on loopback (internal/postfixlab) with real swaks: the tests a
// sysadmin would do by hand after installing it.
package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// bin holds the programs built once for all tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leadpush-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/...")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the programs:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // a pipe transport runs leadpushctl as user nobody
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testKey is a tracking key for tests only.
const testKey = "test1:dGVzdC1zZWNyZXQtdGVzdC1zZWNyZXQtdGVzdC1zZWNyZXQ"

// env is one Leadpush installation: its config, its ledger, its milter
// process, in front of one Postfix lab.
type env struct {
	dir, cfg   string
	milterAddr string // Postfix notation
	metricsURL string // leadpush-milter's /metrics
	baseURL    string
	adminURL   string // leadpushd's admin.listen: /healthz, /metrics
	lab        *postfixlab.Lab
}

type envOptions struct {
	transport  string // "unix" (default) or "inet"
	extraToml  string // appended to the config
	labOptions postfixlab.Options
	trackerURL string // tracking.base_url; default http://127.0.0.1:FREEPORT
	daemon     bool   // also run leadpushd: tracker on base_url's port, mail-log follower, webhooks
	// ingest makes the ledger writable by user nobody, for a pipe
	// transport running leadpushctl ingest (pipe(8) refuses to run as the
	// mail system owner; production uses a leadpush user). In labOptions.ExtraMain and
	// ExtraMaster, {{CONFIG}} and {{BIN}} stand for the config file and the
	// programs' directory.
	ingest bool
	// trusted is milter.trusted_networks; default 127.0.0.0/8.
	trusted string
	// trackerToml is added to the [tracker] table; {{SMTP}} stands for
	// the lab's smtpd address.
	trackerToml string
}

// newEnv starts a Postfix lab, then writes a config (with the lab's log as
// [maillog] path) and starts leadpush-milter, and leadpushd when asked.
// The directory is reachable by user postfix, for pipe transports.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	postfixlab.Require(t)
	dir, err := os.MkdirTemp("", "leadpush-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	e := &env{dir: dir}
	switch o.transport {
	case "", "unix":
		e.milterAddr = "unix:" + filepath.Join(postfixlab.SocketDir(t), "milter.sock")
	case "inet":
		e.milterAddr = "inet:" + freeAddr(t)
	}
	e.baseURL = o.trackerURL
	if e.baseURL == "" {
		e.baseURL = "http://" + freeAddr(t)
	}
	e.cfg = filepath.Join(e.dir, "leadpush.toml")
	e.adminURL = "http://" + freeAddr(t)
	metricsAddr := freeAddr(t)
	e.metricsURL = "http://" + metricsAddr + "/metrics"
	lo := o.labOptions
	for _, p := range []*string{&lo.ExtraMain, &lo.ExtraMaster} {
		*p = strings.NewReplacer("{{CONFIG}}", e.cfg, "{{BIN}}", bin).Replace(*p)
	}
	lo.Milters = []string{e.milterAddr}
	lo.Submission = true
	e.lab = postfixlab.Start(t, lo)
	o.trackerToml = strings.ReplaceAll(o.trackerToml, "{{SMTP}}", e.lab.SMTPAddr)
	conf := fmt.Sprintf(`
[store]
path = %q
[log]
level = "debug"
[milter]
listen = %q
trusted_networks = [%q]
record_headers = ["*-ID"]
metrics_listen = %q
[tracking]
base_url = %q
keys = [%q]
text_links = true
[bounce]
domain = "bounce.example.com"
[tracker]
listen = %q
%s
[admin]
listen = %q
[maillog]
path = %q
`, filepath.Join(e.dir, "leadpush.db"), e.milterAddr, cmp.Or(o.trusted, "127.0.0.0/8"), metricsAddr, e.baseURL, testKey, strings.TrimPrefix(e.baseURL, "http://"), o.trackerToml, strings.TrimPrefix(e.adminURL, "http://"), e.lab.MailLog) + o.extraToml
	// 0644: the pipe transport runs leadpushctl as user nobody
	if err := os.WriteFile(e.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.startDaemon(t, "leadpush-milter")
	waitMilter(t, e.milterAddr)
	if o.ingest {
		// The milter created the ledger as root; SQLite, run as root, gives
		// the files it creates later the database file's owner.
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		filepath.Walk(e.dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	}
	if o.daemon {
		e.startDaemon(t, "leadpushd")
		waitHTTP(t, e.adminURL+"/healthz")
	}
	return e
}

// waitMilterSuppressions waits until leadpush-milter's in-memory
// suppression set holds n addresses: a new entry takes effect in the
// milter within suppression.refresh (README), 1s by default.
func (e *env) waitMilterSuppressions(t *testing.T, n int) {
	t.Helper()
	var got float64
	var err error
	for i := 0; i < 100; i++ {
		if got, err = e.readMilterMetric("leadpush_milter_suppression_entries"); err == nil && got == float64(n) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("leadpush-milter did not load %d suppressions within 5s: %v suppression_entries, err %v", n, got, err)
}

// milterMetric reads one unlabelled metric of leadpush-milter.
func (e *env) milterMetric(t *testing.T, name string) float64 {
	t.Helper()
	v, err := e.readMilterMetric(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *env) readMilterMetric(name string) (float64, error) {
	r, err := http.Get(e.metricsURL)
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %w", name, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("leadpush-milter has no metric %s", name)
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200", url)
}

// startDaemon runs one of the programs with the env's config until the test
// ends; its log goes to the test log on failure.
func (e *env) startDaemon(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, name), append([]string{"-config", e.cfg}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, tail(string(b), 60))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func waitMilter(t *testing.T, addr string) {
	t.Helper()
	network, a, _ := strings.Cut(addr, ":")
	if network == "inet" {
		network = "tcp"
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial(network, a); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("milter did not listen on %s", addr)
}

// ctl runs leadpushctl with the env's config and returns its stdout.
func (e *env) ctl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "leadpushctl"), append([]string{"-config", e.cfg}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("leadpushctl %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// ctlCode runs leadpushctl and returns what it printed, whatever its exit
// status (doctor exits 1 when it finds a problem).
func (e *env) ctlCode(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := exec.Command(filepath.Join(bin, "leadpushctl"), append([]string{"-config", e.cfg}, args...)...).CombinedOutput()
	return string(out)
}

type ctlMessage struct {
	ID, QueueID, Tag, Tracking, From, To, Subject, ReturnPath string
	Headers                                                   map[string]string
	Links                                                     []string
	CreatedAt                                                 time.Time
}

func (m *ctlMessage) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID         string            `json:"id"`
		QueueID    string            `json:"queue_id"`
		Tag        string            `json:"tag"`
		Tracking   string            `json:"tracking"`
		From       string            `json:"from"`
		To         string            `json:"to"`
		Subject    string            `json:"subject"`
		ReturnPath string            `json:"return_path"`
		Headers    map[string]string `json:"headers"`
		Links      []string          `json:"links"`
		CreatedAt  time.Time         `json:"created_at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*m = ctlMessage{raw.ID, raw.QueueID, raw.Tag, raw.Tracking, raw.From, raw.To, raw.Subject, raw.ReturnPath, raw.Headers, raw.Links, raw.CreatedAt}
	return nil
}

// message waits until leadpushctl shows the message with a queue id: the
// milter records off the SMTP path, within a moment.
func (e *env) message(t *testing.T, queueID string) ctlMessage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := e.ctl(t, "messages", "--json")
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m ctlMessage
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("leadpushctl messages --json printed %q: %v", sc.Text(), err)
			}
			if m.QueueID == queueID {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("message with queue id %s not recorded; leadpushctl messages --json:\n%s", queueID, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// seedSwaks is the seed 000 example, pointed at the lab's submission port.
func (e *env) seedSwaks(tracking string, extra ...string) []string {
	args := append(e.lab.SubmitArgs(), // --server, --tls, --auth LOGIN and the credentials
		"--from", "app@example.com", "--to", "customer@example.com",
		"--header", "Subject: Your password reset link",
		"--header", `X-Leadpush-Tag: "password reset"`)
	if tracking != "" {
		args = append(args, "--header", "X-Leadpush-Tracking: "+tracking)
	}
	args = append(args, extra...)
	return append(args, "--body", "Use this link to reset your password: https://example.com/reset")
}

// delivered sends with swaks and returns the message as the relay received it.
func (e *env) delivered(t *testing.T, args ...string) (postfixlab.Received, string) {
	t.Helper()
	out, qid, err := e.lab.Swaks(t, args...)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool {
		return bytes.Contains(r.Data, []byte(" id "+qid))
	}, 20*time.Second)
	return got, qid
}

func headerBlock(data []byte) string {
	h, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	return string(h)
}

func TestSeedExampleThroughPostfix(t *testing.T) {
	for _, transport := range []string{"unix", "inet"} {
		t.Run(transport, func(t *testing.T) {
			e := newEnv(t, envOptions{transport: transport})
			got, qid := e.delivered(t, e.seedSwaks("clicks", "--header", "Contact-ID: 12345")...)
			hdr := headerBlock(got.Data)
			if strings.Contains(strings.ToLower(hdr), "x-leadpush") {
				t.Errorf("delivered message still has control headers:\n%s", hdr)
			}
			if !strings.Contains(hdr, "Contact-ID: 12345") {
				t.Errorf("custom header not kept in the message:\n%s", hdr)
			}
			m := e.message(t, qid)
			if m.Tag != "password reset" || m.Tracking != "clicks" || m.Subject != "Your password reset link" || m.Headers["Contact-ID"] != "12345" {
				t.Errorf("recorded %+v", m)
			}
			// a missing and an invalid tracking header both mean all
			for _, tr := range []string{"", "sometimes"} {
				_, qid := e.delivered(t, e.seedSwaks(tr)...)
				if m := e.message(t, qid); m.Tracking != "all" {
					t.Errorf("tracking header %q recorded as %q, want all", tr, m.Tracking)
				}
			}
		})
	}
}

func TestTwoMessagesOneSMTPSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	c, err := smtpDial(e.lab.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q1 := c.send(t, "a@example.com", "one@example.org", "Subject: first\r\nX-Leadpush-Tag: one\r\nX-Leadpush-Tracking: none\r\n\r\nfirst body\r\n")
	q2 := c.send(t, "b@example.com", "two@example.org", "Subject: second\r\nX-Leadpush-Tag: two\r\n\r\nsecond body\r\n")
	c.quit()
	m1, m2 := e.message(t, q1), e.message(t, q2)
	if m1.Tag != "one" || m1.Tracking != "none" || m1.Subject != "first" {
		t.Errorf("first message %+v", m1)
	}
	if m2.Tag != "two" || m2.Tracking != "all" || m2.Subject != "second" {
		t.Errorf("second message %+v", m2)
	}
	if m1.ID == m2.ID {
		t.Error("one id for two messages")
	}
	for _, q := range []string{q1, q2} {
		got := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(" id "+q)) }, 20*time.Second)
		if bytes.Contains(bytes.ToLower(got.Data), []byte("x-leadpush")) {
			t.Errorf("%s delivered with control headers", q)
		}
	}
}

func TestSendmailPathStripped(t *testing.T) {
	e := newEnv(t, envOptions{})
	mid := fmt.Sprintf("<e2e-%d@example.com>", time.Now().UnixNano())
	msg := "From: a@example.com\nTo: b@example.org\nSubject: via sendmail\nMessage-ID: " + mid + "\nX-Leadpush-Tag: cron\n\nhello\n"
	cmd := exec.Command("/usr/sbin/sendmail", "-C", e.lab.ConfigDir, "-f", "a@example.com", "b@example.org")
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v %s", err, out)
	}
	got := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(mid)) }, 30*time.Second)
	if bytes.Contains(bytes.ToLower(got.Data), []byte("x-leadpush")) {
		t.Errorf("sendmail(1) mail delivered with control headers:\n%s", headerBlock(got.Data))
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
