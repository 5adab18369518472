package intake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/bounce"
	"github.com/leadpush/leadpush/notify/maillog"
)

func openStore(t *testing.T) *ledger.SQLite {
	t.Helper()
	s, err := ledger.OpenSQLite(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func recordMessage(t *testing.T, s *ledger.SQLite, qid string, created time.Time, rcpts ...string) *ledger.Message {
	t.Helper()
	m := &ledger.Message{ID: ledger.NewID(), QueueID: qid, EnvelopeFrom: "app@example.com", Recipients: rcpts,
		MessageID: "<" + qid + "@example.com>", Tracking: "all", CreatedAt: created}
	if err := s.Record(context.Background(), []*ledger.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

func logLine(t time.Time, prog, qid, rest string) string {
	return fmt.Sprintf("%s lab postfix/%s[123]: %s: %s\n", t.Format(time.Stamp), prog, qid, rest)
}

func events(t *testing.T, s *ledger.SQLite, typ ledger.EventType) []*ledger.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), ledger.Filter{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// runConsumer follows the log until want events exist, then stops it.
func runConsumer(t *testing.T, s *ledger.SQLite, path string, want int) *LogConsumer {
	t.Helper()
	c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, _ := s.Events(context.Background(), ledger.Filter{})
		if len(all) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a chance to record more than wanted, which the test would see
	cancel()
	<-done
	return c
}

func TestLogConsumer(t *testing.T) {
	s := openStore(t)
	now := time.Now().Truncate(time.Second)
	m := recordMessage(t, s, "4ABC1", now.Add(-time.Second), "ok@example.net", "full@example.net", "nobody@example.net")
	path := filepath.Join(t.TempDir(), "maillog")
	var b strings.Builder
	b.WriteString(logLine(now, "cleanup", "4ABC1", "message-id=<4ABC1@example.com>"))
	b.WriteString(logLine(now, "smtp", "4ABC1", "to=<ok@example.net>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as S1)"))
	b.WriteString(logLine(now, "smtp", "4ABC1", "to=<full@example.net>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.1, delays=0/0/0/0, dsn=4.2.2, status=deferred (host 127.0.0.1[127.0.0.1] said: 452 4.2.2 mailbox full (in reply to RCPT TO command))"))
	b.WriteString(logLine(now, "smtp", "4ABC1", "to=<full@example.net>, relay=127.0.0.1[127.0.0.1]:2525, delay=300, delays=0/0/0/0, dsn=4.2.2, status=deferred (host 127.0.0.1[127.0.0.1] said: 452 4.2.2 mailbox full (in reply to RCPT TO command))"))
	b.WriteString(logLine(now, "smtp", "4ABC1", "to=<nobody@example.net>, relay=127.0.0.1[127.0.0.1]:2525, delay=0.1, delays=0/0/0/0, dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no such user (in reply to RCPT TO command))"))
	b.WriteString(logLine(now.Add(-time.Hour), "smtpd", "9ABCDEF", "client=mx.example.org[203.0.113.9]"))
	b.WriteString(logLine(now.Add(-time.Hour), "smtp", "9ABCDEF", "to=<x@example.net>, relay=none, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)"))
	os.WriteFile(path, []byte(b.String()), 0o644)
	c := runConsumer(t, s, path, 3)
	if d := events(t, s, ledger.Delivered); len(d) != 1 || d[0].Recipient != "ok@example.net" || d[0].MessageID != m.ID || d[0].Detail.Status != "2.0.0" || d[0].Detail.Relay == "" {
		t.Errorf("delivered %+v", d)
	}
	if sb := events(t, s, ledger.SoftBounce); len(sb) != 1 || sb[0].Recipient != "full@example.net" || !strings.Contains(sb[0].Detail.Report, "452 4.2.2") {
		t.Errorf("soft bounces %+v: the same deferral twice is one event", sb)
	}
	hb := events(t, s, ledger.HardBounce)
	if len(hb) != 1 || hb[0].Recipient != "nobody@example.net" || hb[0].Detail.Status != "5.1.1" {
		t.Errorf("hard bounces %+v", hb)
	}
	if _, err := s.Suppressed(context.Background(), "nobody@example.net", time.Now()); err != nil {
		t.Errorf("hard-bounced address not suppressed: %v", err)
	}
	if c.Unknown.Load() != 1 {
		t.Errorf("unknown %d, want 1", c.Unknown.Load())
	}
	// a restart resumes after what it recorded: new lines only
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(logLine(now, "smtp", "4ABC1", "to=<full@example.net>, relay=127.0.0.1[127.0.0.1]:2525, delay=900, delays=0/0/0/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:2525: Connection refused)"))
	f.Close()
	runConsumer(t, s, path, 4)
	if sb := events(t, s, ledger.SoftBounce); len(sb) != 2 {
		t.Errorf("after restart: %d soft bounces, want 2 (a new reason is a new event)", len(sb))
	}
	if all, _ := s.Events(context.Background(), ledger.Filter{}); len(all) != 4 {
		t.Errorf("after restart: %d events, want 4 (nothing repeated)", len(all))
	}
}

func TestLogConsumerQueueIDReuse(t *testing.T) {
	s := openStore(t)
	now := time.Now().Truncate(time.Second)
	recordMessage(t, s, "DEF456", now.Add(-20*24*time.Hour), "old@example.net")
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, []byte(logLine(now, "smtp", "DEF456", "to=<new@example.net>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)")), 0o644)
	c := runConsumer(t, s, path, 1)
	if all, _ := s.Events(context.Background(), ledger.Filter{}); len(all) != 0 {
		t.Errorf("a line for a reused queue id was pinned on a 20-day-old message: %+v", all[0])
	}
	if c.Unknown.Load() != 0 && len(c.pending) != 1 {
		t.Errorf("recent unknown line neither pending nor counted")
	}
}

func TestLogConsumerWaitsForLateMessage(t *testing.T) {
	s := openStore(t)
	now := time.Now()
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, []byte(logLine(now, "smtp", "ABC123", "to=<a@example.net>, relay=x[1.2.3.4]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)")), 0o644)
	c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	time.Sleep(100 * time.Millisecond) // the line is read before the message exists
	recordMessage(t, s, "ABC123", now.Add(-time.Second), "a@example.net")
	// No new line comes (a quiet log): the pending line is retried at the
	// next poll anyway.
	deadline := time.Now().Add(5 * time.Second)
	for len(events(t, s, ledger.Delivered)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(events(t, s, ledger.Delivered)) != 1 {
		t.Fatal("status line of a message committed after it was read was lost")
	}
}

type tokens map[string]string // token -> message id

func (k tokens) Return(t string) (string, error) { return k.get("b:" + t) }
func (k tokens) Unsub(t string) (string, error)  { return k.get("u:" + t) }
func (k tokens) get(t string) (string, error) {
	if id, ok := k[t]; ok {
		return id, nil
	}
	return "", fmt.Errorf("bad token")
}

func TestIngestDSNMatchesVERPAndDedupsWithLog(t *testing.T) {
	s := openStore(t)
	m := recordMessage(t, s, "4Zb9Xk3Qz5z9sNq", time.Now(), "nobody@example.net")
	// the log saw the bounce first
	e := maillog.Entry{Time: time.Now(), QueueID: m.QueueID, Recipient: "nobody@example.net", DSN: "5.1.1", Status: maillog.StatusBounced, Reply: "550 5.1.1"}
	if err := s.RecordState(context.Background(), []*ledger.Event{LogEvent(e, m)}, "x", "y"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../bounce/testdata/postfix-5.1.1.eml")
	if err != nil {
		t.Fatal(err)
	}
	in := &Ingester{Store: s, Tokens: tokens{"b:TOK1": m.ID}, Logger: quiet}
	res, err := in.Ingest(context.Background(), bytes.NewReader(raw), "bounce+TOK1@bounce.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != bounce.KindBounce || res.MessageID != m.ID || len(res.Events) != 1 || res.Events[0].Type != ledger.HardBounce {
		t.Fatalf("result %+v", res)
	}
	if hb := events(t, s, ledger.HardBounce); len(hb) != 1 {
		t.Errorf("%d hard bounces: the log's and the DSN's must be one", len(hb))
	}
	stored, _ := s.InboundList(context.Background(), "", 10)
	if len(stored) != 1 || stored[0].MessageID != m.ID || !bytes.Equal(stored[0].Raw, raw) {
		t.Errorf("inbound %+v", stored)
	}
}

func TestIngestKinds(t *testing.T) {
	s := openStore(t)
	m := recordMessage(t, s, "Q1", time.Now(), "customer@example.com")
	in := &Ingester{Store: s, Tokens: tokens{"u:tokU": m.ID}, Logger: quiet}
	cases := []struct {
		name, to, data string
		kind           bounce.Kind
		event          ledger.EventType
	}{
		{"unsub", "unsub+tokU@bounce.example.com", "From: Customer <CUSTOMER@example.com>\r\nTo: unsub+tokU@bounce.example.com\r\nSubject: unsub\r\n\r\n", bounce.KindUnsubscribe, ledger.Unsubscribe},
		{"forged token", "unsub+nope@bounce.example.com", "From: other@example.org\r\nSubject: hello\r\n\r\nhi\r\n", bounce.KindUnsubscribe, ""},
		{"unknown", "bounce@bounce.example.com", "From: someone@example.org\r\nSubject: question\r\n\r\nhello\r\n", bounce.KindUnknown, ""},
	}
	for _, c := range cases {
		res, err := in.Ingest(context.Background(), strings.NewReader(c.data), c.to)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.Kind != c.kind {
			t.Errorf("%s: kind %s, want %s", c.name, res.Kind, c.kind)
		}
		if (c.event == "") != (len(res.Events) == 0) || (c.event != "" && res.Events[0].Type != c.event) {
			t.Errorf("%s: events %+v", c.name, res.Events)
		}
	}
	if _, err := s.Suppressed(context.Background(), "customer@example.com", time.Now()); err != nil {
		t.Error("unsub mail did not suppress the recipient")
	}
	if got, _ := s.InboundList(context.Background(), "", 10); len(got) != len(cases) {
		t.Errorf("%d inbound rows, want every message kept (%d)", len(got), len(cases))
	}
}

// TestUnsubMailSeveralRecipients: the unsub mail of a message to several
// recipients unsubscribes nobody, even From one of them: any recipient
// could forge it for another.
func TestUnsubMailSeveralRecipients(t *testing.T) {
	s := openStore(t)
	m := recordMessage(t, s, "Q2", time.Now(), "jane@example.com", "bob@example.com")
	in := &Ingester{Store: s, Tokens: tokens{"u:tokM": m.ID}, Logger: quiet}
	res, err := in.Ingest(context.Background(), strings.NewReader("From: bob@example.com\r\nTo: unsub+tokM@bounce.example.com\r\nSubject: unsub\r\n\r\n"), "unsub+tokM@bounce.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 0 || !strings.Contains(res.Reason, "several recipients") {
		t.Errorf("events %+v, reason %q", res.Events, res.Reason)
	}
	if _, err := s.Suppressed(context.Background(), "bob@example.com", time.Now()); err == nil {
		t.Error("bob@example.com suppressed by a From header")
	}
}

type failingStore struct{ IngestStore }

func (failingStore) RecordInbound(context.Context, *ledger.Inbound, []*ledger.Event) error {
	return fmt.Errorf("disk I/O error")
}

func TestIngestTemporaryFailure(t *testing.T) {
	s := openStore(t)
	in := &Ingester{Store: failingStore{s}, Logger: quiet}
	_, err := in.Ingest(context.Background(), strings.NewReader("Subject: x\r\n\r\n"), "bounce@x.example")
	if err == nil || !strings.Contains(err.Error(), "temporary") {
		t.Errorf("err = %v, want ErrTemporary so the MTA retries", err)
	}
}
