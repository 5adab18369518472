package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// streamsToml: password resets come from the SASL user (transactional, no
// List-Unsubscribe), the newsletter from news.example.com or by the
// X-Leadpush-Stream header; "crm" mail is split one recipient a message.
const streamsToml = `
[[stream]]
name = "transactional"
default = true
list_unsubscribe = false
sasl_users = ["lab@` + postfixlab.Hostname + `"]

[[stream]]
name = "newsletter"
kind = "broadcast"
senders = ["@news.example.com"]
tags = ["newsletter*"]

[[stream]]
name = "crm"
split_recipients = true
senders = ["crm@example.com"]
`

// streamOf returns the stream leadpushctl shows for a message.
func (e *env) streamOf(t *testing.T, queueID string) string {
	t.Helper()
	id := e.message(t, queueID).ID
	var m struct {
		Stream string `json:"stream"`
	}
	if err := json.Unmarshal([]byte(e.ctl(t, "message", id, "--json")), &m); err != nil {
		t.Fatal(err)
	}
	return m.Stream
}

// TestStreamsThroughPostfix is issue 17's first "done when": an address
// unsubscribed from the newsletter still receives a password reset; in
// the newsletter it is refused at RCPT when the envelope names the stream,
// and removed at end of message when only the header does; a hard bounce
// refuses it in both.
func TestStreamsThroughPostfix(t *testing.T) {
	e := newEnv(t, envOptions{extraToml: streamsToml})
	e.ctl(t, "suppressions", "add", "--stream", "newsletter", "--reason", "unsubscribe", "left@example.net")
	e.ctl(t, "suppressions", "add", "--reason", "hard_bounce", "dead@example.net")
	e.waitMilterSuppressions(t, 2)
	if out := e.ctl(t, "suppressions", "list"); !strings.Contains(out, "stream newsletter") || !strings.Contains(out, "all streams") {
		t.Errorf("suppressions list does not show scopes:\n%s", out)
	}

	// 1. The password reset (SASL user: transactional) reaches left@.
	got, qid := e.delivered(t, e.seedSwaks("", "--to", "left@example.net")...)
	if len(got.To) != 1 || got.To[0] != "left@example.net" {
		t.Fatalf("password reset delivered to %v, want left@example.net", got.To)
	}
	if s := e.streamOf(t, qid); s != "transactional" {
		t.Errorf("password reset recorded in stream %q", s)
	}
	if strings.Contains(headerBlock(got.Data), "List-Unsubscribe") {
		t.Errorf("transactional stream with list_unsubscribe = false got List-Unsubscribe:\n%s", headerBlock(got.Data))
	}

	// 2. The newsletter by envelope: left@ and dead@ refused at RCPT.
	out, qid, err := e.lab.Swaks(t, "--from", "editor@news.example.com", "--to", "left@example.net,dead@example.net,ok@example.net",
		"--header", "Subject: December news", "--body", "news")
	if err != nil || strings.Count(out, "550 5.7.1") != 2 || qid == "" {
		t.Fatalf("newsletter by sender: want two 550 5.7.1 and the message queued: %v\n%s", err, out)
	}
	got = e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return strings.Contains(string(r.Data), " id "+qid) }, 20*time.Second)
	if len(got.To) != 1 || got.To[0] != "ok@example.net" {
		t.Errorf("newsletter delivered to %v, want ok@example.net only", got.To)
	}
	if !strings.Contains(headerBlock(got.Data), "List-Unsubscribe") {
		t.Errorf("newsletter without List-Unsubscribe")
	}

	// 3. The newsletter by header: accepted at RCPT (the stream is not
	// known yet), removed at end of message; the client sees 250.
	out, qid, err = e.lab.Swaks(t, "--from", "app@example.com", "--to", "left@example.net,ok2@example.net",
		"--header", "X-Leadpush-Stream: newsletter", "--header", "Subject: header news", "--body", "news")
	if err != nil || strings.Contains(out, "550") || qid == "" {
		t.Fatalf("newsletter by header: %v\n%s", err, out)
	}
	got = e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return strings.Contains(string(r.Data), " id "+qid) }, 20*time.Second)
	if len(got.To) != 1 || got.To[0] != "ok2@example.net" || strings.Contains(headerBlock(got.Data), "X-Leadpush-Stream") {
		t.Errorf("newsletter by header delivered to %v (want ok2@example.net only), header stripped?\n%s", got.To, headerBlock(got.Data))
	}
	if s := e.streamOf(t, qid); s != "newsletter" {
		t.Errorf("recorded in stream %q", s)
	}

	// 4. A hard bounce refuses dead@ in the transactional stream too.
	out, _, err = e.lab.Swaks(t, e.seedSwaks("", "--to", "dead@example.net")...)
	if err == nil || !strings.Contains(out, "550 5.7.1") {
		t.Errorf("password reset to a hard-bounced address: %v\n%s", err, out)
	}
	e.waitEvents(t, "reject events", func(evs []ctlEvent) bool {
		return len(find(evs, "reject", "left@example.net")) == 2 && len(find(evs, "reject", "dead@example.net")) == 2
	}, "--type", "reject")
	if out := e.ctl(t, "messages", "--stream", "newsletter"); strings.Count(out, "\n") != 3 {
		t.Errorf("messages --stream newsletter: want two messages:\n%s", out)
	}
}

