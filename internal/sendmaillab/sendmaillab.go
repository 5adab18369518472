// Package sendmaillab runs a real, private Sendmail 8.17 instance on
// loopback for integration tests, as internal/postfixlab does for Postfix:
// its own .cf (built with m4 from the Debian macros), queue and log under a
// temporary directory, its own random ports on 127.0.0.1, optional milters
// on unix ("local:/path") or TCP ("inet:PORT@127.0.0.1") sockets, an
// optional STARTTLS + SASL submission daemon, and a postfixlab.Sink as
// smart host. Mail is sent with the real swaks.
//
// Debian's sendmail packages conflict with Postfix, so they are not
// installed: scripts/deps.sh (scripts/deps-sendmail.sh) unpacks them with
// dpkg -x under Root. Three things Sendmail has no per-instance setting
// for are given to it in private mount and UTS namespaces (unshare):
//   - a dotted host name (Hostname): with the box's unqualified name
//     Sendmail sleeps 60 s at every start ("My unqualified host name ...
//     unknown; sleeping for retry");
//   - /dev/log: Sendmail only logs through syslog(3), so the lab's /dev is
//     a tmpfs of links to the real entries plus log -> the lab's socket,
//     which the lab writes to Lab.MailLog (rsyslog's classic format);
//   - Cyrus SASL's config: libsasl looks for Sendmail.conf only on a fixed
//     path, so the lab's etc/sasl2 is bind-mounted over /usr/lib/sasl2.
//
// It needs root. Tests call Require (Start calls it) and are skipped when
// the lab is not available, unless CI=true, where that is a failure. Start
// one lab per test package (New in TestMain, or Start in a test): a start
// takes about half a second, but mail is slow to settle.
package sendmaillab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// Hostname is the host name of every lab instance (in its UTS namespace)
// and its confDOMAIN_NAME.
const Hostname = "sm-lab.test"

// LogHost is the host name the lab's syslog listener writes in MailLog.
const LogHost = "sm-lab"

// DefaultRoot is where scripts/deps-sendmail.sh unpacks Sendmail; the
// environment variable SENDMAILLAB_ROOT overrides it.
const DefaultRoot = "/opt/leadpush-lab/sendmail"

// Root returns the directory holding the unpacked Sendmail tree.
func Root() string {
	if r := os.Getenv("SENDMAILLAB_ROOT"); r != "" {
		return r
	}
	return DefaultRoot
}

// Options configure New and Start. The zero value is a lab without milters
// or submission, relaying to a fresh Sink.
type Options struct {
	// Milters are Sendmail milter sockets, "local:/path/milter.sock" or
	// "inet:PORT@127.0.0.1", each an INPUT_MAIL_FILTER named
	// MilterName(i) with F=T (tempfail while it is down).
	Milters []string
	// MilterMacrosEOM, when set, is confMILTER_MACROS_EOM, e.g.
	// "{msg_id}, i" (contrib/sendmail/leadpush.mc). Empty: the line is
	// left out, as in a site's own .mc.
	MilterMacrosEOM string
	// Submission adds an MSA daemon on Lab.SubmitAddr that requires AUTH
	// (PLAIN or LOGIN, offered only after STARTTLS with a self-signed
	// certificate) as Lab.SASLUser / Lab.SASLPass (Cyrus sasldb).
	Submission bool
	// RelayPort is the port on 127.0.0.1 all mail is relayed to. Zero:
	// New starts a Sink (Lab.Sink).
	RelayPort int
	// QueueWarn and QueueReturn are confTO_QUEUEWARN and
	// confTO_QUEUERETURN (delay warning, expiry). Zero: 1 and 3 minutes.
	// The queue is run every second (-q1s).
	QueueWarn, QueueReturn time.Duration
	// ExtraMC is inserted before the MAILER lines of the .mc (mailer
	// definitions, features, access to maps under Lab.Dir).
	ExtraMC string
	// Logf receives progress lines; nil discards them (Start: t.Logf).
	Logf func(format string, args ...any)
}

