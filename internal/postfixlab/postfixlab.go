// Package postfixlab runs a real, private Postfix instance on loopback for
// integration tests: its own config, queue and log under a temporary
// directory, its own random ports on 127.0.0.1, optional milters, an
// optional STARTTLS + SASL submission port, and an in-process SMTP Sink as
// relayhost. Mail is sent with the real swaks.
//
// It needs root and the Debian packages installed by scripts/deps.sh
// (postfix with "No configuration", swaks, sasl2-bin, ...). Tests call
// Require (or Start, which calls it) and are skipped when the tools are
// missing, unless CI=true, where that is a failure.
//
// Several labs may run at once (t.Parallel): each has its own directory and
// ports, and t.Cleanup stops its processes only.
package postfixlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Options configure Start. The zero value is a lab without milters whose
// relayhost is a fresh Sink.
type Options struct {
	// Milters are Postfix milter addresses ("unix:/path/milter.sock",
	// "inet:127.0.0.1:PORT") for smtpd_milters and non_smtpd_milters. Empty:
	// none. A unix socket's directory must be searchable by user postfix
	// (see SocketDir).
	Milters []string
	// MilterDefaultAction is milter_default_action; empty means "tempfail".
	MilterDefaultAction string
	// Submission adds a second smtpd on Lab.SubmitAddr that requires
	// STARTTLS (self-signed certificate) and AUTH PLAIN or LOGIN as
	// Lab.SASLUser / Lab.SASLPass (Cyrus sasldb).
	Submission bool
	// RelayHost is Postfix's relayhost, e.g. "[127.0.0.1]:2525". Empty: Start
	// starts a Sink and relays to it (Lab.Sink).
	RelayHost string
	// Chroot runs smtpd, cleanup and the other daemons Debian chroots in the
	// queue directory (chroot = y in master.cf, as Debian ships it), with
	// the files Debian's postfix start copies there (etc/resolv.conf,
	// etc/services, ..., the NSS libraries). A unix milter address is then
	// inside the chroot: "unix:/leadpush/milter.sock" is the socket
	// Lab.QueueDir/leadpush/milter.sock, which the test creates after Start
	// (Postfix connects per message). Default false: chroot = n everywhere.
	Chroot bool
	// ExtraMain and ExtraMaster are appended to main.cf and master.cf
	// (a later main.cf setting overrides an earlier one).
	ExtraMain, ExtraMaster string
	// Logf receives progress lines; nil means t.Logf.
	Logf func(format string, args ...any)
}

// Lab is a running Postfix instance made by Start.
type Lab struct {
	Dir        string // run directory: etc/, spool/, data/, log/
	ConfigDir  string // config_directory: use with postconf -c, postqueue -c, sendmail -C
	SMTPAddr   string // "127.0.0.1:PORT": plain smtpd, relays for 127.0.0.0/8
	SubmitAddr string // "127.0.0.1:PORT": STARTTLS + AUTH submission; "" without Options.Submission
	SASLUser   string // submission login ("" without Options.Submission)
	SASLPass   string
	MailLog    string // Postfix's log file (maillog_file, written by postlogd)
	QueueDir   string // queue_directory, the chroot with Options.Chroot (root-owned, 0755)
	Sink       *Sink  // the relayhost sink; nil when Options.RelayHost was set

	spool string
	logf  func(string, ...any)
}

// Tool paths; Debian puts the Postfix tools in /usr/sbin, which a non-login
// PATH may lack.
var toolDirs = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range toolDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(toolDirs, ", "))
}

// Available returns nil when this process can run a lab: it is root, the
// user postfix exists, and postfix, postconf, swaks, saslpasswd2 and openssl
// are installed. Otherwise the error says what is missing.
func Available() error {
	var missing []string
	for _, name := range []string{"postfix", "postconf", "swaks", "saslpasswd2", "openssl"} {
		if _, err := tool(name); err != nil {
			missing = append(missing, name)
		}
	}
	var errs []error
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing %s (run scripts/deps.sh as root)", strings.Join(missing, ", ")))
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("must run as root (postfix start, private queue directory)"))
	}
	if _, err := user.Lookup("postfix"); err != nil {
		errs = append(errs, fmt.Errorf("no user postfix: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("postfixlab: Postfix lab not available: %w", errors.Join(errs...))
	}
	return nil
}

// Require skips the test when Available fails, or fails it when the
// environment variable CI is "true".
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Postfix is required under CI=true: run scripts/deps.sh: %v", err)
		}
		t.Skip(err)
	}
}

