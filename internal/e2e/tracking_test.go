package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/token"
)

// The tests in this file check the "Done when" for open and click
// tracking through a real Postfix: what the recipient's server receives and
// what the ledger records, for each X-Leadpush-Tracking mode.

// trackKeys is the keyring of testKey, to verify the tokens in delivered
// messages the way leadpushd would.
func trackKeys(t *testing.T) *token.Keyring {
	t.Helper()
	k, err := token.ParseKeyring([]string{testKey})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ledgerRecord is the part of a `leadpushctl messages --json` line these
// tests look at (ctlMessage lacks envelope_from).
type ledgerRecord struct {
	ID           string   `json:"id"`
	QueueID      string   `json:"queue_id"`
	Tracking     string   `json:"tracking"`
	EnvelopeFrom string   `json:"envelope_from"`
	Recipients   []string `json:"recipients"`
	ReturnPath   string   `json:"return_path"`
	Links        []string `json:"links"`
}

// record waits for the ledger record of a queue id and returns it.
func (e *env) record(t *testing.T, queueID string) ledgerRecord {
	t.Helper()
	e.message(t, queueID) // waits until it is there
	sc := bufio.NewScanner(strings.NewReader(e.ctl(t, "messages", "--json")))
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var r ledgerRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("leadpushctl messages --json printed %q: %v", sc.Text(), err)
		}
		if r.QueueID == queueID {
			return r
		}
	}
	t.Fatalf("queue id %s vanished from the ledger", queueID)
	return ledgerRecord{}
}

// sendData submits a complete message (LF or CRLF line ends) with swaks
// --data @file through the authenticated submission port and returns it as
// the relay received it. swaks sends the file with CRLF line ends and one
// more CRLF at its end; sentBody returns the body as Postfix got it.
func (e *env) sendData(t *testing.T, from, to, data string) (postfixlab.Received, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "message.eml")
	if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return e.delivered(t, append(e.lab.SubmitArgs(), "--from", from, "--to", to, "--data", "@"+f)...)
}

// crlf turns LF line ends into CRLF.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// sentBody is the body of data as swaks puts it on the wire: CRLF line ends,
// and the CRLF swaks adds before the final dot.
func sentBody(data string) []byte {
	_, body, _ := strings.Cut(crlf(data), "\r\n\r\n")
	return []byte(body + "\r\n")
}

// splitMsg returns the parsed header and the raw body bytes of a delivered
// message.
func splitMsg(t *testing.T, data []byte) (mail.Header, []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v\n%s", err, data)
	}
	_, body, ok := bytes.Cut(data, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("delivered message has no header/body separator:\n%s", data)
	}
	return m.Header, body
}

// mimeLeaves parses a delivered message with go-message and returns the
// decoded text/plain and text/html leaves, failing when it is not valid MIME.
func mimeLeaves(t *testing.T, data []byte) (plain, html []string) {
	t.Helper()
	ent, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("delivered message is not valid MIME: %v", err)
	}
	var walk func(e *message.Entity, depth int)
	walk = func(e *message.Entity, depth int) {
		if depth > 10 {
			t.Fatal("MIME nesting too deep")
		}
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("delivered multipart does not parse: %v", err)
				}
				walk(p, depth+1)
			}
		}
		ct, _, err := e.Header.ContentType()
		if err != nil {
			ct = "text/plain"
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatalf("delivered %s part does not decode: %v", ct, err)
		}
		switch ct {
		case "text/plain":
			plain = append(plain, string(b))
		case "text/html":
			html = append(html, string(b))
		}
	}
	walk(ent, 0)
	return plain, html
}

// tokRE matches the token of a tracking URL of base, for a path prefix
// such as "/c/" and a suffix such as ".gif".
func tokRE(base, path, suffix string) *regexp.Regexp {
	return regexp.MustCompile(regexp.QuoteMeta(base+path) + `([A-Za-z0-9_-]+)` + regexp.QuoteMeta(suffix))
}

var anyURL = regexp.MustCompile(`https?://[^\s"'<>]+`)