// Lab is a running Sendmail instance made by New or Start.
type Lab struct {
	Dir        string // run directory: etc/, mqueue/, run/, log/
	CF         string // the generated sendmail.cf (its .mc beside it)
	SMTPAddr   string // "127.0.0.1:PORT": daemon MTA, relays for 127.0.0.1
	SubmitAddr string // "127.0.0.1:PORT": daemon MSA; "" without Options.Submission
	SASLUser   string // "" without Options.Submission
	SASLPass   string
	MailLog    string           // Sendmail's log, written by the lab's syslog listener
	Sink       *postfixlab.Sink // the smart host; nil when Options.RelayPort was set
	root       string           // unpacked Sendmail
	cmd        *exec.Cmd        // unshare -> sh -> sendmail -bD (one process)
	done       chan struct{}    // closed when cmd has exited
	mntNS      string           // the instance's mount namespace, "mnt:[N]"
	syslog     *syslogSink      // nil before New set it up
	logf       func(string, ...any)
	ownSink    bool
	closed     bool
	closeErr   error
	startedAt  time.Time
}

func (l *Lab) sendmail() string { return filepath.Join(l.root, "usr/libexec/sendmail/sendmail") }

// Available returns nil when this process can run a lab: it is root, the
// unpacked tree has the sendmail binary and the cf macros, and m4,
// unshare, swaks, saslpasswd2 and openssl are installed. Otherwise the
// error says what is missing.
func Available() error {
	var errs []error
	root := Root()
	for _, f := range []string{"usr/libexec/sendmail/sendmail", "usr/share/sendmail/cf/m4/cf.m4", "usr/sbin/makemap"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			errs = append(errs, fmt.Errorf("no %s under %s (run scripts/deps.sh as root)", f, root))
		}
	}
	var missing []string
	for _, name := range []string{"m4", "unshare", "mount", "hostname", "swaks", "saslpasswd2", "openssl"} {
		if _, err := tool(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing %s (run scripts/deps.sh as root)", strings.Join(missing, ", ")))
	}
	if _, err := os.Stat("/usr/lib/sasl2"); err != nil {
		errs = append(errs, fmt.Errorf("no /usr/lib/sasl2 to bind the lab's SASL config over: %w", err))
	}
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("must run as root (namespaces, sendmail daemon)"))
	} else if err := canUnshare(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("sendmaillab: Sendmail lab not available: %w", errors.Join(errs...))
	}
	return nil
}

var unshareOnce = sync.OnceValue(func() error {
	p, err := tool("unshare")
	if err != nil {
		return nil // reported as missing
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, p, "--mount", "--uts", "--propagation", "private", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("cannot make mount and UTS namespaces (a container without CAP_SYS_ADMIN?): unshare: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
})

// canUnshare reports whether this process may make the namespaces the
// lab runs in (checked once).
func canUnshare() error { return unshareOnce() }

// Require skips the test when Available fails, or fails it when the
// environment variable CI is "true".
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Sendmail is required under CI=true: run scripts/deps.sh: %v", err)
		}
		t.Skip(err)
	}
}

