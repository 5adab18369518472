package milter

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// harness is a real Server on 127.0.0.1:0 recording into a real SQLite
// ledger through a real Writer.
type harness struct {
	srv     *Server
	network string // tcp: full replies; unix: lean negotiation
	addr    string
	store   *ledger.SQLite
	w       *ledger.Writer
}

func newHarness(t testing.TB, network string, mod func(*Config)) *harness {
	t.Helper()
	store, err := ledger.OpenSQLite(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	w := ledger.NewWriter(store, ledger.WriterOptions{})
	cfg := Config{
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		RecordHeaders:   []string{"*-ID"},
		Recorder:        w,
		Suppressions:    store,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "milter.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	h := &harness{srv: srv, network: network, addr: ln.Addr().String(), store: store, w: w}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		w.Close(ctx)
		store.Close()
	})
	return h
}

func (h *harness) sync(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// msg is one message as an MTA would present it.
type msg struct {
	auth    string
	from    string
	rcpts   []string
	headers [][2]string
	body    string
	queueID string
}

type result struct {
	mods      []gomilter.ModifyAction
	act       *gomilter.Action
	rcptActs  []*gomilter.Action
	deleted   []string // "Name#index"
	added     map[string]string
	body      string
	replaced  bool
	newSender string
}

func (h *harness) session(t testing.TB, clientIP string) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions(h.network, h.addr, gomilter.ClientOptions{
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody | gomilter.OptRemoveRcpt | gomilter.OptAddRcpt,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	})
	t.Cleanup(func() { c.Close() })
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Conn("client.example", gomilter.FamilyInet, 40000, clientIP); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo("client.example"); err != nil {
		t.Fatal(err)
	}
	return s
}

func send(t testing.TB, s *gomilter.ClientSession, m msg) result {
	t.Helper()
	var r result
	if m.auth != "" {
		if err := s.Macros(gomilter.CodeMail, "{auth_authen}", m.auth); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Mail(m.from, nil); err != nil {
		t.Fatal(err)
	}
	for _, rc := range m.rcpts {
		a, err := s.Rcpt(rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.rcptActs = append(r.rcptActs, a)
	}
	for _, h := range m.headers {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if m.queueID != "" {
		if err := s.Macros(gomilter.CodeEOB, "i", m.queueID); err != nil {
			t.Fatal(err)
		}
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader(m.body))
	if err != nil {
		t.Fatal(err)
	}
	r.mods, r.act, r.added = mods, act, map[string]string{}
	var body strings.Builder
	for _, md := range mods {
		switch md.Code {
		case gomilter.ActChangeHeader:
			if md.HeaderValue == "" {
				r.deleted = append(r.deleted, md.HeaderName+"#"+strconv.Itoa(int(md.HeaderIndex)))
			}
		case gomilter.ActAddHeader:
			r.added[md.HeaderName] = md.HeaderValue
		case gomilter.ActReplBody:
			r.replaced = true
			body.Write(md.Body)
		case gomilter.ActChangeFrom:
			r.newSender = md.From
		}
	}
	r.body = body.String()
	return r
}

var seedHeaders = [][2]string{
	{"From", "app@example.com"},
	{"To", "customer@example.com"},
	{"Subject", "Your password reset link"},
	{"Message-ID", "<seed@example.com>"},
	{"X-Leadpush-Tag", `"password reset"`},
	{"X-Leadpush-Tracking", "clicks"},
	{"Contact-ID", "12345"},
}

func TestSeedExampleRecordedAndStripped(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		s := h.session(t, "127.0.0.1")
		r := send(t, s, msg{from: "app@example.com", rcpts: []string{"customer@example.com"}, headers: seedHeaders,
			body: "Use this link to reset your password: https://example.com/reset\r\n", queueID: "4AbCdEf"})
		if r.act.Code != gomilter.ActContinue && r.act.Code != gomilter.ActAccept {
			t.Fatalf("final action %c", r.act.Code)
		}
		want := map[string]bool{"X-Leadpush-Tag#1": true, "X-Leadpush-Tracking#1": true}
		if len(r.deleted) != 2 || !want[r.deleted[0]] || !want[r.deleted[1]] {
			t.Errorf("deleted %v, want both control headers", r.deleted)
		}
		if r.replaced {
			t.Error("body replaced although tracking is not configured")
		}
		h.sync(t)
		ms, err := h.store.Messages(context.Background(), ledger.Filter{})
		if err != nil || len(ms) != 1 {
			t.Fatalf("messages %v %v", ms, err)
		}
		m := ms[0]
		if m.Tag != "password reset" || m.Tracking != "clicks" || m.QueueID != "4AbCdEf" || m.Subject != "Your password reset link" ||
			m.MessageID != "<seed@example.com>" || m.EnvelopeFrom != "app@example.com" || len(m.Recipients) != 1 ||
			m.ClientAddr != "127.0.0.1" || !token.ValidMessageID(m.ID) {
			t.Errorf("recorded %+v", m)
		}
		if len(m.Headers) != 1 || m.Headers[0] != (ledger.Header{Name: "Contact-ID", Value: "12345"}) {
			t.Errorf("custom headers %+v (Message-ID must not match the *-ID glob)", m.Headers)
		}
		evs, _ := h.store.Events(context.Background(), ledger.Filter{MessageID: m.ID})
		if len(evs) != 1 || evs[0].Type != ledger.Processed {
			t.Errorf("events %+v, want one processed", evs)
		}
	})
}

func TestUntrustedOnlyStripped(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		s := h.session(t, "192.0.2.7")
		hdrs := append([][2]string{}, seedHeaders...)
		hdrs = append(hdrs, [2]string{"x-leadpush-tag", "second"}, [2]string{"X-LEADPUSH-Whatever", "x"})
		r := send(t, s, msg{from: "someone@internet.example", rcpts: []string{"customer@example.com"}, headers: hdrs, body: "hi\r\n"})
		got := strings.Join(r.deleted, " ")
		for _, want := range []string{"X-Leadpush-Tag#2", "X-Leadpush-Tag#1", "X-Leadpush-Tracking#1", "X-LEADPUSH-Whatever#1"} {
			if !strings.Contains(got, want) {
				t.Errorf("deleted %q, missing %s", got, want)
			}
		}
		if strings.Index(got, "#2") > strings.Index(got, "X-Leadpush-Tag#1") {
			t.Errorf("duplicates must be deleted highest index first: %q", got)
		}
		h.sync(t)
		if ms, _ := h.store.Messages(context.Background(), ledger.Filter{}); len(ms) != 0 {
			t.Errorf("untrusted message recorded: %+v", ms[0])
		}
	})
}

