// Package bounce classifies mail that comes back to the sender: delivery
// status notifications and delay notices (RFC 3464, status codes of
// RFC 3463), the non-standard bounces of common MTAs (Exim, qmail,
// Sendmail, Exchange, Lotus, Japanese carriers, ...), Amazon SES
// notifications, abuse feedback reports (ARF, RFC 5965, and Microsoft's
// JMRP), auto-replies (RFC 3834) and unsubscribe requests sent to the
// List-Unsubscribe mailto address (RFC 2369).
//
// Diagnose gives every failure a Class (hard only for a dead address) and
// a Reason from sisimai 5's vocabulary, for DSNs and mail log lines alike;
// REASONS.md states the policy.
//
// It only parses: no database, no network. Parse never fails on odd
// content; what it cannot recognise is Kind Unknown with a Reason.
package bounce

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Kind is what a returned message is.
type Kind string

// Kinds.
const (
	KindBounce      Kind = "bounce"
	KindComplaint   Kind = "complaint"
	KindAutoReply   Kind = "autoreply"
	KindUnsubscribe Kind = "unsubscribe"
	// KindDelayed is a delay notice (RFC 3464 Action: delayed, "still
	// trying" prose): the MTA goes on retrying. Its recipients are Soft;
	// it is a soft event, never a bounce.
	KindDelayed Kind = "delayed"
	KindUnknown Kind = "unknown"
)

// Recipient is one recipient a report is about.
type Recipient struct {
	// Address is the Final-Recipient, or the best guess from the text,
	// with the domain lower-cased. It is empty when a bounce names nobody.
	Address string `json:"address"`
	// Original is the Original-Recipient, if present.
	Original string `json:"original,omitempty"`
	// Action is the DSN action: failed, delayed, delivered, relayed,
	// expanded; "" for complaints.
	Action string `json:"action,omitempty"`
	// Status is the enhanced status code, e.g. "5.1.1".
	Status string `json:"status,omitempty"`
	// Diagnostic is the Diagnostic-Code without its type ("smtp;"), or
	// the remote server's reply quoted in the text.
	Diagnostic string `json:"diagnostic,omitempty"`
	// RemoteMTA is the Remote-MTA without its type ("dns;").
	RemoteMTA string `json:"remote_mta,omitempty"`
	// Code is the SMTP reply code found in Diagnostic (550), 0 if none.
	Code int `json:"code,omitempty"`
	// Class is hard or soft for failures and delays, "" otherwise.
	Class Class `json:"class,omitempty"`
	// BounceReason is why the delivery failed, "" when it did not.
	BounceReason Reason `json:"bounce_reason,omitempty"`
}

