package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiagnose(t *testing.T) {
	tests := []struct {
		action, status string
		code           int
		text           string
		class          Class
		reason         Reason
	}{
		// Dead addresses are hard.
		{"failed", "5.1.1", 550, "user unknown", Hard, UserUnknown},
		{"bounced", "5.1.1", 0, "host mx.example.net[192.0.2.1] said: 550 5.1.1 <a@example.net>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)", Hard, UserUnknown},
		{"failed", "5.1.2", 0, "Host unknown", Hard, HostUnknown},
		{"failed", "5.1.6", 551, "User has moved", Hard, HasMoved},
		{"failed", "5.1.10", 0, "Domain example.com does not accept mail (nullMX)", Hard, NotAccept},
		{"failed", "", 550, "Requested action not taken: mailbox unavailable", Hard, UserUnknown},
		{"failed", "", 0, "Sorry, no mailbox here by that name. (#5.1.1)", Hard, UserUnknown},
		// A specific code in the text beats a generic status.
		{"failed", "5.0.0", 550, "550 5.1.1 The email account that you tried to reach does not exist", Hard, UserUnknown},
		{"failed", "5.0.0", 552, "552 5.2.2 mailbox full", Soft, MailboxFull},
		// Temporary conditions are soft.
		{"failed", "5.2.2", 552, "Mailbox full", Soft, MailboxFull},
		{"failed", "", 552, "Quota exceeded", Soft, MailboxFull},
		{"failed", "5.3.4", 552, "Message size exceeds fixed limit", Soft, MesgTooBig},
		{"failed", "5.2.1", 550, "The email account that you tried to reach is disabled", Soft, Suspend},
		{"failed", "4.4.1", 0, "connect to mx.example.org[192.0.2.7]:25: Connection timed out", Soft, Expired},
		{"failed", "4.7.0", 421, "4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume", Soft, Speeding},
		{"failed", "", 0, "Throttling failure: Daily message quota exceeded.", Soft, Speeding},
		{"failed", "4.3.2", 421, "System not accepting network messages", Soft, NotAccept},
		// Expiry is soft, however it is said.
		{"expired", "4.4.1", 0, "connect to mx.example.org: Connection refused", Soft, Expired},
		{"expired", "", 0, "returned to sender", Soft, Expired},
		{"expired", "4.2.2", 452, "Mailbox is over quota", Soft, MailboxFull},
		{"failed", "4.2.2", 452, "Mailbox is over quota", Soft, MailboxFull},
		{"failed", "4.4.7", 0, "Message delayed", Soft, Expired},
		{"failed", "5.4.7", 0, "delivery time expired", Soft, Expired},
		{"failed", "", 0, "Cannot send message for 5 days", Soft, Expired},
		{"failed", "", 0, "retry timeout exceeded", Soft, Expired},
		{"failed", "4.1.1", 450, "4.1.1 <a@example.net>: Recipient address rejected: User unknown", Soft, Expired},
		// Policy and content rejections are soft.
		{"failed", "5.7.1", 554, "Client host [203.0.113.5] blocked using zen.spamhaus.org", Soft, Blocked},
		{"failed", "5.7.1", 550, "Message rejected as spam by Content Filtering", Soft, SpamDetected},
		{"failed", "5.7.1", 550, "Message blocked: virus found in attachment", Soft, VirusDetected},
		{"failed", "5.7.1", 554, "<a@example.net>: Relay access denied", Soft, NoRelaying},
		{"failed", "5.7.26", 550, "This mail has been blocked because the sender is unauthenticated", Soft, AuthFailure},
		{"failed", "5.7.1", 550, "Email rejected per DMARC policy for example.com", Soft, AuthFailure},
		{"failed", "5.7.1", 550, "very low reputation of the sending IP address", Soft, BadReputation},
		{"failed", "5.7.25", 550, "The IP address sending this message does not have a PTR record setup", Soft, RequirePTR},
		{"failed", "5.7.1", 554, "rejected by policy", Soft, PolicyViolation},
		{"failed", "5.7.1", 554, "", Soft, SecurityError},
		{"failed", "5.1.8", 553, "Sender address rejected: Domain not found", Soft, Rejected},
		{"failed", "5.6.0", 554, "Message header violates policy", Soft, ContentError},
		{"failed", "", 552, "user has too many messages on the server", Soft, MailboxFull},
		{"failed", "", 421, "You have sent too many messages, slow down", Soft, Speeding},
		{"failed", "", 554, "Improper use of 8-bit data in message header", Soft, ContentError},
		// Delays are soft and keep their cause.
		{"delayed", "4.2.2", 452, "Mailbox is over quota", Soft, MailboxFull},
		{"deferred", "4.4.1", 0, "connect to x: Connection timed out", Soft, Expired},
		{"deferred", "4.1.1", 450, "User unknown", Soft, UserUnknown},
		// Unclear failures are soft, never hard.
		{"failed", "5.0.0", 550, "", Soft, Undefined},
		{"failed", "", 0, "", Soft, Undefined},
		{"failed", "", 554, "transaction failed for reasons of its own", Soft, SystemError},
		{"failed", "", 0, "something nobody wrote before", Soft, OnHold},
		// Not failures.
		{"delivered", "2.0.0", 250, "ok", "", ""},
		{"", "2.0.0", 0, "", "", ""},
		{"", "", 0, "thank you", "", ""},
		{"", "", 0, "", "", ""},
		{"", "192.4.1.1", 0, "", "", ""}, // an IP address is no status
	}
	for _, tt := range tests {
		c, r := Diagnose(tt.action, tt.status, tt.code, tt.text)
		if c != tt.class || r != tt.reason {
			t.Errorf("Diagnose(%q, %q, %d, %q) = %q, %q; want %q, %q", tt.action, tt.status, tt.code, tt.text, c, r, tt.class, tt.reason)
		}
	}
}