// clickTargets verifies every click URL in s and returns the original URLs
// they carry, in order; untracked lists the other http(s) URLs of s.
func clickTargets(t *testing.T, k *token.Keyring, base, msgID, s string) (targets, untracked []string) {
	t.Helper()
	re := tokRE(base, "/c/", "")
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		c, err := k.Verify(token.Click, m[1])
		if err != nil {
			t.Errorf("click token in %s does not verify: %v", m[0], err)
			continue
		}
		if msgID != "" && c.MessageID != msgID {
			t.Errorf("click token names message %s, want %s", c.MessageID, msgID)
		}
		targets = append(targets, c.URL)
	}
	for _, u := range anyURL.FindAllString(s, -1) {
		if !strings.HasPrefix(u, base+"/") {
			untracked = append(untracked, u)
		}
	}
	return targets, untracked
}

// checkListUnsub checks the List-Unsubscribe and List-Unsubscribe-Post
// headers the milter adds: one of each, both tokens valid for the message.
func checkListUnsub(t *testing.T, k *token.Keyring, base string, h mail.Header, msgID, rcpt string) {
	t.Helper()
	lu := h["List-Unsubscribe"]
	if len(lu) != 1 {
		t.Fatalf("want one List-Unsubscribe header, got %q", lu)
	}
	re := regexp.MustCompile(`^<mailto:unsub\+([a-z2-7]+)@bounce\.example\.com\?subject=unsub>,\s*<` + regexp.QuoteMeta(base) + `/u/([A-Za-z0-9_-]+)>$`)
	m := re.FindStringSubmatch(lu[0])
	if m == nil {
		t.Fatalf("List-Unsubscribe: %q does not match %s", lu[0], re)
	}
	if id, err := k.VerifyAddress(token.UnsubMail, m[1]); err != nil || id != msgID {
		t.Errorf("unsub+ mailto token: message %q, %v; want %s", id, err, msgID)
	}
	if c, err := k.Verify(token.Unsubscribe, m[2]); err != nil || c.MessageID != msgID || c.Recipient != rcpt {
		t.Errorf("one-click token: %+v, %v; want message %s recipient %s", c, err, msgID, rcpt)
	}
	if p := h["List-Unsubscribe-Post"]; len(p) != 1 || p[0] != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post: %q", p)
	}
}

// checkReturnPath checks the VERP envelope sender at the relay against the
// ledger record.
func checkReturnPath(t *testing.T, k *token.Keyring, got postfixlab.Received, rec ledgerRecord, origFrom string) {
	t.Helper()
	re := regexp.MustCompile(`^bounce\+([a-z2-7]+)@bounce\.example\.com$`)
	m := re.FindStringSubmatch(got.From)
	if m == nil {
		t.Fatalf("envelope sender at the relay is <%s>, want bounce+TOKEN@bounce.example.com", got.From)
	}
	if id, err := k.VerifyAddress(token.Return, m[1]); err != nil || id != rec.ID {
		t.Errorf("return path token: message %q, %v; want %s", id, err, rec.ID)
	}
	if rec.ReturnPath != got.From {
		t.Errorf("ledger return_path %q, relay saw %q", rec.ReturnPath, got.From)
	}
	if rec.EnvelopeFrom != origFrom {
		t.Errorf("ledger envelope_from %q, want the original sender %q", rec.EnvelopeFrom, origFrom)
	}
}

func TestTrackingSeedExampleClicks(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := trackKeys(t)
	got, qid := e.delivered(t, e.seedSwaks("clicks")...)
	rec := e.record(t, qid)
	h, body := splitMsg(t, got.Data)

	targets, untracked := clickTargets(t, k, e.baseURL, rec.ID, string(body))
	if !slices.Equal(targets, []string{"https://example.com/reset"}) || len(untracked) != 0 {
		t.Errorf("links in the body: tracked to %q, untracked %q; body:\n%s", targets, untracked, body)
	}
	want := "Use this link to reset your password: " + e.baseURL + "/c/"
	if !bytes.HasPrefix(body, []byte(want)) {
		t.Errorf("body %q, want it to start %q", body, want)
	}
	if bytes.Contains(body, []byte("/o/")) || bytes.Contains(body, []byte("<img")) {
		t.Errorf("clicks mode added a pixel:\n%s", body)
	}
	if !slices.Equal(rec.Links, []string{"https://example.com/reset"}) {
		t.Errorf("ledger links %q", rec.Links)
	}
	if rec.Tracking != "clicks" {
		t.Errorf("ledger tracking %q", rec.Tracking)
	}
	checkListUnsub(t, k, e.baseURL, h, rec.ID, "customer@example.com")
	checkReturnPath(t, k, got, rec, "app@example.com")
}