// Start is New for one test: it calls Require, and t.Cleanup closes the
// lab (and logs the tail of its log when the test failed).
func Start(t testing.TB, opt Options) *Lab {
	t.Helper()
	Require(t)
	if opt.Logf == nil {
		opt.Logf = t.Logf
	}
	l, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.logf("sendmaillab: log of the failed test:%s", l.Tail(40))
		}
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// New brings up a private Sendmail and returns when its daemons listen.
// The caller must Close it. On failure the error has the tail of the log.
func New(opt Options) (l *Lab, err error) {
	if err := Available(); err != nil {
		return nil, err
	}
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "sendmaillab-")
	if err != nil {
		return nil, fmt.Errorf("sendmaillab: %w", err)
	}
	l = &Lab{
		Dir: dir, CF: filepath.Join(dir, "etc", "sendmail.cf"), MailLog: filepath.Join(dir, "log", "maillog"),
		root: Root(), logf: logf, done: make(chan struct{}),
	}
	close(l.done) // nothing runs yet
	defer func() {
		if err != nil {
			err = fmt.Errorf("sendmaillab: %w%s", err, l.Tail(30))
			l.Close()
			l = nil
		}
	}()
	// 0755: mailers run as nobody and must reach programs under Dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return l, err
	}
	for d, mode := range map[string]os.FileMode{"etc": 0o755, "etc/sasl2": 0o755, "etc/tls": 0o700, "mqueue": 0o700, "run": 0o755, "log": 0o755} {
		if err := os.MkdirAll(filepath.Join(dir, d), mode); err != nil {
			return l, err
		}
		if err := os.Chmod(filepath.Join(dir, d), mode); err != nil {
			return l, err
		}
	}
	files := map[string]string{
		"etc/service.switch": "hosts files\naliases files\n", // no DNS, no NIS
		"etc/aliases":        "postmaster: root\nMAILER-DAEMON: postmaster\n",
		"run/statistics":     "", // else "poststats: ... No such file"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return l, err
		}
	}
	if opt.Submission {
		l.SASLUser, l.SASLPass = "app", "labpass"
		if err := setupSubmission(dir, l.SASLUser, l.SASLPass); err != nil {
			return l, fmt.Errorf("submission: %w", err)
		}
	}
	if l.syslog, err = listenSyslog(filepath.Join(dir, "log.sock"), l.MailLog, LogHost); err != nil {
		return l, err
	}
	relay := opt.RelayPort
	if relay == 0 {
		if l.Sink, err = postfixlab.ListenSink("127.0.0.1:0"); err != nil {
			return l, err
		}
		l.ownSink = true
		relay, _ = strconv.Atoi(portOf(l.Sink.Addr))
	}
	warn, ret := opt.QueueWarn, opt.QueueReturn
	if warn == 0 {
		warn = time.Minute
	}
	if ret == 0 {
		ret = 3 * time.Minute
	}
	// Ports are picked free, but another process may take one before
	// Sendmail binds it: then it logs "cannot bind" and exits; retry.
	const attempts = 3
	for i := 1; ; i++ {
		smtp, submit := freePort(), 0
		if opt.Submission {
			submit = freePort()
		}
		mc := renderMC(layout{
			dir: dir, root: l.root, smtpPort: smtp, submitPort: submit, relayPort: relay,
			milters: opt.Milters, queueWarn: warn, queueReturn: ret, submission: opt.Submission,
			extraMC: opt.ExtraMC, milterMacrosEOM: opt.MilterMacrosEOM, logLevel: "14",
		})
		if err := l.buildCF(mc); err != nil {
			return l, err
		}
		err := l.startOnce(smtp, submit)
		if err == nil {
			l.SMTPAddr = "127.0.0.1:" + strconv.Itoa(smtp)
			if submit != 0 {
				l.SubmitAddr = "127.0.0.1:" + strconv.Itoa(submit)
			}
			break
		}
		l.stop()
		if i < attempts && (!portFree(smtp) || submit != 0 && !portFree(submit)) {
			logf("sendmaillab: port taken, retrying: %v", err)
			continue
		}
		return l, fmt.Errorf("start: %w", err)
	}
	logf("sendmaillab: up in %v: MTA %s, MSA %q -> milters %q -> relay 127.0.0.1:%d; log %s",
		time.Since(l.startedAt).Round(time.Millisecond), l.SMTPAddr, l.SubmitAddr, opt.Milters, relay, l.MailLog)
	return l, nil
}

// buildCF writes the .mc and runs m4 with Debian's cf macros.
func (l *Lab) buildCF(mc string) error {
	mcPath := strings.TrimSuffix(l.CF, ".cf") + ".mc"
	if err := os.WriteFile(mcPath, []byte(mc), 0o644); err != nil {
		return err
	}
	m4, err := tool("m4")
	if err != nil {
		return err
	}
	cfDir := filepath.Join(l.root, "usr/share/sendmail/cf") + "/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, m4, "-D_CF_DIR_="+cfDir, cfDir+"m4/cf.m4", mcPath)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		// m4 warns (and goes on) on an unknown FEATURE: treat as an error.
		return fmt.Errorf("m4 %s: %v: %s", mcPath, err, stderr.String())
	}
	return os.WriteFile(l.CF, out, 0o644)
}

// nsScript runs in fresh mount and UTS namespaces (see the package doc) and
// execs the daemon, so the started process is Sendmail itself.
const nsScript = `D=$1; shift
hostname ` + Hostname + `
mkdir -p "$D/ns/realdev" "$D/ns/dev"
mount --rbind /dev "$D/ns/realdev"
mount -t tmpfs -o size=64k,mode=755 sendmaillab-dev "$D/ns/dev"
for f in "$D"/ns/realdev/*; do ln -s "$f" "$D/ns/dev/"; done
ln -sfn "$D/log.sock" "$D/ns/dev/log"
mount --bind "$D/ns/dev" /dev
mount --bind "$D/etc/sasl2" /usr/lib/sasl2
exec "$@"`

