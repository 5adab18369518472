package milter

import (
	"context"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// testStreams: a transactional stream without List-Unsubscribe placed by
// SASL user, a newsletter placed by sender domain or the "news*" tags, a
// split stream, and the default.
func testStreams(t *testing.T) []config.Stream {
	t.Helper()
	c, err := config.Parse(`
[[stream]]
name = "tx"
list_unsubscribe = false
tracking = "clicks"
sasl_users = ["billing-app"]

[[stream]]
name = "news"
kind = "broadcast"
senders = ["@news.example.com"]
tags = ["news*"]

[[stream]]
name = "split"
split_recipients = true
sasl_users = ["crm"]
`)
	if err != nil {
		t.Fatal(err)
	}
	return c.Streams()
}

func streamHarness(t *testing.T, action string) *harness {
	t.Helper()
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	return newHarness(t, "tcp", func(c *Config) {
		c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
		c.Streams, c.SuppressionAction = testStreams(t), action
	})
}

func TestStreamSelection(t *testing.T) {
	h := streamHarness(t, "")
	for _, c := range []struct {
		name      string
		m         msg
		stream    string
		tracking  ledger.TrackingMode
		listUnsub bool
	}{
		{"default", msg{from: "app@example.com", headers: [][2]string{{"Subject", "s"}}}, "default", ledger.TrackAll, true},
		{"sasl user", msg{auth: "billing-app", from: "app@example.com"}, "tx", ledger.TrackClicks, false},
		{"tracking header beats the stream's mode", msg{auth: "billing-app", from: "app@example.com",
			headers: [][2]string{{"X-Leadpush-Tracking", "opens"}}}, "tx", ledger.TrackOpens, false},
		{"invalid tracking header is all", msg{auth: "billing-app", from: "app@example.com",
			headers: [][2]string{{"X-Leadpush-Tracking", "bogus"}}}, "tx", ledger.TrackAll, false},
		{"sender domain", msg{from: "Editor@News.Example.com"}, "news", ledger.TrackAll, true},
		{"header", msg{from: "app@example.com", headers: [][2]string{{"X-Leadpush-Stream", "News"}}}, "news", ledger.TrackAll, true},
		{"tag glob", msg{from: "app@example.com", headers: [][2]string{{"X-Leadpush-Tag", "newsletter-december"}}}, "news", ledger.TrackAll, true},
		{"header beats tag", msg{from: "app@example.com", headers: [][2]string{{"X-Leadpush-Tag", "newsletter"}, {"X-Leadpush-Stream", "tx"}}}, "tx", ledger.TrackClicks, false},
		{"envelope beats header", msg{from: "x@news.example.com", headers: [][2]string{{"X-Leadpush-Stream", "tx"}}}, "news", ledger.TrackAll, true},
		{"unknown header: default", msg{from: "app@example.com", headers: [][2]string{{"X-Leadpush-Stream", "nosuch"}}}, "default", ledger.TrackAll, true},
		{"a split stream is not named by header", msg{from: "app@example.com", headers: [][2]string{{"X-Leadpush-Stream", "split"}}}, "default", ledger.TrackAll, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.m.rcpts = []string{"r@example.net"}
			c.m.queueID = "Q" + strings.ReplaceAll(c.name, " ", "")
			c.m.body = "<p>hi <a href=\"https://example.com/\">x</a></p>\r\n"
			r := send(t, h.session(t, "127.0.0.1"), c.m)
			h.sync(t)
			m, err := h.store.MessageByQueueID(context.Background(), c.m.queueID)
			if err != nil {
				t.Fatal(err)
			}
			if m.Stream != c.stream || m.Tracking != c.tracking {
				t.Errorf("stream %q tracking %q, want %q %q", m.Stream, m.Tracking, c.stream, c.tracking)
			}
			if _, ok := r.added["List-Unsubscribe"]; ok != c.listUnsub {
				t.Errorf("List-Unsubscribe added: %v, want %v", ok, c.listUnsub)
			}
			for _, d := range r.deleted {
				if strings.HasPrefix(d, "X-Leadpush-Stream") {
					return
				}
			}
			for _, hd := range c.m.headers {
				if hd[0] == "X-Leadpush-Stream" {
					t.Errorf("X-Leadpush-Stream not stripped: %v", r.deleted)
				}
			}
		})
	}
	if n := h.srv.metrics.UnknownStream.Load(); n != 1 {
		t.Errorf("unknown stream counted %d, want 1", n)
	}
	if n := h.srv.metrics.StreamIgnored.Load(); n != 2 {
		t.Errorf("ignored stream headers counted %d, want 2", n)
	}
	// untrusted: stripped, not recorded
	r := send(t, h.session(t, "192.0.2.9"), msg{from: "x@internet.example", rcpts: []string{"r@example.net"},
		headers: [][2]string{{"X-Leadpush-Stream", "news"}}, queueID: "QUNTRUSTED", body: "b\r\n"})
	if len(r.deleted) != 1 || !strings.HasPrefix(r.deleted[0], "X-Leadpush-Stream") {
		t.Errorf("untrusted: deleted %v", r.deleted)
	}
	h.sync(t)
	if _, err := h.store.MessageByQueueID(context.Background(), "QUNTRUSTED"); err == nil {
		t.Errorf("untrusted message recorded")
	}
}