// htmlMessage is a multipart/alternative message as an application would
// send it. tracking is the X-Leadpush-Tracking value ("" for none at all);
// extraHeaders are added to the header as they are (LF-terminated lines).
func htmlMessage(tracking, extraHeaders string) string {
	var b strings.Builder
	b.WriteString("From: App <app@example.com>\nTo: customer@example.com\nSubject: Your weekly news\n")
	fmt.Fprintf(&b, "Message-ID: <e2e-%d@example.com>\nDate: Mon, 2 Mar 2026 10:00:00 +0000\n", time.Now().UnixNano())
	if tracking != "" {
		b.WriteString("X-Leadpush-Tracking: " + tracking + "\n")
	}
	b.WriteString(extraHeaders)
	b.WriteString(`MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_alt_e2e"

This is a multi-part message in MIME format.

--=_alt_e2e
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

This week's news: https://example.com/news?a=1&b=2
Start here: http://docs.example.org/start
Questions? mailto:help@example.com

--=_alt_e2e
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

<!DOCTYPE html>
<html><head><title>News</title></head>
<body>
<p>This week's <a href="https://example.com/news?a=1&amp;b=2">news</a>.</p>
<p><a class="btn" href='http://docs.example.org/start'>Start here</a></p>
<p><a href="mailto:help@example.com">Questions?</a></p>
<p><a data-leadpush-notrack href="https://example.com/account">Your account</a></p>
<p><img src="https://cdn.example.com/logo.png" alt="logo"></p>
</body>
</html>

--=_alt_e2e--`)
	return b.String()
}

// The original links of htmlMessage.
const (
	linkNews    = "https://example.com/news?a=1&b=2"
	linkDocs    = "http://docs.example.org/start"
	linkAccount = "https://example.com/account"
)

