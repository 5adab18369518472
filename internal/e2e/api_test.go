package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/leadpush/leadpush/api"
	"github.com/leadpush/leadpush/internal/postfixlab"
	"github.com/leadpush/leadpush/notify/webhook"
)

// seedAPIRequest is seed 001's JSON example, with a link in the HTML body
// and a suppressed second recipient.
const seedAPIRequest = `{
  "from": {"email": "support@example.com", "name": "Support Team"},
  "to": [{"email": "john@example.org", "name": "John Doe"}, {"email": "gone@example.org"}],
  "subject": "Order Confirmation",
  "htmlBody": "<html><body><p>Thank you for your order! <a href=\"https://example.com/orders/42\">See it</a></p></body></html>",
  "headers": {"Contact-ID": "12345", "Campaign-ID": "summer-sale-2024", "Customer-ID": "CUST-789", "Account-ID": "ACC-456"},
  "trackOpens": true,
  "trackClicks": true,
  "tag": "order",
  "ippool": "marketing"
}`

type apiReply struct {
	status int
	header http.Header
	body   struct {
		MessageID string `json:"messageID"`
		QueueID   string `json:"queueID"`
		Rejected  []struct{ Email, Reason string }
		Error     string
		Fields    []struct{ Field, Message string }
	}
	raw string
}

func apiSend(t *testing.T, url, key, body string) apiReply {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/api/v1/send", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := apiReply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if err := json.Unmarshal(b, &r.body); err != nil {
		t.Fatalf("API answered %d with non-JSON %q", resp.StatusCode, b)
	}
	return r
}

