package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os/exec"
	"regexp"
	"time"
)

// Rejected is a recipient the MTA refused at RCPT TO, with its reply: for
// a suppressed address, leadpush-milter's "550 5.7.1 ..." (seed 002's
// reject state).
type Rejected struct {
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// submitted is the MTA's answer to one message.
type submitted struct {
	QueueID  string     // "" when the MTA did not say (sendmail)
	Rejected []Rejected // refused recipients; the others were accepted
}

// Submission errors; each maps to one HTTP status.
var (
	// errUnavailable: the MTA could not be reached or answered 4xx; the
	// client should retry (503 with Retry-After).
	errUnavailable = errors.New("api: MTA unavailable")
	// errAllRejected: every recipient was refused; nothing was queued (422).
	errAllRejected = errors.New("api: all recipients rejected")
)

// refusedError is a permanent refusal of the message as a whole (5xx at
// MAIL FROM or after DATA); Reply is the MTA's text, safe to show.
type refusedError struct{ Reply string }

func (e *refusedError) Error() string { return "api: MTA refused the message: " + e.Reply }

// submitter hands a composed message to the MTA.
type submitter interface {
	submit(ctx context.Context, from string, rcpts []string, msg []byte) (*submitted, error)
}

// smtpSubmitter speaks SMTP to a listener of the local MTA. No STARTTLS:
// the listener is on loopback.
type smtpSubmitter struct {
	addr, helo string
	timeout    time.Duration
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

func (s *smtpSubmitter) submit(ctx context.Context, from string, rcpts []string, msg []byte) (*submitted, error) {
	d := net.Dialer{Timeout: s.timeout}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(s.timeout))
	c, err := smtp.NewClient(conn, s.addr)
	if err != nil {
		return nil, classify(err)
	}
	if err := c.Hello(s.helo); err != nil {
		return nil, classify(err)
	}
	if err := c.Mail(from); err != nil {
		return nil, classify(err)
	}
	res := &submitted{}
	accepted := 0
	for _, r := range rcpts {
		err := c.Rcpt(r)
		var te *textproto.Error
		switch {
		case err == nil:
			accepted++
		case errors.As(err, &te) && te.Code >= 500:
			res.Rejected = append(res.Rejected, Rejected{Email: r, Reason: fmt.Sprintf("%d %s", te.Code, te.Msg)})
		default:
			// A temporary refusal of one recipient fails the whole
			// request: the client retries it, nobody gets it twice.
			return nil, classify(err)
		}
	}
	if accepted == 0 {
		c.Reset()
		c.Quit()
		return res, errAllRejected
	}
	// net/smtp's Data hides the final reply, which holds the queue id.
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return nil, classify(err)
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return nil, classify(err)
	}
	dw := c.Text.DotWriter()
	if _, err := dw.Write(msg); err != nil {
		return nil, classify(err)
	}
	if err := dw.Close(); err != nil {
		return nil, classify(err)
	}
	_, text, err := c.Text.ReadResponse(250)
	if err != nil {
		return nil, classify(err)
	}
	if m := queuedAs.FindStringSubmatch(text); m != nil {
		res.QueueID = m[1]
	}
	c.Quit()
	return res, nil
}

// classify maps an SMTP exchange error: a 5xx reply refuses the message,
// anything else (4xx, I/O) is a reason to retry.
func classify(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return &refusedError{Reply: fmt.Sprintf("%d %s", te.Code, te.Msg)}
	}
	return fmt.Errorf("%w: %v", errUnavailable, err)
}

// sendmailSubmitter runs Postfix's sendmail(1). It queues before the
// milter runs (pickup, non_smtpd_milters), so suppressed recipients are
// not known here and there is no queue id.
type sendmailSubmitter struct {
	path    string
	timeout time.Duration
}

func (s *sendmailSubmitter) submit(ctx context.Context, from string, rcpts []string, msg []byte) (*submitted, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// -oi: a lone dot is text; explicit recipients rather than -t, so
	// that bcc recipients need no Bcc header.
	cmd := exec.CommandContext(ctx, s.path, append([]string{"-oi", "-f", from, "--"}, rcpts...)...)
	cmd.Stdin = bytes.NewReader(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() != 75 { // EX_TEMPFAIL
			return nil, &refusedError{Reply: "sendmail exited with status " + fmt.Sprint(ee.ExitCode())}
		}
		return nil, fmt.Errorf("%w: sendmail: %v: %s", errUnavailable, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return &submitted{}, nil
}