// TestDropRejectCarriesMessage is issue 17's third "done when", on the
// ledger side: under action = "drop" a message whose only recipient is
// suppressed is accepted (250), discarded, and its reject event's message
// has the tag, stream, subject and custom headers a webhook reads.
func TestDropRejectCarriesMessage(t *testing.T) {
	e := newEnv(t, envOptions{extraToml: streamsToml + "\n[suppression]\naction = \"drop\"\n"})
	e.ctl(t, "suppressions", "add", "--stream", "newsletter", "--reason", "unsubscribe", "left@example.net")
	e.waitMilterSuppressions(t, 1)
	out, qid, err := e.lab.Swaks(t, "--from", "app@example.com", "--to", "left@example.net",
		"--header", "X-Leadpush-Tag: newsletter-december", "--header", "Subject: December news",
		"--header", "Contact-ID: 12345", "--header", "X-Leadpush-Record: Campaign-Name", "--header", "Campaign-Name: winter",
		"--body", "news")
	if err != nil || qid == "" {
		t.Fatalf("swaks: the message must be accepted under action drop: %v\n%s", err, out)
	}
	e.lab.WaitLog(t, regexpQuote(qid+": milter-discard"), 20*time.Second)
	evs := e.waitEvents(t, "the reject event", func(evs []ctlEvent) bool { return len(find(evs, "reject", "left@example.net")) == 1 }, "--type", "reject")
	rej := find(evs, "reject", "left@example.net")[0]
	var m struct {
		Tag     string            `json:"tag"`
		Stream  string            `json:"stream"`
		Subject string            `json:"subject"`
		Headers map[string]string `json:"headers"`
		Events  []ctlEvent        `json:"events"`
	}
	if err := json.Unmarshal([]byte(e.ctl(t, "message", rej.MessageID, "--json")), &m); err != nil {
		t.Fatal(err)
	}
	if m.Tag != "newsletter-december" || m.Stream != "newsletter" || m.Subject != "December news" ||
		m.Headers["Contact-ID"] != "12345" || m.Headers["Campaign-Name"] != "winter" {
		t.Errorf("the reject event's message: %+v", m)
	}
	for _, ev := range m.Events {
		if ev.Type == "processed" {
			t.Errorf("a discarded message has a processed event")
		}
	}
	if len(e.lab.Sink.Messages()) != 0 {
		t.Errorf("the discarded message reached the relay")
	}
}

// TestSplitRecipientsThroughPostfix: Postfix's own smtp client relays a
// two-recipient message to the milter's Postfix, whose milter answers the
// second RCPT 452 4.5.3; the client delivers the first and retries the
// second after its backoff (lowered here), so the relay receives two
// single-recipient messages, each recorded with its one recipient.
func TestSplitRecipientsThroughPostfix(t *testing.T) {
	e := newEnv(t, envOptions{extraToml: streamsToml})
	front := postfixlab.Start(t, postfixlab.Options{
		RelayHost: "[127.0.0.1]:" + strings.TrimPrefix(e.lab.SMTPAddr, "127.0.0.1:"),
		// the 452'd recipient is deferred and retried after the backoff
		ExtraMain: "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n",
	})
	out, _, err := front.Swaks(t, "--server", front.SMTPAddr, "--from", "crm@example.com",
		"--to", "one@example.net,two@example.net", "--header", "Subject: split me", "--body", "hello")
	if err != nil {
		t.Fatalf("swaks to the front Postfix: %v\n%s", err, out)
	}
	var got [][]string
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		got = got[:0]
		for _, r := range e.lab.Sink.Messages() {
			if strings.Contains(string(r.Data), "Subject: split me") {
				got = append(got, r.To)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(got) != 2 || len(got[0]) != 1 || len(got[1]) != 1 || got[0][0] == got[1][0] {
		t.Fatalf("the relay received %v, want two messages of one recipient each", got)
	}
	if n := e.milterMetric(t, "leadpush_milter_recipients_split_total"); n < 1 {
		t.Errorf("recipients_split_total %v", n)
	}
	if l := front.WaitLog(t, regexpQuote("4.5.3 Too many recipients"), 5*time.Second); len(l) == 0 {
		t.Errorf("the front Postfix never saw the 452")
	}
	// each recorded message has one recipient
	msgs := 0
	sc := bufio.NewScanner(strings.NewReader(e.ctl(t, "messages", "--json", "--stream", "crm")))
	for sc.Scan() {
		var m struct {
			Recipients []string `json:"recipients"`
		}
		json.Unmarshal(sc.Bytes(), &m)
		if len(m.Recipients) != 1 {
			t.Errorf("recorded message with recipients %v", m.Recipients)
		}
		msgs++
	}
	if msgs != 2 {
		t.Errorf("%d messages in stream crm, want 2", msgs)
	}

	// Non-SMTP mail (sendmail(1) through pickup) is never split: nobody
	// would retry the 452.
	mid := fmt.Sprintf("<split-%d@example.com>", time.Now().UnixNano())
	cmd := exec.Command("/usr/sbin/sendmail", "-C", e.lab.ConfigDir, "-f", "crm@example.com", "three@example.net", "four@example.net")
	cmd.Stdin = strings.NewReader("From: crm@example.com\nSubject: not split\nMessage-ID: " + mid + "\n\nhello\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v %s", err, out)
	}
	r := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return strings.Contains(string(r.Data), mid) }, 30*time.Second)
	if len(r.To) != 2 {
		t.Errorf("sendmail(1) mail delivered to %v, want both recipients in one message", r.To)
	}
}

