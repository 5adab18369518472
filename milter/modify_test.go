package milter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/token"
)

// Every modification the milter makes, as the MTA receives it through
// go-milter's client: each test fails when the code making it is removed.

func trackingHarness(t *testing.T, network string) (*harness, *token.Keyring) {
	t.Helper()
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, network, func(c *Config) {
		c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
	})
	return h, keys
}

func mods(r result, code gomilter.ModifyActCode) []gomilter.ModifyAction {
	var out []gomilter.ModifyAction
	for _, m := range r.mods {
		if m.Code == code {
			out = append(out, m)
		}
	}
	return out
}

// TestModifications: a trusted, tracked message gets its control headers
// deleted (highest index first), List-Unsubscribe and List-Unsubscribe-Post
// with tokens naming it, the VERP envelope sender, and a rewritten body.
func TestModifications(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h, keys := trackingHarness(t, network)
		s := h.session(t, "127.0.0.1")
		r := send(t, s, msg{from: "app@example.com", rcpts: []string{"Customer@Example.com"}, queueID: "QM", headers: [][2]string{
			{"From", "app@example.com"}, {"Subject", "hi"}, {"Content-Type", "text/html; charset=utf-8"},
			{"X-Leadpush-Tag", "one"}, {"X-Leadpush-Tag", "two"}, {"X-Leadpush-Tracking", "all"},
		}, body: "<html><body><a href=\"https://shop.example.com/p?a=1&amp;b=2\">p</a></body></html>\r\n"})
		h.sync(t)
		rec, err := h.store.MessageByQueueID(context.Background(), "QM")
		if err != nil {
			t.Fatal(err)
		}

		if got := strings.Join(r.deleted, " "); got != "X-Leadpush-Tag#2 X-Leadpush-Tag#1 X-Leadpush-Tracking#1" {
			t.Errorf("deleted %q", got)
		}

		// go-milter's client hands over line ends as LF
		lu := strings.ReplaceAll(r.added["List-Unsubscribe"], "\r\n", "\n")
		mailto, web, ok := strings.Cut(lu, ",\n ")
		if !ok || !strings.HasPrefix(mailto, "<mailto:unsub+") || !strings.HasSuffix(mailto, "@bounces.example.com?subject=unsub>") ||
			!strings.HasPrefix(web, "<https://t.example.com/u/") || !strings.HasSuffix(web, ">") {
			t.Fatalf("List-Unsubscribe %q", lu)
		}
		tok := strings.TrimSuffix(strings.TrimPrefix(mailto, "<mailto:unsub+"), "@bounces.example.com?subject=unsub>")
		if id, err := keys.VerifyAddress(token.UnsubMail, tok); err != nil || id != rec.ID {
			t.Errorf("mailto token: %q %v, want %s", id, err, rec.ID)
		}
		c, err := keys.Verify(token.Unsubscribe, strings.TrimSuffix(strings.TrimPrefix(web, "<https://t.example.com/u/"), ">"))
		if err != nil || c.MessageID != rec.ID || c.Recipient != "customer@example.com" {
			t.Errorf("one-click token: %+v %v", c, err)
		}
		if got := r.added["List-Unsubscribe-Post"]; got != "List-Unsubscribe=One-Click" {
			t.Errorf("List-Unsubscribe-Post %q", got)
		}

		if !strings.HasPrefix(r.newSender, "<bounce+") || !strings.HasSuffix(r.newSender, "@bounces.example.com>") ||
			r.newSender != "<"+rec.ReturnPath+">" {
			t.Fatalf("envelope sender %q, recorded return path %q", r.newSender, rec.ReturnPath)
		}
		vt := strings.TrimSuffix(strings.TrimPrefix(r.newSender, "<bounce+"), "@bounces.example.com>")
		if id, err := keys.VerifyAddress(token.Return, vt); err != nil || id != rec.ID {
			t.Errorf("VERP token: %q %v", id, err)
		}

		if !r.replaced || !strings.Contains(r.body, `<a href="https://t.example.com/c/`) || !strings.Contains(r.body, `<img src="https://t.example.com/o/`) ||
			!strings.HasSuffix(strings.ReplaceAll(r.body, "\r\n", "\n"), "</body></html>\n") {
			t.Fatalf("body %q", r.body)
		}
		ct := r.body[strings.Index(r.body, "/c/")+3 : strings.Index(r.body, `">p</a>`)]
		if c, err := keys.Verify(token.Click, ct); err != nil || c.URL != "https://shop.example.com/p?a=1&b=2" || c.MessageID != rec.ID {
			t.Errorf("click token: %+v %v", c, err)
		}
		if len(rec.Links) != 1 || rec.Links[0] != "https://shop.example.com/p?a=1&b=2" {
			t.Errorf("recorded links %q", rec.Links)
		}
	})
}

