package maillog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSendmail(t *testing.T) {
	const pre = "Dec  2 04:20:21 sm-lab sm-mta[31838]: 6B24KLRD031832: "
	base := Entry{Host: "sm-lab", Program: "sm-mta", PID: 31838, QueueID: "6B24KLRD031832"}
	with := func(f func(*Entry)) Entry { e := base; f(&e); return e }
	tests := []struct {
		name  string
		lines []string // fed in order to one Parser; the last one's entries are checked
		want  []Entry  // Raw and Time are checked apart
	}{
		{"sent", []string{`to=<customer@example.com>, delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=60383, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (Ok: queued)`},
			[]Entry{with(func(e *Entry) {
				e.Recipient, e.Relay, e.DSN, e.Status, e.Reply = "customer@example.com", "[127.0.0.1]", "2.0.0", StatusSent, "Ok: queued"
			})}},
		{"bounced with reply", []string{`to=<bad@example.com>, delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=60383, relay=mx.example.com. [192.0.2.1], dsn=5.1.1, reply=550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown, stat=User unknown`},
			[]Entry{with(func(e *Entry) {
				e.Recipient, e.Relay, e.DSN, e.Status = "bad@example.com", "mx.example.com[192.0.2.1]", "5.1.1", StatusBounced
				e.Reply = "550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown"
			})}},
		{"bounced without reply", []string{`to=<x@nonexistent.example>, delay=00:00:00, mailer=esmtp, pri=30321, relay=nonexistent.example, dsn=5.1.2, stat=Host unknown (Name server: nonexistent.example: host not found)`},
			[]Entry{with(func(e *Entry) {
				e.Recipient, e.Relay, e.DSN, e.Status = "x@nonexistent.example", "nonexistent.example", "5.1.2", StatusBounced
				e.Reply = "Host unknown (Name server: nonexistent.example: host not found)"
			})}},
		{"deferred", []string{`to=<full@example.com>, delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=90298, relay=[127.0.0.1] [127.0.0.1], dsn=4.2.2, reply=452 4.2.2 <full@example.com>: mailbox full, stat=Deferred: 452 4.2.2 <full@example.com>: mailbox full`},
			[]Entry{with(func(e *Entry) {
				e.Recipient, e.Relay, e.DSN, e.Status, e.Reply = "full@example.com", "[127.0.0.1]", "4.2.2", StatusDeferred, "452 4.2.2 <full@example.com>: mailbox full"
			})}},
		{"several recipients, log order", []string{`to=<r3@example.net>,<r2@example.com>,<r1@example.com>, delay=00:00:00, xdelay=00:00:00, mailer=relay, pri=90251, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (Ok: queued)`},
			[]Entry{
				with(func(e *Entry) {
					e.Recipient, e.Relay, e.DSN, e.Status, e.Reply = "r3@example.net", "[127.0.0.1]", "2.0.0", StatusSent, "Ok: queued"
				}),
				with(func(e *Entry) {
					e.Recipient, e.Relay, e.DSN, e.Status, e.Reply = "r2@example.com", "[127.0.0.1]", "2.0.0", StatusSent, "Ok: queued"
				}),
				with(func(e *Entry) {
					e.Recipient, e.Relay, e.DSN, e.Status, e.Reply = "r1@example.com", "[127.0.0.1]", "2.0.0", StatusSent, "Ok: queued"
				}),
			}},
		{"expiry names the recipients still deferred", []string{
			`to=<full@example.com>,<later@example.com>, delay=00:00:00, mailer=relay, pri=1, relay=[127.0.0.1] [127.0.0.1], dsn=4.2.2, reply=452 4.2.2 full, stat=Deferred: 452 4.2.2 full`,
			`to=<later@example.com>, delay=00:01:00, mailer=relay, pri=2, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (ok)`,
			`6B24LepH002698: sender notify: Cannot send message for 3 minutes`},
			[]Entry{with(func(e *Entry) {
				e.Recipient, e.Relay, e.DSN, e.Status = "full@example.com", "[127.0.0.1]", "4.4.7", StatusExpired
				e.Reply = "Cannot send message for 3 minutes (last reply: 452 4.2.2 full)"
			})}},
		{"expiry of an unknown queue id", []string{`6B24LepH002698: DSN: Cannot send message for 5 days`},
			[]Entry{with(func(e *Entry) { e.DSN, e.Status, e.Reply = "4.4.7", StatusExpired, "Cannot send message for 5 days" })}},
		{"done forgets deferrals", []string{
			`to=<full@example.com>, delay=00:00:00, mailer=relay, pri=1, dsn=4.2.2, stat=Deferred`,
			`done; delay=00:03:03, ntries=8`,
			`6B24LepH002698: DSN: Cannot send message for 5 days`},
			[]Entry{with(func(e *Entry) { e.DSN, e.Status, e.Reply = "4.4.7", StatusExpired, "Cannot send message for 5 days" })}},
		{"done", []string{`done; delay=00:00:00, ntries=1`}, []Entry{with(func(e *Entry) { e.Removed = true })}},
		{"from has the message-id", []string{`from=<app@example.com>, size=383, class=0, nrcpts=2, msgid=<20261202042021.031826@vm>, proto=ESMTP, daemon=MTA, relay=localhost [127.0.0.1]`},
			[]Entry{with(func(e *Entry) { e.MessageID = "20261202042021.031826@vm" })}},
		{"from without msgid", []string{`from=<app@example.com>, size=383, class=0, nrcpts=2, proto=ESMTP, daemon=MTA, relay=localhost [127.0.0.1]`}, nil},
		{"queued is no result", []string{`to=<a@example.com>, delay=00:00:00, mailer=esmtp, pri=30300, stat=queued`}, nil},
		{"delay warning", []string{`6B24K48k030528: sender notify: Warning: could not send message for past 1 minute`}, nil},
		{"bounce notice", []string{`6B24KLRD031838: DSN: User unknown`}, nil},
		{"milter reject", []string{`Milter: to=<s@example.com>, reject=550 5.7.1 <s@example.com>: suppressed`}, nil},
		{"no stat", []string{`to=<a@example.com>, delay=00:00:00, mailer=esmtp, pri=30300`}, nil},
		{"no fields", []string{`to=<a@example.com>`}, nil},
		{"empty address", []string{`to=<a@example.com>,, delay=00:00:00, stat=Sent`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Parser{Format: Sendmail}
			var got []Entry
			for _, l := range tt.lines {
				got = p.Parse(nil, []byte(pre+l+"\n"), nov23)
			}
			for i := range got {
				if got[i].Raw != pre+tt.lines[len(tt.lines)-1] || got[i].Time.IsZero() {
					t.Errorf("entry %d: Raw %q Time %v", i, got[i].Raw, got[i].Time)
				}
				got[i].Raw, got[i].Time = "", time.Time{}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSendmailLinesNeedTheirFormat(t *testing.T) {
	sm := []byte("Dec  2 04:20:21 sm-lab sm-mta[31838]: 6B24KLRD031832: to=<c@example.com>, delay=00:00:00, mailer=relay, pri=1, dsn=2.0.0, stat=Sent (ok)")
	pf := []byte("Nov 22 19:45:58 mail postfix/qmgr[24405]: 4Zb9Xk3Qz5z9sNq: removed")
	for _, tt := range []struct {
		format Format
		sm, pf int
	}{{"", 0, 1}, {Postfix, 0, 1}, {Sendmail, 1, 0}, {Auto, 1, 1}} {
		p := &Parser{Format: tt.format}
		if n := len(p.Parse(nil, sm, nov23)); n != tt.sm {
			t.Errorf("format %q: %d entries for a Sendmail line, want %d", tt.format, n, tt.sm)
		}
		if n := len(p.Parse(nil, pf, nov23)); n != tt.pf {
			t.Errorf("format %q: %d entries for a Postfix line, want %d", tt.format, n, tt.pf)
		}
	}
	if _, ok := ParseLine(sm, nov23); ok {
		t.Error("ParseLine (Postfix) accepted a Sendmail line")
	}
}

// TestAutoMatchesFormat: Auto reads every testdata log as its own format
// does, and a log of both MTAs as the two formats together.
func TestAutoMatchesFormat(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.log")
	var all []byte
	var want []Entry
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(file), ".log")
		own := parseAll(t, fileFormat(name), data, nov23)
		if auto := parseAll(t, Auto, data, nov23); !slices.Equal(auto, own) {
			t.Errorf("%s: auto gives %d entries, %s gives %d (or they differ)", file, len(auto), fileFormat(name), len(own))
		}
		if len(own) == 0 {
			t.Errorf("%s: no entries", file)
		}
		all = append(all, data...)
		want = append(want, own...)
	}
	if got := parseAll(t, Auto, all, nov23); !slices.Equal(got, want) {
		t.Errorf("auto on all logs at once: %d entries, want %d", len(got), len(want))
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": Postfix, "postfix": Postfix, "sendmail": Sendmail, "auto": Auto} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"exim", "Sendmail", " postfix"} {
		if _, err := ParseFormat(in); err == nil || !strings.Contains(err.Error(), `"postfix", "sendmail" or "auto"`) {
			t.Errorf("ParseFormat(%q) error = %v", in, err)
		}
	}
	f := &Follower{Path: filepath.Join(t.TempDir(), "mail.log"), Format: "exim"}
	if err := f.Run(t.Context(), Position{}, func([]Entry, Position) error { return nil }); err == nil || !strings.Contains(err.Error(), "exim") {
		t.Errorf("Run with format exim = %v, want an error naming it", err)
	}
}

// TestFollowSendmail follows the lab's real log written in two parts (the
// expiry is in the second, read in a later batch unless the machine is too
// slow to read the first in 50 ms): the expiry still names the recipient
// deferred before, and every entry comes once.
func TestFollowSendmail(t *testing.T) {
	data, err := os.ReadFile("testdata/sendmail-lab.log")
	if err != nil {
		t.Fatal(err)
	}
	want := parseAll(t, Sendmail, data, nov23)
	cut := bytes.Index(data, []byte("sender notify: Warning")) // well before the expiry
	path := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(path, data[:cut], 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []Entry
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f := &Follower{Path: path, Poll: 5 * time.Millisecond, Format: Sendmail, Now: func() time.Time { return nov23 }}
	done := make(chan error, 1)
	go func() {
		done <- f.Run(ctx, Position{}, func(es []Entry, _ Position) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, es...)
			if len(got) == len(want) {
				cancel()
			}
			return nil
		})
	}()
	time.Sleep(50 * time.Millisecond)
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(data[cut:]); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("followed %d entries, want %d", len(got), len(want))
	}
	var expired []string
	for _, e := range got {
		if e.Status == StatusExpired {
			expired = append(expired, e.QueueID+" "+e.Recipient)
		}
	}
	if !slices.Equal(expired, []string{"6B25jw4x004866 full@example.net"}) {
		t.Errorf("expired entries %q", expired)
	}
}

func FuzzParseSendmail(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.log")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			f.Add(l, l)
		}
	}
	f.Fuzz(func(t *testing.T, line1, line2 []byte) {
		// Two lines through one Parser: the second may depend on the first
		// (an expiry naming the recipients the first deferred).
		for _, format := range []Format{Sendmail, Auto} {
			p1, p2 := &Parser{Format: format}, &Parser{Format: format}
			a := p1.Parse(p1.Parse(nil, line1, nov23), line2, nov23)
			b := p2.Parse(p2.Parse(nil, line1, nov23), line2, nov23)
			if !slices.EqualFunc(a, b, sameEntry) {
				t.Fatal("not deterministic")
			}
			for _, e := range a {
				if e.QueueID == "" || !isAlnum(e.QueueID) {
					t.Fatalf("QueueID %q not alphanumeric", e.QueueID)
				}
				switch e.Status {
				case "", StatusSent, StatusDeferred, StatusBounced, StatusExpired:
				default:
					t.Fatalf("status %q", e.Status)
				}
				if e.Status == "" && e.MessageID == "" && !e.Removed {
					t.Fatalf("accepted a useless line: %+v", e)
				}
				sendmail := !strings.Contains(e.Program, "/")
				if sendmail && e.Status != "" && e.Status != StatusExpired && e.Recipient == "" {
					t.Fatalf("delivery result without a recipient: %+v", e)
				}
				if sendmail && (strings.HasPrefix(e.Recipient, "<") || strings.HasSuffix(e.Recipient, ">") && !strings.Contains(e.Recipient, "<")) {
					t.Fatalf("recipient with its brackets: %q", e.Recipient)
				}
				if e.Raw != string(bytes.TrimRight(line1, "\r\n")) && e.Raw != string(bytes.TrimRight(line2, "\r\n")) {
					t.Fatalf("Raw %q is neither line", e.Raw)
				}
			}
			if len(p1.deferred) != len(p1.order) || len(p1.order) > maxTracked {
				t.Fatalf("parser state: %d queue ids, %d in order", len(p1.deferred), len(p1.order))
			}
		}
	})
}

// sameEntry compares entries with Time.Equal: two parses of one offset
// give equal times with distinct *time.Location values.
func sameEntry(a, b Entry) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	return a == b
}