// startOnce starts the daemon (foreground, -bD) and waits until its ports
// listen, it exits, or 20 s pass.
func (l *Lab) startOnce(ports ...int) error {
	unshare, err := tool("unshare")
	if err != nil {
		return err
	}
	out, err := os.OpenFile(filepath.Join(l.Dir, "run", "sendmail.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(unshare, "--mount", "--uts", "--propagation", "private", "sh", "-ec", nsScript, "sh", l.Dir,
		l.sendmail(), "-L", "sm-mta", "-bD", "-q1s", "-C", l.CF)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = l.Dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// Its own process group: a terminal's ^C does not reach it first, and
	// Close can signal the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	l.startedAt = time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	l.cmd = cmd
	done := make(chan struct{})
	l.done = done
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range ports {
		if p == 0 {
			continue
		}
		for !listening(p) {
			select {
			case <-done:
				b, _ := os.ReadFile(filepath.Join(l.Dir, "run", "sendmail.out"))
				return fmt.Errorf("sendmail exited (%v) before listening on 127.0.0.1:%d: %s", cmd.ProcessState, p, bytes.TrimSpace(b))
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on 127.0.0.1:%d after 20s", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("mount namespace of %d: %w", cmd.Process.Pid, err)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	if ns == self {
		return fmt.Errorf("sendmail %d runs in the test's own mount namespace", cmd.Process.Pid)
	}
	l.mntNS = ns
	return nil
}

// stop sends SIGTERM to the daemon (it then stops its children), waits for
// it, and SIGKILLs whatever else still runs in the instance's mount
// namespace (queue runners, SMTP children, mailers). Each wait is bounded.
func (l *Lab) stop() {
	if l.cmd == nil {
		return
	}
	pid := l.cmd.Process.Pid
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		l.logf("sendmaillab: sendmail %d did not exit in 10s; killing", pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-l.done
	}
	if left := l.Procs(); len(left) > 0 {
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		if !postfixlab.WaitGone(left, 5*time.Second) {
			l.logf("sendmaillab: processes %v of %s still alive after SIGKILL", left, l.Dir)
		}
	}
	l.cmd = nil
}

// Procs returns the live processes of the instance: those in its mount
// namespace. After Close it is empty.
func (l *Lab) Procs() []int {
	if l.mntNS == "" {
		return nil
	}
	return nsProcs(l.mntNS)
}

// Close stops the instance, its syslog listener and its Sink, and removes
// Dir (kept when SENDMAILLAB_KEEP is set). It reports processes it could
// not stop. Calling it again returns the first result.
func (l *Lab) Close() error {
	if l.closed {
		return l.closeErr
	}
	l.closed = true
	l.stop()
	var errs []error
	if left := l.Procs(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("sendmaillab: processes %v left in %s", left, l.mntNS))
	}
	if l.syslog != nil {
		errs = append(errs, l.syslog.Close())
	}
	if l.ownSink && l.Sink != nil {
		errs = append(errs, l.Sink.Close())
	}
	if os.Getenv("SENDMAILLAB_KEEP") != "" {
		l.logf("sendmaillab: keeping %s (SENDMAILLAB_KEEP)", l.Dir)
	} else if err := os.RemoveAll(l.Dir); err != nil {
		errs = append(errs, err)
	}
	l.closeErr = errors.Join(errs...)
	return l.closeErr
}

// Tail returns the last n lines of the mail log, prefixed for an error text.
func (l *Lab) Tail(n int) string {
	return postfixlab.TailFile(l.MailLog, "mail log", "sendmail log", n)
}

// SubmitArgs returns the swaks arguments for an authenticated submission:
// --server SubmitAddr --tls --auth LOGIN --auth-user ... --auth-password ...
func (l *Lab) SubmitArgs() []string {
	return []string{"--server", l.SubmitAddr, "--tls", "--auth", "LOGIN", "--auth-user", l.SASLUser, "--auth-password", l.SASLPass}
}

// accepted is Sendmail's reply to the end of DATA.
var accepted = regexp.MustCompile(`(?m)^\s*<[-~]\s+250 2\.0\.0 ([0-9A-Za-z]+) Message accepted for delivery\s*$`)

// Swaks runs swaks with args against SMTPAddr (unless args name a server
// with --server/-s, --socket or --pipe) and returns its output, the queue
// id from "250 2.0.0 QID Message accepted for delivery" ("" if none), and
// an error when swaks exits non-zero.
func (l *Lab) Swaks(t testing.TB, args ...string) (out, queueID string, err error) {
	t.Helper()
	return postfixlab.RunSwaks(t, l.SMTPAddr, accepted, args...)
}

// WaitLog waits until the mail log has a line matching re and returns all
// matching lines at that moment. It calls t.Fatal with the log's tail after
// timeout.
func (l *Lab) WaitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	lines, err := postfixlab.WaitLogFile(l.MailLog, re, nil, timeout)
	if err != nil {
		t.Fatalf("sendmaillab: %v%s", err, l.Tail(30))
	}
	return lines
}

// WaitDelivered waits for a "QID: to=..., stat=Sent" line and fails at
// once if the log shows a permanent failure (dsn=5.x.x) for the queue id.
func (l *Lab) WaitDelivered(t testing.TB, queueID string, timeout time.Duration) {
	t.Helper()
	if queueID == "" {
		t.Fatalf("sendmaillab: WaitDelivered: empty queue id")
	}
	q := regexp.QuoteMeta(queueID)
	sent := regexp.MustCompile(`\b` + q + `: to=.*, stat=Sent\b`)
	failed := regexp.MustCompile(`\b` + q + `: to=.*, dsn=5\.`)
	if _, err := postfixlab.WaitLogFile(l.MailLog, sent, failed, timeout); err != nil {
		t.Fatalf("sendmaillab: queue id %s: %v%s", queueID, err, l.Tail(30))
	}
}

// Makemap runs the unpacked Sendmail's makemap (makemap TYPE PATH < PATH),
// e.g. Makemap("hash", dir+"/mailertable") for a map that Options.ExtraMC
// names. Sendmail opens maps when it starts: build them before New. The
// error has makemap's output.
func Makemap(typ, path string) error {
	root := Root()
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// -C /dev/null: makemap reads a .cf only for TrustedUser.
	cmd := exec.CommandContext(ctx, filepath.Join(root, "usr/sbin/makemap"), "-C", "/dev/null", typ, path)
	cmd.Stdin = in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("makemap %s %s: %w: %s", typ, path, err, out)
	}
	return nil
}