func TestSASLAuthenticatedIsTrusted(t *testing.T) {
	h := newHarness(t, "tcp", nil)
	s := h.session(t, "198.51.100.9")
	send(t, s, msg{auth: "app@lab", from: "app@example.com", rcpts: []string{"c@example.com"}, headers: seedHeaders, body: "x\r\n"})
	h.sync(t)
	ms, _ := h.store.Messages(context.Background(), ledger.Filter{})
	if len(ms) != 1 || ms[0].SASLUser != "app@lab" || ms[0].ClientAddr != "198.51.100.9" {
		t.Fatalf("authenticated message: %+v", ms)
	}
}

func TestTwoMessagesOneConnection(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		s := h.session(t, "127.0.0.1")
		send(t, s, msg{from: "a@example.com", rcpts: []string{"one@example.com"}, queueID: "Q1",
			headers: [][2]string{{"Subject", "first"}, {"X-Leadpush-Tag", "one"}, {"X-Leadpush-Tracking", "none"}}, body: "1\r\n"})
		r := send(t, s, msg{from: "b@example.com", rcpts: []string{"two@example.com", "three@example.com"}, queueID: "Q2",
			headers: [][2]string{{"Subject", "second"}}, body: "2\r\n"})
		if len(r.deleted) != 0 {
			t.Errorf("second message had no control headers, yet deleted %v", r.deleted)
		}
		h.sync(t)
		one, err := h.store.MessageByQueueID(context.Background(), "Q1")
		if err != nil {
			t.Fatal(err)
		}
		two, err := h.store.MessageByQueueID(context.Background(), "Q2")
		if err != nil {
			t.Fatal("second message on the connection not recorded:", err)
		}
		if one.Tag != "one" || one.Tracking != "none" || one.Subject != "first" || len(one.Recipients) != 1 {
			t.Errorf("first %+v", one)
		}
		if two.Tag != "" || two.Tracking != "all" || two.Subject != "second" || len(two.Recipients) != 2 || two.EnvelopeFrom != "b@example.com" {
			t.Errorf("second %+v", two)
		}
		if one.ID == two.ID {
			t.Error("same message id for two messages")
		}
	})
}

