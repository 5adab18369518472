package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"

	"github.com/leadpush/leadpush/token"
)

// confirmMailer sends the unsubscribe confirmation links of the tracker
// (tracker.Confirmer) through the local Postfix, which passes them through
// leadpush-milter like any mail: X-Leadpush-Tracking: none keeps the link
// as it is, and its List-Unsubscribe is the link.
type confirmMailer struct {
	from, submit string
}

func (m confirmMailer) SendConfirmation(ctx context.Context, to, link string) error {
	if strings.ContainsAny(to, "\r\n<>") || strings.ContainsAny(link, "\r\n") {
		return errors.New("confirm: bad address or link")
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", m.submit)
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(m.submit)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("confirm: %w", err)
	}
	defer c.Close()
	if err := c.Mail(m.from); err != nil {
		return fmt.Errorf("confirm: MAIL: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("confirm: RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("confirm: DATA: %w", err)
	}
	domain := m.from[strings.LastIndexByte(m.from, '@')+1:]
	msg := "From: " + m.from + "\r\nTo: " + to + "\r\nSubject: Confirm your unsubscribe\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <confirm-" + token.NewMessageID() + "@" + domain + ">\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nAuto-Submitted: auto-generated\r\n" +
		"X-Leadpush-Tracking: none\r\nX-Leadpush-Tag: unsubscribe-confirmation\r\n" +
		// its own List-Unsubscribe (the milter keeps a sender's) is the
		// confirmation itself: the mailbox provider's button confirms
		"List-Unsubscribe: <" + link + ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n" +
		"Someone asked to unsubscribe " + to + " from a message sent to several people.\r\n" +
		"If it was you, open this link and press the button:\r\n\r\n" + link + "\r\n\r\n" +
		"If it was not you, ignore this message: nothing changes.\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	return c.Quit()
}
