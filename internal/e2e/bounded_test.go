package e2e

import (
	"bytes"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/internal/testmsg"
)

// postfixFailure is what Postfix logs when one of its processes dies or
// gives up on a queue file.
var postfixFailure = regexp.MustCompile(`(?i)killed by signal|fatal:|panic:|queue file write error|message file too big|status=(deferred|bounced)`)

// TestControlHeaderFloodThroughPostfix: 20,000 X-Leadpush-* headers from an
// untrusted client (XCLIENT makes smtpd, and so the milter, see
// 192.0.2.7) are answered within 5 s by a 550 5.7.1 naming the count;
// Postfix's cleanup neither crashes nor fails its queue file (with one
// deletion request per header, 11,000 made it abort with signal 6).
func TestControlHeaderFloodThroughPostfix(t *testing.T) {
	e := newEnv(t, envOptions{labOptions: postfixlab.Options{
		ExtraMain: "smtpd_authorized_xclient_hosts = 127.0.0.0/8\nmynetworks = 127.0.0.0/8, 192.0.2.0/24\n",
	}})
	c, err := textproto.Dial("tcp", e.lab.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := func(code int, line string) string {
		t.Helper()
		id, err := c.Cmd("%s", line)
		if err != nil {
			t.Fatal(err)
		}
		c.StartResponse(id)
		defer c.EndResponse(id)
		_, msg, err := c.ReadResponse(code)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		return msg
	}
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	cmd(250, "EHLO e2e.localdomain")
	cmd(220, "XCLIENT ADDR=192.0.2.7 NAME=[UNAVAILABLE]")
	cmd(250, "EHLO mx.internet.example")
	cmd(250, "MAIL FROM:<someone@internet.example>")
	cmd(250, "RCPT TO:<customer@example.com>")
	cmd(354, "DATA")
	var data bytes.Buffer
	data.WriteString("From: someone@internet.example\r\nTo: customer@example.com\r\nSubject: flood\r\n")
	for i := range 20000 {
		data.WriteString("X-Leadpush-Flood: " + strings.Repeat("x", i%40) + "\r\n")
	}
	data.WriteString("\r\nbody\r\n")
	w := c.DotWriter()
	if _, err := w.Write(data.Bytes()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	code, msg, err := c.ReadResponse(0)
	took := time.Since(start)
	t.Logf("end of data answered in %v: %d %s", took, code, msg)
	if took > 5*time.Second {
		t.Errorf("answered in %v, want within 5 s", took)
	}
	if code != 550 || !strings.Contains(msg, "5.7.1") || !strings.Contains(msg, "20000 X-Leadpush-*") {
		t.Errorf("end of data: %d %s (%v), want 550 5.7.1 naming 20000 X-Leadpush-* headers", code, msg, err)
	}
	cmd(250, "RSET")
	cmd(221, "QUIT")

	if got := e.milterMetric(t, "leadpush_milter_control_floods_total"); got != 1 {
		t.Errorf("control_floods_total %v, want 1", got)
	}
	b, _ := os.ReadFile(e.dir + "/leadpush-milter.log")
	if !bytes.Contains(b, []byte("client=192.0.2.7")) || !bytes.Contains(b, []byte("trusted=false")) {
		t.Errorf("the milter did not log the refusal of an untrusted client:\n%s", tail(string(b), 10))
	}
	time.Sleep(time.Second) // let postlogd write what cleanup and smtpd said
	log, _ := os.ReadFile(e.lab.MailLog)
	if m := postfixFailure.FindAll(log, -1); m != nil {
		t.Errorf("Postfix logged failures %q:\n%s", m, tail(string(log), 30))
	}
	if !e.lab.QueueEmpty() || len(e.lab.Sink.Messages()) != 0 {
		t.Errorf("the refused message was queued or delivered")
	}
}

// TestBigLinkDenseMessageDelivered: a trusted 10.1 MB message with 1,500
// links, under Postfix's message_size_limit (10,240,000) as sent but not
// once tracked, is delivered untracked instead of refused with "552 message
// file too big"; List-Unsubscribe and VERP are still added.
func TestBigLinkDenseMessageDelivered(t *testing.T) {
	e := newEnv(t, envOptions{})
	if got := strings.TrimSpace(e.lab.Postconf(t, "-h", "message_size_limit")); got != "10240000" {
		t.Fatalf("message_size_limit %s, want Postfix's default 10240000", got)
	}
	hdr := "From: reports@example.com\r\nTo: customer@example.org\r\nSubject: Your catalog\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\nX-Leadpush-Tag: catalog\r\n\r\n"
	body := testmsg.Links(10_100_000-len(hdr), 1500)
	c, err := smtpDial(e.lab.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	qid := c.send(t, "reports@example.com", "customer@example.org", hdr+string(body))
	c.quit()
	got := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool {
		return bytes.Contains(r.Data, []byte(" id "+qid))
	}, 60*time.Second)
	h := headerBlock(got.Data)
	if !strings.Contains(h, "List-Unsubscribe:") || !strings.HasPrefix(got.From, "bounce+") || strings.Contains(strings.ToLower(h), "x-leadpush") {
		t.Errorf("sender %q, header:\n%s", got.From, h)
	}
	if bytes.Contains(got.Data, []byte(e.baseURL+"/c/")) || !bytes.Contains(got.Data, []byte(`href="https://www.example.com/catalog/item/1499?`)) {
		t.Error("the body was tracked, or lost its links")
	}
	if n := e.milterMetric(t, "leadpush_milter_rewrites_too_big_total"); n != 1 {
		t.Errorf("rewrites_too_big_total %v, want 1", n)
	}
	log, _ := os.ReadFile(e.lab.MailLog)
	if m := postfixFailure.FindAll(log, -1); m != nil {
		t.Errorf("Postfix logged failures %q", m)
	}
}