// TestSendAPIThroughPostfix is issue 7's whole path: seed 001's request to
// leadpushd's API, submitted to a dedicated Postfix listener whose cleanup
// routes X-Leadpush-Pool to the smtp-marketing transport
// (contrib/postfix/ippool.cf), through leadpush-milter (tracking, the
// suppressed recipient refused, control headers stripped), delivered from
// 127.0.0.2, and reported to a json webhook with the four custom headers.
func TestSendAPIThroughPostfix(t *testing.T) {
	recv := newReceiver(t, "whsec_"+"c2VjcmV0LWZvci1qc29uLWVuZHBvaW50")
	apiURL := "http://" + freeAddr(t)
	submit := freeAddr(t)
	key, sum := api.NewKey()
	e := newEnv(t, envOptions{daemon: true, labOptions: postfixlab.Options{
		ExtraMain: "default_filter_nexthop = $relayhost\n" +
			"leadpush_pool_checks = regexp:{ {/^X-Leadpush-Pool: smtp-marketing:$$/ FILTER smtp-marketing:} }\n",
		ExtraMaster: submit + " inet n - n - - smtpd\n" +
			"  -o syslog_name=postfix/leadpush-api\n" +
			"  -o cleanup_service_name=cleanup-leadpush-api\n" +
			"cleanup-leadpush-api unix n - n - 0 cleanup\n" +
			"  -o header_checks=$leadpush_pool_checks\n" +
			"smtp-marketing unix - - n - - smtp\n" +
			"  -o smtp_bind_address=127.0.0.2\n" +
			"  -o syslog_name=postfix-marketing\n",
	}, extraToml: fmt.Sprintf(`
[api]
listen = %q
submit = %q
[[api.key]]
name = "billing-app"
sha256 = %q
sender_domains = ["example.com"]
[api.pools]
marketing = "smtp-marketing:"

[[webhook]]
name = "app-json"
url = %q
format = "json"
secret = %q
`, strings.TrimPrefix(apiURL, "http://"), submit, sum, recv.srv.URL+"/hooks/json", recv.secret)})
	waitHTTP(t, apiURL+"/healthz")
	e.ctl(t, "suppressions", "add", "gone@example.org")
	e.waitMilterSuppressions(t, 1)

	// Custom headers as sent (issue 18): non-ASCII text and leading white
	// space reach the webhook exactly, through Postfix and the milter.
	req := strings.Replace(seedAPIRequest, `"Account-ID": "ACC-456"}`, `"Account-ID": "ACC-456", "Season-ID": "Été 2024", "Padded-ID": "  42"}`, 1)
	r := apiSend(t, apiURL, key, req)
	if r.status != 200 || r.body.QueueID == "" || !strings.HasSuffix(r.body.MessageID, "@example.com>") {
		t.Fatalf("API answered %d %s", r.status, r.raw)
	}
	if len(r.body.Rejected) != 1 || r.body.Rejected[0].Email != "gone@example.org" || !strings.HasPrefix(r.body.Rejected[0].Reason, "550 5.7.1") {
		t.Errorf("rejected %+v, want gone@example.org with 550 5.7.1", r.body.Rejected)
	}
	qid := r.body.QueueID

	// delivered, tracked, with the custom headers and no control header
	got := e.lab.Sink.WaitFor(t, func(m postfixlab.Received) bool { return bytes.Contains(m.Data, []byte(" id "+qid)) }, 30*time.Second)
	if strings.Join(got.To, ",") != "john@example.org" {
		t.Errorf("delivered to %v", got.To)
	}
	hdr := headerBlock(got.Data)
	if strings.Contains(strings.ToLower(hdr), "x-leadpush") {
		t.Errorf("control headers delivered:\n%s", hdr)
	}
	for _, h := range []string{"Contact-ID: 12345", "Campaign-ID: summer-sale-2024", "Customer-ID: CUST-789", "Account-ID: ACC-456",
		"Message-ID: " + r.body.MessageID} {
		if !strings.Contains(hdr, "\r\n"+h+"\r\n") {
			t.Errorf("delivered header %q missing:\n%s", h, hdr)
		}
	}
	html := htmlPart(t, got.Data)
	if !strings.Contains(html, `href="`+e.baseURL+`/c/`) || strings.Contains(html, "https://example.com/orders/42") {
		t.Errorf("link not rewritten:\n%s", html)
	}
	if !regexp.MustCompile(`<img src="` + regexp.QuoteMeta(e.baseURL) + `/o/[A-Za-z0-9_-]+\.gif"`).MatchString(html) {
		t.Errorf("no open pixel:\n%s", html)
	}

	// it left through the pool's transport
	e.lab.WaitLog(t, regexp.MustCompile(`postfix-marketing/smtp\[\d+\]: `+qid+`: to=<john@example\.org>.*status=sent`), 30*time.Second)

	// the ledger has the message with its headers, tag and tracking
	m := e.message(t, qid)
	for n, v := range map[string]string{"Contact-ID": "12345", "Campaign-ID": "summer-sale-2024", "Customer-ID": "CUST-789", "Account-ID": "ACC-456"} {
		if m.Headers[n] != v {
			t.Errorf("ledger header %s = %q, want %q (all: %v)", n, m.Headers[n], v, m.Headers)
		}
	}
	if m.Tag != "order" || m.Tracking != "all" || m.Subject != "Order Confirmation" {
		t.Errorf("ledger message %+v", m)
	}
	if !strings.Contains(e.ctl(t, "message", qid), m.ID) {
		t.Errorf("leadpushctl message %s does not show %s", qid, m.ID)
	}

	// the json webhook: Processed and Delivered, each with the headers
	deadline := time.Now().Add(30 * time.Second)
	for {
		bodies, _ := recv.snapshot()
		types := map[int]webhook.Payload{}
		for _, b := range bodies {
			var p webhook.Payload
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("payload %s: %v", b, err)
			}
			if p.Event.MessageID == m.ID {
				types[p.Event.Type] = p
			}
		}
		_, processed := types[webhook.TypeProcessed]
		_, delivered := types[webhook.TypeDelivered]
		if processed && delivered {
			for typ, p := range types {
				h := p.EmailMessage.Headers
				if h["Contact-ID"] != "12345" || h["Campaign-ID"] != "summer-sale-2024" || h["Customer-ID"] != "CUST-789" || h["Account-ID"] != "ACC-456" ||
					h["Season-ID"] != "Été 2024" || h["Padded-ID"] != "  42" {
					t.Errorf("webhook event type %d headers %q", typ, h)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("json endpoint: want Processed and Delivered for %s; got %d bodies", m.ID, len(bodies))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// an unknown pool, a foreign sender, a wrong key
	if r := apiSend(t, apiURL, key, strings.Replace(seedAPIRequest, `"marketing"`, `"nosuch"`, 1)); r.status != 400 ||
		len(r.body.Fields) != 1 || r.body.Fields[0].Field != "ippool" {
		t.Errorf("unknown pool: %d %s", r.status, r.raw)
	}
	if r := apiSend(t, apiURL, key, strings.Replace(seedAPIRequest, "support@example.com", "support@example.net", 1)); r.status != 403 {
		t.Errorf("foreign sender: %d %s", r.status, r.raw)
	}
	if r := apiSend(t, apiURL, "lp_wrong", seedAPIRequest); r.status != 401 {
		t.Errorf("wrong key: %d %s", r.status, r.raw)
	}
}

// htmlPart returns the decoded text/html part of a message.
func htmlPart(t *testing.T, data []byte) string {
	t.Helper()
	mr, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no text/html part: %v", err)
		}
		if h, ok := p.Header.(*mail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/html" {
				b, _ := io.ReadAll(p.Body)
				return string(b)
			}
		}
	}
}

