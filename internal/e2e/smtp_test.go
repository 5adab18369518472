package e2e

import (
	"net/textproto"
	"regexp"
	"testing"
)

// smtpClient sends several messages over one SMTP session (swaks sends one
// per session, and net/smtp hides the reply to the final dot, which carries
// Postfix's queue id).
type smtpClient struct{ c *textproto.Conn }

func smtpDial(addr string) (*smtpClient, error) {
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &smtpClient{c: c}
	if _, _, err := c.ReadResponse(220); err != nil {
		c.Close()
		return nil, err
	}
	if err := s.cmd(250, "EHLO e2e.localdomain"); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

func (s *smtpClient) cmd(code int, format string, args ...any) error {
	id, err := s.c.Cmd(format, args...)
	if err != nil {
		return err
	}
	s.c.StartResponse(id)
	defer s.c.EndResponse(id)
	_, _, err = s.c.ReadResponse(code)
	return err
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// send sends one message (data with CRLF line ends) and returns the queue id.
func (s *smtpClient) send(t *testing.T, from, to, data string) string {
	t.Helper()
	for _, c := range []struct {
		code int
		line string
	}{{250, "MAIL FROM:<" + from + ">"}, {250, "RCPT TO:<" + to + ">"}, {354, "DATA"}} {
		if err := s.cmd(c.code, "%s", c.line); err != nil {
			t.Fatalf("%s: %v", c.line, err)
		}
	}
	w := s.c.DotWriter()
	if _, err := w.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, msg, err := s.c.ReadResponse(250)
	if err != nil {
		t.Fatalf("end of data: %v", err)
	}
	m := queuedAs.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("no queue id in %q", msg)
	}
	return m[1]
}

func (s *smtpClient) quit()  { s.cmd(221, "QUIT") }
func (s *smtpClient) Close() { s.c.Close() }