func TestTrackingHTMLModes(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := trackKeys(t)
	pixelRE := regexp.MustCompile(`<img src="` + regexp.QuoteMeta(e.baseURL) + `/o/([A-Za-z0-9_-]+)\.gif"`)

	for _, c := range []struct {
		mode           string // X-Leadpush-Tracking
		recorded       string // ledger tracking
		pixel, clicks  bool
		bodyIsOriginal bool
	}{
		{mode: "opens", recorded: "opens", pixel: true},
		{mode: "clicks", recorded: "clicks", clicks: true},
		{mode: "none", recorded: "none", bodyIsOriginal: true},
		{mode: "", recorded: "all", pixel: true, clicks: true},
	} {
		name := c.mode
		if name == "" {
			name = "no-header"
		}
		t.Run(name, func(t *testing.T) {
			data := htmlMessage(c.mode, "")
			got, qid := e.sendData(t, "app@example.com", "customer@example.com", data)
			rec := e.record(t, qid)
			h, body := splitMsg(t, got.Data)
			if rec.Tracking != c.recorded {
				t.Errorf("ledger tracking %q, want %q", rec.Tracking, c.recorded)
			}
			checkListUnsub(t, k, e.baseURL, h, rec.ID, "customer@example.com")
			checkReturnPath(t, k, got, rec, "app@example.com")
			if strings.Contains(strings.ToLower(headerBlock(got.Data)), "x-leadpush") {
				t.Errorf("control header delivered:\n%s", headerBlock(got.Data))
			}

			if c.bodyIsOriginal {
				if want := sentBody(data); !bytes.Equal(body, want) {
					t.Errorf("tracking none changed the body:\n got %q\nwant %q", body, want)
				}
				if len(rec.Links) != 0 {
					t.Errorf("ledger links %q for an untracked body", rec.Links)
				}
				return
			}

			plain, html := mimeLeaves(t, got.Data)
			if len(plain) != 1 || len(html) != 1 {
				t.Fatalf("want one text and one html leaf, got %d and %d", len(plain), len(html))
			}
			// The pixel.
			pm := pixelRE.FindAllStringSubmatch(html[0], -1)
			switch {
			case c.pixel && len(pm) != 1:
				t.Errorf("want one open pixel, got %d in:\n%s", len(pm), html[0])
			case c.pixel:
				if cl, err := k.Verify(token.Open, pm[0][1]); err != nil || cl.MessageID != rec.ID || cl.Recipient != "customer@example.com" {
					t.Errorf("pixel token: %+v, %v", cl, err)
				}
				if !strings.Contains(html[0], `.gif" width="1" height="1" alt=""`) || !regexp.MustCompile(`\.gif"[^>]*>\n?</body>`).MatchString(html[0]) {
					t.Errorf("pixel not a 1x1 <img> just before </body>:\n%s", html[0])
				}
			case len(pm) != 0 || bytes.Contains(body, []byte("/o/")):
				t.Errorf("mode %q added a pixel:\n%s", c.mode, html[0])
			}
			if strings.Contains(plain[0], "<img") {
				t.Errorf("pixel in the text part:\n%s", plain[0])
			}

			// The links.
			htmlTargets, htmlOther := clickTargets(t, k, e.baseURL, rec.ID, html[0])
			textTargets, textOther := clickTargets(t, k, e.baseURL, rec.ID, plain[0])
			if c.clicks {
				if want := []string{linkNews, linkDocs}; !slices.Equal(htmlTargets, want) {
					t.Errorf("html click targets %q, want %q", htmlTargets, want)
				}
				if want := []string{linkAccount, "https://cdn.example.com/logo.png"}; !slices.Equal(htmlOther, want) {
					t.Errorf("html untracked links %q, want %q", htmlOther, want)
				}
				if want := []string{linkNews, linkDocs}; !slices.Equal(textTargets, want) || len(textOther) != 0 {
					t.Errorf("text click targets %q (untracked %q), want %q", textTargets, textOther, want)
				}
				if !slices.Equal(rec.Links, []string{linkNews, linkDocs}) {
					t.Errorf("ledger links %q, want the originals", rec.Links)
				}
				// the tracked href keeps its quoting style
				if !regexp.MustCompile(`<a class="btn" href='` + regexp.QuoteMeta(e.baseURL) + `/c/[A-Za-z0-9_-]+'>`).MatchString(html[0]) {
					t.Errorf("single-quoted href not rewritten in place:\n%s", html[0])
				}
			} else {
				if len(htmlTargets)+len(textTargets) != 0 {
					t.Errorf("mode %q rewrote links: %q %q", c.mode, htmlTargets, textTargets)
				}
				for _, l := range []string{`href="https://example.com/news?a=1&amp;b=2"`, `href='http://docs.example.org/start'`} {
					if !strings.Contains(html[0], l) {
						t.Errorf("original %s missing from:\n%s", l, html[0])
					}
				}
				if len(rec.Links) != 0 {
					t.Errorf("ledger links %q in mode %q", rec.Links, c.mode)
				}
			}
			// mailto and notrack links stay as they were.
			for _, l := range []string{`<a href="mailto:help@example.com">`, `href="https://example.com/account"`} {
				if !strings.Contains(html[0], l) {
					t.Errorf("%s changed in:\n%s", l, html[0])
				}
			}
			if !strings.Contains(plain[0], "Questions? mailto:help@example.com") {
				t.Errorf("text mailto changed:\n%s", plain[0])
			}
			// The attribute is an instruction to Leadpush: it never reaches
			// the recipient of a rewritten message.
			if strings.Contains(html[0], "data-leadpush-notrack") {
				t.Errorf("data-leadpush-notrack attribute delivered:\n%s", html[0])
			}
		})
	}
}

func TestTrackingSenderListUnsubscribeKept(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := trackKeys(t)
	own := "<mailto:leave@example.com>, <https://example.com/leave?u=42>"
	for _, mode := range []string{"none", ""} {
		t.Run("mode="+mode, func(t *testing.T) {
			data := htmlMessage(mode, "List-Unsubscribe: "+own+"\n")
			got, qid := e.sendData(t, "app@example.com", "customer@example.com", data)
			rec := e.record(t, qid)
			h, _ := splitMsg(t, got.Data)
			if lu := h["List-Unsubscribe"]; len(lu) != 1 || lu[0] != own {
				t.Errorf("List-Unsubscribe %q, want only the sender's %q", lu, own)
			}
			if p := h["List-Unsubscribe-Post"]; len(p) != 0 {
				t.Errorf("List-Unsubscribe-Post %q added to a sender's own List-Unsubscribe", p)
			}
			checkReturnPath(t, k, got, rec, "app@example.com")
		})
	}
}