// SocketDir returns a new empty directory that user postfix can search, for
// a unix milter socket (t.TempDir directories are mode 0700). Postfix
// connects as user postfix, so also chmod the socket 0666 after Listen.
// t.Cleanup removes the directory.
func SocketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "postfixlab-sock-")
	if err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	return dir
}

// Start brings up a private Postfix instance and returns when its smtpd
// ports listen. It calls Require first. t.Cleanup stops every process of the
// instance, closes the sink and removes Lab.Dir. On failure it calls
// t.Fatal with the tail of the maillog.
func Start(t testing.TB, opt Options) *Lab {
	t.Helper()
	Require(t)
	logf := opt.Logf
	if logf == nil {
		logf = t.Logf
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	for _, m := range opt.Milters {
		if p, ok := strings.CutPrefix(m, "unix:"); ok && !opt.Chroot { // in the chroot: made after Start
			if err := traversable(filepath.Dir(p), uid, gid); err != nil {
				t.Fatalf("postfixlab: milter %s: %v", m, err)
			}
		}
	}

	relay := opt.RelayHost
	var sink *Sink
	if relay == "" {
		sink = NewSink(t) // its Cleanup runs after the lab's (LIFO), once Postfix is down
		relay = "[127.0.0.1]:" + portOf(sink.Addr)
	}

	dir, err := os.MkdirTemp("", "postfixlab-")
	if err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	l := &Lab{
		Dir:       dir,
		ConfigDir: filepath.Join(dir, "etc"),
		MailLog:   filepath.Join(dir, "log", "maillog"),
		QueueDir:  filepath.Join(dir, "spool"),
		Sink:      sink,
		spool:     filepath.Join(dir, "spool"),
		logf:      logf,
	}
	t.Cleanup(func() { l.cleanup(t) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	if err := traversable(dir, uid, gid); err != nil {
		t.Fatalf("postfixlab: run directory (set TMPDIR elsewhere?): %v", err)
	}
	for _, d := range []string{l.ConfigDir, l.spool, filepath.Join(dir, "data"), filepath.Join(dir, "log")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("postfixlab: %v", err)
		}
	}
	// master.lock and other state live in data_directory, which must belong
	// to mail_owner; queue_directory stays root-owned.
	if err := os.Chown(filepath.Join(dir, "data"), uid, gid); err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	if opt.Chroot {
		if err := prepareChroot(l.spool, logf); err != nil {
			t.Fatalf("postfixlab: chroot: %v", err)
		}
	}
	if opt.Submission {
		l.SASLUser, l.SASLPass = "lab@"+Hostname, "labpass"
		if err := setupSubmission(t.Context(), l.ConfigDir, "lab", l.SASLPass, gid); err != nil {
			t.Fatalf("postfixlab: submission: %v", err)
		}
	}
	action := opt.MilterDefaultAction
	if action == "" {
		action = "tempfail"
	}

	// Ports are picked free but another process may take one before master
	// binds it; master then exits with "Address already in use", so retry.
	const attempts = 3
	for i := 1; ; i++ {
		smtp, submit := freePort(t), 0
		if opt.Submission {
			submit = freePort(t)
		}
		mainCF, masterCF := renderConfig(layout{
			etc: l.ConfigDir, spool: l.spool, data: filepath.Join(dir, "data"),
			logDir: filepath.Join(dir, "log"), mailLog: l.MailLog,
			smtpPort: smtp, submitPort: submit, relayHost: relay,
			milters: opt.Milters, milterDefaultAction: action,
			extraMain: opt.ExtraMain, extraMaster: opt.ExtraMaster, chroot: opt.Chroot,
		})
		if err := os.WriteFile(filepath.Join(l.ConfigDir, "main.cf"), []byte(mainCF), 0o644); err != nil {
			t.Fatalf("postfixlab: %v", err)
		}
		if err := os.WriteFile(filepath.Join(l.ConfigDir, "master.cf"), []byte(masterCF), 0o644); err != nil {
			t.Fatalf("postfixlab: %v", err)
		}
		if err := l.backdateConfig(); err != nil {
			t.Fatalf("postfixlab: %v", err)
		}
		err := l.startOnce(t.Context(), smtp, submit)
		if err == nil {
			l.SMTPAddr = "127.0.0.1:" + strconv.Itoa(smtp)
			if submit != 0 {
				l.SubmitAddr = "127.0.0.1:" + strconv.Itoa(submit)
			}
			break
		}
		l.stop()
		// master's "fatal: bind ...: Address already in use" goes to the
		// postlog socket before postlogd runs, so it never reaches the log:
		// find taken inet services ourselves.
		busy := l.busyInetServices(t.Context())
		if len(busy) > 0 {
			err = fmt.Errorf("%w (address already in use: %s)", err, strings.Join(busy, ", "))
		}
		ours := slices.ContainsFunc(busy, func(a string) bool {
			return a == "127.0.0.1:"+strconv.Itoa(smtp) || a == "127.0.0.1:"+strconv.Itoa(submit)
		})
		if i < attempts && ours {
			logf("postfixlab: port taken, retrying: %v", err)
			continue
		}
		t.Fatalf("postfixlab: start: %v%s", err, l.tail(30))
	}
	sub := ""
	if l.SubmitAddr != "" {
		sub = ", submission " + l.SubmitAddr
	}
	logf("postfixlab: up: smtpd %s%s -> milters %q -> relay %s; log %s", l.SMTPAddr, sub, opt.Milters, relay, l.MailLog)
	return l
}

// busyInetServices returns the master.cf inet services named HOST:PORT
// whose address cannot be bound now.
func (l *Lab) busyInetServices(ctx context.Context) []string {
	out, err := l.run(ctx, "postconf", "-c", l.ConfigDir, "-M")
	if err != nil {
		return nil
	}
	var busy []string
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1] != "inet" || !strings.Contains(f[0], ":") {
			continue
		}
		ln, err := net.Listen("tcp", f[0])
		if err != nil {
			busy = append(busy, f[0])
			continue
		}
		ln.Close()
	}
	return busy
}

