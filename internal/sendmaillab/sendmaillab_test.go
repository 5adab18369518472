package sendmaillab

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/milter"
	"github.com/leadpush/leadpush/notify/maillog"
)

// One Sendmail for the whole package (see TestMain): every test shares it
// and tells its messages apart by subject or recipient.
var (
	lab      *Lab
	labErr   error
	seen     = &recorder{changed: make(chan struct{})}
	ingest   string // the stand-in leadpushctl's directory
	milters  []string
	downPort int // a daemon whose milter is down
	waitTime = 30 * time.Second
)

func TestMain(m *testing.M) {
	code := run(m)
	os.Exit(code)
}

func run(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return m.Run() // go test -list (make fuzz): no Sendmail needed
	}
	if err := Available(); err != nil {
		// Each test calls need, which skips, or fails under CI=true.
		labErr = err
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "sendmaillab-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	stop, err := startMilters(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendmaillab: milters:", err)
		return 1
	}
	defer stop()
	extra, err := ingestMC(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sendmaillab: ingest mailer:", err)
		return 1
	}
	// A third daemon whose only milter is down (F=T, as in contrib).
	downPort = freePort()
	extra += "MAIL_FILTER(`down', `S=local:" + filepath.Join(tmp, "absent.sock") + ", F=T, T=C:2s')dnl\n" +
		fmt.Sprintf("DAEMON_OPTIONS(`Family=inet, Name=DOWN, Addr=127.0.0.1, Port=%d, InputMailFilters=down')dnl\n", downPort)
	lab, labErr = New(Options{
		Milters: milters, Submission: true, ExtraMC: extra,
		// Short, so the expiry test needs 20 s and not 3 min.
		QueueWarn: 8 * time.Second, QueueReturn: 20 * time.Second,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if labErr != nil {
		fmt.Fprintln(os.Stderr, labErr)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, lab.Tail(60))
	}
	if err := lab.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if left := lab.Procs(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "sendmaillab: processes %v left after the tests\n", left)
		code = 1
	}
	return code
}

// need skips (or fails under CI=true) without a lab, and marks the test
// parallel: the tests share one instance and wait on mail most of the time.
func need(t *testing.T) *Lab {
	t.Helper()
	Require(t)
	if lab == nil {
		t.Fatalf("no lab: %v", labErr)
	}
	t.Parallel()
	return lab
}

// seenMsg is what a probe milter saw of one message.
type seenMsg struct {
	milter, subject, queueID, auth string
}

type recorder struct {
	mu      sync.Mutex
	msgs    []seenMsg
	changed chan struct{}
}

func (r *recorder) add(m seenMsg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	close(r.changed)
	r.changed = make(chan struct{})
}

// wait returns what milter saw of the message with subject.
func (r *recorder) wait(t *testing.T, milter, subject string) seenMsg {
	t.Helper()
	timer := time.NewTimer(waitTime)
	defer timer.Stop()
	for {
		r.mu.Lock()
		for _, m := range r.msgs {
			if m.milter == milter && m.subject == subject {
				r.mu.Unlock()
				return m
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("milter %s saw no message %q within %v", milter, subject, waitTime)
		}
	}
}

// probe is a milter served by milter.NegotiatingServer, the go-milter
// server leadpush-milter uses (same actions, protocol and macro lists).
// It adds "X-Sendmaillab-NAME: seen" and records the EOM macro i.
type probe struct {
	name    string
	lean    bool
	subject string
	auth    string
}

func (p *probe) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (p *probe) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (p *probe) MailFrom(_ string, m *gomilter.Modifier) (gomilter.Response, error) {
	p.subject, p.auth = "", m.Macros["{auth_authen}"]
	return gomilter.RespContinue, nil
}
func (p *probe) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (p *probe) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.EqualFold(name, "Subject") {
		p.subject = strings.TrimSpace(value)
	}
	if p.lean {
		return nil, nil // no reply negotiated
	}
	return gomilter.RespContinue, nil
}
func (p *probe) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (p *probe) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) {
	if p.lean {
		return nil, nil
	}
	return gomilter.RespContinue, nil
}
func (p *probe) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	seen.add(seenMsg{milter: p.name, subject: p.subject, queueID: m.Macros["i"], auth: p.auth})
	if err := m.AddHeader("X-Sendmaillab-"+p.name, "seen"); err != nil {
		return nil, err
	}
	return gomilter.RespContinue, nil // as leadpush-milter: keeps the session
}
func (p *probe) Abort(*gomilter.Modifier) error { return nil }