// TestSendersOwnListUnsubscribe: a sender's own List-Unsubscribe (and
// -Post) is kept: the milter adds none.
func TestSendersOwnListUnsubscribe(t *testing.T) {
	h, _ := trackingHarness(t, "unix")
	s := h.session(t, "127.0.0.1")
	r := send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{
		{"Subject", "s"}, {"List-Unsubscribe", "<https://own.example/u>"}}, body: "x\r\n"})
	if len(mods(r, gomilter.ActAddHeader)) != 0 {
		t.Errorf("headers added to a message with its own List-Unsubscribe: %+v", mods(r, gomilter.ActAddHeader))
	}
	r = send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{
		{"Subject", "s"}, {"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"}}, body: "x\r\n"})
	if r.added["List-Unsubscribe"] == "" || len(mods(r, gomilter.ActAddHeader)) != 1 {
		t.Errorf("own List-Unsubscribe-Post: added %v", r.added)
	}
}

// TestNoVERPForNullSender: a bounce (MAIL FROM:<>) keeps its null sender.
func TestNoVERPForNullSender(t *testing.T) {
	h, _ := trackingHarness(t, "unix")
	r := send(t, h.session(t, "127.0.0.1"), msg{from: "", rcpts: []string{"b@example.com"}, headers: [][2]string{{"Subject", "s"}}, body: "x\r\n"})
	if len(mods(r, gomilter.ActChangeFrom)) != 0 {
		t.Errorf("null sender changed to %q", r.newSender)
	}
}

// TestContentTransferEncodingChanged: a 7bit body whose rewritten lines
// would pass 998 octets becomes quoted-printable, and the header says so:
// changed in place when present, added when absent.
func TestContentTransferEncodingChanged(t *testing.T) {
	long := strings.Repeat("x", 990) + ` <a href="https://www.example.com/">x</a>` + "\r\n"
	for _, tc := range []struct {
		name   string
		header [][2]string
		code   gomilter.ModifyActCode
	}{
		{"present", [][2]string{{"Content-Type", "text/html"}, {"Content-Transfer-Encoding", "7bit"}}, gomilter.ActChangeHeader},
		{"absent", [][2]string{{"Content-Type", "text/html"}}, gomilter.ActAddHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := trackingHarness(t, "unix")
			r := send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: tc.header, body: long})
			var got []gomilter.ModifyAction
			for _, m := range mods(r, tc.code) {
				if strings.EqualFold(m.HeaderName, "Content-Transfer-Encoding") {
					got = append(got, m)
				}
			}
			if len(got) != 1 || got[0].HeaderValue != "quoted-printable" || tc.code == gomilter.ActChangeHeader && got[0].HeaderIndex != 1 {
				t.Fatalf("Content-Transfer-Encoding modifications %+v", got)
			}
			if !r.replaced || strings.Contains(r.body, long[:998]) || !strings.Contains(strings.ReplaceAll(r.body, "\r\n", "\n"), "=\n") {
				t.Errorf("body not quoted-printable: %.120q", r.body)
			}
		})
	}
}

// TestTrackingNoneKeepsBody: X-Leadpush-Tracking: none leaves the body
// alone; List-Unsubscribe and VERP are still added.
func TestTrackingNoneKeepsBody(t *testing.T) {
	h, _ := trackingHarness(t, "unix")
	r := send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{
		{"Content-Type", "text/html"}, {"X-Leadpush-Tracking", "none"}}, body: `<a href="https://x.example.com/">x</a>` + "\r\n"})
	if r.replaced || r.added["List-Unsubscribe"] == "" || r.newSender == "" || len(r.deleted) != 1 {
		t.Errorf("replaced %v, added %v, sender %q, deleted %v", r.replaced, r.added, r.newSender, r.deleted)
	}
}

// syncBuffer is a log destination the milter's goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRecordedLogLine: one INFO line per recorded message, saying what
// became of its body.
func TestRecordedLogLine(t *testing.T) {
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	h := newHarness(t, "tcp", func(c *Config) {
		c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
		c.TextLinks = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	s := h.session(t, "127.0.0.1")
	headers := append([][2]string{}, seedHeaders...)
	send(t, s, msg{from: "app@example.com", rcpts: []string{"customer@example.com"}, headers: headers,
		body: "Reset: https://example.com/reset\r\n", queueID: "QLOG1"})
	headers[5] = [2]string{"X-Leadpush-Tracking", "none"}
	send(t, s, msg{from: "app@example.com", rcpts: []string{"customer@example.com"}, headers: headers,
		body: "Reset: https://example.com/reset\r\n", queueID: "QLOG2"})
	s.Close()
	h.sync(t)
	out := logs.String()
	for _, want := range []string{
		`level=INFO msg="message recorded" queue_id=QLOG1`, `tag="password reset" recipients=1 tracking=clicks links_tracked=1 verp=true rewrite=rewritten stream=default`,
		`level=INFO msg="message recorded" queue_id=QLOG2`, `tracking=none links_tracked=0 verp=true rewrite="not tracked"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("milter log lacks %q:\n%s", want, out)
		}
	}
}
