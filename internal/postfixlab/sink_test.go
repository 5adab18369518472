package postfixlab

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/golden"
)

// These tests need no Postfix.

func TestSinkSMTP(t *testing.T) {
	s := NewSink(t)
	s.SetRcptReply("gone@example.org", 550, "5.1.1 no such user")
	s.SetRcptReply("later@example.org", 452, "4.2.2 mailbox full")
	s.SetRcptReply("later@example.org", 0, "") // removed again

	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.org"); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("GONE@example.org")
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 550 || te.Msg != "5.1.1 no such user" {
		t.Fatalf("RCPT gone: err = %v, want 550", err)
	}
	if err := c.Rcpt("later@example.org"); err != nil {
		t.Fatalf("RCPT later after removing its reply: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	// net/smtp turns LF into CRLF and dot-stuffs.
	msg := "Subject: x\n\n.one\n..two\n.\nend"
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	m := s.WaitFor(t, nil, 5*time.Second)
	want := strings.ReplaceAll(msg, "\n", "\r\n") + "\r\n"
	if m.From != "a@example.com" || !slices.Equal(m.To, []string{"b@example.org", "later@example.org"}) || string(m.Data) != want {
		t.Errorf("got from=%q to=%v data=%q\nwant data=%q", m.From, m.To, m.Data, want)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("Messages() has %d, want 1", n)
	}
}

func TestSinkPipelining(t *testing.T) {
	s := NewSink(t)
	s.SetRcptReply("x@example.org", 550, "5.1.1 no")
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	// One write with everything, like a pipelining client; the null sender
	// and an all-rejected second transaction are included.
	wire := "EHLO t\r\nMAIL FROM:<> SIZE=10\r\nRCPT TO:<y@example.org> NOTIFY=NEVER\r\nDATA\r\n" +
		"a\r\n.\r\n" +
		"MAIL FROM:<z@example.com>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nQUIT\r\n"
	if _, err := c.Write([]byte(wire)); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		if len(line) >= 4 && line[3] == ' ' {
			codes = append(codes, line[:3])
		}
	}
	want := []string{"220", "250", "250", "250", "354", "250", "250", "550", "554", "221"}
	if !slices.Equal(codes, want) {
		t.Errorf("reply codes %v, want %v", codes, want)
	}
	m := s.WaitFor(t, nil, 5*time.Second)
	if m.From != "" || !slices.Equal(m.To, []string{"y@example.org"}) || string(m.Data) != "a\r\n" {
		t.Errorf("got %+v", m)
	}
}

func TestSinkClose(t *testing.T) {
	s := NewSink(t)
	c, err := net.Dial("tcp", s.Addr) // an idle session must not block Close
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on an idle session")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestAddrArg(t *testing.T) {
	for in, want := range map[string]string{
		"<a@b>":             "a@b",
		" <a@b> SIZE=12":    "a@b",
		"<>":                "",
		"a@b BODY=8BITMIME": "a@b",
		"":                  "",
		"<unterminated":     "<unterminated",
	} {
		if got := addrArg(in); got != want {
			t.Errorf("addrArg(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadDataTooBig(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("0123456789\r\n0123456789\r\n.\r\nQUIT\r\n"))
	if _, err := readData(r, 15); !errors.Is(err, errTooBig) {
		t.Fatalf("err = %v, want errTooBig", err)
	}
	if rest, _ := r.ReadString('\n'); rest != "QUIT\r\n" {
		t.Errorf("after a too big message the reader is at %q, want QUIT", rest)
	}
}

// dotStuff is the sender's side of RFC 5321 section 4.5.2.
func dotStuff(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\r\n")) {
		if len(line) > 0 && line[0] == '.' {
			out.WriteByte('.')
		}
		out.Write(line)
	}
	return out.Bytes()
}

func FuzzReadData(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n", "..x\r\n.\r\n", "a\nb\r\n", strings.Repeat("x", 70000) + "\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		// Property: readData(dotStuff(m) + ".\r\n") == m for every m made of
		// CRLF-terminated lines (what an SMTP client sends).
		msg = bytes.ReplaceAll(msg, []byte("\r"), nil)
		msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
		if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
			msg = append(msg, "\r\n"...)
		}
		wire := append(dotStuff(msg), ".\r\nNEXT"...)
		r := bufio.NewReaderSize(bytes.NewReader(wire), 16)
		got, err := readData(r, maxData)
		if err != nil {
			t.Fatalf("readData: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("round trip:\n got %q\nwant %q", got, msg)
		}
	})
}

func FuzzSession(f *testing.F) {
	f.Add([]byte("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n..x\r\n.\r\nQUIT\r\n"))
	f.Add([]byte("RCPT TO:<c@d>\r\nDATA\r\nMAIL\r\nmail from:\r\nrcpt to:\r\n"))
	f.Add([]byte("MAIL FROM:<a@b>\r\nRCPT TO:<bad@x>\r\nDATA\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Property: any input ends the session without a panic, and every
		// stored message has an accepted recipient.
		s := &Sink{rcptReply: map[string]string{"bad@x": "550 5.1.1 no"}, changed: make(chan struct{})}
		ss := session{sink: s, r: bufio.NewReaderSize(bytes.NewReader(in), 64), w: bufio.NewWriter(&bytes.Buffer{})}
		ss.run(func() {})
		for _, m := range s.Messages() {
			if len(m.To) == 0 || slices.Contains(m.To, "bad@x") {
				t.Fatalf("stored %+v", m)
			}
		}
	})
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("123 (master) S 1 123 123 0 -1 4194560 ..."))
	f.Add([]byte("7 (a) b) c) Z 1 2 3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseProcStat(b) // property: no panic; a success has a state
		if err == nil && st.state == 0 {
			t.Fatalf("no state from %q", b)
		}
	})
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		in      string
		want    procStat
		wantErr bool
	}{
		{"123 (master) S 1 123 123 0 -1", procStat{'S', 123}, false},
		{"9 (odd) name) Z 1 5 77 0", procStat{'Z', 77}, false},
		{"9 (x) S 1 2", procStat{}, true},
		{"garbage", procStat{}, true},
	}
	for _, tc := range tests {
		got, err := parseProcStat([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseProcStat(%q) = %+v, %v; want %+v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRenderConfigGolden(t *testing.T) {
	base := layout{
		etc: "/RUN/etc", spool: "/RUN/spool", data: "/RUN/data", logDir: "/RUN/log", mailLog: "/RUN/log/maillog",
		smtpPort: 10025, relayHost: "[127.0.0.1]:10026", milterDefaultAction: "tempfail",
	}
	full := base
	full.submitPort = 10587
	full.milters = []string{"unix:/S/milter.sock", "inet:127.0.0.1:10030"}
	full.extraMain = "transport_maps = inline:{x.example=discard:}\n\n"
	full.extraMaster = "pipe unix - n n - - pipe flags=R user=nobody argv=/bin/cat"
	chroot := full
	chroot.chroot = true
	for name, c := range map[string]layout{"plain": base, "full": full, "chroot": chroot} {
		t.Run(name, func(t *testing.T) {
			mainCF, masterCF := renderConfig(c)
			for suffix, got := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
				golden.Check(t, filepath.Join("testdata", name+"."+suffix+".golden"), []byte(got))
			}
		})
	}
}

func TestHasServerArg(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--to", "a@b"}, false},
		{[]string{"--server", "x"}, true},
		{[]string{"--server=x:25"}, true},
		{[]string{"-s", "x"}, true},
		{[]string{"--body", "--server"}, true}, // a false positive the caller can avoid
	} {
		if got := hasServerArg(tc.args); got != tc.want {
			t.Errorf("hasServerArg(%q) = %v", tc.args, got)
		}
	}
}