// Report is the classification of one message.
type Report struct {
	Kind       Kind        `json:"kind"`
	Recipients []Recipient `json:"recipients,omitempty"`

	// EnvelopeTo is the address the report was delivered to, as passed
	// to Parse (e.g. bounce+TOKEN@bounce.example.com).
	EnvelopeTo string `json:"envelope_to,omitempty"`
	// OriginalMessageID is the Message-ID of the returned original,
	// without angle brackets.
	OriginalMessageID string `json:"original_message_id,omitempty"`
	// OriginalHeaders holds the returned original's Message-ID, From,
	// To, Subject, Return-Path and List-Unsubscribe, where present
	// (RFC 2047 decoded). Nil when nothing was returned.
	OriginalHeaders map[string]string `json:"original_headers,omitempty"`

	// FeedbackType, UserAgent and SourceIP come from an ARF report.
	FeedbackType string `json:"feedback_type,omitempty"`
	UserAgent    string `json:"user_agent,omitempty"`
	SourceIP     string `json:"source_ip,omitempty"`

	// From is the sender's address and Subject the decoded subject of
	// the message itself (for unsubscribe mail: who asked).
	From    string `json:"from,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Reason says in a few words why the message got its Kind.
	Reason string `json:"reason"`
	// Truncated is set when the message was over Options.MaxSize and
	// only its first MaxSize bytes were classified.
	Truncated bool `json:"truncated,omitempty"`
}

// Options tune Parse. The zero value uses the defaults.
type Options struct {
	// UnsubscribePrefix is the local part (or the part before "+") of
	// the List-Unsubscribe mailto address. Default "unsub".
	UnsubscribePrefix string
	// BouncePrefix is the local part before "+" of the VERP return
	// path. Default "bounce". It only shapes the Reason of mail that
	// is nothing else.
	BouncePrefix string
	// MaxSize is the largest message Parse reads. Default 10 MiB.
	MaxSize int64
}

// DefaultMaxSize is the MaxSize used when Options.MaxSize is zero or less.
const DefaultMaxSize = 10 << 20

// ErrTooLarge was returned by Parse for a message over MaxSize. Parse now
// classifies the first MaxSize bytes of such a message instead (the report
// says Truncated); the error stays for callers that test for it.
var ErrTooLarge = errors.New("bounce: message too large")

// Parse reads one message from r and classifies it. envelopeTo is the
// recipient address the MTA delivered it to (Postfix ${recipient}). It
// returns an error only when reading fails. A message over opt.MaxSize is
// classified by its first MaxSize bytes, where every report format puts
// what matters, and the rest is left unread.
func Parse(r io.Reader, envelopeTo string, opt Options) (*Report, error) {
	if opt.MaxSize <= 0 {
		opt.MaxSize = DefaultMaxSize
	}
	if opt.UnsubscribePrefix == "" {
		opt.UnsubscribePrefix = "unsub"
	}
	if opt.BouncePrefix == "" {
		opt.BouncePrefix = "bounce"
	}
	data, err := io.ReadAll(io.LimitReader(r, opt.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("bounce: reading message: %w", err)
	}
	if int64(len(data)) > opt.MaxSize {
		rep := parseBytes(data[:opt.MaxSize], envelopeTo, opt)
		rep.Truncated = true
		return rep, nil
	}
	return parseBytes(data, envelopeTo, opt), nil
}

func parseBytes(data []byte, envelopeTo string, opt Options) *Report {
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	ps := &parser{}
	msg := ps.parse(data, 0)
	rep := &Report{
		EnvelopeTo: clean(strings.TrimSpace(envelopeTo)),
		From:       firstAddress(decodeHeader(msg.header.get("From"))),
		Subject:    strings.TrimSpace(decodeHeader(msg.header.get("Subject"))),
	}

	if fb := findPart(msg, "message/feedback-report"); fb != nil {
		parseARF(rep, msg, fb)
		return rep
	}
	if parseJMRP(rep, msg) {
		return rep
	}
	if parseSES(rep, msg) {
		return rep
	}
	if ds := findPart(msg, "message/delivery-status", "message/global-delivery-status"); ds != nil {
		parseDSN(rep, msg, ds)
		if len(rep.Recipients) > 0 {
			settleKind(rep)
			return rep
		}
		// A report part without recipient blocks: fall through to
		// the text, which usually names them.
		rep.Recipients = nil
	}
	if why := bounceSignal(msg, rep); why != "" {
		parseTextBounce(rep, msg, why)
		settleKind(rep)
		return rep
	}
	local := localPart(rep.EnvelopeTo)
	pfx := strings.ToLower(opt.UnsubscribePrefix)
	if local == pfx || strings.HasPrefix(local, pfx+"+") {
		rep.Kind = KindUnsubscribe
		rep.Reason = "sent to the unsubscribe address"
		return rep
	}
	if why := autoReplySignal(msg.header, rep.Subject); why != "" {
		rep.Kind = KindAutoReply
		rep.Reason = why
		return rep
	}
	if s := strings.ToLower(rep.Subject); s == "unsub" || s == "unsubscribe" {
		rep.Kind = KindUnsubscribe
		rep.Reason = "subject is the unsubscribe keyword"
		return rep
	}
	rep.Kind = KindUnknown
	switch {
	case local == strings.ToLower(opt.BouncePrefix) || strings.HasPrefix(local, strings.ToLower(opt.BouncePrefix)+"+"):
		rep.Reason = "mail to the return path that is no bounce, complaint, auto-reply or unsubscribe"
	default:
		rep.Reason = "no bounce, complaint, auto-reply or unsubscribe signals"
	}
	return rep
}

// settleKind makes a bounce whose recipients were all delayed, none
// failed, a KindDelayed notice.
func settleKind(rep *Report) {
	delayed := 0
	for _, r := range rep.Recipients {
		switch r.Action {
		case "delayed":
			delayed++
		case "delivered", "relayed", "expanded":
		default:
			return
		}
	}
	if delayed > 0 {
		rep.Kind = KindDelayed
		rep.Reason = strings.Replace(rep.Reason, "delivery status notification", "delay notice", 1)
		if !strings.Contains(rep.Reason, "delay") {
			rep.Reason = "delay notice: " + rep.Reason
		}
	}
}

// findPart returns the first part of one of the media types, outside any
// enclosed message (a returned original may itself contain reports).
func findPart(msg *part, types ...string) *part {
	var found *part
	msg.walk(false, func(p *part) {
		if found != nil {
			return
		}
		for _, t := range types {
			if p.mediaType == t {
				found = p
				return
			}
		}
	})
	return found
}

// returned finds the returned original: a message/rfc822 part or a
// text/rfc822-headers part, outside enclosed messages.
func returned(msg *part) header {
	var h header
	msg.walk(false, func(p *part) {
		if h != nil || p == msg {
			return
		}
		switch p.mediaType {
		case "message/rfc822", "message/global":
			if p.msg != nil && len(p.msg.header) > 0 {
				h = p.msg.header
			}
		case "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers", "message/global-headers":
			if fh, _ := parseFields(p.body); len(fh) > 0 {
				h = fh
			}
		}
	})
	return h
}

var originalHeaderNames = []string{"Message-ID", "From", "To", "Subject", "Return-Path", "List-Unsubscribe"}

// setOriginal fills OriginalHeaders and OriginalMessageID from h.
func setOriginal(rep *Report, h header) {
	if len(h) == 0 {
		return
	}
	for _, n := range originalHeaderNames {
		if !h.has(n) {
			continue
		}
		if rep.OriginalHeaders == nil {
			rep.OriginalHeaders = map[string]string{}
		}
		rep.OriginalHeaders[n] = decodeHeader(h.get(n))
	}
	if id := messageID(h.get("Message-ID")); id != "" {
		rep.OriginalMessageID = id
	}
}

// messageID strips angle brackets and white space from a msg-id.
func messageID(v string) string {
	v = strings.TrimSpace(clean(v))
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
		return strings.TrimSpace(v[i+1:])
	}
	if f := strings.Fields(v); len(f) > 0 {
		return f[0]
	}
	return ""
}
