package bounce

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/leadpush/leadpush/internal/golden"
)

// envelopeFor is the Postfix ${recipient} each test message was delivered to.
func envelopeFor(name string) string {
	switch name {
	case "unsub":
		return "unsub+tok1@bounce.example.com"
	case "arf-yahoo":
		return "fbl@bounce.example.com"
	case "arf-microsoft":
		return "jmrp@bounce.example.com"
	}
	return "bounce+" + name + "@bounce.example.com"
}

func corpus(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	return files
}

func TestGolden(t *testing.T) {
	for _, file := range corpus(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Parse(bytes.NewReader(data), envelopeFor(name), Options{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := golden.JSON(t, rep)
			golden.Check(t, strings.TrimSuffix(file, ".eml")+".golden.json", got)
			// The golden JSON reads back to the same report.
			var back Report
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&back, rep) {
				t.Errorf("golden JSON does not round-trip:\n%+v\n%+v", back, *rep)
			}
		})
	}
}

// corpusFactNames are the samples TestCorpusFacts states.
var corpusFactNames = []string{"postfix-5.1.1", "postfix-delayed", "mailbox-full-5.2.2", "dsn-two-recipients",
	"exchange-o365", "gmail", "yahoo", "exim", "qmail", "sendmail", "sendmail-text", "arf-yahoo", "arf-microsoft",
	"autoreply-outlook", "autoreply-vacation", "unsub", "unsub-keyword", "newsletter", "broken-mime"}

// TestCorpusFacts states the facts each sample must yield, independent of
// the golden files, so an -update cannot silently accept a regression.
func TestCorpusFacts(t *testing.T) {
	type rc struct {
		addr, status string
		class        Class
	}
	tests := []struct {
		name  string
		kind  Kind
		rcpts []rc
		msgID string
	}{
		{"postfix-5.1.1", KindBounce, []rc{{"nobody@example.net", "5.1.1", Hard}}, "order-1234@app.example.com"},
		{"postfix-delayed", KindDelayed, []rc{{"slow@example.org", "4.4.1", Soft}}, "weekly-2026-47.slow@app.example.com"},
		{"mailbox-full-5.2.2", KindBounce, []rc{{"full@example.com", "5.2.2", Soft}}, "hello-1@app.example.com"},
		{"dsn-two-recipients", KindBounce, []rc{{"gone@example.net", "5.1.1", Hard}, {"Quota@example.net", "5.0.0", Soft}, {"ok@example.net", "2.0.0", ""}}, "multi-77@app.example.com"},
		{"exchange-o365", KindBounce, []rc{{"jdoe@contoso.com", "5.1.10", Hard}}, "promo-55@app.example.com"},
		{"gmail", KindBounce, []rc{{"missing.person@gmail.com", "5.1.1", Hard}}, "welcome-9@app.example.com"},
		{"yahoo", KindBounce, []rc{{"not.here@yahoo.com", "", Hard}}, "nov-news-1@app.example.com"},
		{"exim", KindBounce, []rc{{"nobody@example.org", "5.1.1", Hard}}, "invoice-2026-11@app.example.com"},
		{"qmail", KindBounce, []rc{{"someone@example.net", "5.1.1", Hard}, {"other@example.net", "5.4.6", Soft}}, "digest-3@app.example.com"},
		{"sendmail", KindBounce, []rc{{"prof@example.edu", "5.1.1", Hard}}, "course-news-2@app.example.com"},
		{"sendmail-text", KindBounce, []rc{{"dean@old.example.edu", "5.1.1", Hard}}, "course-news-3@app.example.com"},
		{"arf-yahoo", KindComplaint, []rc{{"reader@yahoo.com", "", ""}}, "picks-week47@app.example.com"},
		{"arf-microsoft", KindComplaint, []rc{{"victim@outlook.com", "", ""}}, "spring-ms1@app.example.com"},
		{"autoreply-outlook", KindAutoReply, nil, ""},
		{"autoreply-vacation", KindAutoReply, nil, ""},
		{"unsub", KindUnsubscribe, nil, ""},
		{"unsub-keyword", KindUnsubscribe, nil, ""},
		{"newsletter", KindUnknown, nil, ""},
		{"broken-mime", KindUnknown, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.name+".eml"))
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Parse(bytes.NewReader(data), envelopeFor(tt.name), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind != tt.kind {
				t.Fatalf("Kind = %q (%s), want %q", rep.Kind, rep.Reason, tt.kind)
			}
			if rep.Reason == "" {
				t.Error("empty Reason")
			}
			if len(rep.Recipients) != len(tt.rcpts) {
				t.Fatalf("recipients = %+v, want %d", rep.Recipients, len(tt.rcpts))
			}
			for i, want := range tt.rcpts {
				got := rep.Recipients[i]
				if got.Address != want.addr || got.Status != want.status || got.Class != want.class {
					t.Errorf("recipient %d = %+v, want %+v", i, got, want)
				}
			}
			if rep.OriginalMessageID != tt.msgID {
				t.Errorf("OriginalMessageID = %q, want %q", rep.OriginalMessageID, tt.msgID)
			}
		})
	}
}