func TestAbortResetsMessage(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		s := h.session(t, "127.0.0.1")
		if _, err := s.Mail("a@example.com", nil); err != nil {
			t.Fatal(err)
		}
		s.Rcpt("x@example.com", nil)
		s.HeaderField("X-Leadpush-Tag", "aborted")
		if err := s.Abort(); err != nil {
			t.Fatal(err)
		}
		send(t, s, msg{from: "b@example.com", rcpts: []string{"y@example.com"}, queueID: "QB", headers: [][2]string{{"Subject", "after rset"}}, body: "b\r\n"})
		h.sync(t)
		m, err := h.store.MessageByQueueID(context.Background(), "QB")
		if err != nil || m.Tag != "" || len(m.Recipients) != 1 || m.Recipients[0] != "y@example.com" {
			t.Fatalf("state leaked across RSET: %+v %v", m, err)
		}
	})
}

func TestSuppressedRecipientRejected(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		h.store.Suppress(context.Background(), ledger.Suppression{Address: "Gone@Example.com", Reason: "hard_bounce"})
		s := h.session(t, "127.0.0.1")
		r := send(t, s, msg{from: "a@example.com", rcpts: []string{"ok@example.com", "gone@example.com"}, queueID: "QS",
			headers: [][2]string{{"Subject", "s"}}, body: "b\r\n"})
		if r.rcptActs[0].Code != gomilter.ActContinue {
			t.Errorf("unsuppressed recipient: %+v", r.rcptActs[0])
		}
		a := r.rcptActs[1]
		if a.Code != gomilter.ActReplyCode || a.SMTPCode != 550 || !strings.Contains(a.SMTPText, "5.7.1") || !strings.Contains(a.SMTPText, "gone@example.com") {
			t.Errorf("suppressed recipient: %+v", a)
		}
		h.sync(t)
		m, _ := h.store.MessageByQueueID(context.Background(), "QS")
		if m == nil || len(m.Recipients) != 1 || m.Recipients[0] != "ok@example.com" {
			t.Fatalf("message %+v", m)
		}
		evs, _ := h.store.Events(context.Background(), ledger.Filter{Type: ledger.Reject})
		if len(evs) != 1 || evs[0].Recipient != "gone@example.com" || evs[0].MessageID != m.ID || evs[0].Detail.Reason != "hard_bounce" {
			t.Errorf("reject events %+v", evs)
		}
		// untrusted mail is not checked: the list is about our own sending
		s2 := h.session(t, "192.0.2.1")
		r = send(t, s2, msg{from: "x@internet.example", rcpts: []string{"gone@example.com"}, headers: [][2]string{{"Subject", "in"}}, body: "b\r\n"})
		if r.rcptActs[0].Code != gomilter.ActContinue {
			t.Errorf("inbound mail to a suppressed address refused: %+v", r.rcptActs[0])
		}
	})
}

func TestSuppressedDropAction(t *testing.T) {
	h := newHarness(t, "tcp", func(c *Config) { c.SuppressionAction = "drop" })
	h.store.Suppress(context.Background(), ledger.Suppression{Address: "gone@example.com", Reason: "unsubscribe"})
	s := h.session(t, "127.0.0.1")
	r := send(t, s, msg{from: "a@example.com", rcpts: []string{"ok@example.com", "gone@example.com"}, headers: [][2]string{{"Subject", "s"}}, body: "b\r\n"})
	var deleted []string
	for _, m := range r.mods {
		if m.Code == gomilter.ActDelRcpt {
			deleted = append(deleted, m.Rcpt)
		}
	}
	if len(deleted) != 1 || deleted[0] != "<gone@example.com>" || r.rcptActs[1].Code != gomilter.ActContinue {
		t.Errorf("drop: rcpt action %+v, deleted %v", r.rcptActs[1], deleted)
	}
}

func TestAllRecipientsRejectedStillRecordsRejects(t *testing.T) {
	h := newHarness(t, "tcp", nil)
	h.store.Suppress(context.Background(), ledger.Suppression{Address: "gone@example.com", Reason: "spam"})
	s := h.session(t, "127.0.0.1")
	s.Mail("a@example.com", nil)
	if a, _ := s.Rcpt("gone@example.com", nil); a.Code != gomilter.ActReplyCode {
		t.Fatalf("rcpt %+v", a)
	}
	s.Abort() // the client gives up: no DATA
	h.sync(t)
	// Abort is processed asynchronously by the server: poll the ledger
	var evs []*ledger.Event
	for i := 0; i < 100 && len(evs) == 0; i++ {
		time.Sleep(20 * time.Millisecond)
		h.sync(t)
		evs, _ = h.store.Events(context.Background(), ledger.Filter{Type: ledger.Reject})
	}
	if len(evs) != 1 {
		t.Fatalf("reject events %+v", evs)
	}
	m, err := h.store.Message(context.Background(), evs[0].MessageID)
	if err != nil || m.EnvelopeFrom != "a@example.com" {
		t.Errorf("stub message %+v %v", m, err)
	}
}

