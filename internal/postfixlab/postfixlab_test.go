package postfixlab

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
)

// started records the config directories of the labs of this test binary so
// TestMain can check that none left a process behind.
var started struct {
	sync.Mutex
	etc []string
}

func track(l *Lab) {
	started.Lock()
	defer started.Unlock()
	started.etc = append(started.etc, l.ConfigDir)
}

func TestMain(m *testing.M) {
	code := m.Run()
	started.Lock()
	for _, etc := range started.etc {
		if left := instanceProcs(0, etc); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "postfixlab: processes %v of %s left after the tests\n", left, etc)
			code = 1
		}
	}
	started.Unlock()
	os.Exit(code)
}

const waitTime = 30 * time.Second

func TestSendPlainAndSubmission(t *testing.T) {
	t.Parallel() // labs have their own ports and directories
	l := Start(t, Options{Submission: true})
	track(l)

	// The body has a leading-dot line (dot-stuffed twice on the way: by
	// swaks and by Postfix's smtp client) and 8-bit text.
	body := "hello lab\r\n.leading dot\r\nline ÄÖ\r\n"
	out, qid, err := l.Swaks(t, "--from", "a@example.com", "--to", "b@example.org",
		"--header", "Subject: plain", "--body", "hello lab\n.leading dot\nline ÄÖ")
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	l.WaitDelivered(t, qid, waitTime)
	m := l.Sink.WaitFor(t, func(r Received) bool { return bytes.Contains(r.Data, []byte("Subject: plain")) }, waitTime)
	if m.From != "a@example.com" || !slices.Equal(m.To, []string{"b@example.org"}) {
		t.Errorf("envelope = <%s> %v, want <a@example.com> [b@example.org]", m.From, m.To)
	}
	// swaks ends the body with extra blank lines.
	if !bytes.HasSuffix(bytes.TrimRight(m.Data, "\r\n"), []byte("\r\n\r\n"+strings.TrimRight(body, "\r\n"))) {
		t.Errorf("delivered message does not end with the body %q:\n%q", body, m.Data)
	}
	if !bytes.Contains(m.Data, []byte("Received: from "+Hostname)) && !bytes.Contains(m.Data, []byte("by "+Hostname)) {
		t.Errorf("no Received header by %s:\n%s", Hostname, m.Data)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr bool
		wantOut string // substring of swaks' output
		wantLog string // regexp for a maillog line (with the queue id when it is set)
	}{
		{
			name:    "tls auth login",
			args:    append(l.SubmitArgs(), "--from", "sub@example.com", "--to", "c@example.org", "--header", "Subject: submitted"),
			wantOut: "235 2.7.0 Authentication successful",
			wantLog: `sasl_method=LOGIN, sasl_username=lab@lab\.localdomain`,
		},
		{
			name: "wrong password",
			args: []string{"--server", l.SubmitAddr, "--tls", "--auth", "LOGIN", "--auth-user", l.SASLUser,
				"--auth-password", "wrong", "--from", "sub@example.com", "--to", "c@example.org"},
			wantErr: true,
			wantOut: "535 5.7.8",
			wantLog: `SASL LOGIN authentication failed`,
		},
		{
			name:    "no starttls",
			args:    []string{"--server", l.SubmitAddr, "--from", "sub@example.com", "--to", "c@example.org"},
			wantErr: true,
			wantOut: "530 5.7.0 Must issue a STARTTLS command first",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, qid, err := l.Swaks(t, tc.args...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("swaks err = %v, want error %v\n%s", err, tc.wantErr, out)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("swaks output lacks %q:\n%s", tc.wantOut, out)
			}
			if tc.wantErr {
				if qid != "" {
					t.Errorf("queue id %q for a failed session", qid)
				}
			} else {
				l.WaitDelivered(t, qid, waitTime)
				m := l.Sink.WaitFor(t, func(r Received) bool { return r.From == "sub@example.com" }, waitTime)
				if !slices.Equal(m.To, []string{"c@example.org"}) || !bytes.Contains(m.Data, []byte("with ESMTPSA")) {
					t.Errorf("submitted message: to=%v\n%s", m.To, m.Data)
				}
			}
			if tc.wantLog != "" {
				l.WaitLog(t, regexp.MustCompile(tc.wantLog), waitTime)
			}
		})
	}
	if got := l.Postconf(t, "-h", "myhostname"); got != Hostname {
		t.Errorf("postconf myhostname = %q", got)
	}
}