// TestSendAPIOneMessagePerRecipient: a request to two recipients becomes
// two messages through Postfix, each with tokens that name its recipient,
// so a one-click unsubscribe from either suppresses exactly that one.
func TestSendAPIOneMessagePerRecipient(t *testing.T) {
	apiURL := "http://" + freeAddr(t)
	submit := freeAddr(t)
	key, sum := api.NewKey()
	e := newEnv(t, envOptions{daemon: true, labOptions: postfixlab.Options{
		ExtraMaster: submit + " inet n - n - - smtpd\n",
	}, extraToml: fmt.Sprintf(`
[api]
listen = %q
submit = %q
[[api.key]]
name = "news"
sha256 = %q
`, strings.TrimPrefix(apiURL, "http://"), submit, sum)})
	waitHTTP(t, apiURL+"/healthz")
	r := apiSend(t, apiURL, key, `{"from":{"email":"news@example.com"},"to":[{"email":"ann@example.org"},{"email":"bob@example.org"}],
		"subject":"News","htmlBody":"<p>Hi <a href=\"https://example.com/a\">read</a></p>","tag":"news"}`)
	if r.status != 200 {
		t.Fatalf("API answered %d %s", r.status, r.raw)
	}
	var unsub = map[string]string{}
	for _, rcpt := range []string{"ann@example.org", "bob@example.org"} {
		got := e.lab.Sink.WaitFor(t, func(m postfixlab.Received) bool { return len(m.To) == 1 && m.To[0] == rcpt }, 30*time.Second)
		if hdr := headerBlock(got.Data); !strings.Contains(hdr, "To: <"+rcpt+">") || strings.Count(hdr, "@example.org") > 2 {
			t.Errorf("%s's copy shows another recipient:\n%s", rcpt, hdr)
		}
		unsub[rcpt] = browserUnsubURL(t, got.Data)
	}
	if len(e.lab.Sink.Messages()) != 2 {
		t.Errorf("%d messages delivered, want one per recipient", len(e.lab.Sink.Messages()))
	}
	resp, err := http.Post(unsub["ann@example.org"], "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("one-click POST answered %d", resp.StatusCode)
	}
	e.waitEvents(t, "ann's unsubscribe", func(evs []ctlEvent) bool { return len(find(evs, "unsubscribe", "ann@example.org")) == 1 }, "--type", "unsubscribe")
	sup := e.ctl(t, "suppressions", "list")
	if !strings.Contains(sup, "ann@example.org") || strings.Contains(sup, "bob@example.org") {
		t.Errorf("suppressions after ann's one-click:\n%s", sup)
	}
}
