package maillog

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/golden"
)

var nov23 = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		ok   bool
		want Entry // Raw and Time are checked apart
	}{
		{"smtp sent", `Nov 22 19:45:58 mail postfix/smtp[24512]: 4Zb9Xk3Qz5z9sNq: to=<alice@example.org>, relay=mx.example.org[198.51.100.10]:25, delay=0.42, delays=0.05/0.01/0.21/0.15, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Zb9Xm0Fh2z4wRt)`, true,
			Entry{Host: "mail", Program: "postfix/smtp", PID: 24512, QueueID: "4Zb9Xk3Qz5z9sNq", Recipient: "alice@example.org", Relay: "mx.example.org[198.51.100.10]:25", DSN: "2.0.0", Status: "sent", Reply: "250 2.0.0 Ok: queued as 4Zb9Xm0Fh2z4wRt"}},
		{"deferred with dsn", `Nov 22 19:46:02 mail postfix/smtp[24513]: 4Zb9Xk4Lp1z9sNr: to=<bob@example.net>, relay=mx.example.net[192.0.2.25]:25, delay=1.2, delays=0.05/0.01/0.9/0.24, dsn=4.2.2, status=deferred (host mx.example.net[192.0.2.25] said: 452 4.2.2 <bob@example.net>: Mailbox full (in reply to RCPT TO command))`, true,
			Entry{Host: "mail", Program: "postfix/smtp", PID: 24513, QueueID: "4Zb9Xk4Lp1z9sNr", Recipient: "bob@example.net", Relay: "mx.example.net[192.0.2.25]:25", DSN: "4.2.2", Status: "deferred", Reply: "host mx.example.net[192.0.2.25] said: 452 4.2.2 <bob@example.net>: Mailbox full (in reply to RCPT TO command)"}},
		{"deferred without dsn", `Jan  1 00:00:03 mx1 postfix/smtp[3005]: 9C1B22A0F3: to=<dave@example.org>, relay=none, delay=30, delays=0.01/0/30/0, status=deferred (connect to mx.example.org[198.51.100.20]:25: Connection refused)`, true,
			Entry{Host: "mx1", Program: "postfix/smtp", PID: 3005, QueueID: "9C1B22A0F3", Recipient: "dave@example.org", Relay: "none", Status: "deferred", Reply: "connect to mx.example.org[198.51.100.20]:25: Connection refused"}},
		{"bounced", `Nov 22 19:46:01 mail postfix/smtp[24514]: 4Zb9Xk5Rt2z9sNs: to=<nobody@example.net>, relay=mx.example.net[192.0.2.25]:25, delay=0.6, delays=0.05/0.01/0.3/0.24, dsn=5.1.1, status=bounced (host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: User unknown (in reply to RCPT TO command))`, true,
			Entry{Host: "mail", Program: "postfix/smtp", PID: 24514, QueueID: "4Zb9Xk5Rt2z9sNs", Recipient: "nobody@example.net", Relay: "mx.example.net[192.0.2.25]:25", DSN: "5.1.1", Status: "bounced", Reply: "host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: User unknown (in reply to RCPT TO command)"}},
		{"expired from qmgr", `Nov 22 19:46:04 mail postfix/qmgr[24405]: 4Zb8Ab2Cd3z9sNt: from=<bounce+x1@bounce.example.com>, status=expired, returned to sender`, true,
			Entry{Host: "mail", Program: "postfix/qmgr", PID: 24405, QueueID: "4Zb8Ab2Cd3z9sNt", Status: "expired", Reply: "returned to sender"}},
		{"expired per recipient", `2026-11-27T19:46:00.000001+00:00 mail postfix/qmgr[24405]: 4Zb9Xk4Lp1z9sNr: to=<bob@example.net>, relay=none, delay=432000, delays=432000/0/0/0, dsn=4.4.1, status=expired (message has expired)`, true,
			Entry{Host: "mail", Program: "postfix/qmgr", PID: 24405, QueueID: "4Zb9Xk4Lp1z9sNr", Recipient: "bob@example.net", Relay: "none", DSN: "4.4.1", Status: "expired", Reply: "message has expired"}},
		{"local with orig_to", `Nov 22 19:46:03 mail postfix/local[24520]: 4Zb9Xk6Wy3z9sNv: to=<root@mail.example.com>, orig_to=<postmaster@example.com>, relay=local, delay=0.03, delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)`, true,
			Entry{Host: "mail", Program: "postfix/local", PID: 24520, QueueID: "4Zb9Xk6Wy3z9sNv", Recipient: "root@mail.example.com", OrigTo: "postmaster@example.com", Relay: "local", DSN: "2.0.0", Status: "sent", Reply: "delivered to mailbox"}},
		{"cleanup message-id", `Nov 22 19:45:57 mail postfix/cleanup[24510]: 4Zb9Xk3Qz5z9sNq: message-id=<order-1234@app.example.com>`, true,
			Entry{Host: "mail", Program: "postfix/cleanup", PID: 24510, QueueID: "4Zb9Xk3Qz5z9sNq", MessageID: "order-1234@app.example.com"}},
		{"qmgr removed", `Nov 22 19:45:58 mail postfix/qmgr[24405]: 4Zb9Xk3Qz5z9sNq: removed`, true,
			Entry{Host: "mail", Program: "postfix/qmgr", PID: 24405, QueueID: "4Zb9Xk3Qz5z9sNq", Removed: true}},
		{"rfc3339 short id", `2026-11-22T19:45:58.200001+00:00 mail postfix/smtp[1]: 3F2A81C0B1: to=<a@b.example>, relay=x[1.2.3.4]:25, delay=1, delays=1/0/0/0, dsn=2.0.0, status=sent (250 ok)`, true,
			Entry{Host: "mail", Program: "postfix/smtp", PID: 1, QueueID: "3F2A81C0B1", Recipient: "a@b.example", Relay: "x[1.2.3.4]:25", DSN: "2.0.0", Status: "sent", Reply: "250 ok"}},
		{"multi-instance name", `Jan  1 00:00:05 mx1 postfix-out/smtp[3007]: 9C1B22A0F4: to=<frank@example.org>, relay=r[1.1.1.1]:25, dsn=2.0.0, status=sent (250 ok)`, true,
			Entry{Host: "mx1", Program: "postfix-out/smtp", PID: 3007, QueueID: "9C1B22A0F4", Recipient: "frank@example.org", Relay: "r[1.1.1.1]:25", DSN: "2.0.0", Status: "sent", Reply: "250 ok"}},
		{"qmgr from is not a result", `Nov 22 19:45:57 mail postfix/qmgr[24405]: 4Zb9Xk3Qz5z9sNq: from=<b@x.example>, size=2345, nrcpt=1 (queue active)`, false, Entry{}},
		{"smtpd connect", `Nov 22 19:45:57 mail postfix/smtpd[24500]: connect from app.example.com[10.0.0.5]`, false, Entry{}},
		{"smtpd client", `Nov 22 19:45:57 mail postfix/smtpd[24500]: 4Zb9Xk3Qz5z9sNq: client=app.example.com[10.0.0.5]`, false, Entry{}},
		{"NOQUEUE reject", `Nov 22 19:46:05 mail postfix/smtpd[24500]: NOQUEUE: reject: RCPT from unknown[203.0.113.50]: 554 5.7.1 <s@example.com>: Relay access denied; from=<a@b> to=<s@example.com> proto=ESMTP`, false, Entry{}},
		{"warning", `Nov 22 19:46:06 mail postfix/smtpd[24500]: warning: hostname bad.example does not resolve`, false, Entry{}},
		{"bounce notice", `Nov 22 19:46:01 mail postfix/bounce[24530]: 4Zb9Xk5Rt2z9sNs: sender non-delivery notification: 4Zb9Xm9Kq1z9sNw`, false, Entry{}},
		{"address verification probe", `Nov 22 19:46:01 mail postfix/smtp[1]: 4Zb9Xk5Rt2z9sNs: to=<a@b>, relay=x, dsn=2.1.5, status=deliverable (250 ok)`, false, Entry{}},
		{"opendkim with a queue id", `Jan  1 00:00:02 mx1 opendkim[800]: 9C1B22A0F3: DKIM-Signature field added (s=mail, d=example.com)`, false, Entry{}},
		{"other program faking postfix fields", `Jan  1 00:00:02 mx1 evil[1]: 9C1B22A0F3: to=<a@b>, status=sent (x)`, false, Entry{}},
		{"cron", `Dec 31 23:59:59 mx1 CRON[3002]: (root) CMD (debian-sa1 1 1)`, false, Entry{}},
		{"garbage", `garbage without a timestamp`, false, Entry{}},
		{"empty", ``, false, Entry{}},
		{"bad date", `Jan 99 00:00:07 mx1 postfix/smtp[1]: 9C1B22A0F3: to=<x@y>, status=sent (x)`, false, Entry{}},
		{"bad pid", `Nov 22 19:45:58 mail postfix/qmgr[x]: 4Zb9Xk3Qz5z9sNq: removed`, false, Entry{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseLine([]byte(tt.line+"\n"), nov23)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tt.ok, got)
			}
			if !ok {
				return
			}
			if got.Raw != tt.line {
				t.Errorf("Raw = %q", got.Raw)
			}
			if got.Time.IsZero() {
				t.Error("zero Time")
			}
			got.Raw, got.Time = "", time.Time{}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		berlin = time.FixedZone("CET", 3600)
	}
	tests := []struct {
		stamp string
		now   time.Time
		want  time.Time
	}{
		{"Nov 22 19:45:57", nov23, time.Date(2026, 11, 22, 19, 45, 57, 0, time.UTC)},
		{"Nov  2 19:45:57", nov23, time.Date(2026, 11, 2, 19, 45, 57, 0, time.UTC)},
		{"Nov 02 19:45:57.250", nov23, time.Date(2026, 11, 2, 19, 45, 57, 250e6, time.UTC)},
		{"Dec 31 23:59:58", time.Date(2027, 1, 1, 0, 10, 0, 0, time.UTC), time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC)},
		{"Jan  1 00:00:01", time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC)},
		{"Jan  5 10:00:00", time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)},
		{"Jun  1 12:00:00", time.Date(2026, 11, 1, 0, 0, 0, 0, berlin), time.Date(2026, 6, 1, 12, 0, 0, 0, berlin)},
		{"2026-11-22T19:45:57.123456+00:00", nov23, time.Date(2026, 11, 22, 19, 45, 57, 123456000, time.UTC)},
		{"2026-11-22T20:45:57+01:00", nov23, time.Date(2026, 11, 22, 19, 45, 57, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, ok := ParseLine([]byte(tt.stamp+" h postfix/qmgr[1]: 4Zb9Xk3Qz5z9sNq: removed"), tt.now)
		if !ok || !got.Time.Equal(tt.want) {
			t.Errorf("%q at %v: got %v (ok %v), want %v", tt.stamp, tt.now, got.Time, ok, tt.want)
		}
	}
}