// TestScopedSuppression: an address unsubscribed from the newsletter
// still gets transactional mail; in the newsletter it is refused at RCPT
// when the envelope names the stream, and removed at end of message, with
// a reject event carrying the message, when only a header or tag does.
func TestScopedSuppression(t *testing.T) {
	for _, action := range []string{"reject", "drop"} {
		t.Run(action, func(t *testing.T) {
			h := streamHarness(t, action)
			ctx := context.Background()
			h.store.Suppress(ctx, ledger.Suppression{Address: "left@example.net", Stream: "news", Reason: ledger.ReasonUnsubscribe})
			h.store.Suppress(ctx, ledger.Suppression{Address: "dead@example.net", Reason: ledger.ReasonHardBounce})
			rcpts := []string{"left@example.net", "dead@example.net", "ok@example.net"}
			hdrs := func(extra ...[2]string) [][2]string {
				return append([][2]string{{"Subject", "Hello"}, {"X-Leadpush-Tag", "t1"}, {"Contact-ID", "42"}}, extra...)
			}
			// transactional (SASL user): left@ gets it, dead@ refused
			r := send(t, h.session(t, "127.0.0.1"), msg{auth: "billing-app", from: "a@example.com", rcpts: rcpts, queueID: "QTX", headers: hdrs(), body: "b\r\n"})
			want := []bool{true, action == "drop", true}
			for i, a := range r.rcptActs {
				if (a.Code == gomilter.ActContinue) != want[i] {
					t.Errorf("tx: rcpt %s: %+v", rcpts[i], a)
				}
			}
			// newsletter by envelope: left@ and dead@ turned away at RCPT
			r = send(t, h.session(t, "127.0.0.1"), msg{from: "e@news.example.com", rcpts: rcpts, queueID: "QNEWSENV", headers: hdrs(), body: "b\r\n"})
			want = []bool{action == "drop", action == "drop", true}
			for i, a := range r.rcptActs {
				if (a.Code == gomilter.ActContinue) != want[i] {
					t.Errorf("news by envelope: rcpt %s: %+v", rcpts[i], a)
				}
				if !want[i] && (a.SMTPCode != 550 || !strings.Contains(a.SMTPText, "5.7.1")) {
					t.Errorf("news by envelope: rcpt %s: %+v", rcpts[i], a)
				}
			}
			// newsletter by header: left@ accepted at RCPT, removed at the end
			r = send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: rcpts, queueID: "QNEWSHDR",
				headers: hdrs([2]string{"X-Leadpush-Stream", "news"}), body: "b\r\n"})
			if r.rcptActs[0].Code != gomilter.ActContinue {
				t.Errorf("news by header: left@ refused at RCPT: %+v", r.rcptActs[0])
			}
			var deleted []string
			for _, m := range mods(r, gomilter.ActDelRcpt) {
				deleted = append(deleted, m.Rcpt)
			}
			if !contains(deleted, "<left@example.net>") || contains(deleted, "<ok@example.net>") {
				t.Errorf("news by header: deleted %v", deleted)
			}
			// only a suppressed recipient: discarded, the session stays trusted
			s := h.session(t, "127.0.0.1")
			r = send(t, s, msg{from: "a@example.com", rcpts: []string{"left@example.net"}, queueID: "QNEWSONLY",
				headers: [][2]string{{"Subject", "Hello"}, {"X-Leadpush-Tag", "newsletter"}, {"Contact-ID", "42"}}, body: "b\r\n"})
			if r.act.Code != gomilter.ActDiscard {
				t.Errorf("only a suppressed recipient: end of message %+v, want discard", r.act)
			}
			send(t, s, msg{from: "a@example.com", rcpts: []string{"ok@example.net"}, queueID: "QNEXT", headers: hdrs(), body: "b\r\n"})
			h.sync(t)
			if _, err := h.store.MessageByQueueID(ctx, "QNEXT"); err != nil {
				t.Errorf("the message after a discard was not recorded (trust lost): %v", err)
			}
			for qid, rej := range map[string][]string{
				"QTX":       {"dead@example.net"},
				"QNEWSENV":  {"left@example.net", "dead@example.net"},
				"QNEWSHDR":  {"dead@example.net", "left@example.net"},
				"QNEWSONLY": {"left@example.net"},
			} {
				m, err := h.store.MessageByQueueID(ctx, qid)
				if err != nil {
					t.Fatalf("%s: %v", qid, err)
				}
				evs, _ := h.store.Events(ctx, ledger.Filter{MessageID: m.ID, Type: ledger.Reject})
				var got []string
				for _, e := range evs {
					got = append(got, e.Recipient)
				}
				if strings.Join(got, ",") != strings.Join(rej, ",") && !sameSet(got, rej) {
					t.Errorf("%s: reject events for %v, want %v", qid, got, rej)
				}
				// the message behind the reject events has what a webhook needs
				if m.Tag != "t1" && qid != "QNEWSONLY" || m.Subject != "Hello" || len(m.Headers) == 0 || m.Stream == "" {
					t.Errorf("%s: message %+v lacks tag, subject, headers or stream", qid, m)
				}
			}
		})
	}
}

