package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/notify/webhook"
)

// demoChrome is the browser a person opens the mail in.
const demoChrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// TestDemo is `make demo`: a message's whole life on the embedded
// defaults. The seed's swaks example (as HTML, tracking all) through a
// private Postfix with leadpush-milter; its delivery read from the mail
// log by leadpushd; the pixel opened and a link clicked with a browser's
// user agent; the one-click unsubscribe; a second message to an address
// the receiving server refuses, whose real Postfix bounce comes back to
// the VERP address through the pipe transport into leadpushctl ingest;
// and both webhook formats as a local receiver got them, beside
// leadpushctl message. It runs only when LEADPUSH_DEMO=1, and fails if any
// step does not happen.
func TestDemo(t *testing.T) {
	if os.Getenv("LEADPUSH_DEMO") != "1" {
		t.Skip("set LEADPUSH_DEMO=1 (make demo)")
	}
	jsonR := newReceiver(t, "whsec_"+"c2VjcmV0LWZvci1qc29uLWVuZHBvaW50")
	batchR := newReceiver(t, "batch secret")
	e := newEnv(t, envOptions{daemon: true, ingest: true, labOptions: postfixlab.Options{
		ExtraMain: "relay_domains = bounce.example.com\n" +
			"transport_maps = inline:{ bounce.example.com=leadpush-ingest: }\n" +
			"leadpush-ingest_destination_recipient_limit = 1\n",
		ExtraMaster: "leadpush-ingest unix - n n - - pipe\n" +
			"  flags=Rq user=nobody argv={{BIN}}/leadpushctl -config {{CONFIG}} ingest --recipient ${recipient}\n",
	}, extraToml: fmt.Sprintf(`
[[webhook]]
name = "app-json"
url = %q
format = "json"
secret = %q

[[webhook]]
name = "app-batch"
url = %q
format = "batch"
secret = %q
`, jsonR.srv.URL+"/hooks/json", jsonR.secret, batchR.srv.URL+"/hooks/batch", batchR.secret)})
	e.lab.Sink.SetRcptReply("gone@example.net", 550, "5.1.1 <gone@example.net>: Recipient address rejected: User unknown in virtual mailbox table")
	html := `<html><body><p>Use this link to reset your password: <a href="https://example.com/reset">reset it</a></p></body></html>`
	args := append(e.lab.SubmitArgs(), "--from", "app@example.com", "--to", "customer@example.com",
		"--header", "Subject: Your password reset link", "--header", `X-Leadpush-Tag: "password reset"`,
		"--header", "X-Leadpush-Tracking: all", "--header", "MIME-Version: 1.0",
		"--header", "Content-Type: text/html; charset=utf-8", "--body", html)

	fmt.Printf("\n== 1. The application sends, as in the seed (submission %s, STARTTLS + AUTH LOGIN as %s):\n   swaks %s\n",
		e.lab.SubmitAddr, e.lab.SASLUser, strings.Join(quoteArgs(args), " "))
	got, qid := e.delivered(t, args...)
	m := e.message(t, qid)
	fmt.Printf("\n== 2. What the recipient's server received (queue id %s; envelope from <%s>; no X-Leadpush-* header: %v):\n\n%s\n",
		qid, got.From, !bytes.Contains(bytes.ToLower(got.Data), []byte("x-leadpush")), strings.ReplaceAll(string(got.Data), "\r\n", "\n"))

	fmt.Println("== 3. Delivery, read from Postfix's log by leadpushd:")
	e.waitEvents(t, "delivered", func(evs []ctlEvent) bool { return len(find(evs, "delivered", "customer@example.com")) == 1 }, "--message", m.ID)
	fmt.Println("   delivered to customer@example.com")

	body := browserHTMLPart(t, got.Data)
	pixel := tokRE(e.baseURL, "/o/", ".gif").FindString(body)
	click := tokRE(e.baseURL, "/c/", "").FindString(body)
	if pixel == "" || click == "" {
		t.Fatalf("no pixel or tracked link in the delivered HTML:\n%s", body)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	do := func(method, u, ctype, data string) *http.Response {
		req, _ := http.NewRequest(method, u, strings.NewReader(data))
		req.Header.Set("User-Agent", demoChrome)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		r, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r
	}
	r := do("GET", pixel, "", "")
	fmt.Printf("\n== 4. The recipient opens it in Chrome: GET %s...\n   %d %s\n", pixel[:len(e.baseURL)+12], r.StatusCode, r.Header.Get("Content-Type"))
	r = do("GET", click, "", "")
	fmt.Printf("   and clicks the link: GET %s...\n   %d, Location: %s\n", click[:len(e.baseURL)+12], r.StatusCode, r.Header.Get("Location"))
	if r.StatusCode != http.StatusFound || r.Header.Get("Location") != "https://example.com/reset" {
		t.Fatalf("click: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	unsub := browserUnsubURL(t, got.Data)
	r = do("POST", unsub, "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click")
	fmt.Printf("   then their mail client's unsubscribe button (RFC 8058): POST %s... List-Unsubscribe=One-Click\n   %d\n", unsub[:len(e.baseURL)+12], r.StatusCode)

	fmt.Println("\n== 5. A second message, to an address the receiving server refuses (550 5.1.1):")
	out, qid2, err := e.lab.Swaks(t, append(e.lab.SubmitArgs(), "--from", "app@example.com", "--to", "gone@example.net",
		"--header", "Subject: Welcome", "--header", "X-Leadpush-Tag: welcome", "--body", "Hello")...)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m2 := e.message(t, qid2)
	e.waitEvents(t, "the hard bounce", func(evs []ctlEvent) bool { return len(find(evs, "hard_bounce", "gone@example.net")) == 1 }, "--message", m2.ID)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(e.ctl(t, "inbound", "--kind", "bounce"), m2.ID) {
		if time.Now().After(deadline) {
			t.Fatal("Postfix's bounce never reached leadpushctl ingest")
		}
		time.Sleep(300 * time.Millisecond)
	}
	fmt.Println("   Postfix's own bounce came back to the VERP address, through the pipe transport into leadpushctl ingest:")
	fmt.Print(indent(e.ctl(t, "inbound", "--kind", "bounce")))
	fmt.Println("   leadpushctl suppressions why gone@example.net")
	fmt.Print(indent(e.ctl(t, "suppressions", "why", "gone@example.net")))

	evs := e.waitEvents(t, "open, click and unsubscribe", func(evs []ctlEvent) bool {
		return len(find(evs, "open", "customer@example.com")) == 1 && len(find(evs, "click", "customer@example.com")) == 1 &&
			len(find(evs, "unsubscribe", "customer@example.com")) == 1
	}, "--message", m.ID)
	fmt.Printf("\n== 6. The first message's life: leadpushctl message %s\n\n", m.ID)
	fmt.Print(e.ctl(t, "message", m.ID))
	fmt.Println("\n   (The open and the click are marked machine, \"too soon after sending\": hits within seconds of sending are")
	fmt.Println("   what link scanners make; a person opening the mail later is not marked. Webhooks carry the mark.)")
	fmt.Println("\n   leadpushctl suppressions list")
	fmt.Print(indent(e.ctl(t, "suppressions", "list")))

	// The webhooks: every event of the first message at both endpoints.
	want := len(evs)
	var jsonGot []webhook.Payload
	var batchGot []webhook.BatchEvent
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		jsonGot, batchGot = nil, nil
		bodies, _ := jsonR.snapshot()
		for _, b := range bodies {
			var p webhook.Payload
			if json.Unmarshal(b, &p) == nil && p.Event.MessageID == m.ID {
				jsonGot = append(jsonGot, p)
			}
		}
		bodies, _ = batchR.snapshot()
		for _, b := range bodies {
			form, _ := url.ParseQuery(string(b))
			var bes []webhook.BatchEvent
			json.Unmarshal([]byte(form.Get(webhook.DefaultParam)), &bes)
			for _, be := range bes {
				if be.Msg.ID == m.ID {
					batchGot = append(batchGot, be)
				}
			}
		}
		// json takes every event; batch every one but processed.
		if len(jsonGot) >= want && len(batchGot) >= want-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhooks: json %d, batch %d events of %s; want %d and %d", len(jsonGot), len(batchGot), m.ID, want, want-1)
		}
	}
	fmt.Printf("\n== 7. What the application's webhook endpoints received for it (signatures verified):\n")
	fmt.Printf("\n   json (seed 001, one POST an event), the click:\n")
	for _, p := range jsonGot {
		if p.Event.Type == webhook.TypeClicked {
			b, _ := json.MarshalIndent(p, "   ", "  ")
			fmt.Printf("   %s\n", b)
		}
	}
	fmt.Printf("\n   batch (seed 002, a form POST of a JSON array), the same click:\n")
	for _, be := range batchGot {
		if be.Event == "click" {
			b, _ := json.MarshalIndent(be, "   ", "  ")
			fmt.Printf("   %s\n", b)
		}
	}
	var names []string
	for _, be := range batchGot {
		names = append(names, be.Event)
	}
	fmt.Printf("\n   all batch events of the message: %s\n", strings.Join(names, ", "))
	if m.Tag != "password reset" || m.Tracking != "all" {
		t.Fatalf("recorded %+v", m)
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("   " + l + "\n")
	}
	return b.String()
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'<>;") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