// TestGolden parses each testdata log and compares the entries with
// NAME.golden.json.
func TestGolden(t *testing.T) {
	nows := map[string]time.Time{"syslog": time.Date(2027, 1, 1, 0, 10, 0, 0, time.UTC)}
	files, _ := filepath.Glob("testdata/*.log")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".log")
		t.Run(name, func(t *testing.T) {
			now, ok := nows[name]
			if !ok {
				now = nov23
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			entries := parseAll(t, fileFormat(name), data, now)
			golden.Check(t, strings.TrimSuffix(file, ".log")+".golden.json", golden.JSON(t, entries))
		})
	}
}

// fileFormat is the format of testdata/NAME.log: Sendmail for sendmail-*.
func fileFormat(name string) Format {
	if strings.HasPrefix(name, "sendmail") {
		return Sendmail
	}
	return Postfix
}

// parseAll parses data line by line with one Parser of format.
func parseAll(t testing.TB, format Format, data []byte, now time.Time) []Entry {
	t.Helper()
	p := &Parser{Format: format}
	entries := []Entry{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		entries = p.Parse(entries, sc.Bytes(), now)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return entries
}

func FuzzParseLine(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.log")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, ok := ParseLine(line, nov23)
		e2, ok2 := ParseLine(line, nov23)
		if ok != ok2 || e != e2 {
			t.Fatal("not deterministic")
		}
		if !ok {
			if e != (Entry{}) {
				t.Fatalf("rejected line returned %+v", e)
			}
			return
		}
		if e.QueueID == "" || !isAlnum(e.QueueID) {
			t.Fatalf("QueueID %q not alphanumeric", e.QueueID)
		}
		if e.Status == "" && e.MessageID == "" && !e.Removed {
			t.Fatalf("accepted a useless line: %+v", e)
		}
		if e.Raw != string(bytes.TrimRight(line, "\r\n")) {
			t.Fatalf("Raw %q", e.Raw)
		}
	})
}