func TestSinkRcptReplies(t *testing.T) {
	t.Parallel() // labs have their own ports and directories
	l := Start(t, Options{})
	track(l)
	l.Sink.SetRcptReply("nouser@example.org", 550, "5.1.1 no such user")
	l.Sink.SetRcptReply("Full@Example.org", 452, "4.2.2 mailbox full")

	out, qid, err := l.Swaks(t, "--from", "sender@example.com",
		"--to", "ok@example.org,nouser@example.org,full@example.org", "--header", "Subject: three")
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	for rcpt, status := range map[string]string{
		"ok@example.org":     `status=sent \(250 2\.0\.0 Ok: queued\)`,
		"nouser@example.org": `status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1 no such user`,
		"full@example.org":   `status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 452 4\.2\.2 mailbox full`,
	} {
		re := regexp.MustCompile(regexp.QuoteMeta(qid+": to=<"+rcpt+">") + `.*dsn=[245]\.\d\.\d, ` + status)
		l.WaitLog(t, re, waitTime)
	}
	m := l.Sink.WaitFor(t, func(r Received) bool { return r.From == "sender@example.com" }, waitTime)
	if !slices.Equal(m.To, []string{"ok@example.org"}) {
		t.Errorf("sink recipients = %v, want only ok@example.org", m.To)
	}
	// The 550 makes Postfix send a DSN from the null sender back to sender.
	dsn := l.Sink.WaitFor(t, func(r Received) bool { return r.From == "" }, waitTime)
	if !slices.Equal(dsn.To, []string{"sender@example.com"}) || !bytes.Contains(dsn.Data, []byte("nouser@example.org")) {
		t.Errorf("DSN to=%v:\n%s", dsn.To, dsn.Data)
	}
	if l.QueueEmpty() {
		t.Errorf("queue is empty, want the deferred recipient queued")
	}
}

// tagMilter adds a header at the end of every message.
type tagMilter struct{ milter.NoOpMilter }

func (tagMilter) Body(m *milter.Modifier) (milter.Response, error) {
	if err := m.AddHeader("X-Postfixlab-Milter", "seen"); err != nil {
		return nil, err
	}
	return milter.RespAccept, nil
}

func TestMilters(t *testing.T) {
	t.Parallel() // labs have their own ports and directories
	sock := filepath.Join(SocketDir(t), "milter.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil { // postfix connects as user postfix
		t.Fatal(err)
	}
	srv := &milter.Server{NewMilter: func() milter.Milter { return tagMilter{} }, Actions: milter.OptAddHeader}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	tests := []struct {
		name    string
		milter  string
		wantOut string
	}{
		{"unix milter adds header", "unix:" + sock, "queued as"},
		{"milter down tempfails", "unix:" + filepath.Join(filepath.Dir(sock), "absent.sock"), "451 4.7.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := Start(t, Options{Milters: []string{tc.milter}})
			track(l)
			out, qid, err := l.Swaks(t, "--from", "m@example.com", "--to", "n@example.org", "--header", "Subject: milter")
			if !strings.Contains(out, tc.wantOut) {
				t.Fatalf("swaks (err %v) output lacks %q:\n%s", err, tc.wantOut, out)
			}
			if qid == "" {
				if err == nil {
					t.Errorf("swaks succeeded without a queue id")
				}
				l.WaitLog(t, regexp.MustCompile(`milter-reject: CONNECT from unknown\[127\.0\.0\.1\]: 451 4\.7\.1`), waitTime)
				return
			}
			l.WaitDelivered(t, qid, waitTime)
			m := l.Sink.WaitFor(t, nil, waitTime)
			if !bytes.Contains(m.Data, []byte("X-Postfixlab-Milter: seen\r\n")) {
				t.Errorf("milter header missing:\n%s", m.Data)
			}
		})
	}
}

