package milter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/token"
)

// TestControlHeaderFlood: a message with more X-Leadpush-* headers than
// MaxControlHeaders is refused at its end with a 5xx that says why, without
// one deletion request per header (which made Postfix's cleanup spend
// seconds, then abort). Up to the limit they are all deleted.
func TestControlHeaderFlood(t *testing.T) {
	bothTransports(t, func(t *testing.T, network string) {
		h := newHarness(t, network, nil)
		for _, tc := range []struct {
			name   string
			client string
			n      int
			names  func(i int) string
		}{
			{"20000 untrusted", "192.0.2.7", 20000, func(int) string { return "X-Leadpush-Tag" }},
			{"20000 distinct names", "192.0.2.7", 20000, func(i int) string { return fmt.Sprintf("X-Leadpush-H%d", i) }},
			{"101 trusted", "127.0.0.1", MaxControlHeaders + 1, func(int) string { return "x-leadpush-tracking" }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := h.srv.Metrics().ControlFlood.Load()
				hdrs := [][2]string{{"Subject", "flood"}}
				for i := range tc.n {
					hdrs = append(hdrs, [2]string{tc.names(i), "v"})
				}
				start := time.Now()
				r := send(t, h.session(t, tc.client), msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: hdrs, body: "b\r\n"})
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("answered in %v", d)
				}
				if r.act.Code != gomilter.ActReplyCode || r.act.SMTPCode != 550 || !strings.Contains(r.act.SMTPText, "5.7.1") ||
					!strings.Contains(r.act.SMTPText, fmt.Sprintf("%d X-Leadpush-*", tc.n)) {
					t.Errorf("final action %+v, want 550 5.7.1 naming the count", r.act)
				}
				if len(r.mods) != 0 {
					t.Errorf("%d modifications sent for a refused message", len(r.mods))
				}
				if got := h.srv.Metrics().ControlFlood.Load() - before; got != 1 {
					t.Errorf("control floods counted %d", got)
				}
			})
		}
		t.Run("100 trusted deleted", func(t *testing.T) {
			hdrs := [][2]string{{"Subject", "many"}}
			for range MaxControlHeaders {
				hdrs = append(hdrs, [2]string{"X-Leadpush-Tag", "t"})
			}
			s := h.session(t, "127.0.0.1")
			r := send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: hdrs, body: "b\r\n", queueID: "Q100"})
			if r.act.Code != gomilter.ActContinue || len(r.deleted) != MaxControlHeaders || r.deleted[0] != "X-Leadpush-Tag#100" {
				t.Errorf("action %c, %d deleted (first %v)", r.act.Code, len(r.deleted), r.deleted[:min(1, len(r.deleted))])
			}
			// the connection keeps its trust after a refusal: the next
			// message is recorded
			send(t, s, msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{{"Subject", "next"}}, body: "b\r\n", queueID: "QNEXT"})
			h.sync(t)
			if _, err := h.store.MessageByQueueID(context.Background(), "QNEXT"); err != nil {
				t.Errorf("next message on the connection: %v", err)
			}
		})
	})
}

// TestMaxMessageSize: a rewrite that would make the message larger than
// MaxMessageSize leaves the body untracked (List-Unsubscribe and VERP are
// still added), counted and logged; under the limit the body is rewritten.
func TestMaxMessageSize(t *testing.T) {
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "<p><a href=\"https://www.example.com/item/%d\">item %d</a></p>\r\n", i, i)
	}
	body := b.String() // ~9 KB; each link grows by a token of ~100 bytes
	hdrs := [][2]string{{"From", "a@example.com"}, {"Subject", "links"}, {"Content-Type", "text/html"}}
	for _, tc := range []struct {
		limit   int64
		tracked bool
	}{
		{int64(len(body)) + 10<<10, false}, // the message fits; rewritten it would not
		{int64(len(body)) + 60<<10, true},
	} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			h := newHarness(t, "unix", func(c *Config) {
				c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
				c.MaxMessageSize = tc.limit
			})
			r := send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: hdrs, body: body, queueID: "QS"})
			if r.replaced != tc.tracked {
				t.Errorf("body replaced: %v, want %v", r.replaced, tc.tracked)
			}
			if r.added["List-Unsubscribe"] == "" || !strings.HasPrefix(r.newSender, "<bounce+") {
				t.Errorf("List-Unsubscribe %q, sender %q: still wanted on an untracked body", r.added["List-Unsubscribe"], r.newSender)
			}
			if got := h.srv.Metrics().TooBigRewrite.Load(); got != map[bool]int64{true: 0, false: 1}[tc.tracked] {
				t.Errorf("counted %d", got)
			}
			h.sync(t)
			m, err := h.store.MessageByQueueID(context.Background(), "QS")
			if err != nil || (len(m.Links) > 0) != tc.tracked {
				t.Errorf("recorded %v links (err %v)", len(m.Links), err)
			}
		})
	}
}

// TestMaxMessageSizeQuotedPrintable: a single-line 7bit HTML body, under
// the limit as sent, that the rewrite turns quoted-printable (its line
// passes 998 octets) grows by the soft line breaks past the limit: it is
// left untracked, and its Content-Transfer-Encoding is not touched.
func TestMaxMessageSizeQuotedPrintable(t *testing.T) {
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	body := "<html><body>" + strings.Repeat("<p>Lorem ipsum dolor sit amet.</p>", 3000) + "</body></html>\r\n" // ~100 KB, one line
	h := newHarness(t, "unix", func(c *Config) {
		c.Keyring, c.BaseURL = keys, "https://t.example.com"
		c.MaxMessageSize = int64(len(body)) + 10<<10 // + 4% of soft breaks does not fit
	})
	r := send(t, h.session(t, "127.0.0.1"), msg{from: "a@example.com", rcpts: []string{"b@example.com"},
		headers: [][2]string{{"Content-Type", "text/html"}, {"Content-Transfer-Encoding", "7bit"}}, body: body})
	if r.replaced || len(mods(r, gomilter.ActChangeHeader)) != 0 || h.srv.Metrics().TooBigRewrite.Load() != 1 {
		t.Errorf("replaced %v, header changes %+v, counted %d", r.replaced, mods(r, gomilter.ActChangeHeader), h.srv.Metrics().TooBigRewrite.Load())
	}
}