func isAlnum(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func BenchmarkParseLine(b *testing.B) {
	lines := [][]byte{
		[]byte(`Nov 22 19:45:58 mail postfix/smtp[24512]: 4Zb9Xk3Qz5z9sNq: to=<alice@example.org>, relay=mx.example.org[198.51.100.10]:25, delay=0.42, delays=0.05/0.01/0.21/0.15, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Zb9Xm0Fh2z4wRt)`),
		[]byte(`2026-11-22T19:45:57.123456+00:00 mail postfix/cleanup[24510]: 4Zb9Xk3Qz5z9sNq: message-id=<order-1234@app.example.com>`),
		[]byte(`Nov 22 19:45:57 mail postfix/smtpd[24500]: connect from app.example.com[10.0.0.5]`),
		[]byte(`Nov 22 19:45:58 mail postfix/qmgr[24405]: 4Zb9Xk3Qz5z9sNq: removed`),
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		ParseLine(lines[n%len(lines)], nov23)
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}

// genLine returns the i-th line of a synthetic log: the five lines Postfix
// writes for one delivered message, one queue id per five lines.
func genLine(i int) string {
	qid := fmt.Sprintf("4Zb%07dz9sNq", i/5)
	ts := fmt.Sprintf("Nov 22 %02d:%02d:%02d", (i/3600)%24, (i/60)%60, i%60)
	switch i % 5 {
	case 0:
		return ts + " mail postfix/smtpd[24500]: connect from app.example.com[10.0.0.5]"
	case 1:
		return ts + " mail postfix/cleanup[24510]: " + qid + ": message-id=<m" + qid + "@app.example.com>"
	case 2:
		return ts + " mail postfix/qmgr[24405]: " + qid + ": from=<bounce+x@bounce.example.com>, size=2345, nrcpt=1 (queue active)"
	case 3:
		return ts + " mail postfix/smtp[24512]: " + qid + ": to=<alice@example.org>, relay=mx.example.org[198.51.100.10]:25, delay=0.42, delays=0.05/0.01/0.21/0.15, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4Zb9Xm0Fh2z4wRt)"
	}
	return ts + " mail postfix/qmgr[24405]: " + qid + ": removed"
}
