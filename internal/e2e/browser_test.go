package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/leadpush/leadpush/internal/browsertest"
	"github.com/leadpush/leadpush/internal/postfixlab"
)

// The tests in this file are the "Done when" for the tracker, run
// the way a recipient would: a message goes through the real Postfix and
// leadpush-milter, and what arrives at the relay is opened in a real
// headless chromium or answered with the real curl, against leadpushd.

// browserEvent is a line of `leadpushctl events --json`.
type browserEvent struct {
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	Recipient string `json:"recipient"`
	Detail    struct {
		UserAgent     string `json:"user_agent"`
		UAFamily      string `json:"ua_family"`
		UAMajor       string `json:"ua_major"`
		URL           string `json:"url"`
		Machine       bool   `json:"machine"`
		MachineReason string `json:"machine_reason"`
		Source        string `json:"source"`
		Reason        string `json:"reason"`
	} `json:"detail"`
}

// browserLedgerEvents returns the ledger's events as leadpushctl prints them.
func (e *env) browserLedgerEvents(t *testing.T) []browserEvent {
	t.Helper()
	var evs []browserEvent
	sc := bufio.NewScanner(strings.NewReader(e.ctl(t, "events", "--json")))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev browserEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("leadpushctl events --json printed %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// browserEventsOf returns the events of one type for one recipient (and message,
// unless msgID is "").
func browserEventsOf(evs []browserEvent, typ, msgID, rcpt string) []browserEvent {
	var out []browserEvent
	for _, ev := range evs {
		if ev.Type == typ && ev.Recipient == rcpt && (msgID == "" || ev.MessageID == msgID) {
			out = append(out, ev)
		}
	}
	return out
}

// browserWaitEvents polls leadpushctl (the tracker records in batches, within a
// second) until done holds for the events, and returns them; it fails the
// test after 10 s.
func (e *env) browserWaitEvents(t *testing.T, what string, done func([]browserEvent) bool) []browserEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := e.browserLedgerEvents(t)
		if done(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s; events:\n%s", what, e.ctl(t, "events", "--json"))
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// suppression returns the reason the ledger suppresses addr for, or "".
func (e *env) browserSuppression(t *testing.T, addr string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(e.ctl(t, "suppressions", "list", "--json")))
	for sc.Scan() {
		var s struct{ Address, Reason string }
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("leadpushctl suppressions list --json printed %q: %v", sc.Text(), err)
		}
		if s.Address == addr {
			return s.Reason
		}
	}
	return ""
}

// counters returns the opens and clicks counters of a message.
func (e *env) browserCounters(t *testing.T, msgID string) (opens, clicks int) {
	t.Helper()
	var m struct{ Opens, Clicks int }
	out := e.ctl(t, "message", msgID, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("leadpushctl message %s --json printed %q: %v", msgID, out, err)
	}
	return m.Opens, m.Clicks
}

var browserUnsubRE = regexp.MustCompile(`<(https?://[^>]+)>`)

// unsubURL returns the http(s) URL of a delivered message's List-Unsubscribe.
func browserUnsubURL(t *testing.T, data []byte) string {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v", err)
	}
	lu := m.Header.Get("List-Unsubscribe")
	u := browserUnsubRE.FindStringSubmatch(lu)
	if u == nil {
		t.Fatalf("no http(s) URL in List-Unsubscribe: %q", lu)
	}
	return u[1]
}

// browserHTMLPart returns the one decoded text/html part of a delivered
// message (mimeLeaves, in tracking_test.go, does the MIME walk).
func browserHTMLPart(t *testing.T, data []byte) string {
	t.Helper()
	_, html := mimeLeaves(t, data)
	if len(html) != 1 {
		t.Fatalf("want one text/html part, got %d", len(html))
	}
	return html[0]
}

// submitFile submits a complete message with swaks --data @file through the
// authenticated submission port and returns it as the relay received it.
func (e *env) browserSubmit(t *testing.T, from, to, data string) (postfixlab.Received, string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "message.eml")
	if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return e.delivered(t, append(e.lab.SubmitArgs(), "--from", from, "--to", to, "--data", "@"+f)...)
}