// setupSubmission writes the self-signed certificate (key 0600: Sendmail
// refuses a readable key) and Cyrus SASL's Sendmail.conf with a sasldb2
// holding user@Hostname, plus a copy of the berkeley_db.* files that live
// in /usr/lib/sasl2, which the lab's etc/sasl2 hides.
func setupSubmission(dir, user, pass string) error {
	etc := filepath.Join(dir, "etc")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	openssl, err := tool("openssl")
	if err != nil {
		return err
	}
	key, cert := filepath.Join(etc, "tls", "key.pem"), filepath.Join(etc, "tls", "cert.pem")
	if out, err := exec.CommandContext(ctx, openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
		"-nodes", "-days", "3650", "-subj", "/CN="+Hostname, "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		return fmt.Errorf("openssl req: %w: %s", err, out)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		return err
	}
	sasl := filepath.Join(etc, "sasl2")
	if m, _ := filepath.Glob("/usr/lib/sasl2/*"); len(m) > 0 {
		for _, f := range m {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // a directory or unreadable: not needed
			}
			if err := os.WriteFile(filepath.Join(sasl, filepath.Base(f)), b, 0o644); err != nil {
				return err
			}
		}
	}
	db := filepath.Join(sasl, "sasldb2")
	conf := fmt.Sprintf("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\nmech_list: PLAIN LOGIN\n", db)
	if err := os.WriteFile(filepath.Join(sasl, "Sendmail.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	saslpasswd2, err := tool("saslpasswd2")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, saslpasswd2, "-p", "-c", "-f", db, "-u", Hostname, user)
	cmd.Stdin = strings.NewReader(pass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2: %w: %s", err, out)
	}
	return os.Chmod(db, 0o600)
}

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

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func portFree(p int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