// TestChrootMilterInSpool runs smtpd and cleanup chrooted in the queue
// directory, as Debian ships them, with the milter's socket inside it:
// Postfix names it unix:/leadpush/milter.sock, the milter listens on
// QueueDir/leadpush/milter.sock. Mail from SMTP (smtpd_milters) and from
// sendmail(1) (non_smtpd_milters, run by cleanup) passes the milter.
func TestChrootMilterInSpool(t *testing.T) {
	t.Parallel()
	l := Start(t, Options{Chroot: true, Milters: []string{"unix:/leadpush/milter.sock"}})
	track(l)
	for _, svc := range []string{"cleanup/unix", l.SMTPAddr + "/inet"} {
		if got := l.Postconf(t, "-F", svc+"/chroot"); got != svc+"/chroot = y" {
			t.Errorf("master.cf: %s, want chroot = y", got)
		}
	}
	for _, f := range []string{"etc/resolv.conf", "etc/services", "etc/nsswitch.conf"} {
		if _, err := os.Stat(filepath.Join(l.QueueDir, f)); err != nil {
			t.Errorf("chroot lacks %s: %v", f, err)
		}
	}
	dir := filepath.Join(l.QueueDir, "leadpush")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "milter.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	srv := &milter.Server{NewMilter: func() milter.Milter { return tagMilter{} }, Actions: milter.OptAddHeader}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	out, qid, err := l.Swaks(t, "--from", "c@example.com", "--to", "d@example.org", "--header", "Subject: chrooted")
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	l.WaitDelivered(t, qid, waitTime)
	m := l.Sink.WaitFor(t, func(r Received) bool { return bytes.Contains(r.Data, []byte("Subject: chrooted")) }, waitTime)
	if !bytes.Contains(m.Data, []byte("X-Postfixlab-Milter: seen\r\n")) {
		t.Errorf("milter header missing:\n%s", m.Data)
	}
	// The smtpd that took the message is chrooted: its root is the queue
	// directory (it stays for max_idle after the session).
	roots := map[string]bool{}
	for _, pid := range instanceProcs(0, l.ConfigDir) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if name, _, _ := bytes.Cut(cmd, []byte{0}); string(name) == "smtpd" || string(name) == "cleanup" {
			root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
			roots[string(name)+" "+root] = true
		}
	}
	for _, want := range []string{"smtpd " + l.QueueDir, "cleanup " + l.QueueDir} {
		if !roots[want] {
			t.Errorf("no %s process chrooted there; saw %v", want, roots)
		}
	}

	// sendmail(1) -> pickup -> cleanup (chrooted) -> non_smtpd_milters.
	sendmail, err := tool("sendmail")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sendmail, "-C", l.ConfigDir, "-f", "e@example.com", "f@example.org")
	cmd.Stdin = strings.NewReader("Subject: chrooted pickup\n\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v: %s", err, out)
	}
	m = l.Sink.WaitFor(t, func(r Received) bool { return bytes.Contains(r.Data, []byte("Subject: chrooted pickup")) }, waitTime)
	if !bytes.Contains(m.Data, []byte("X-Postfixlab-Milter: seen\r\n")) {
		t.Errorf("milter header missing from the sendmail(1) message:\n%s", m.Data)
	}
}

func TestReload(t *testing.T) {
	t.Parallel() // labs have their own ports and directories
	l := Start(t, Options{})
	track(l)
	l.Postconf(t, "-e", "smtpd_banner=$myhostname ESMTP reloaded")
	l.Reload(t)
	out, _, err := l.Swaks(t, "--from", "a@example.com", "--to", "b@example.org", "--quit-after", "EHLO")
	if err != nil || !strings.Contains(out, "220 lab.localdomain ESMTP reloaded") {
		t.Fatalf("banner after reload (err %v):\n%s", err, out)
	}
	if !l.QueueEmpty() {
		t.Errorf("queue not empty")
	}
}

// fatalTB records the first Fatalf and ends the goroutine like t.Fatal.
type fatalTB struct {
	*testing.T
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	Require(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ftb := &fatalTB{T: t}
	done := make(chan *Lab)
	go func() {
		defer close(done)
		done <- Start(ftb, Options{ExtraMaster: busy.Addr().String() + " inet n - n - - smtpd"})
	}()
	if l := <-done; l != nil {
		t.Fatalf("Start succeeded with a taken port: %+v", l)
	}
	for _, want := range []string{"postfixlab: start: ", "--- maillog tail ---", "address already in use: " + busy.Addr().String()} {
		if !strings.Contains(ftb.msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, ftb.msg)
		}
	}
}