type panicRecorder struct{}

func (panicRecorder) Add(*ledger.Message, ...*ledger.Event) { panic("recorder exploded") }

func TestPanicAcceptsMessage(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, func(c *Config) { c.Recorder = panicRecorder{} })
		s := h.session(t, "127.0.0.1")
		r := send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: seedHeaders, body: "b\r\n"})
		if r.act.Code != gomilter.ActContinue && r.act.Code != gomilter.ActAccept {
			t.Errorf("after a panic: final action %c, want the message accepted", r.act.Code)
		}
		if h.srv.Metrics().Panics.Load() != 1 {
			t.Errorf("panics counted %d", h.srv.Metrics().Panics.Load())
		}
		// the connection still works
		r = send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{{"Subject", "s"}}, body: "b\r\n"})
		if r.act == nil {
			t.Error("no answer after a recovered panic")
		}
	})
}

func TestManyHeadersBounded(t *testing.T) {
	h := newHarness(t, "tcp", nil)
	s := h.session(t, "127.0.0.1")
	var hdrs [][2]string
	for i := 0; i < 10000; i++ {
		hdrs = append(hdrs, [2]string{"X-Custom-ID", strings.Repeat("v", 50)})
	}
	hdrs = append(hdrs, [2]string{"X-Leadpush-Tag", strings.Repeat("t", 2000)}, [2]string{"Subject", strings.Repeat("s", 5000)})
	send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: hdrs, body: "b\r\n", queueID: "QH"})
	h.sync(t)
	m, err := h.store.MessageByQueueID(context.Background(), "QH")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Headers) != maxRecorded || len(m.Tag) != maxTagLen || len(m.Subject) > maxHeaderValueLen {
		t.Errorf("headers %d tag %d subject %d: not bounded", len(m.Headers), len(m.Tag), len(m.Subject))
	}
}

func TestXLeadpushRecordHeader(t *testing.T) {
	h := newHarness(t, "tcp", func(c *Config) { c.RecordHeaders = nil })
	s := h.session(t, "127.0.0.1")
	send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, queueID: "QR", body: "b\r\n", headers: [][2]string{
		{"Campaign-ID", "summer-sale-2024"}, {"X-Leadpush-Record", "Contact-ID, campaign-id"}, {"Contact-ID", "12345"}, {"Other", "no"}}})
	h.sync(t)
	m, _ := h.store.MessageByQueueID(context.Background(), "QR")
	if m == nil || len(m.Headers) != 2 || m.Headers[0].Name != "Campaign-ID" || m.Headers[1].Value != "12345" {
		t.Errorf("recorded %+v", m)
	}
}

func BenchmarkMilterNoTracking(b *testing.B) {
	h := newHarness(b, "tcp", nil)
	body := strings.Repeat("<p>Benchmark paragraph lorem ipsum dolor sit amet, consectetur adipiscing.</p>\r\n", 250)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := h.session(b, "127.0.0.1")
			send(b, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: seedHeaders, body: body, queueID: "Q"})
			s.Close()
		}
	})
}

// TestLockedDatabaseDoesNotStallMail: another process holds SQLite's write
// lock; the milter still answers at once (recording is off the SMTP path),
// and the message is recorded once the lock is released.
func TestLockedDatabaseDoesNotStallMail(t *testing.T) {
	h := newHarness(t, "tcp", nil)
	release, err := ledger.HoldWriteLock(h.store.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	s := h.session(t, "127.0.0.1")
	start := time.Now()
	send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: seedHeaders, body: "b\r\n", queueID: "QLOCK"})
	if d := time.Since(start); d > time.Second {
		t.Errorf("the milter took %v to answer a message while the database was locked", d)
	}
	time.Sleep(200 * time.Millisecond) // the writer tries and waits on the lock meanwhile
	if err := release(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m, err := h.store.MessageByQueueID(context.Background(), "QLOCK"); err == nil && m.Tag == "password reset" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message never recorded after the lock was released; writer %+v", h.w.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bothTransports runs a test over TCP (every command answered) and over a
// unix socket (lean negotiation: headers and body chunks unanswered).
func bothTransports(t *testing.T, f func(t *testing.T, network string)) {
	for _, n := range []string{"tcp", "unix"} {
		t.Run(n, func(t *testing.T) { f(t, n) })
	}
}