// backdateConfig sets the mtime of main.cf and master.cf 10 s into the
// past. Postfix programs that read a config file changed within the last
// second or so treat it as "being updated" and retry every 300 ms; that cost
// about 2 s per start (each postconf run by postfix-script waits).
func (l *Lab) backdateConfig() error {
	old := time.Now().Add(-10 * time.Second)
	for _, f := range []string{"main.cf", "master.cf"} {
		if err := os.Chtimes(filepath.Join(l.ConfigDir, f), old, old); err != nil {
			return err
		}
	}
	return nil
}

// startOnce runs "postfix start" (master -w returns once master is
// initialized) and waits until the smtpd ports listen.
func (l *Lab) startOnce(ctx context.Context, ports ...int) error {
	if out, err := l.run(ctx, "postfix", "-c", l.ConfigDir, "start"); err != nil {
		return fmt.Errorf("postfix start: %w: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range ports {
		if p == 0 {
			continue
		}
		for !listening(p) {
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on 127.0.0.1:%d after 10s", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// cleanup is the t.Cleanup of Start.
func (l *Lab) cleanup(t testing.TB) {
	l.stop()
	if t.Failed() {
		l.logf("postfixlab: maillog of the failed test:%s", l.tail(40))
	}
	if os.Getenv("POSTFIXLAB_KEEP") != "" {
		l.logf("postfixlab: keeping %s (POSTFIXLAB_KEEP)", l.Dir)
		return
	}
	if err := os.RemoveAll(l.Dir); err != nil {
		l.logf("postfixlab: %v", err)
	}
}

// stop does what "postfix stop" does (SIGTERM to master, which terminates
// its daemons) without its one-second sleeps, then waits until master has
// exited or is a zombie (this sandbox's init reaps orphans late) and
// SIGKILLs whatever of this instance is left. Each wait is bounded.
func (l *Lab) stop() {
	pid, err := readPidFile(filepath.Join(l.spool, "pid", "master.pid"))
	if err == nil && alive(pid) {
		if st, err := readProcStat(pid); err == nil && st.session == pid {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		if !WaitGone([]int{pid}, 10*time.Second) {
			l.logf("postfixlab: master %d did not exit in 10s; killing", pid)
		}
	} else {
		pid = 0
	}
	left := instanceProcs(pid, l.ConfigDir)
	if len(left) == 0 {
		return
	}
	killAll(left, syscall.SIGKILL)
	if !WaitGone(left, 5*time.Second) {
		l.logf("postfixlab: processes %v of %s still alive after SIGKILL", left, l.Dir)
	}
}

// run runs a Postfix tool (found via tool) and returns its combined output.
func (l *Lab) run(ctx context.Context, name string, args ...string) (string, error) {
	p, err := tool(name)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+l.ConfigDir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tail returns the last n lines of the maillog, prefixed for an error text.
func (l *Lab) tail(n int) string { return TailFile(l.MailLog, "maillog", "maillog", n) }

// TailFile returns the last n lines of a log file for an error text,
// under "--- HEADER tail ---", or "(no NAME: error)" when it cannot be
// read. The Sendmail lab shares it.
func TailFile(path, name, header string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "\n(no " + name + ": " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n--- " + header + " tail ---\n" + strings.Join(lines, "\n")
}

// SubmitArgs returns the swaks arguments for an authenticated submission:
// --server SubmitAddr --tls --auth LOGIN --auth-user ... --auth-password ...
func (l *Lab) SubmitArgs() []string {
	return []string{"--server", l.SubmitAddr, "--tls", "--auth", "LOGIN", "--auth-user", l.SASLUser, "--auth-password", l.SASLPass}
}

var queuedAs = regexp.MustCompile(`(?m)^\s*<[-~]\s+250 .*queued as ([0-9A-Za-z]+)\s*$`)

// Swaks runs swaks with args against SMTPAddr (unless args name a server
// with --server/-s, --socket or --pipe) and returns its output, the Postfix
// queue id from the "queued as" reply ("" if none), and an error when swaks
// exits non-zero (the output then tells which SMTP reply failed).
func (l *Lab) Swaks(t testing.TB, args ...string) (out string, queueID string, err error) {
	t.Helper()
	return RunSwaks(t, l.SMTPAddr, queuedAs, args...)
}

// RunSwaks runs swaks with args, against server unless args name one
// (--server/-s, --socket or --pipe), for at most two minutes, and returns
// its output, the first submatch of queueID in it ("" if none), and an
// error when swaks exits non-zero. The Sendmail lab shares it.
func RunSwaks(t testing.TB, server string, queueID *regexp.Regexp, args ...string) (out, qid string, err error) {
	t.Helper()
	full := args
	if !hasServerArg(args) {
		full = append([]string{"--server", server}, args...)
	}
	p, err := tool("swaks")
	if err != nil {
		return "", "", fmt.Errorf("postfixlab: %w", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, p, full...).CombinedOutput()
	out = string(b)
	if m := queueID.FindStringSubmatch(out); m != nil {
		qid = m[1]
	}
	if err != nil {
		err = fmt.Errorf("swaks %s: %w", strings.Join(full, " "), err)
	}
	return out, qid, err
}

func hasServerArg(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		switch name {
		case "--server", "-s", "--socket", "--pipe":
			return true
		}
	}
	return false
}

// WaitLog waits until the maillog has a line matching re and returns all
// matching lines at that moment. It calls t.Fatal with the log's tail after
// timeout.
func (l *Lab) WaitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	lines, err := WaitLogFile(l.MailLog, re, nil, timeout)
	if err != nil {
		t.Fatalf("postfixlab: %v%s", err, l.tail(30))
	}
	return lines
}

// WaitLogFile polls a log file (another process writes it; there is
// nothing to wait on) until a line matches re, or one matches fail, or
// timeout, and returns the lines matching re. The Sendmail lab shares it.
func WaitLogFile(path string, re, fail *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		var hits []string
		for line := range strings.SplitSeq(string(b), "\n") {
			if fail != nil && fail.MatchString(line) {
				return nil, fmt.Errorf("log line matches %q: %s", fail, line)
			}
			if re.MatchString(line) {
				hits = append(hits, line)
			}
		}
		if len(hits) > 0 {
			return hits, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no log line matches %q within %v", re, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitDelivered waits for a "QUEUEID: to=<...>, ... status=sent" line and
// fails at once if the log shows status=bounced for that queue id (a
// deferred recipient keeps it waiting until timeout).
func (l *Lab) WaitDelivered(t testing.TB, queueID string, timeout time.Duration) {
	t.Helper()
	if queueID == "" {
		t.Fatalf("postfixlab: WaitDelivered: empty queue id")
	}
	q := regexp.QuoteMeta(queueID)
	sent := regexp.MustCompile(`\b` + q + `: to=<.*\bstatus=sent\b`)
	bounced := regexp.MustCompile(`\b` + q + `: to=<.*\bstatus=bounced\b`)
	if _, err := WaitLogFile(l.MailLog, sent, bounced, timeout); err != nil {
		t.Fatalf("postfixlab: queue id %s: %v%s", queueID, err, l.tail(30))
	}
}

// Postconf runs postconf for this instance (postconf -c ConfigDir args...)
// and returns its trimmed output, e.g. Postconf(t, "-h", "relayhost") or
// Postconf(t, "-e", "smtpd_milters=inet:127.0.0.1:9999") (then Reload).
func (l *Lab) Postconf(t testing.TB, args ...string) string {
	t.Helper()
	out, err := l.run(t.Context(), "postconf", append([]string{"-c", l.ConfigDir}, args...)...)
	if err != nil {
		t.Fatalf("postfixlab: postconf %s: %v: %s", strings.Join(args, " "), err, out)
	}
	if err := l.backdateConfig(); err != nil { // after postconf -e; see backdateConfig
		t.Fatalf("postfixlab: %v", err)
	}
	return strings.TrimSpace(out)
}

var reloadLine = regexp.MustCompile(`postfix/master\[\d+\]: reload -- `)

// Reload runs "postfix reload" and returns once master has logged that it
// re-read its configuration (reload itself only sends SIGHUP).
func (l *Lab) Reload(t testing.TB) {
	t.Helper()
	before := l.countLog(reloadLine)
	if err := l.backdateConfig(); err != nil { // the caller may have edited the files
		t.Fatalf("postfixlab: %v", err)
	}
	if out, err := l.run(t.Context(), "postfix", "-c", l.ConfigDir, "reload"); err != nil {
		t.Fatalf("postfixlab: postfix reload: %v: %s%s", err, out, l.tail(20))
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.countLog(reloadLine) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("postfixlab: master did not log a reload within 10s%s", l.tail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *Lab) countLog(re *regexp.Regexp) int {
	b, _ := os.ReadFile(l.MailLog)
	return len(re.FindAllIndex(b, -1))
}

// QueueEmpty reports whether the instance's queue (maildrop, incoming,
// active, deferred, hold) holds no message.
func (l *Lab) QueueEmpty() bool {
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		found := false
		_ = filepath.WalkDir(filepath.Join(l.spool, q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				found = true
				return filepath.SkipAll
			}
			return nil
		})
		if found {
			return false
		}
	}
	return true
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("postfixlab: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// setupSubmission writes the self-signed certificate, the Cyrus SASL config
// and sasldb2 with user@Hostname. smtpd (user postfix) opens sasldb2 after
// dropping privileges, so it is root:postfix 0640; the key is read before
// that, so it stays root 0600.
func setupSubmission(ctx context.Context, etc, user, pass string, gid int) error {
	for _, d := range []string{"tls", "sasl"} {
		if err := os.Mkdir(filepath.Join(etc, d), 0o755); err != nil {
			return err
		}
	}
	openssl, err := tool("openssl")
	if err != nil {
		return err
	}
	key, cert := filepath.Join(etc, "tls", "key.pem"), filepath.Join(etc, "tls", "cert.pem")
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-days", "3650", "-subj", "/CN="+Hostname, "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		return fmt.Errorf("openssl req: %w: %s", err, out)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(etc, "sasl", "smtpd.conf"), []byte(saslConf(etc)), 0o644); err != nil {
		return err
	}
	saslpasswd2, err := tool("saslpasswd2")
	if err != nil {
		return err
	}
	db := filepath.Join(etc, "sasl", "sasldb2")
	cmd := exec.CommandContext(ctx, saslpasswd2, "-p", "-c", "-f", db, "-u", Hostname, user)
	cmd.Stdin = bytes.NewBufferString(pass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2: %w: %s", err, out)
	}
	if err := os.Chown(db, 0, gid); err != nil {
		return err
	}
	return os.Chmod(db, 0o640)
}