func regexpQuote(s string) *regexp.Regexp { return regexp.MustCompile(regexp.QuoteMeta(s)) }

// TestMultiRecipientUnsubscribeThroughPostfix: a message to two recipients
// has a one-click URL that names nobody: its RFC 8058 POST gets 400 and
// records nothing; its page mails a confirmation link (through Postfix and
// the milter) to an address typed that is a recipient, and that link
// unsubscribes exactly that recipient.
func TestMultiRecipientUnsubscribeThroughPostfix(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl missing")
	}
	e := newEnv(t, envOptions{daemon: true, trackerToml: "confirm_from = \"unsubscribe@example.com\"\nconfirm_submit = \"{{SMTP}}\""})
	got, qid := e.delivered(t, append(e.lab.SubmitArgs(), "--from", "app@example.com", "--to", "jane@example.net,bob@example.net",
		"--header", "Subject: for two", "--body", "hello both")...)
	rec := e.message(t, qid)
	url := browserUnsubURL(t, got.Data)

	// RFC 8058 one-click: not 200, nothing recorded
	if code, _, page := browserCurl(t, url, "List-Unsubscribe=One-Click"); code == 200 || code/100 == 2 {
		t.Errorf("one-click POST of a two-recipient message: %d %q, want an error status", code, page)
	}
	// the page: a stranger gets the same answer and no mail
	for _, a := range []string{"eve@example.net", "bob@example.net"} {
		if code, _, page := browserCurl(t, url, "email="+a); code != 200 || !strings.Contains(page, "we have sent it a link") {
			t.Errorf("page POST %s: %d\n%s", a, code, page)
		}
	}
	conf := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool {
		return strings.Contains(string(r.Data), "Subject: Confirm your unsubscribe")
	}, 20*time.Second)
	if len(conf.To) != 1 || conf.To[0] != "bob@example.net" {
		t.Fatalf("confirmation went to %v, want bob@example.net", conf.To)
	}
	_, body, _ := strings.Cut(string(conf.Data), "\r\n\r\n")
	link := regexp.MustCompile(regexp.QuoteMeta(e.baseURL) + `/u/[A-Za-z0-9_-]+`).FindString(body)
	if lu := browserUnsubURL(t, conf.Data); lu != link {
		t.Errorf("the confirmation's List-Unsubscribe %q is not its link %q", lu, link)
	}
	if link == "" {
		t.Fatalf("no confirmation link (untracked) in:\n%s", conf.Data)
	}
	if code, _, page := browserCurl(t, link, "confirm=1"); code != 200 || !strings.Contains(page, "bob@example.net has been unsubscribed") {
		t.Fatalf("confirmation POST: %d\n%s", code, page)
	}
	evs := e.waitEvents(t, "bob's unsubscribe", func(evs []ctlEvent) bool { return len(find(evs, "unsubscribe", "")) > 0 }, "--type", "unsubscribe")
	if len(evs) != 1 || evs[0].Recipient != "bob@example.net" || evs[0].MessageID != rec.ID || evs[0].Detail.Reason != "confirmed" {
		t.Errorf("unsubscribes %+v, want bob@example.net's alone (reason confirmed)", evs)
	}
	for _, m := range e.lab.Sink.Messages() {
		if strings.Contains(string(m.Data), "Confirm your unsubscribe") && m.To[0] != "bob@example.net" {
			t.Errorf("a confirmation went to %v", m.To)
		}
	}
}