// startMilters serves a lean probe on a unix socket and a full one on TCP,
// as leadpush-milter does, and sets milters to their Sendmail addresses.
func startMilters(dir string) (stop func(), err error) {
	sock := filepath.Join(dir, "milter.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		uln.Close()
		return nil, err
	}
	us := milter.NegotiatingServer(func() gomilter.Milter { return &probe{name: "unix", lean: true} }, true)
	ts := milter.NegotiatingServer(func() gomilter.Milter { return &probe{name: "inet"} }, false)
	go us.Serve(uln)
	go ts.Serve(tln)
	milters = []string{"local:" + sock, fmt.Sprintf("inet:%d@127.0.0.1", tln.Addr().(*net.TCPAddr).Port)}
	return func() { us.Close(); ts.Close() }, nil
}

// ingestMC returns contrib/sendmail/leadpush-ingest.mc with the lab's
// paths: a stand-in for leadpushctl that records its arguments and input
// (and exits with the status in ingest/exit), run as nobody, and the
// mailertable built from contrib/sendmail/mailertable with makemap.
func ingestMC(dir string) (string, error) {
	mc, err := os.ReadFile("../../contrib/sendmail/leadpush-ingest.mc")
	if err != nil {
		return "", err
	}
	ingest = filepath.Join(dir, "ingest")
	if err := os.Mkdir(ingest, 0o777); err != nil {
		return "", err
	}
	if err := os.Chmod(ingest, 0o777); err != nil { // the mailer runs as nobody
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	script := `#!/bin/sh
# stand-in for leadpushctl: records argv and the message, exits as told
d=` + ingest + `
n=$$.$(date +%s%N)
printf '%s\n' "$@" >"$d/$n.args.tmp"
cat >"$d/$n.eml"
mv "$d/$n.args.tmp" "$d/$n.args"
exit $(cat "$d/exit" 2>/dev/null || echo 0)
`
	standIn := filepath.Join(dir, "leadpushctl")
	if err := os.WriteFile(standIn, []byte(script), 0o755); err != nil {
		return "", err
	}
	mt, err := os.ReadFile("../../contrib/sendmail/mailertable")
	if err != nil {
		return "", err
	}
	mtPath := filepath.Join(dir, "mailertable")
	if err := os.WriteFile(mtPath, mt, 0o644); err != nil {
		return "", err
	}
	if err := Makemap("hash", mtPath); err != nil {
		return "", err
	}
	s := string(mc)
	for old, new := range map[string]string{
		"FEATURE(`mailertable')":           "FEATURE(`mailertable', `hash -o " + mtPath + "')",
		"P=/usr/local/bin/leadpushctl":     "P=" + standIn,
		"U=leadpush:leadpush":              "U=nobody:nogroup",
		"A=leadpushctl ingest --recipient": "A=leadpushctl ingest --recipient",
	} {
		if !strings.Contains(s, old) {
			return "", fmt.Errorf("contrib/sendmail/leadpush-ingest.mc lacks %q", old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	return s, nil
}

func TestSendThroughMilters(t *testing.T) {
	l := need(t)
	subject := "milters " + t.Name()
	out, qid, err := l.Swaks(t, "--from", "a@example.com", "--to", "b@example.org",
		"--header", "Subject: "+subject, "--body", "hello lab\n.leading dot\n")
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	l.WaitDelivered(t, qid, waitTime)
	m := l.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(subject)) }, waitTime)
	if m.From != "a@example.com" || !slices.Equal(m.To, []string{"b@example.org"}) {
		t.Errorf("envelope <%s> %v, want <a@example.com> [b@example.org]", m.From, m.To)
	}
	for _, h := range []string{"X-Sendmaillab-unix: seen\r\n", "X-Sendmaillab-inet: seen\r\n", "\r\n.leading dot\r\n", "by " + Hostname} {
		if !bytes.Contains(m.Data, []byte(h)) {
			t.Errorf("delivered message lacks %q:\n%s", h, m.Data)
		}
	}
	// The lab's .mc has no confMILTER_MACROS_EOM, like a site's own: the
	// queue id reaches the milters only because they also ask for an
	// end-of-headers macro list (milter.NegotiatingServer).
	for _, name := range []string{"unix", "inet"} {
		if got := seen.wait(t, name, subject); got.queueID != qid {
			t.Errorf("milter %s: EOM macro i = %q, want the queue id %q", name, got.queueID, qid)
		}
	}
	if cf, err := os.ReadFile(l.CF); err != nil || !bytes.Contains(cf, []byte("\nO Milter.macros.eom={msg_id}\n")) {
		t.Errorf("the lab's .cf should have the default EOM macro list (err %v)", err)
	}
}

func TestSubmission(t *testing.T) {
	l := need(t)
	subject := "submitted " + t.Name()
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		wantOut string
	}{
		{"tls auth login", append(l.SubmitArgs(), "--from", "app@example.com", "--to", "c@example.org", "--header", "Subject: "+subject),
			false, "235 2.0.0 OK Authenticated"},
		{"wrong password", []string{"--server", l.SubmitAddr, "--tls", "--auth", "LOGIN", "--auth-user", l.SASLUser,
			"--auth-password", "wrong", "--from", "app@example.com", "--to", "c@example.org"}, true, "535 5.7.0 authentication failed"},
		{"no starttls, no auth offered", []string{"--server", l.SubmitAddr, "--auth", "LOGIN", "--auth-user", l.SASLUser,
			"--auth-password", l.SASLPass, "--from", "app@example.com", "--to", "c@example.org"}, true, "Host did not advertise authentication"},
		{"auth required", []string{"--server", l.SubmitAddr, "--tls", "--from", "app@example.com", "--to", "c@example.org"}, true, "530 5.7.0 Authentication required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, qid, err := l.Swaks(t, tc.args...)
			if (err != nil) != tc.wantErr || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("swaks err = %v (want error %v), output lacks %q?\n%s", err, tc.wantErr, tc.wantOut, out)
			}
			if tc.wantErr {
				if qid != "" {
					t.Errorf("queue id %q for a refused session", qid)
				}
				return
			}
			l.WaitDelivered(t, qid, waitTime)
			m := l.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(subject)) }, waitTime)
			if !bytes.Contains(m.Data, []byte("(authenticated bits=0)")) || !bytes.Contains(m.Data, []byte("TLSv1.3")) {
				t.Errorf("Received header does not show TLS and AUTH:\n%s", m.Data)
			}
			for _, name := range []string{"unix", "inet"} {
				if got := seen.wait(t, name, subject); got.auth != l.SASLUser || got.queueID != qid {
					t.Errorf("milter %s saw auth %q queue id %q, want %q %q", name, got.auth, got.queueID, l.SASLUser, qid)
				}
			}
		})
	}
}