func TestBrowserThroughPostfix(t *testing.T) {
	start := time.Now()
	e := newEnv(t, envOptions{daemon: true})
	// after newEnv: chromium ends first, so leadpushd does not wait for
	// the sockets chromium opened ahead (net/http gives new connections 5 s)
	ctx := browsertest.New(t, 45*time.Second)
	const rcpt = "reader@example.com"

	landed := make(chan string, 4)
	landingSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/landing" {
			select {
			case landed <- r.URL.String():
			default:
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>Landing</title><p id="landed">landed</p></html>`)
	}))
	defer landingSrv.Close()
	landing := landingSrv.URL + "/landing?id=42"

	data := fmt.Sprintf(`From: Shop <app@example.com>
To: %s
Subject: Our offer
Message-ID: <browser-%d@example.com>
Date: Mon, 2 Mar 2026 10:00:00 +0000
X-Leadpush-Tracking: all
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_b"

--=_b
Content-Type: text/plain; charset=utf-8

See our offer: %s

--=_b
Content-Type: text/html; charset=utf-8

<!DOCTYPE html>
<html lang="en"><head><title>Our offer</title></head>
<body>
<p>Hello, <a id="offer" href="%s">see our offer</a>.</p>
</body>
</html>

--=_b--
`, rcpt, time.Now().UnixNano(), landing, strings.ReplaceAll(landing, "&", "&amp;"))
	got, qid := e.browserSubmit(t, "app@example.com", rcpt, data)
	rec := e.message(t, qid)
	html := browserHTMLPart(t, got.Data)
	if !strings.Contains(html, e.baseURL+"/o/") || !strings.Contains(html, e.baseURL+"/c/") {
		t.Fatalf("delivered html is not tracked:\n%s", html)
	}
	unsub := browserUnsubURL(t, got.Data)
	t.Logf("delivered in %v", time.Since(start).Round(time.Millisecond))

	// the mail client
	client := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, html)
	}))
	defer client.Close()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(client.URL),
		chromedp.Poll[chromedp.Void](`(() => { const i = document.querySelector('img[src*="/o/"]'); return !!i && i.complete && i.naturalWidth === 1 })()`,
			chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("the pixel did not load: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href*="/c/"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#landed`)),
	); err != nil {
		t.Fatalf("click: %v", err)
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != landing {
		t.Errorf("landed on %q (%v), want %q", loc, err, landing)
	}
	select {
	case u := <-landed:
		if u != "/landing?id=42" {
			t.Errorf("landing server saw %q", u)
		}
	case <-time.After(5 * time.Second):
		t.Error("the landing server saw no request")
	}

	// The unsubscribe page: a GET changes nothing.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(unsub),
		chromedp.WaitVisible(chromedp.CSS(`form button[type="submit"]`)),
	); err != nil {
		t.Fatalf("unsubscribe page: %v", err)
	}
	// the open and the click were made before the GET: once they are
	// recorded, an unsubscribe made by the GET would most likely be too
	evs := e.browserWaitEvents(t, "the open and the click", func(evs []browserEvent) bool {
		return len(browserEventsOf(evs, "open", rec.ID, rcpt)) > 0 && len(browserEventsOf(evs, "click", rec.ID, rcpt)) > 0
	})
	if n := len(browserEventsOf(evs, "unsubscribe", "", rcpt)); n != 0 {
		t.Fatalf("GET of the unsubscribe page recorded %d unsubscribes", n)
	}
	if r := e.browserSuppression(t, rcpt); r != "" {
		t.Fatalf("GET of the unsubscribe page suppressed %s (%s)", rcpt, r)
	}

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)),
	); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`[role="status"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, rcpt) || !strings.Contains(status, "unsubscribed") {
		t.Errorf("confirmation page says %q", status)
	}

	evs = e.browserWaitEvents(t, "the unsubscribe", func(evs []browserEvent) bool {
		return len(browserEventsOf(evs, "unsubscribe", rec.ID, rcpt)) > 0
	})
	opens, clicks := browserEventsOf(evs, "open", rec.ID, rcpt), browserEventsOf(evs, "click", rec.ID, rcpt)
	if len(opens) != 1 || len(clicks) != 1 {
		t.Errorf("recorded %d opens and %d clicks, want 1 each", len(opens), len(clicks))
	}
	for _, ev := range append(opens, clicks...) {
		d := ev.Detail
		if d.UAFamily != "HeadlessChrome" && d.UAFamily != "Chrome" {
			t.Errorf("%s: ua_family %q (user agent %q)", ev.Type, d.UAFamily, d.UserAgent)
		}
		if _, err := strconv.Atoi(d.UAMajor); err != nil {
			t.Errorf("%s: ua_major %q", ev.Type, d.UAMajor)
		}
		t.Logf("%s: %s %s machine=%v %q", ev.Type, d.UAFamily, d.UAMajor, d.Machine, d.MachineReason)
	}
	if len(clicks) > 0 && clicks[0].Detail.URL != landing {
		t.Errorf("click url %q, want %q", clicks[0].Detail.URL, landing)
	}
	if u := browserEventsOf(evs, "unsubscribe", rec.ID, rcpt); len(u) != 1 || u[0].Detail.Reason != "page" {
		t.Errorf("unsubscribes %+v, want one with reason page", u)
	}
	if r := e.browserSuppression(t, rcpt); r != "unsubscribe" {
		t.Errorf("suppression of %s: %q, want unsubscribe", rcpt, r)
	}
	if o, c := e.browserCounters(t, rec.ID); o < 1 || c < 1 {
		t.Errorf("message counters opens %d clicks %d, want >= 1", o, c)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// curlUnsub runs the real curl against url (a POST with body when body is
// not "") and returns the status, the response headers and the body.
func browserCurl(t *testing.T, url, body string) (code int, header http.Header, page string) {
	t.Helper()
	dir := t.TempDir()
	hf, bf := filepath.Join(dir, "headers"), filepath.Join(dir, "body")
	args := []string{"-s", "-D", hf, "-o", bf, "-w", "%{http_code}"}
	if body != "" {
		args = append(args, "-X", "POST", "-d", body)
	}
	out, err := exec.Command("curl", append(args, url)...).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	code, err = strconv.Atoi(string(out))
	if err != nil {
		t.Fatalf("curl -w %%{http_code} printed %q", out)
	}
	h, _ := os.ReadFile(hf)
	// curl writes the status line and the header lines, CRLF-terminated
	_, rest, _ := strings.Cut(string(h), "\r\n")
	r, err := http.ReadResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\n"+rest)), nil)
	if err != nil {
		t.Fatalf("curl's header dump does not parse: %v\n%s", err, h)
	}
	b, _ := os.ReadFile(bf)
	return code, r.Header, string(b)
}

func TestOneClickUnsubscribeCurl(t *testing.T) {
	start := time.Now()
	if _, err := exec.LookPath("curl"); err != nil {
		browsertest.Require(t, "/usr/bin/curl") // skips, or fails under CI
	}
	e := newEnv(t, envOptions{daemon: true})
	const rcpt, other = "customer@example.com", "other@example.com"

	got, qid := e.delivered(t, e.seedSwaks("")...)
	rec := e.message(t, qid)
	url := browserUnsubURL(t, got.Data)
	if !strings.HasPrefix(url, e.baseURL+"/u/") {
		t.Fatalf("List-Unsubscribe URL %q is not the tracker's", url)
	}

	// A second message, to another recipient: curl GETs its page first.
	otherArgs := append(e.lab.SubmitArgs(), "--from", "app@example.com", "--to", other,
		"--header", "Subject: Newsletter", "--body", "Read it at https://example.com/news")
	gotOther, qidOther := e.delivered(t, otherArgs...)
	recOther := e.message(t, qidOther)
	otherURL := browserUnsubURL(t, gotOther.Data)
	code, h, page := browserCurl(t, otherURL, "")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(page, "<form") {
		t.Errorf("GET of the unsubscribe page: %d %q\n%s", code, h.Get("Content-Type"), page)
	}

	// A tampered token: one character in the middle changed.
	i := strings.LastIndex(url, "/u/") + 3 + (len(url)-strings.LastIndex(url, "/u/")-3)/2
	c := byte('A')
	if url[i] == 'A' {
		c = 'B'
	}
	tampered := url[:i] + string(c) + url[i+1:]
	for _, body := range []string{"", "List-Unsubscribe=One-Click"} {
		if code, _, _ := browserCurl(t, tampered, body); code != 404 {
			t.Errorf("tampered token (body %q): %d, want 404", body, code)
		}
	}

	// The one-click POST, as a mailbox provider makes it (RFC 8058).
	code, h, page = browserCurl(t, url, "List-Unsubscribe=One-Click")
	if code != 200 || h.Get("Location") != "" {
		t.Errorf("one-click POST: %d, Location %q, want 200 and no redirect; body %q", code, h.Get("Location"), page)
	}
	evs := e.browserWaitEvents(t, "the one-click unsubscribe", func(evs []browserEvent) bool {
		return len(browserEventsOf(evs, "unsubscribe", rec.ID, rcpt)) > 0
	})
	if u := browserEventsOf(evs, "unsubscribe", rec.ID, rcpt); len(u) != 1 || u[0].Detail.Reason != "one-click" {
		t.Errorf("unsubscribes %+v, want one with reason one-click", u)
	}
	if r := e.browserSuppression(t, rcpt); r != "unsubscribe" {
		t.Errorf("suppression of %s: %q, want unsubscribe", rcpt, r)
	}
	// the GET, made before the POST, changed nothing
	if u := browserEventsOf(evs, "unsubscribe", recOther.ID, other); len(u) != 0 {
		t.Errorf("GET of the unsubscribe page recorded %+v", u)
	}
	if r := e.browserSuppression(t, other); r != "" {
		t.Errorf("GET of the unsubscribe page suppressed %s (%s)", other, r)
	}
	// The other recipient still gets mail...
	if out, q, err := e.lab.Swaks(t, otherArgs...); err != nil || q == "" {
		t.Errorf("mail to %s after a GET of its page: %v\n%s", other, err, out)
	}
	// ...the unsubscribed one is refused at RCPT.
	e.waitMilterSuppressions(t, 1)
	out, q, err := e.lab.Swaks(t, e.seedSwaks("")...)
	if err == nil || q != "" || !strings.Contains(out, "5.7.1") {
		t.Errorf("mail to the unsubscribed %s: err %v, queue id %q, want 550 5.7.1 at RCPT:\n%s", rcpt, err, q, out)
	} else if !regexp.MustCompile(`(?m)^<[*~]\*\s+550 5\.7\.1 `).MatchString(out) {
		t.Errorf("swaks did not show 550 5.7.1:\n%s", out)
	}
	evs = e.browserWaitEvents(t, "the reject", func(evs []browserEvent) bool {
		return len(browserEventsOf(evs, "reject", "", rcpt)) > 0
	})
	if r := browserEventsOf(evs, "reject", "", rcpt); r[0].Detail.Reason != "unsubscribe" || r[0].MessageID == rec.ID {
		t.Errorf("reject event %+v, want reason unsubscribe on a new message", r[0])
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