func TestFindStatus(t *testing.T) {
	tests := map[string]string{
		"smtp; 550 5.1.1 <a@b>":                  "5.1.1",
		"<mx.example.com #5.1.1>":                "5.1.1",
		"550-5.7.26 blocked":                     "5.7.26",
		"550 5.7.606 Access denied":              "5.7.606",
		"Lotus SMTP MTA v4.6.1 (569.2 2-6-1998)": "",
		"Lotus Domino Release 5.0.8":             "",
		"by host (version 4.2.1) said 550":       "",
		"Exim 4.96":                              "",
		"from 192.4.1.1":                         "",
		"4.16.55.1":                              "",
		"5.9.1 no such subject":                  "",
		"code 4.4.7.":                            "4.4.7",
	}
	for in, want := range tests {
		if got := findStatus(in); got != want {
			t.Errorf("findStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStripTypeAndReply(t *testing.T) {
	strip := map[string]string{
		"rfc822; a@b.example":               "a@b.example",
		"RFC822 ;  a@b.example":             "a@b.example",
		"rfc/822;a@b.example":               "a@b.example",
		"smtp; 550 5.1.1 unknown":           "550 5.1.1 unknown",
		"X-Postfix; host not found":         "X-Postfix; host not found"[len("X-Postfix; "):],
		"550 5.1.1 user; unknown":           "550 5.1.1 user; unknown",
		"a@b.example":                       "a@b.example",
		"averyveryverylongtypename12345; x": "averyveryverylongtypename12345; x",
	}
	for in, want := range strip {
		if got := stripType(in); got != want {
			t.Errorf("stripType(%q) = %q, want %q", in, got, want)
		}
	}
	reply := map[string]int{
		"550 5.1.1 unknown": 550, "said: 452-4.2.2 full": 452, "host [192.0.2.250] said: 554": 554,
		"port 25: refused": 0, "1550 x": 0, "v2.550": 0, "2001:db8::550 x": 0, "421": 421, "ERROR CODE :550 - x": 550,
	}
	for in, want := range reply {
		if got := findReply(in); got != want {
			t.Errorf("findReply(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestLogAgreesWithDSN: a Postfix log result and the DSN Postfix writes
// for the same recipient get the same class and reason.
func TestLogAgreesWithDSN(t *testing.T) {
	tests := []struct {
		sample, status, dsn, reply string
	}{
		{"postfix-5.1.1", "bounced", "5.1.1", "host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)"},
		{"postfix-mailbox-full", "bounced", "5.2.2", "host mx1.example.se[192.0.2.31] said: 552 5.2.2 <anna.berg@example.se>: Recipient address rejected: Mailbox full (in reply to RCPT TO command)"},
		{"postfix-relay-denied", "bounced", "5.7.1", "host mx.partner.example[192.0.2.90] said: 554 5.7.1 <user@partner.example>: Relay access denied (in reply to RCPT TO command)"},
		{"postfix-spamhaus", "bounced", "5.7.1", "host mail.retail.example[198.51.100.20] said: 554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.5 (in reply to RCPT TO command)"},
		{"postfix-too-big", "bounced", "5.3.4", "host mx.corp.example[192.0.2.61] said: 552 5.3.4 Message size exceeds fixed limit (in reply to end of DATA command)"},
		{"postfix-host-not-found", "bounced", "5.4.4", "Host or domain name not found. Name service error for name=no-such-domain.example type=A: Host not found"},
		{"postfix-expired", "expired", "4.4.1", "connect to mx.slow.example.org[198.51.100.7]:25: Connection timed out"},
		{"postfix-dmarc", "bounced", "5.7.1", "host mx.mail.example[192.0.2.45] said: 550 5.7.1 Email rejected per DMARC policy for example.com (in reply to end of DATA command)"},
		{"postfix-real-expired-quota", "expired", "4.2.2", "host 127.0.0.1[127.0.0.1] said: 452 4.2.2 <later@example.net>: Mailbox is over quota (in reply to RCPT TO command)"},
		{"postfix-real-user-unknown", "bounced", "5.1.1", "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)"},
		{"postfix-real-delayed", "deferred", "4.3.0", "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 <later@example.net>: Temporary lookup failure (in reply to RCPT TO command)"},
		{"postfix-delayed-quota", "deferred", "4.2.2", "host mx.busy.example[192.0.2.99] said: 452 4.2.2 <pat@busy.example>: Mailbox is over quota (in reply to RCPT TO command)"},
	}
	for _, tt := range tests {
		data, err := os.ReadFile(filepath.Join("testdata", tt.sample+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(bytes.NewReader(data), "", Options{})
		if err != nil || len(rep.Recipients) != 1 {
			t.Fatalf("%s: %+v, %v", tt.sample, rep, err)
		}
		d := rep.Recipients[0]
		c, r := Diagnose(tt.status, tt.dsn, 0, tt.reply)
		if c != d.Class || r != d.BounceReason || c == "" {
			t.Errorf("%s: log says %s/%s, DSN says %s/%s", tt.sample, c, r, d.Class, d.BounceReason)
		}
	}
}

func TestReasonPredicates(t *testing.T) {
	for _, r := range Reasons {
		if !r.Valid() {
			t.Errorf("%s not Valid", r)
		}
		n := 0
		for _, p := range []bool{r.Dead(), r.Policy(), r.Temporary()} {
			if p {
				n++
			}
		}
		if want := 1; r == Undefined {
			if n != 0 {
				t.Errorf("%s is in %d groups, want none", r, n)
			}
		} else if n != want {
			t.Errorf("%s is in %d of Dead, Policy, Temporary; want exactly one", r, n)
		}
		if r.DeadLooking() && r.Policy() {
			t.Errorf("%s is both dead-looking and a policy rejection", r)
		}
		if got, want := classOf(r, 5) == Hard, r.Dead(); got != want {
			t.Errorf("classOf(%s, 5) hard = %v, want %v", r, got, want)
		}
	}
	if classOf(NotAccept, 4) != Soft {
		t.Error("NotAccept with a 4xx code is hard")
	}
	for _, r := range []Reason{MailboxFull, Expired, Suspend} {
		if !r.DeadLooking() {
			t.Errorf("%s not DeadLooking", r)
		}
	}
	for _, r := range []Reason{Blocked, BadReputation, Filtered, SpamDetected, VirusDetected, PolicyViolation, SecurityError, Rejected, NoRelaying, ContentError} {
		if !r.Policy() {
			t.Errorf("%s not Policy", r)
		}
	}
	if Reason("bogus").Valid() {
		t.Error("bogus reason Valid")
	}
}

func TestAddresses(t *testing.T) {
	norm := map[string]string{
		"<Nobody@Example.NET>":               "Nobody@example.net",
		"John Doe <jd@Example.com>":          "jd@example.com",
		`"john smith"@Example.net`:           `"john smith"@example.net`,
		`<"a b"@example.org>`:                `"a b"@example.org`,
		"<@relay.example:user@Dest.example>": "user@dest.example",
		"user@example.com.":                  "user@example.com",
		"user@[192.0.2.1]":                   "user@[192.0.2.1]",
		"|/usr/bin/procmail -d lisa":         "|/usr/bin/procmail",
	}
	for in, want := range norm {
		if got := normalizeAddress(in); got != want {
			t.Errorf("normalizeAddress(%q) = %q, want %q", in, got, want)
		}
	}
	valid := map[string]bool{
		"a@example.com": true, `"john smith"@example.net`: true, "user@[192.0.2.1]": true,
		"@mx.example.org": false, "|/usr/bin/procmail": false, "/var/mail/lisa": false, "user@": false,
		"": false, "a b@example.com": false, "a@b@c": false,
	}
	for in, want := range valid {
		if got := validAddress(in); got != want {
			t.Errorf("validAddress(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestOurReturnPath(t *testing.T) {
	tests := []struct {
		addr, env string
		want      bool
	}{
		{"bounce+other@bounce.example.com", "bounce+tok@bounce.example.com", true},
		{"bounce@bounce.example.com", "bounce+tok@bounce.example.com", true},
		{"bounce+x@other.example", "bounce+tok@bounce.example.com", false},
		{"reader@bounce.example.com", "bounce+tok@bounce.example.com", false},
		{"a@b.example", "", false},
	}
	for _, tt := range tests {
		if got := ourReturnPath(tt.addr, tt.env); got != tt.want {
			t.Errorf("ourReturnPath(%q, %q) = %v", tt.addr, tt.env, got)
		}
	}
	// In a text bounce, another token of the return path is no recipient.
	msg := "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n\n" +
		"<bounce+older@bounce.example.com>: 550 5.1.1 unknown\n<gone@example.org>: 550 5.1.1 unknown\n"
	rep, err := Parse(strings.NewReader(msg), "bounce+tok@bounce.example.com", Options{})
	if err != nil || len(rep.Recipients) != 1 || rep.Recipients[0].Address != "gone@example.org" {
		t.Errorf("recipients %+v, %v", rep.Recipients, err)
	}
}

func TestRecipientLabel(t *testing.T) {
	for l, want := range map[string]bool{
		"To": true, "Failed Recipient": true, "Unknown user": true, "宛先": true, "Recipient address": true,
		"From": false, "Sender": false, "Content-ID": false, "Message-ID": false, "Reply-To": false,
		"Disposition-Notification-To": false, "Errors-To": false, "Delivered-To": false, "Please contact": false, "Return-Path": false,
	} {
		if got := recipientLabel(l); got != want {
			t.Errorf("recipientLabel(%q) = %v, want %v", l, got, want)
		}
	}
}

func TestWriteLine(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "postfix-multi.eml"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteLine(&buf, "postfix-multi.eml", bytes.NewReader(data), "", Options{}); err != nil {
		t.Fatal(err)
	}
	want := `{"file":"postfix-multi.eml","kind":"bounce","recipients":[` +
		`{"address":"a.one@example.net","status":"5.1.1","code":550,"class":"hard","bounce_reason":"userunknown","diagnostic":"550 5.1.1 <a.one@example.net>: Recipient address rejected: User unknown"},` +
		`{"address":"b.two@example.net","status":"5.2.2","code":552,"class":"soft","bounce_reason":"mailboxfull","diagnostic":"552 5.2.2 <b.two@example.net>: Mailbox full"},` +
		`{"address":"c.three@other.example","status":"5.7.1","code":550,"class":"soft","bounce_reason":"spamdetected","diagnostic":"550 5.7.1 Message rejected as spam by Content Filtering"}]}` + "\n"
	if buf.String() != want {
		t.Errorf("WriteLine:\n got %s\nwant %s", buf.String(), want)
	}
	buf.Reset()
	if err := WriteLine(&buf, "-", strings.NewReader(""), "", Options{}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != `{"file":"-","kind":"unknown","recipients":[]}`+"\n" {
		t.Errorf("empty input: %s", got)
	}
}

// TestHugeMessage: a bounce with a 10 MB attachment, over the default
// MaxSize once encoded, is still classified from its first bytes.
func TestHugeMessage(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "postfix-5.1.1.eml"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(data, []byte("--4Zb9Xk3Qz5z9sNq.1795376761/mail.example.com--"))
	var b bytes.Buffer
	b.Write(data[:i])
	b.WriteString("--4Zb9Xk3Qz5z9sNq.1795376761/mail.example.com\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
	line := strings.Repeat("QUJD", 19) + "\n"
	for b.Len() < 14<<20 {
		b.WriteString(line)
	}
	rep, err := Parse(bytes.NewReader(b.Bytes()), "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Truncated || rep.Kind != KindBounce || len(rep.Recipients) != 1 || rep.Recipients[0].BounceReason != UserUnknown {
		t.Errorf("huge bounce: truncated %v, kind %s, recipients %+v", rep.Truncated, rep.Kind, rep.Recipients)
	}
}
