package api

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

const testKey = "lp_test-key-one"

func newTestServer(t *testing.T, submit string) *httptest.Server {
	t.Helper()
	s, err := New(Config{
		Submit:  submit,
		MaxSize: 4096,
		Key: []Key{{Name: "billing-app", SHA256: HashKey(testKey), SenderDomains: []string{"Example.com"}},
			{Name: "any", SHA256: HashKey("lp_any")}},
		Pools: map[string]string{"marketing": "smtp-marketing:"},
	}, Options{Hostname: "api.test"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	code   int
	header http.Header
	raw    string
	body   struct {
		Error     string       `json:"error"`
		Fields    []FieldError `json:"fields"`
		Rejected  []Rejected   `json:"rejected"`
		MessageID string       `json:"messageID"`
		QueueID   string       `json:"queueID"`
		Messages  []Sent       `json:"messages"`
	}
}

func post(t *testing.T, url, key, body string) reply {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/api/v1/send", strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	r.code, r.header = resp.StatusCode, resp.Header
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r.raw = string(b)
	if err := json.Unmarshal([]byte(r.raw), &r.body); err != nil {
		t.Fatalf("status %d, body not JSON: %q", r.code, r.raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	assertNoGoError(t, r.raw)
	return r
}

// assertNoGoError: no Go error text leaks into a response.
func assertNoGoError(t *testing.T, body string) {
	t.Helper()
	for _, s := range []string{"dial tcp", "connection refused", "json: ", "EOF", "api: ", "textproto", "exit status"} {
		if strings.Contains(body, s) {
			t.Errorf("response leaks %q: %s", s, body)
		}
	}
}

const minimal = `{"from":{"email":"app@example.com"},"to":[{"email":"x@example.org"}],"subject":"s","textBody":"t"}`

func TestAuth(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1:1")
	for _, c := range []struct {
		name, key, body string
		code            int
	}{
		{"no key", "", minimal, 401},
		{"unknown key", "lp_wrong", minimal, 401},
		{"key as hash", HashKey(testKey), minimal, 401},
		{"domain not allowed", testKey, strings.Replace(minimal, "app@example.com", "app@other.com", 1), 403},
		{"subdomain not allowed", testKey, strings.Replace(minimal, "app@example.com", "app@mail.example.com", 1), 403},
		{"unrestricted key", "lp_any", strings.Replace(minimal, "app@example.com", "app@other.com", 1), 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, ts.URL, c.key, c.body)
			if r.code != c.code {
				t.Fatalf("status %d, want %d: %s", r.code, c.code, r.raw)
			}
			if c.code == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if c.code == 403 && (len(r.body.Fields) != 1 || r.body.Fields[0].Field != "from.email") {
				t.Errorf("403 body %s", r.raw)
			}
		})
	}
	// a bad Authorization scheme
	req, _ := http.NewRequest("POST", ts.URL+"/api/v1/send", strings.NewReader(minimal))
	req.Header.Set("Authorization", "Basic "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("Basic auth: %d", resp.StatusCode)
	}
}

// TestValidation: each broken field gives a 400 naming that field.
func TestValidation(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1:1")
	set := func(old, new string) string {
		if !strings.Contains(minimal, old) {
			t.Fatalf("%q not in minimal", old)
		}
		return strings.Replace(minimal, old, new, 1)
	}
	long := strings.Repeat("a", 1000)
	for _, c := range []struct {
		name, body string
		fields     []string
	}{
		{"not JSON", `{"from":`, []string{""}},
		{"trailing data", minimal + `{}`, []string{""}},
		{"unknown field", set(`"subject"`, `"bogus":1,"subject"`), []string{"bogus"}},
		{"wrong type", set(`"subject":"s"`, `"subject":5`), []string{"subject"}},
		{"trackOpens type", set(`"subject"`, `"trackOpens":"yes","subject"`), []string{"trackOpens"}},
		{"from missing", set(`"from":{"email":"app@example.com"},`, ``), []string{"from.email"}},
		{"from bad", set(`app@example.com`, `not an address`), []string{"from.email"}},
		{"from name CRLF", set(`{"email":"app@example.com"}`, `{"email":"app@example.com","name":"a\r\nBcc: x@y.z"}`), []string{"from.name"}},
		{"to empty", set(`[{"email":"x@example.org"}]`, `[]`), []string{"to"}},
		{"to bad", set(`x@example.org`, `x@`), []string{"to[0].email"}},
		{"to angle", set(`x@example.org`, `<x@example.org>`), []string{"to[0].email"}},
		{"to name", set(`{"email":"x@example.org"}`, `{"email":"x@example.org","name":"`+long+`"}`), []string{"to[0].name"}},
		{"cc bad", set(`"subject"`, `"cc":[{"email":"c@example.org"},{"email":"nope"}],"subject"`), []string{"cc[1].email"}},
		{"bcc bad", set(`"subject"`, `"bcc":[{"email":"b@@example.org"}],"subject"`), []string{"bcc[0].email"}},
		{"replyTo object", set(`"subject"`, `"replyTo":{"email":"r@"},"subject"`), []string{"replyTo[0].email"}},
		{"replyTo array", set(`"subject"`, `"replyTo":[{"email":"r@example.com"},{"email":""}],"subject"`), []string{"replyTo[1].email"}},
		{"subject missing", set(`"subject":"s",`, ``), []string{"subject"}},
		{"subject CR", set(`"subject":"s"`, `"subject":"a\rb"`), []string{"subject"}},
		{"subject control", set(`"subject":"s"`, `"subject":"a\u0000b"`), []string{"subject"}},
		{"no body", set(`,"textBody":"t"`, ``), []string{"htmlBody"}},
		{"header name", set(`"subject"`, `"headers":{"Bad Name":"v"},"subject"`), []string{"headers.Bad Name"}},
		{"header colon", set(`"subject"`, `"headers":{"A:B":"v"},"subject"`), []string{"headers.A:B"}},
		{"header CRLF", set(`"subject"`, `"headers":{"Contact-ID":"1\r\nBcc: evil@example.net"},"subject"`), []string{"headers.Contact-ID"}},
		{"header control character", set(`"subject"`, `"headers":{"Contact-ID":"Jos\u0085\u0007"},"subject"`), []string{"headers.Contact-ID"}},
		{"header empty", set(`"subject"`, `"headers":{"Contact-ID":""},"subject"`), []string{"headers.Contact-ID"}},
		{"header too long", set(`"subject"`, `"headers":{"Contact-ID":"`+long+`"},"subject"`), []string{"headers.Contact-ID"}},
		{"override from", set(`"subject"`, `"headers":{"from":"x@example.net"},"subject"`), []string{"headers.from"}},
		{"override subject", set(`"subject"`, `"headers":{"Subject":"x"},"subject"`), []string{"headers.Subject"}},
		{"override mime", set(`"subject"`, `"headers":{"Content-Type":"text/html"},"subject"`), []string{"headers.Content-Type"}},
		{"control header", set(`"subject"`, `"headers":{"X-Leadpush-Tracking":"none"},"subject"`), []string{"headers.X-Leadpush-Tracking"}},
		{"tag CRLF", set(`"subject"`, `"tag":"a\nb","subject"`), []string{"tag"}},
		{"tag long", set(`"subject"`, `"tag":"`+strings.Repeat("t", 300)+`","subject"`), []string{"tag"}},
		{"attachment fields", set(`"subject"`, `"attachments":[{"filename":"","contentType":"nope","content":"!!"}],"subject"`),
			[]string{"attachments[0].filename", "attachments[0].contentType", "attachments[0].content"}},
		{"attachment path", set(`"subject"`, `"attachments":[{"filename":"../x","contentType":"text/plain","content":""}],"subject"`), []string{"attachments[0].filename"}},
		{"attachment multipart", set(`"subject"`, `"attachments":[{"filename":"x","contentType":"multipart/mixed","content":""}],"subject"`), []string{"attachments[0].contentType"}},
		{"unknown pool", set(`"subject"`, `"ippool":"nosuch","subject"`), []string{"ippool"}},
		{"many errors", `{"from":{"email":"bad"},"to":[{"email":"bad"}],"subject":""}`, []string{"from.email", "to[0].email", "subject", "htmlBody"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := post(t, ts.URL, testKey, c.body)
			if r.code != 400 {
				t.Fatalf("status %d, want 400: %s", r.code, r.raw)
			}
			var got []string
			for _, f := range r.body.Fields {
				got = append(got, f.Field)
				if f.Message == "" {
					t.Errorf("field %q without a message", f.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(c.fields, ",") {
				t.Errorf("fields %q, want %q: %s", got, c.fields, r.raw)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1:1")
	big := strings.Replace(minimal, `"textBody":"t"`, `"textBody":"`+strings.Repeat("x", 5000)+`"`, 1)
	if r := post(t, ts.URL, testKey, big); r.code != 413 {
		t.Errorf("status %d, want 413: %s", r.code, r.raw)
	}
	// without Content-Length (chunked): MaxBytesReader stops it
	req, _ := http.NewRequest("POST", ts.URL+"/api/v1/send", struct{ *strings.Reader }{strings.NewReader(big)})
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked: status %d, want 413", resp.StatusCode)
	}
}

func TestUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a closed port
	ts := newTestServer(t, addr)
	r := post(t, ts.URL, testKey, minimal)
	if r.code != 503 || r.header.Get("Retry-After") != "60" {
		t.Errorf("status %d Retry-After %q: %s", r.code, r.header.Get("Retry-After"), r.raw)
	}
}

func TestSubmitThroughSMTP(t *testing.T) {
	sink := postfixlab.NewSink(t)
	sink.SetRcptReply("gone@example.org", 550, "5.7.1 <gone@example.org>: suppressed (hard_bounce)")
	ts := newTestServer(t, sink.Addr)
	body := `{"from":{"email":"app@example.com","name":"App"},"to":[{"email":"x@example.org"},{"email":"gone@example.org"}],
		"bcc":[{"email":"audit@example.org"}],"subject":"hi","textBody":"hello","headers":{"Contact-ID":"12345"},"tag":"t1"}`
	r := post(t, ts.URL, testKey, body)
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.raw)
	}
	if !regexp.MustCompile(`^<[a-z0-9]+@example\.com>$`).MatchString(r.body.MessageID) {
		t.Errorf("messageID %q", r.body.MessageID)
	}
	if len(r.body.Rejected) != 1 || r.body.Rejected[0].Email != "gone@example.org" || !strings.HasPrefix(r.body.Rejected[0].Reason, "550 5.7.1") {
		t.Errorf("rejected %+v", r.body.Rejected)
	}
	// One message per recipient: x@ and audit@ (bcc) each get their own,
	// whose To names only them; gone@'s copy is refused.
	msgs := sink.Messages()
	if len(msgs) != 2 || len(r.body.Messages) != 2 {
		t.Fatalf("sink got %d messages, response lists %d; want 2 single-recipient copies", len(msgs), len(r.body.Messages))
	}
	for i, m := range msgs {
		rcpt := []string{"x@example.org", "audit@example.org"}[i]
		if m.From != "app@example.com" || strings.Join(m.To, ",") != rcpt {
			t.Errorf("envelope %s -> %v, want %s", m.From, m.To, rcpt)
		}
		data := string(m.Data)
		for _, want := range []string{"Message-ID: " + r.body.Messages[i].MessageID + "\r\n", "To: <" + rcpt + ">\r\n", "Contact-ID: 12345\r\n",
			"X-Leadpush-Record: Contact-ID\r\n", "X-Leadpush-Tag: \"t1\"\r\n", "X-Leadpush-Tracking: all\r\n"} {
			if !strings.Contains(data, want) {
				t.Errorf("message %d lacks %q:\n%s", i, want, data)
			}
		}
		if strings.Contains(data, "gone@") || strings.Contains(strings.ToLower(data), "bcc") || (i == 0 && strings.Contains(data, "audit@")) {
			t.Errorf("message %d shows another recipient:\n%s", i, data)
		}
	}
	if r.body.MessageID != r.body.Messages[0].MessageID || r.body.Messages[1].To[0] != "audit@example.org" {
		t.Errorf("response %s", r.raw)
	}
	// preserveRecipients: one message to all of them.
	r = post(t, ts.URL, testKey, strings.Replace(body, `"tag":"t1"}`, `"tag":"t1","preserveRecipients":true}`, 1))
	msgs = sink.Messages()
	if r.code != 200 || len(msgs) != 3 || strings.Join(msgs[2].To, ",") != "x@example.org,audit@example.org" || len(r.body.Messages) != 1 {
		t.Fatalf("preserveRecipients: %d %s; sink %d messages", r.code, r.raw, len(msgs))
	}
	if !strings.Contains(string(msgs[2].Data), "To: <x@example.org>, <gone@example.org>\r\n") && !strings.Contains(string(msgs[2].Data), "gone@example.org") {
		t.Errorf("preserved To lost a recipient:\n%s", msgs[2].Data)
	}

	// every recipient refused: 422, nothing sent
	r = post(t, ts.URL, testKey, strings.Replace(minimal, "x@example.org", "gone@example.org", 1))
	if r.code != 422 || len(r.body.Rejected) != 1 || r.body.MessageID != "" {
		t.Errorf("all rejected: %d %s", r.code, r.raw)
	}
	if n := len(sink.Messages()); n != 3 {
		t.Errorf("sink has %d messages after an all-rejected request", n)
	}
}

func TestQueuedAs(t *testing.T) {
	for in, want := range map[string]string{
		"2.0.0 Ok: queued as 4XyZ12abC": "4XyZ12abC",
		"2.0.0 Ok: queued":              "",
	} {
		got := ""
		if m := queuedAs.FindStringSubmatch(in); m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestSendmail(t *testing.T) {
	dir := t.TempDir()
	script := dir + "/sendmail"
	out := dir + "/out"
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" > "+out+".args\ncat > "+out+"\n"), 0o755)
	ts := newTestServer(t, script)
	r := post(t, ts.URL, testKey, minimal)
	if r.code != 200 || r.body.QueueID != "" {
		t.Fatalf("status %d: %s", r.code, r.raw)
	}
	args, _ := os.ReadFile(out + ".args")
	if string(args) != "-oi -f app@example.com -- x@example.org\n" {
		t.Errorf("sendmail args %q", args)
	}
	msg, _ := os.ReadFile(out)
	if !strings.Contains(string(msg), "Subject: s\n") || strings.Contains(string(msg), "\r") {
		t.Errorf("sendmail got %q", msg)
	}

	os.WriteFile(script, []byte("#!/bin/sh\nexit 75\n"), 0o755)
	if r := post(t, ts.URL, testKey, minimal); r.code != 503 {
		t.Errorf("EX_TEMPFAIL: %d", r.code)
	}
}

func TestConfigValidate(t *testing.T) {
	good := HashKey("k")
	for _, c := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"full", Config{Listen: "127.0.0.1:8025", Submit: "/usr/sbin/sendmail", Key: []Key{{Name: "a", SHA256: good, SenderDomains: []string{"example.com"}}},
			Pools: map[string]string{"marketing": "smtp-marketing:"}}, true},
		{"bad listen", Config{Listen: "8025"}, false},
		{"bad submit", Config{Submit: "localhost"}, false},
		{"bad hash", Config{Key: []Key{{Name: "a", SHA256: "abc"}}}, false},
		{"no name", Config{Key: []Key{{SHA256: good}}}, false},
		{"same key", Config{Key: []Key{{Name: "a", SHA256: good}, {Name: "b", SHA256: strings.ToUpper(good)}}}, false},
		{"bad domain", Config{Key: []Key{{Name: "a", SHA256: good, SenderDomains: []string{"a@b"}}}}, false},
		{"bad pool", Config{Pools: map[string]string{"m": "no transport"}}, false},
		{"small max", Config{MaxSize: 10}, false},
	} {
		err := c.cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	k, h := NewKey()
	if HashKey(k) != h || len(h) != 64 || !strings.HasPrefix(k, "lp_") {
		t.Errorf("NewKey %q %q", k, h)
	}
}
