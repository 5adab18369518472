package intake

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/bounce"
	"github.com/leadpush/leadpush/notify/maillog"
)

// dsn builds an RFC 3464 report about the message with Message-ID msgID,
// one block per recipient as "address status action diagnostic".
func dsn(msgID string, rcpts ...[4]string) string {
	var b strings.Builder
	b.WriteString("From: MAILER-DAEMON@mx.example.net\r\nTo: bounce@bounce.example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n" +
		"--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry.\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n")
	for _, r := range rcpts {
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\nDiagnostic-Code: smtp; %s\r\n", r[0], r[2], r[1], r[3])
	}
	fmt.Fprintf(&b, "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: %s\r\nFrom: app@example.com\r\nSubject: Hi\r\n\r\n--B--\r\n", msgID)
	return b.String()
}

// TestForgedReportsSuppressNobody: a DSN or ARF report matched only by
// the Message-ID every recipient can see, naming addresses that were not
// recipients of that message, records nothing and suppresses nobody; the
// message is still kept as inbound.
func TestForgedReportsSuppressNobody(t *testing.T) {
	s := openStore(t)
	m := recordMessage(t, s, "QF1", time.Now(), "real@example.com")
	in := &Ingester{Store: s, Logger: quiet}
	var strangers [][4]string
	for i := range 50 {
		strangers = append(strangers, [4]string{fmt.Sprintf("stranger%d@example.org", i), "5.1.1", "failed", "550 5.1.1 User unknown"})
	}
	res, err := in.Ingest(context.Background(), strings.NewReader(dsn(m.MessageID, strangers...)), "bounce@bounce.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.MessageID != m.ID || len(res.Events) != 0 || !strings.Contains(res.Reason, "not recipients") {
		t.Errorf("forged DSN: %+v", res)
	}
	arf := "From: abuse@isp.example\r\nTo: bounce@bounce.example.com\r\nSubject: Abuse report\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nreport\r\n" +
		"--A\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\nOriginal-Rcpt-To: <victim@example.org>\r\n" +
		"\r\n--A\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: " + m.MessageID + "\r\nTo: victim@example.org\r\n\r\n--A--\r\n"
	res, err = in.Ingest(context.Background(), strings.NewReader(arf), "bounce@bounce.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != bounce.KindComplaint || len(res.Events) != 0 {
		t.Errorf("forged ARF: %+v", res)
	}
	if list, _ := s.Suppressions(context.Background()); len(list) != 0 {
		t.Errorf("forged reports suppressed %d addresses", len(list))
	}
	if in, _ := s.InboundList(context.Background(), "", 10); len(in) != 2 {
		t.Errorf("%d inbound kept, want both", len(in))
	}
	// The real recipient, named by the same kind of report, counts.
	res, _ = in.Ingest(context.Background(), strings.NewReader(dsn(m.MessageID, [4]string{"real@example.com", "5.1.1", "failed", "550 5.1.1 <real@example.com>: Recipient address rejected: User unknown"})), "bounce@bounce.example.com")
	if len(res.Events) != 1 || res.Events[0].Type != ledger.HardBounce || res.Events[0].Detail.BounceReason != "userunknown" {
		t.Fatalf("real bounce: %+v", res.Events)
	}
	sp, err := s.Suppressed(context.Background(), "real@example.com", time.Now())
	if err != nil || sp.Reason != ledger.ReasonHardBounce || sp.BounceReason != "userunknown" {
		t.Errorf("real recipient: %+v, %v", sp, err)
	}
}