func TestTrackingSkipsDKIMSigned(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := trackKeys(t)
	sig := "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=app;\n" +
		" h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\n" +
		" b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==\n"
	data := htmlMessage("", sig)
	got, qid := e.sendData(t, "app@example.com", "customer@example.com", data)
	rec := e.record(t, qid)
	h, body := splitMsg(t, got.Data)
	if want := sentBody(data); !bytes.Equal(body, want) {
		t.Errorf("a DKIM-signed body was changed:\n got %q\nwant %q", body, want)
	}
	if len(rec.Links) != 0 {
		t.Errorf("ledger links %q for an untouched body", rec.Links)
	}
	if len(h["Dkim-Signature"]) != 1 {
		t.Errorf("DKIM-Signature header lost: %q", h["Dkim-Signature"])
	}
	checkListUnsub(t, k, e.baseURL, h, rec.ID, "customer@example.com")
}

// bigHTML returns an HTML message of about size bytes with n distinct links,
// one per line, and the list of those links in order.
func bigHTML(n int) (string, []string) {
	var b strings.Builder
	b.WriteString("From: app@example.com\nTo: customer@example.com\nSubject: catalogue\n")
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n")
	b.WriteString("<html><body>\n<h1>Catalogue</h1>\n")
	links := make([]string, n)
	for i := range n {
		links[i] = fmt.Sprintf("https://shop.example.com/item/%05d?ref=mail", i)
		fmt.Fprintf(&b, "<p>Item %05d: <a href=\"%s\">item %d</a> lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n", i, links[i], i)
		if i%100 == 0 {
			b.WriteString("<p>" + strings.Repeat("Plain filler text without links. ", 20) + "</p>\n")
		}
	}
	b.WriteString("</body></html>")
	return b.String(), links
}

func TestTrackingLargeHTML(t *testing.T) {
	e := newEnv(t, envOptions{})
	k := trackKeys(t)
	data, links := bigHTML(4500)
	if len(data) < 600<<10 {
		t.Fatalf("test message is only %d bytes", len(data))
	}
	got, qid := e.sendData(t, "app@example.com", "customer@example.com", data)
	rec := e.record(t, qid)
	_, body := splitMsg(t, got.Data)
	if _, html := mimeLeaves(t, got.Data); len(html) != 1 {
		t.Errorf("want one html leaf, got %d", len(html))
	}
	sent := sentBody(data)
	t.Logf("sent body %d bytes, delivered %d bytes", len(sent), len(body))

	if n, m := bytes.Count(body, []byte("\r\n")), bytes.Count(sent, []byte("\r\n")); n != m {
		t.Errorf("delivered body has %d lines, sent %d", n, m)
	}
	// Undo the rewrite: every tracked href back to the URL its token
	// carries, and the pixel out; what is left must be what was sent.
	re := tokRE(e.baseURL, "/c/", "")
	var targets []string
	restored := re.ReplaceAllFunc(body, func(m []byte) []byte {
		c, err := k.Verify(token.Click, string(re.FindSubmatch(m)[1]))
		if err != nil || c.MessageID != rec.ID {
			t.Errorf("click token %.80s...: %+v, %v", m, c, err)
			return m
		}
		targets = append(targets, c.URL)
		return []byte(c.URL) // no & or " in these URLs: no HTML escaping needed
	})
	pixel := regexp.MustCompile(`<img src="` + regexp.QuoteMeta(e.baseURL) + `/o/[A-Za-z0-9_-]+\.gif"[^>]*>`)
	if n := len(pixel.FindAll(restored, -1)); n != 1 {
		t.Errorf("%d pixels in the large message", n)
	}
	restored = pixel.ReplaceAll(restored, nil)
	if !slices.Equal(targets, links) {
		t.Errorf("%d links tracked, want %d in order", len(targets), len(links))
	}
	if !bytes.Equal(restored, sent) {
		i := 0
		for i < len(restored) && i < len(sent) && restored[i] == sent[i] {
			i++
		}
		lo := max(i-200, 0)
		t.Errorf("large body differs from what was sent at byte %d (restored %d bytes, sent %d):\n got %q\nwant %q",
			i, len(restored), len(sent), restored[lo:min(i+200, len(restored))], sent[lo:min(i+200, len(sent))])
	}
	if len(rec.Links) != len(links) {
		t.Errorf("ledger has %d links, want %d", len(rec.Links), len(links))
	}
}