// TestIngestMailer sends a message whose envelope sender is a VERP address
// of the bounce domain to a recipient the sink refuses: Sendmail's DSN
// goes through the mailertable to the ingest mailer of
// contrib/sendmail/leadpush-ingest.mc, which first exits 75 (the message
// stays queued) and then 0.
func TestIngestMailer(t *testing.T) {
	l := need(t)
	verp := "bounce+aaaabbbbccccddddeeee1234@bounce.example.com"
	l.Sink.SetRcptReply("gone@example.net", 550, "5.1.1 <gone@example.net>: Recipient address rejected: User unknown")
	if err := os.WriteFile(filepath.Join(ingest, "exit"), []byte("75\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, qid, err := l.Swaks(t, "--from", verp, "--to", "gone@example.net", "--header", "Subject: verp "+t.Name())
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	l.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(qid)+`: to=<gone@example\.net>, .*dsn=5\.1\.1, .*stat=User unknown`), waitTime)
	// The DSN has a queue id of its own: "QID: DSNQID: DSN: User unknown".
	dsnLine := l.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(qid)+`: ([0-9A-Za-z]+): DSN: User unknown`), waitTime)
	dsnQID := regexp.MustCompile(regexp.QuoteMeta(qid) + `: ([0-9A-Za-z]+): DSN:`).FindStringSubmatch(dsnLine[0])[1]
	mailer := regexp.QuoteMeta(dsnQID) + `: to=<` + regexp.QuoteMeta(verp) + `>, .*mailer=leadpush, `
	l.WaitLog(t, regexp.MustCompile(mailer+`.*dsn=4\.0\.0, stat=Deferred`), waitTime)
	if err := os.WriteFile(filepath.Join(ingest, "exit"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.WaitLog(t, regexp.MustCompile(mailer+`.*stat=Sent`), waitTime)

	// The last call of the stand-in has the DSN (the first, refused one too).
	args, _ := filepath.Glob(filepath.Join(ingest, "*.args"))
	if len(args) < 2 {
		t.Fatalf("ingest ran %d times, want a refused and an accepted call", len(args))
	}
	var found bool
	for _, a := range args {
		argv, _ := os.ReadFile(a)
		msg, _ := os.ReadFile(strings.TrimSuffix(a, ".args") + ".eml")
		if !bytes.Contains(msg, []byte("Final-Recipient: RFC822; gone@example.net")) {
			continue
		}
		found = true
		if want := "ingest\n--recipient\n" + verp + "\n"; string(argv) != want {
			t.Errorf("ingest argv = %q, want %q", argv, want)
		}
		for _, want := range []string{"Return-Path: <MAILER-DAEMON>", "report-type=delivery-status", "Status: 5.1.1", "Action: failed", "Diagnostic-Code: SMTP; 550 5.1.1"} {
			if !bytes.Contains(msg, []byte(want)) {
				t.Errorf("ingested DSN lacks %q:\n%s", want, msg)
			}
		}
		if bytes.HasPrefix(msg, []byte("From ")) {
			t.Errorf("ingested message starts with a UNIX From line")
		}
	}
	if !found {
		t.Errorf("no ingest call had the DSN for gone@example.net")
	}
}

// TestDeliveryLog makes Sendmail log every kind of delivery result: sent,
// bounced (550 at RCPT), deferred (452) and, once QueueReturn passes,
// expired; and one to= line naming three recipients.
func TestDeliveryLog(t *testing.T) {
	l := need(t)
	l.Sink.SetRcptReply("nouser@example.net", 550, "5.1.1 <nouser@example.net>: Recipient address rejected: User unknown")
	l.Sink.SetRcptReply("full@example.net", 452, "4.2.2 <full@example.net>: mailbox full")
	out, q1, err := l.Swaks(t, "--from", "sender@example.com", "--to", "ok@example.net,nouser@example.net,full@example.net",
		"--header", "Subject: three results")
	if err != nil || q1 == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, q1, out)
	}
	out, q2, err := l.Swaks(t, "--from", "sender@example.com", "--to", "r1@example.com,r2@example.com,r3@example.org",
		"--header", "Subject: one line three recipients")
	if err != nil || q2 == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, q2, out)
	}
	l.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(q2)+`: to=<[^>]+>,<[^>]+>,<[^>]+>, .*stat=Sent`), waitTime)
	l.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(q1)+`: [0-9A-Za-z]+: sender notify: Cannot send message for 20 seconds`), waitTime+20*time.Second)
	l.WaitLog(t, regexp.MustCompile(regexp.QuoteMeta(q1)+`: done;`), waitTime)

	// What the mail log follower makes of it (maillog.format = "sendmail").
	data, err := os.ReadFile(l.MailLog)
	if err != nil {
		t.Fatal(err)
	}
	p := &maillog.Parser{Format: maillog.Sendmail}
	var entries []maillog.Entry
	for line := range bytes.Lines(data) {
		entries = p.Parse(entries, line, time.Now())
	}
	got := map[string][]string{} // queue id -> "status recipient dsn" of each result
	for _, e := range entries {
		if e.Status != "" && (e.QueueID == q1 || e.QueueID == q2) {
			got[e.QueueID] = append(got[e.QueueID], e.Status+" "+e.Recipient+" "+e.DSN)
		}
	}
	deferrals := slices.DeleteFunc(slices.Clone(got[q1]), func(s string) bool { return s != "deferred full@example.net 4.2.2" })
	results := slices.DeleteFunc(got[q1], func(s string) bool { return s == "deferred full@example.net 4.2.2" })
	slices.Sort(results)
	want := []string{"bounced nouser@example.net 5.1.1", "expired full@example.net 4.4.7", "sent ok@example.net 2.0.0"}
	if len(deferrals) == 0 || !slices.Equal(results, want) {
		t.Errorf("%s: %d deferrals and %q, want some and %q", q1, len(deferrals), results, want)
	}
	slices.Sort(got[q2])
	if want := []string{"sent r1@example.com 2.0.0", "sent r2@example.com 2.0.0", "sent r3@example.org 2.0.0"}; !slices.Equal(got[q2], want) {
		t.Errorf("%s: %q, want %q", q2, got[q2], want)
	}
}

// TestMilterDownTempfails: with F=T a daemon whose milter cannot be
// reached answers 451 at MAIL FROM, and nothing is queued.
func TestMilterDownTempfails(t *testing.T) {
	l := need(t)
	out, qid, err := l.Swaks(t, "--server", fmt.Sprintf("127.0.0.1:%d", downPort), "--from", "a@example.com", "--to", "b@example.org")
	if err == nil || qid != "" || !strings.Contains(out, "451 4.3.2 Please try again later") {
		t.Fatalf("swaks (err %v, qid %q), want 451 4.3.2 at MAIL FROM:\n%s", err, qid, out)
	}
	l.WaitLog(t, regexp.MustCompile(`Milter \(down\): to error state`), waitTime)
	l.WaitLog(t, regexp.MustCompile(`Milter: initialization failed, temp failing commands`), waitTime)
}