// TestHardMeansDead: policy rejections, full mailboxes, expiries and delay
// notices are soft and suppress nobody (unless the soft-bounce limit is
// reached); only a dead address is hard. The log and a DSN of the same
// recipient agree and count once.
func TestHardMeansDead(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	now := time.Now()
	for _, c := range []struct {
		name   string
		status string
		dsn    string
		reply  string
		typ    ledger.EventType
		reason string
		detail string
	}{
		{"user unknown", maillog.StatusBounced, "5.1.1", "host mx[192.0.2.1] said: 550 5.1.1 <a@x>: Recipient address rejected: User unknown in virtual mailbox table", ledger.HardBounce, "userunknown", ""},
		{"blocked", maillog.StatusBounced, "5.7.1", "host mx[192.0.2.1] said: 550 5.7.1 Service unavailable; Client host [198.51.100.1] blocked using zen.spamhaus.org", ledger.SoftBounce, "blocked", ""},
		{"spam detected", maillog.StatusBounced, "5.7.1", "host mx said: 554 5.7.1 Message rejected as spam by Content Filtering", ledger.SoftBounce, "spamdetected", ""},
		{"mailbox full", maillog.StatusBounced, "5.2.2", "host mx said: 552 5.2.2 Mailbox full", ledger.SoftBounce, "mailboxfull", ""},
		{"expired", maillog.StatusExpired, "4.4.1", "connect to mx[192.0.2.1]:25: Connection timed out", ledger.SoftBounce, "expired", "expired"},
		{"deferred", maillog.StatusDeferred, "4.2.2", "host mx said: 452 4.2.2 Mailbox full", ledger.SoftBounce, "mailboxfull", "deferred"},
	} {
		rcpt := strings.ReplaceAll(c.name, " ", "-") + "@example.com"
		m := recordMessage(t, s, "Q-"+rcpt, now, rcpt)
		ev := LogEvent(maillog.Entry{Time: now, QueueID: m.QueueID, Recipient: rcpt, DSN: c.dsn, Status: c.status, Reply: c.reply}, m)
		if ev == nil || ev.Type != c.typ || ev.Detail.BounceReason != c.reason || ev.Detail.Reason != c.detail {
			t.Errorf("%s: %+v, want %s %s %q", c.name, ev, c.typ, c.reason, c.detail)
			continue
		}
		if err := s.Record(ctx, nil, []*ledger.Event{ev}); err != nil {
			t.Fatal(err)
		}
		_, err := s.Suppressed(ctx, rcpt, now)
		if suppressed := err == nil; suppressed != (c.typ == ledger.HardBounce) {
			t.Errorf("%s: suppressed %v", c.name, suppressed)
		}
	}
	// A policy rejection in the log and its DSN: one soft event.
	m := recordMessage(t, s, "QP", now, "p@example.com")
	ev := LogEvent(maillog.Entry{Time: now, QueueID: "QP", Recipient: "p@example.com", DSN: "5.7.1", Status: maillog.StatusBounced,
		Reply: "host mx said: 550 5.7.1 Message rejected due to content restrictions"}, m)
	if err := s.Record(ctx, nil, []*ledger.Event{ev}); err != nil {
		t.Fatal(err)
	}
	in := &Ingester{Store: s, Logger: quiet}
	res, err := in.Ingest(ctx, strings.NewReader(dsn(m.MessageID, [4]string{"p@example.com", "5.7.1", "failed", "550 5.7.1 Message rejected due to content restrictions"})), "bounce@bounce.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 1 || res.Events[0].Type != ledger.SoftBounce || res.Events[0].Detail.BounceReason != ev.Detail.BounceReason {
		t.Errorf("DSN of the same failure: %+v (log: %+v)", res.Events, ev)
	}
	evs, _ := s.Events(ctx, ledger.Filter{MessageID: m.ID})
	if len(evs) != 1 {
		t.Errorf("%d events for one failure seen in the log and as a DSN", len(evs))
	}
	// A delay notice: a soft event marked delayed, never counted.
	d := recordMessage(t, s, "QD", now, "slow@example.com")
	res, _ = in.Ingest(ctx, strings.NewReader(dsn(d.MessageID, [4]string{"slow@example.com", "4.4.7", "delayed", "421 4.4.7 try later"})), "bounce@bounce.example.com")
	if len(res.Events) != 1 || res.Events[0].Type != ledger.SoftBounce || res.Events[0].Detail.Reason != "delayed" || res.Events[0].Escalates {
		t.Errorf("delay notice: kind %s, %+v", res.Kind, res.Events)
	}
}

// TestSoftBouncesEscalate: mailbox-full DSNs of five messages within the
// window suppress the address with reason soft_bounce_limit.
func TestSoftBouncesEscalate(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	in := &Ingester{Store: s, Logger: quiet}
	for i := range ledger.DefaultSoftBounceLimit {
		m := recordMessage(t, s, fmt.Sprint("QE", i), time.Now(), "full@example.com")
		if _, err := s.Suppressed(ctx, "full@example.com", time.Now()); err == nil {
			t.Fatalf("suppressed after %d soft bounces", i)
		}
		res, err := in.Ingest(ctx, strings.NewReader(dsn(m.MessageID, [4]string{"full@example.com", "5.2.2", "failed", "552 5.2.2 Mailbox full"})), "bounce@bounce.example.com")
		if err != nil || len(res.Events) != 1 || !res.Events[0].Escalates {
			t.Fatalf("soft bounce %d: %+v, %v", i, res.Events, err)
		}
	}
	sp, err := s.Suppressed(ctx, "full@example.com", time.Now())
	if err != nil || sp.Reason != ledger.ReasonSoftBounceLimit || sp.BounceReason != "mailboxfull" {
		t.Errorf("after %d mailbox-full bounces: %+v, %v", ledger.DefaultSoftBounceLimit, sp, err)
	}
}
