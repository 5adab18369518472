package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// TestForgedReportsThroughPostfix is issue 14's security rule through a
// real Postfix: a client the milter does not trust (127.0.0.2) sends the
// bounce domain a forged DSN with no VERP token, matched only by a
// Message-ID every recipient can see, naming 50 made-up addresses, and a
// forged ARF report naming another; both reach leadpushctl ingest through
// the pipe transport and suppress nobody. A real bounce of a real
// recipient (Postfix's own DSN to the VERP address) still suppresses it,
// with reason hard_bounce and bounce reason userunknown.
func TestForgedReportsThroughPostfix(t *testing.T) {
	e := newEnv(t, envOptions{daemon: true, ingest: true, trusted: "127.0.0.1/32", labOptions: postfixlab.Options{
		ExtraMain: "relay_domains = bounce.example.com\n" +
			"transport_maps = inline:{ bounce.example.com=leadpush-ingest: }\n" +
			"leadpush-ingest_destination_recipient_limit = 1\n",
		ExtraMaster: "leadpush-ingest unix - n n - - pipe\n" +
			"  flags=Rq user=nobody argv={{BIN}}/leadpushctl -config {{CONFIG}} ingest --recipient ${recipient}\n",
	}})
	e.lab.Sink.SetRcptReply("gone@example.net", 550, "5.1.1 <gone@example.net>: Recipient address rejected: User unknown in virtual mailbox table")
	out, qid, err := e.lab.Swaks(t, "--from", "app@example.com", "--to", "reader@example.net,gone@example.net",
		"--header", "Message-ID: <newsletter-42@app.example.com>", "--header", "Subject: news", "--body", "hello")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := e.message(t, qid)

	// The forgeries, from an untrusted client.
	var dsn strings.Builder
	dsn.WriteString("Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\n" +
		"Content-Type: text/plain\r\n\r\nsorry\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n")
	for i := range 50 {
		fmt.Fprintf(&dsn, "\r\nFinal-Recipient: rfc822; victim%d@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n", i)
	}
	dsn.WriteString("\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <newsletter-42@app.example.com>\r\nFrom: app@example.com\r\n\r\n--B--\r\n")
	arf := "Subject: Abuse report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\r\n" +
		"--A\r\nContent-Type: text/plain\r\n\r\nreport\r\n--A\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x/1\r\n" +
		"Version: 1\r\nOriginal-Rcpt-To: <another-victim@example.org>\r\n\r\n--A\r\nContent-Type: text/rfc822-headers\r\n\r\n" +
		"Message-ID: <newsletter-42@app.example.com>\r\nTo: another-victim@example.org\r\n\r\n--A--\r\n"
	for i, data := range []string{dsn.String(), arf} {
		f := filepath.Join(t.TempDir(), fmt.Sprint("forged", i, ".eml"))
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _, err := e.lab.Swaks(t, "--local-interface", "127.0.0.2", "--from", "", "--to", "bounce@bounce.example.com", "--data", f)
		if err != nil {
			t.Fatalf("swaks from 127.0.0.2: %v\n%s", err, out)
		}
	}

	// Postfix's own DSN for gone@ reaches ingest through the VERP address.
	deadline := time.Now().Add(60 * time.Second)
	for {
		in := e.ctl(t, "inbound", "--limit", "10")
		if strings.Count(in, "\n") >= 4 && strings.Contains(in, "complaint") && strings.Contains(in, "not recipients") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the three returned mails never all reached ingest; inbound:\n%s", in)
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.waitEvents(t, "the real hard bounce", func(evs []ctlEvent) bool { return len(find(evs, "hard_bounce", "gone@example.net")) == 1 }, "--message", m.ID)
	sup := e.ctl(t, "suppressions", "list")
	if strings.Contains(sup, "victim") || strings.Count(strings.TrimSpace(sup), "\n") != 1 || !strings.Contains(sup, "gone@example.net") {
		t.Errorf("suppression list after the forgeries:\n%s", sup)
	}
	var why struct {
		Suppression struct {
			Reason       string `json:"reason"`
			BounceReason string `json:"bounce_reason"`
		} `json:"suppression"`
	}
	if err := json.Unmarshal([]byte(e.ctl(t, "suppressions", "why", "--json", "gone@example.net")), &why); err != nil {
		t.Fatal(err)
	}
	if why.Suppression.Reason != "hard_bounce" || why.Suppression.BounceReason != "userunknown" {
		t.Errorf("the real bounce's entry: %+v", why.Suppression)
	}
	if evs := e.events(t, "--type", "spam"); len(evs) != 0 {
		t.Errorf("the forged ARF recorded %+v", evs)
	}
}
