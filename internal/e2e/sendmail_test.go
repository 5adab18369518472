package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/smtp"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/internal/sendmaillab"
	"github.com/leadpush/leadpush/notify/webhook"
)

// sendmailMC is what contrib/sendmail asks a Sendmail host to add to its
// sendmail.mc (leadpush.mc, leadpush-ingest.mc) and mailertable, with this
// test's paths: the milter socket, leadpushctl and its config, the map,
// and user nobody for the mailer (production: leadpush).
func sendmailMC(t *testing.T, dir, sock, cfg string) (string, string) {
	t.Helper()
	var mc strings.Builder
	for _, f := range []string{"leadpush.mc", "leadpush-ingest.mc"} {
		b, err := os.ReadFile(filepath.Join("../../contrib/sendmail", f))
		if err != nil {
			t.Fatal(err)
		}
		mc.Write(b)
	}
	mt, err := os.ReadFile("../../contrib/sendmail/mailertable")
	if err != nil {
		t.Fatal(err)
	}
	mtPath := filepath.Join(t.TempDir(), "mailertable") // root's: makemap refuses nobody's directory
	if err := os.WriteFile(mtPath, mt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sendmaillab.Makemap("hash", mtPath); err != nil {
		t.Fatal(err)
	}
	s := mc.String()
	for old, new := range map[string]string{
		"S=local:/run/leadpush/milter.sock": "S=local:" + sock,
		"FEATURE(`mailertable')":            "FEATURE(`mailertable', `hash -o " + mtPath + "')",
		"P=/usr/local/bin/leadpushctl":      "P=" + filepath.Join(bin, "leadpushctl"),
		"U=leadpush:leadpush":               "U=nobody:nogroup",
		"A=leadpushctl ingest":              "A=leadpushctl -config " + cfg + " ingest",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("contrib/sendmail lacks %q", old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	return s, mtPath
}

// newSendmailEnv starts leadpush-milter (loopback not trusted: the SASL
// login makes mail the application's; extraToml is appended to its config),
// a Sendmail lab with the contrib .mc lines and the ingest mailer, and
// leadpushd following Sendmail's log (maillog.format = "sendmail").
func newSendmailEnv(t *testing.T, extraToml string) (e *env, lab *sendmaillab.Lab, mailertable string) {
	t.Helper()
	sendmaillab.Require(t)
	dir, err := os.MkdirTemp("", "leadpush-e2e-sm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // the ingest mailer runs as nobody
	metricsAddr := freeAddr(t)
	e = &env{dir: dir, cfg: filepath.Join(dir, "leadpush.toml"), baseURL: "http://" + freeAddr(t), metricsURL: "http://" + metricsAddr + "/metrics"}
	sock := filepath.Join(dir, "milter.sock")
	e.milterAddr = "unix:" + sock
	conf := fmt.Sprintf(`
[store]
path = %q
[log]
level = "debug"
[milter]
listen = %q
trusted_networks = ["192.0.2.0/24"]
metrics_listen = %q
[tracking]
base_url = %q
keys = [%q]
text_links = true
[bounce]
domain = "bounce.example.com"
`, filepath.Join(dir, "leadpush.db"), e.milterAddr, metricsAddr, e.baseURL, testKey) + extraToml
	if err := os.WriteFile(e.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	e.startDaemon(t, "leadpush-milter")
	waitMilter(t, e.milterAddr)
	// The milter created the ledger as root; the mailer runs leadpushctl
	// as nobody (see newEnv's ingest).
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })

	mc, mailertable := sendmailMC(t, dir, sock, e.cfg)
	lab = sendmaillab.Start(t, sendmaillab.Options{Submission: true, ExtraMC: mc})
	// leadpushd follows Sendmail's log (maillog.format = "sendmail").
	f, err := os.OpenFile(e.cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.adminURL = "http://" + freeAddr(t)
	fmt.Fprintf(f, "[maillog]\npath = %q\nformat = \"sendmail\"\n[tracker]\nlisten = %q\n[admin]\nlisten = %q\n",
		lab.MailLog, strings.TrimPrefix(e.baseURL, "http://"), strings.TrimPrefix(e.adminURL, "http://"))
	f.Close()
	e.startDaemon(t, "leadpushd")
	waitHTTP(t, e.adminURL+"/healthz")
	return e, lab, mailertable
}

// TestSeedExampleThroughSendmail is the seed's swaks example through a real
// Sendmail's submission port (STARTTLS + AUTH LOGIN) with the real
// leadpush-milter on a unix socket and the contrib .mc lines; loopback is
// not trusted, so the SASL login is what makes the message the
// application's. Then a recipient the relay refuses: Sendmail's DSN to the
// VERP address goes through the mailertable and the ingest mailer to the
// real leadpushctl ingest, which suppresses the address: the next message
// to it is refused at RCPT for that recipient only. Last, two messages in
// one authenticated SMTP session are both recorded.
func TestSeedExampleThroughSendmail(t *testing.T) {
	e, lab, mailertable := newSendmailEnv(t, "")
	// leadpushctl doctor reads the generated sendmail.cf and the
	// mailertable: the milter on milter.listen with F=T, and the bounce
	// domain routed to the ingest mailer.
	doc := e.ctlCode(t, "doctor", "--sendmail-cf", lab.CF, "--mailertable", mailertable, "--user", "nobody")
	for _, want := range []string{"ok    sendmail: the leadpush milter is on " + e.milterAddr + " with F=T", "ok    sendmail: bounce.example.com goes to the leadpush mailer"} {
		if !strings.Contains(doc, want) {
			t.Errorf("doctor lacks %q:\n%s", want, doc)
		}
	}
	seed := func(to string) []string {
		return append(lab.SubmitArgs(), "--from", "app@example.com", "--to", to,
			"--header", "Subject: Your password reset link",
			"--header", `X-Leadpush-Tag: "password reset"`, "--header", "X-Leadpush-Tracking: clicks",
			"--body", "Use this link to reset your password: https://example.com/reset")
	}
	out, qid, err := lab.Swaks(t, seed("customer@example.com")...)
	if err != nil || qid == "" || !strings.Contains(out, "235 2.0.0 OK Authenticated") {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	got := lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(" id "+qid)) }, 30*time.Second)
	hdr := headerBlock(got.Data)
	if strings.Contains(strings.ToLower(hdr), "x-leadpush") {
		t.Errorf("delivered message still has control headers:\n%s", hdr)
	}
	if !strings.HasPrefix(got.From, "bounce+") || !strings.HasSuffix(got.From, "@bounce.example.com") {
		t.Errorf("envelope sender %q, want the VERP address", got.From)
	}
	if !strings.Contains(hdr, "List-Unsubscribe: <mailto:unsub+") || !bytes.Contains(got.Data, []byte(e.baseURL+"/c/")) {
		t.Errorf("no List-Unsubscribe or no tracked link:\n%s", got.Data)
	}
	m := e.message(t, qid)
	if m.Tag != "password reset" || m.Tracking != "clicks" || m.QueueID != qid || m.ReturnPath != got.From {
		t.Errorf("recorded %+v, want tag, clicks, queue id %s, return path %s", m, qid, got.From)
	}
	// Its delivery, from Sendmail's stat=Sent line.
	dv := e.waitEvents(t, "delivered from Sendmail's log", func(evs []ctlEvent) bool {
		return len(find(evs, "delivered", "customer@example.com")) == 1
	}, "--message", m.ID)
	if d := find(dv, "delivered", "customer@example.com")[0]; d.Detail.Source != "maillog" || d.Detail.Status != "2.0.0" {
		t.Errorf("delivered %+v, want from the maillog with dsn 2.0.0", d.Detail)
	}
	var full struct {
		SASLUser   string `json:"sasl_user"`
		ClientAddr string `json:"client_addr"`
	}
	if err := json.Unmarshal([]byte(e.ctl(t, "message", m.ID, "--json")), &full); err != nil || full.SASLUser != lab.SASLUser {
		t.Errorf("sasl_user %q (err %v), want %q", full.SASLUser, err, lab.SASLUser)
	}

	// A DSN from Sendmail itself to the VERP address, through the ingest mailer.
	lab.Sink.SetRcptReply("gone@example.net", 550, "5.1.1 <gone@example.net>: Recipient address rejected: User unknown")
	out, qid, err = lab.Swaks(t, seed("gone@example.net")...)
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	m = e.message(t, qid)
	evs := e.waitEvents(t, "a hard bounce from the DSN", func(evs []ctlEvent) bool {
		return len(find(evs, "hard_bounce", "gone@example.net")) == 1
	}, "--message", m.ID)
	// The log's bounce line or the DSN, whichever was read first (the other
	// is the same bounce, deduplicated).
	if hb := find(evs, "hard_bounce", "gone@example.net")[0]; hb.Detail.Status != "5.1.1" || (hb.Detail.Source != "dsn" && hb.Detail.Source != "maillog") {
		t.Errorf("hard bounce %+v, want status 5.1.1 from the dsn or the log", hb.Detail)
	}
	if sup := e.ctl(t, "suppressions", "list"); !strings.Contains(sup, "gone@example.net") {
		t.Errorf("gone@example.net not suppressed:\n%s", sup)
	}
	lab.WaitLog(t, regexp.MustCompile(`to=<bounce\+[a-z0-9]+@bounce\.example\.com>, .*mailer=leadpush, .*stat=Sent`), 30*time.Second)
	// The log's bounce line and the DSN are one hard bounce: wait until
	// leadpushd has read past the bounce line (the DSN's delivery to the
	// mailer is logged after it), then count.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if lag, ok := scrape(t, e.adminURL+"/metrics")["leadpush_maillog_lag_bytes"]; ok && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("leadpushd never caught up with Sendmail's log")
		}
	}
	if hb := find(e.events(t, "--message", m.ID), "hard_bounce", "gone@example.net"); len(hb) != 1 {
		t.Errorf("%d hard bounces for one failure seen in Sendmail's log and as its DSN: %+v", len(hb), hb)
	}

	// The bounced address is now refused at RCPT, that recipient only,
	// with Sendmail's "<addr>... " before the milter's text.
	e.waitMilterSuppressions(t, 1)
	out, qid, err = lab.Swaks(t, seed("gone@example.net,customer@example.com")...)
	if err != nil || qid == "" || !strings.Contains(out, "550 5.7.1 <gone@example.net>... <gone@example.net>: recipient address is on the suppression list") {
		t.Fatalf("swaks (err %v, qid %q): want gone@ refused and the message accepted:\n%s", err, qid, out)
	}
	got = lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(" id "+qid)) }, 30*time.Second)
	if len(got.To) != 1 || got.To[0] != "customer@example.com" {
		t.Errorf("delivered to %v, want only customer@example.com", got.To)
	}
	e.waitEvents(t, "a reject event", func(evs []ctlEvent) bool { return len(find(evs, "reject", "gone@example.net")) == 1 }, "--type", "reject")

	// Two messages in one authenticated session: the milter answers
	// continue at end of message, so it keeps the session and its SASL
	// login for the second message.
	c, err := smtp.Dial(lab.SubmitAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil { // the lab's self-signed certificate
		t.Fatal(err)
	}
	if err := c.Auth(smtp.PlainAuth("", lab.SASLUser, lab.SASLPass, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	sessions := []struct{ subject, tag, tracking, want string }{
		{"session one", "sess1", "none", "none"},
		{"session two", "sess2", "opens", "opens"},
	}
	for i, m := range sessions {
		if err := c.Mail("app@example.com"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(fmt.Sprintf("s%d@example.com", i+1)); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: %s\r\nX-Leadpush-Tag: %s\r\nX-Leadpush-Tracking: %s\r\n\r\n<html><body>hi</body></html>\r\n", m.subject, m.tag, m.tracking)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	c.Quit()
	for _, m := range sessions {
		got := lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte("Subject: "+m.subject+"\r\n")) }, 30*time.Second)
		qid := regexp.MustCompile(` id ([0-9A-Za-z]+)`).FindSubmatch(got.Data)
		if qid == nil || bytes.Contains(bytes.ToLower(got.Data), []byte("x-leadpush")) {
			t.Fatalf("%s delivered without a queue id or with control headers:\n%s", m.subject, got.Data)
		}
		if rec := e.message(t, string(qid[1])); rec.Tag != m.tag || rec.Tracking != m.want || rec.Subject != m.subject {
			t.Errorf("%s recorded as %+v", m.subject, rec)
		}
	}
}

// TestSendmailDropTrackingWebhooks is the rest of the e2e list through
// Sendmail: with [suppression] action = "drop" a suppressed recipient is
// accepted at RCPT and removed at end of message (Sendmail's delete
// recipient), the message goes to the others, and a reject event is
// recorded; tracking "all" of an HTML message writes the pixel and tracked
// links; and a json webhook endpoint gets the message's processed,
// delivered (from Sendmail's log) and reject events with its tag.
func TestSendmailDropTrackingWebhooks(t *testing.T) {
	hooks := newReceiver(t, "sendmail webhook secret")
	e, lab, _ := newSendmailEnv(t, fmt.Sprintf(`[suppression]
action = "drop"
refresh = "0s"
[[webhook]]
name = "app"
url = %q
format = "json"
secret = %q
`, hooks.srv.URL+"/hooks", hooks.secret))
	e.ctl(t, "suppressions", "add", "left@example.com", "--reason", "unsubscribe")
	html := `<html><body><p>News: <a href="https://example.com/article">read it</a></p></body></html>`
	out, qid, err := lab.Swaks(t, append(lab.SubmitArgs(), "--from", "news@example.com", "--to", "reader@example.com,left@example.com",
		"--header", "Subject: Weekly news", "--header", "X-Leadpush-Tag: newsletter", "--header", "X-Leadpush-Tracking: all",
		"--header", "MIME-Version: 1.0", "--header", "Content-Type: text/html; charset=utf-8", "--body", html)...)
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v qid=%q\n%s", err, qid, out)
	}
	got := lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(" id "+qid)) }, 30*time.Second)
	if len(got.To) != 1 || got.To[0] != "reader@example.com" {
		t.Errorf("delivered to %v, want only reader@example.com (left@ dropped)", got.To)
	}
	if !bytes.Contains(got.Data, []byte(e.baseURL+"/o/")) || !bytes.Contains(got.Data, []byte(e.baseURL+"/c/")) {
		t.Errorf("no pixel or tracked link in the delivered HTML:\n%s", got.Data)
	}
	m := e.message(t, qid)
	if m.Tracking != "all" || m.Tag != "newsletter" {
		t.Errorf("recorded %+v", m)
	}
	e.waitEvents(t, "delivered and reject", func(evs []ctlEvent) bool {
		return len(find(evs, "delivered", "reader@example.com")) == 1 && len(find(evs, "reject", "left@example.com")) == 1
	}, "--message", m.ID)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		bodies, _ := hooks.snapshot()
		types := map[int]bool{}
		for _, b := range bodies {
			var p webhook.Payload
			if json.Unmarshal(b, &p) == nil && p.Event.MessageID == m.ID {
				if len(p.EmailMessage.Tags) != 1 || p.EmailMessage.Tags[0] != "newsletter" {
					t.Errorf("webhook event %d without the tag: %+v", p.Event.Type, p.EmailMessage)
				}
				types[p.Event.Type] = true
			}
		}
		if types[webhook.TypeProcessed] && types[webhook.TypeDelivered] && types[webhook.TypeDropped] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got event types %v for %s, want processed, delivered and dropped", types, m.ID)
		}
	}
}