func TestParseDetails(t *testing.T) {
	read := func(name string) *Report {
		t.Helper()
		data, err := os.ReadFile(filepath.Join("testdata", name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(bytes.NewReader(data), envelopeFor(name), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	p := read("postfix-5.1.1")
	r := p.Recipients[0]
	if r.Diagnostic != "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in virtual mailbox table" {
		t.Errorf("Diagnostic = %q (type prefix and folding)", r.Diagnostic)
	}
	if r.RemoteMTA != "mx.example.net" || r.Action != "failed" || r.Original != "nobody@example.net" {
		t.Errorf("recipient = %+v", r)
	}
	if p.OriginalHeaders["List-Unsubscribe"] == "" || p.OriginalHeaders["From"] != "Example Shop <news@example.com>" {
		t.Errorf("OriginalHeaders = %v", p.OriginalHeaders)
	}
	if d := read("postfix-delayed"); d.Recipients[0].Action != "delayed" || d.OriginalHeaders["Subject"] != "Grüße aus Berlin" {
		t.Errorf("delayed = %+v", d)
	}
	a := read("arf-microsoft")
	if a.FeedbackType != "abuse" || a.SourceIP != "203.0.113.5" || a.UserAgent != "Hotmail FBL" || a.OriginalHeaders["Subject"] != "Spring sale ☀" {
		t.Errorf("ARF = %+v", a)
	}
	if u := read("unsub"); u.From != "Reader@example.org" {
		t.Errorf("unsub From = %q", u.From)
	}
	if v := read("autoreply-vacation"); v.Subject != "Abwesenheitsnotiz: Ihre Bestellung" {
		t.Errorf("vacation Subject = %q", v.Subject)
	}
	if e := read("exim"); e.Recipients[0].RemoteMTA != "mx2.example.org" || !strings.HasPrefix(e.Recipients[0].Diagnostic, "550 5.1.1 ") {
		t.Errorf("exim = %+v", e.Recipients[0])
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status string
		code   int
		text   string
		want   Class
	}{
		{"5.1.1", 550, "user unknown", Hard},
		{"5.1.10", 550, "", Hard},
		{"5.2.2", 552, "mailbox full", Soft},
		{"5.2.2", 0, "", Soft},
		{"4.2.2", 452, "", Soft},
		{"4.4.1", 0, "connection timed out", Soft},
		{"5.7.1", 554, "rejected by policy", Soft},
		{"5.0.0", 552, "mailbox full, quota exceeded", Soft},
		{"5.0.0", 550, "", Soft},
		{"2.0.0", 250, "ok", ""},
		{"", 450, "", Soft},
		{"", 550, "no such user", Hard},
		{"", 552, "Quota exceeded", Soft},
		{"", 0, "Mailbox full", Soft},
		{"", 0, "User unknown", Hard},
		{"", 0, "does not exist", Hard},
		{"", 0, "please try again later", Soft},
		{"", 0, "temporarily unavailable", Soft},
		{"", 0, "", ""},
		{"", 0, "thank you", ""},
		{"smtp; 5.1.1 (bad mailbox)", 0, "", Hard},
		{"192.4.1.1", 0, "", ""}, // an IP address is no status
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.code, tt.text); got != tt.want {
			t.Errorf("Classify(%q, %d, %q) = %q, want %q", tt.status, tt.code, tt.text, got, tt.want)
		}
	}
}

func TestParseLimits(t *testing.T) {
	big := strings.Repeat("x", 2048)
	rep, err := Parse(strings.NewReader(big), "", Options{MaxSize: 1024})
	if err != nil || !rep.Truncated || rep.Kind != KindUnknown {
		t.Errorf("over MaxSize: %+v, %v; want a truncated unknown report", rep, err)
	}
	if rep, err := Parse(strings.NewReader(big), "", Options{MaxSize: 2048}); err != nil || rep.Truncated {
		t.Errorf("at MaxSize: %+v, %v", rep, err)
	}
	boom := errors.New("boom")
	_, err = Parse(iotest.ErrReader(boom), "", Options{})
	if !errors.Is(err, boom) {
		t.Errorf("read error: err = %v", err)
	}
	rep, err = Parse(strings.NewReader(""), "", Options{})
	if err != nil || rep.Kind != KindUnknown {
		t.Errorf("empty message: %+v, %v", rep, err)
	}
}

func TestKindPrecedence(t *testing.T) {
	tests := []struct {
		name, msg, envTo string
		want             Kind
	}{
		{"auto-reply to unsub address is an unsubscribe", "Subject: Automatic reply: hi\nAuto-Submitted: auto-replied\n\nx", "unsub@b.example", KindUnsubscribe},
		{"unsub prefix needs plus", "Subject: hi\n\nx", "unsubscribe-list@b.example", KindUnknown},
		{"Out of Office subject", "From: a@b.example\nSubject: Out of Office: re your mail\n\nAway", "bounce+1@b.example", KindAutoReply},
		{"Auto: subject", "Subject: Auto: Invoice\n\nAway", "bounce+1@b.example", KindAutoReply},
		{"Precedence auto_reply", "Precedence: auto_reply\nSubject: thanks\n\nx", "bounce+1@b.example", KindAutoReply},
		{"X-Autorespond", "X-Autorespond: yes\nSubject: thanks\n\nx", "bounce+1@b.example", KindAutoReply},
		{"Auto-Submitted no", "Auto-Submitted: no\nSubject: thanks\n\nx", "bounce+1@b.example", KindUnknown},
		{"unsub keyword not exact", "Subject: please unsub me\n\nx", "bounce+1@b.example", KindUnknown},
		{"mailer-daemon sender", "From: MAILER-DAEMON@x.example\nSubject: hi\n\n<a@x.example>: 550 5.1.1 unknown", "bounce+1@b.example", KindBounce},
		{"mailer-daemon auto-replied is a bounce", "From: Mail Delivery System <MAILER-DAEMON@x.example>\nAuto-Submitted: auto-replied\nSubject: Notification\n\n<a@x.example>: 550 5.1.1 unknown", "bounce+1@b.example", KindBounce},
		{"X-Failed-Recipients is a bounce", "From: someone@x.example\nAuto-Submitted: auto-replied\nX-Failed-Recipients: a@x.example\nSubject: hi\n\nsorry", "bounce+1@b.example", KindBounce},
		{"Outlook NDR enclosing a JMRP-tagged message is a bounce", "From: postmaster@outlook.com\nSubject: Undeliverable: hi\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\n<gone@outlook.com>: 550 5.1.1 unknown\n--b\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: <gone@outlook.com>\nSubject: hi\n\nx\n--b--\n", "bounce+1@b.example", KindBounce},
		{"Outlook message enclosing a JMRP-tagged message is a complaint", "From: abuse@outlook.com\nSubject: FW: hi\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nreport\n--b\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: <c@outlook.com>\nSubject: hi\n\nx\n--b--\n", "jmrp@b.example", KindComplaint},
		{"SES delivery notification is no bounce", "From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n{\"notificationType\":\"Delivery\",\"delivery\":{},\"mail\":{}}\n", "ses@b.example", KindUnknown},
		{"auto-reply subject beats bounce subject", "Subject: Automatic reply: Undeliverable: x\n\nx", "bounce+1@b.example", KindAutoReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(tt.msg), tt.envTo, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind != tt.want {
				t.Errorf("Kind = %q (%s), want %q", rep.Kind, rep.Reason, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, file := range corpus(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "bounce+x@bounce.example.com")
	}
	f.Add([]byte("Content-Type: multipart/report; boundary=\"a\"\n\n--a\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; x@y\n--a"), "unsub@x")
	f.Fuzz(func(t *testing.T, data []byte, envTo string) {
		r1, err := Parse(bytes.NewReader(data), envTo, Options{MaxSize: 1 << 20})
		if err != nil {
			t.Fatalf("error: %v", err)
		}
		r2, err := Parse(bytes.NewReader(data), envTo, Options{MaxSize: 1 << 20})
		if err != nil || !reflect.DeepEqual(r1, r2) {
			t.Fatalf("not deterministic: %+v vs %+v (%v)", r1, r2, err)
		}
		switch r1.Kind {
		case KindBounce, KindComplaint, KindAutoReply, KindUnsubscribe, KindDelayed, KindUnknown:
		default:
			t.Fatalf("bad kind %q", r1.Kind)
		}
		if r1.Reason == "" {
			t.Fatal("empty Reason")
		}
		if _, err := json.Marshal(r1); err != nil {
			t.Fatalf("report does not marshal: %v", err)
		}
		for _, rc := range r1.Recipients {
			checkRecipient(t, rc)
			if r1.Kind == KindDelayed && rc.Action == "failed" {
				t.Fatalf("delay notice with a failed recipient: %+v", rc)
			}
		}
	})
}

// checkRecipient asserts what holds of every recipient of every report.
func checkRecipient(t *testing.T, rc Recipient) {
	t.Helper()
	if rc.Class != "" && rc.Class != Hard && rc.Class != Soft {
		t.Fatalf("bad class %q", rc.Class)
	}
	if rc.BounceReason != "" && !rc.BounceReason.Valid() {
		t.Fatalf("reason %q not in the vocabulary", rc.BounceReason)
	}
	if (rc.Class == "") != (rc.BounceReason == "") {
		t.Fatalf("class %q with reason %q", rc.Class, rc.BounceReason)
	}
	if rc.Class == Hard && !rc.BounceReason.Dead() {
		t.Fatalf("hard for %s, which is no dead address", rc.BounceReason)
	}
	if rc.Address != "" && !validAddress(rc.Address) {
		t.Fatalf("recipient %q is no address", rc.Address)
	}
	if rc.Status != "" && findStatus(rc.Status) != rc.Status {
		t.Fatalf("status %q is no status code", rc.Status)
	}
}

func FuzzDiagnose(f *testing.F) {
	f.Add("failed", "5.1.1", 550, "user unknown")
	f.Add("bounced", "", 0, "host x said: 550-5.7.26 unauthenticated (in reply to end of DATA command)")
	f.Add("", "5.0.0", 552, "Lotus SMTP MTA v4.6.1 mailbox full")
	f.Add("expired", "4.4.1", 0, "")
	f.Add("deferred", "4.2.2", 452, "over quota")
	f.Fuzz(func(t *testing.T, action, status string, code int, text string) {
		c, r := Diagnose(action, status, code, text)
		checkRecipient(t, Recipient{Class: c, BounceReason: r})
		// The indexed matcher answers as a plain scan of the rules.
		lower := strings.ToLower(text)
		var naive Reason
	rules:
		for _, w := range wordings {
			for _, p := range w.words {
				if strings.Contains(lower, p) {
					naive = w.r
					break rules
				}
			}
		}
		if got := matchWording(lower); got != naive {
			t.Fatalf("matchWording(%q) = %q, plain scan %q", lower, got, naive)
		}
		if c2, r2 := Diagnose(action, status, code, text); c2 != c || r2 != r {
			t.Fatalf("not deterministic")
		}
		switch strings.ToLower(strings.TrimSpace(action)) {
		case "delivered", "relayed", "expanded", "sent":
			if c != "" {
				t.Fatalf("%s gives %s", action, c)
			}
		case "delayed", "deferred", "expired":
			if c == Hard {
				t.Fatalf("%s gives hard", action)
			}
		}
	})
}

// BenchmarkParse parses the original 19 samples (corpusFactNames) per
// iteration and reports DSNs (Kind bounce or delayed) classified per
// second: the figure bench/bench.sh tracks since before the corpus grew
// (910 iterations x 11 DSNs). BenchmarkParseAll runs the whole corpus.
func BenchmarkParse(b *testing.B) {
	files := make([]string, len(corpusFactNames))
	for i, n := range corpusFactNames {
		files[i] = filepath.Join("testdata", n+".eml")
	}
	benchParse(b, files)
}

// BenchmarkParseAll parses every sample of testdata per iteration.
func BenchmarkParseAll(b *testing.B) { benchParse(b, corpus(b)) }

func benchParse(b *testing.B, files []string) {
	var msgs [][]byte
	var names []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, data)
		names = append(names, strings.TrimSuffix(filepath.Base(file), ".eml"))
	}
	bounces := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i, m := range msgs {
			rep, err := Parse(bytes.NewReader(m), envelopeFor(names[i]), Options{})
			if err != nil {
				b.Fatal(err)
			}
			if rep.Kind == KindBounce || rep.Kind == KindDelayed {
				bounces++ // delay notices are DSNs too (they were Kind bounce before KindDelayed)
			}
		}
	}
	b.ReportMetric(float64(bounces)/b.Elapsed().Seconds(), "bounces/s")
	b.ReportMetric(float64(len(msgs)*b.N)/b.Elapsed().Seconds(), "msgs/s")
}