// TestSplitRecipients: the 2nd and later RCPT of a message in a
// split_recipients stream get 452 4.5.3; a suppressed one still gets 550;
// other streams and non-SMTP mail are not split.
func TestSplitRecipients(t *testing.T) {
	h := streamHarness(t, "")
	h.store.Suppress(context.Background(), ledger.Suppression{Address: "dead@example.net", Reason: ledger.ReasonHardBounce})
	r := send(t, h.session(t, "127.0.0.1"), msg{auth: "crm", from: "a@example.com",
		rcpts: []string{"dead@example.net", "one@example.net", "two@example.net", "three@example.net"}, body: "b\r\n"})
	codes := []int{}
	for _, a := range r.rcptActs {
		codes = append(codes, a.SMTPCode)
		if a.SMTPCode == 452 && a.SMTPText != "4.5.3 Too many recipients" {
			t.Errorf("452 text %q", a.SMTPText)
		}
	}
	if codes[0] != 550 || r.rcptActs[1].Code != gomilter.ActContinue || codes[2] != 452 || codes[3] != 452 {
		t.Errorf("split stream: %v", codes)
	}
	r = send(t, h.session(t, "127.0.0.1"), msg{auth: "billing-app", from: "a@example.com", rcpts: []string{"one@example.net", "two@example.net"}, body: "b\r\n"})
	if r.rcptActs[1].Code != gomilter.ActContinue {
		t.Errorf("a stream without split_recipients split: %+v", r.rcptActs[1])
	}
	// Postfix's non-SMTP mail (sendmail(1)) connects from port 0
	c := gomilter.NewClientWithOptions(h.network, h.addr, gomilter.ClientOptions{ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody | gomilter.OptRemoveRcpt})
	t.Cleanup(func() { c.Close() })
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Conn("localhost", gomilter.FamilyInet, 0, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	r = send(t, s, msg{auth: "crm", from: "a@example.com", rcpts: []string{"one@example.net", "two@example.net"}, body: "b\r\n"})
	if r.rcptActs[1].Code != gomilter.ActContinue {
		t.Errorf("non-SMTP mail split: %+v", r.rcptActs[1])
	}
	if n := h.srv.metrics.Split.Load(); n != 2 {
		t.Errorf("split counted %d, want 2", n)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, v := range a {
		if !contains(b, v) {
			return false
		}
	}
	return true
}

// TestDefaultStreamKnownAtRCPT: when no header or tag can choose another
// stream (no [[stream]] at all, or only split streams besides the
// default), mail no envelope rule places is in the default stream already
// at RCPT, and its suppressed recipients get 550 there.
func TestDefaultStreamKnownAtRCPT(t *testing.T) {
	onlySplit, err := config.Parse("[[stream]]\nname = \"crm\"\nsplit_recipients = true\nsasl_users = [\"crm\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	for name, streams := range map[string][]config.Stream{"none": nil, "only split": onlySplit.Streams(), "several": testStreams(t)} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, "tcp", func(c *Config) { c.Streams = streams })
			h.store.Suppress(context.Background(), ledger.Suppression{Address: "left@example.net", Stream: "default", Reason: ledger.ReasonUnsubscribe})
			r := send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: []string{"left@example.net", "ok@example.net"}, body: "b\r\n"})
			refused := r.rcptActs[0].SMTPCode == 550
			if want := name != "several"; refused != want {
				t.Errorf("refused at RCPT: %v, want %v (%+v)", refused, want, r.rcptActs[0])
			}
			if name == "several" && len(mods(r, gomilter.ActDelRcpt)) != 1 {
				t.Errorf("not removed at end of message: %+v", r.mods)
			}
		})
	}
}
