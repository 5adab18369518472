// Package maillog parses and follows the Postfix mail log: the delivery
// results (status=sent, deferred, bounced, expired) of each queue id, the
// message-id that cleanup logs for it, and qmgr's "removed". With Format
// Sendmail (or Auto, per line) it reads Sendmail's log into the same
// entries: stat=Sent, Deferred or a permanent error, one entry per
// recipient of a to= line, the expiry notice, msgid= and "done".
//
// It reads the classic syslog form (RFC 3164 timestamps, as Postfix's own
// maillog_file also writes them) and the RFC 3339 form of Debian 12's
// rsyslog. The follower polls; it needs no inotify.
package maillog

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// Entry is one useful mail log line.
type Entry struct {
	Time      time.Time
	Host      string
	Program   string // "postfix/smtp", "postfix/qmgr", "postfix/submission/smtpd"
	PID       int    // 0 when the line has none
	QueueID   string
	Recipient string // to=<...>
	OrigTo    string // orig_to=<...>
	Relay     string // "mx.example.net[192.0.2.1]:25", "local", "none"
	DSN       string // "2.0.0"; "" when the line has none
	// Status is sent, deferred, bounced or expired; "" for lines that
	// carry no delivery result (cleanup message-id, qmgr removed).
	Status string
	// Reply is the text in the parentheses after status= (or after the
	// comma of "status=expired, returned to sender").
	Reply string
	// MessageID is cleanup's message-id, without angle brackets.
	MessageID string
	// Removed is set for qmgr's "QID: removed": the queue file is gone,
	// nothing more will be logged for this queue id.
	Removed bool
	// Raw is the line without its line ending.
	Raw string
}

// Statuses of delivery lines.
const (
	StatusSent     = "sent"
	StatusDeferred = "deferred"
	StatusBounced  = "bounced"
	StatusExpired  = "expired"
)

// daemons are the Postfix programs whose lines ParseLine reads; the part
// before the last "/" is the syslog_name (postfix, postfix-out,
// postfix/submission, ...), which operators may change.
var daemons = map[string]bool{
	"smtp": true, "lmtp": true, "local": true, "virtual": true, "pipe": true, "qmgr": true,
	"oqmgr": true, "cleanup": true, "bounce": true, "error": true, "discard": true, "retry": true,
	"smtpd": true, "postscreen": true, "pickup": true, "postsuper": true, "sendmail": true,
}

// ParseLine parses one mail log line. ok is false for lines that carry
// nothing useful: other programs, lines without a queue id, connects,
// warnings, garbage. now supplies the year (and time zone) of classic
// syslog timestamps, which have neither; a timestamp more than a week
// ahead of now is taken to be from the previous year (the log of
// December read in January).
func ParseLine(line []byte, now time.Time) (Entry, bool) {
	e := Entry{}
	h, ok := splitLine(line, now)
	if !ok {
		return e, false
	}
	s, ts, host, prog, pid, msg := h.raw, h.time, h.host, h.prog, h.pid, h.msg
	slash := strings.LastIndexByte(prog, '/')
	if slash <= 0 || !daemons[prog[slash+1:]] {
		return e, false
	}
	qid, body, ok := strings.Cut(msg, ": ")
	if !ok {
		if q, b, ok2 := strings.Cut(msg, ":"); ok2 && b == "" {
			qid, body = q, "" // "QID:" alone: nothing useful anyway
		}
	}
	if !validQueueID(qid) {
		return e, false
	}
	e.Time, e.Host, e.Program, e.PID, e.QueueID = ts, host, prog, pid, qid
	switch {
	case body == "removed":
		e.Removed = true
	case strings.HasPrefix(body, "message-id="):
		e.MessageID = messageID(body[len("message-id="):])
	default:
		parseFields(&e, body)
	}
	if !e.Removed && e.MessageID == "" && e.Status == "" {
		return Entry{}, false
	}
	e.Raw = s
	return e, true
}

// header is the syslog part of a line: "TIME HOST PROG[PID]: MSG".
type header struct {
	raw      string // the line without its line end
	time     time.Time
	host     string
	prog     string
	pid      int // 0 when the tag has none
	msg      string
	hasSlash bool // prog has a "/": Postfix's syslog_name/daemon
}

// splitLine reads the syslog header of a line; ok is false when it has
// none.
func splitLine(line []byte, now time.Time) (h header, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	s := string(line)
	ts, rest, ok := parseTime(s, now)
	if !ok {
		return h, false
	}
	host, rest, ok := strings.Cut(rest, " ")
	if !ok || host == "" {
		return h, false
	}
	tag, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return h, false
	}
	prog, pid := tag, 0
	if i := strings.IndexByte(tag, '['); i > 0 && strings.HasSuffix(tag, "]") {
		prog = tag[:i]
		n, err := strconv.Atoi(tag[i+1 : len(tag)-1])
		if err != nil || n < 0 {
			return h, false
		}
		pid = n
	}
	return header{raw: s, time: ts, host: host, prog: prog, pid: pid, msg: msg, hasSlash: strings.IndexByte(prog, '/') > 0}, true
}

// parseTime reads the leading timestamp and returns the rest after the
// following space.
func parseTime(s string, now time.Time) (time.Time, string, bool) {
	if len(s) > 20 && s[0] >= '0' && s[0] <= '9' {
		f, rest, ok := strings.Cut(s, " ")
		if !ok {
			return time.Time{}, "", false
		}
		t, err := time.Parse(time.RFC3339Nano, f)
		if err != nil {
			return time.Time{}, "", false
		}
		return t, rest, true
	}
	// "Jan _2 15:04:05" with an optional fraction (postlogd may add one).
	if len(s) < 16 || s[3] != ' ' || s[6] != ' ' || s[9] != ':' || s[12] != ':' {
		return time.Time{}, "", false
	}
	p, err := time.Parse("Jan _2 15:04:05", s[:15])
	if err != nil {
		return time.Time{}, "", false
	}
	rest := s[15:]
	nsec := 0
	if strings.HasPrefix(rest, ".") {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		frac := rest[1:i]
		if len(frac) > 9 {
			frac = frac[:9]
		}
		if frac != "" {
			n, _ := strconv.Atoi(frac + strings.Repeat("0", 9-len(frac)))
			nsec = n
		}
		rest = rest[i:]
	}
	if !strings.HasPrefix(rest, " ") {
		return time.Time{}, "", false
	}
	loc := now.Location()
	t := time.Date(now.Year(), p.Month(), p.Day(), p.Hour(), p.Minute(), p.Second(), nsec, loc)
	if t.Month() != p.Month() { // Feb 29 outside a leap year
		t = time.Date(now.Year()-1, p.Month(), p.Day(), p.Hour(), p.Minute(), p.Second(), nsec, loc)
	}
	switch {
	case t.Sub(now) > 7*24*time.Hour:
		t = t.AddDate(-1, 0, 0)
	case now.Sub(t) > 358*24*time.Hour:
		// A line from just after New Year read on New Year's Eve
		// (writer's clock slightly ahead).
		t = t.AddDate(1, 0, 0)
	}
	return t, rest[1:], true
}

// validQueueID accepts short hex queue ids ("3F2A81C0B1") and long ones
// (enable_long_queue_ids, "4Zb9Xk3Qz5z9sNq"): alphanumeric, the long form
// with both digits and letters, so words such as "warning", "NOQUEUE" or
// "statistics" are not taken for queue ids.
func validQueueID(q string) bool {
	if len(q) < 5 || len(q) > 20 || q == "NOQUEUE" {
		return false
	}
	hex := true
	digit, letter := false, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'A' && c <= 'F':
			letter = true
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
			letter = true
			hex = false
		default:
			return false
		}
	}
	if hex && len(q) <= 12 {
		return true
	}
	return len(q) >= 10 && digit && letter
}

// parseFields reads "to=<a>, orig_to=<b>, relay=x, delay=1, dsn=2.0.0,
// status=sent (reply)". status= is always last: its reply may hold any
// text.
func parseFields(e *Entry, body string) {
	for i := 0; body != "" && i < 32; i++ {
		k, v, ok := strings.Cut(body, "=")
		if !ok || !isKey(k) {
			return
		}
		if k == "status" {
			word := v
			if j := strings.IndexAny(v, " ,("); j >= 0 {
				word = v[:j]
			}
			switch word {
			case StatusSent, StatusDeferred, StatusBounced, StatusExpired:
				e.Status = word
			default:
				return
			}
			tail := strings.TrimSpace(v[len(word):])
			switch {
			case strings.HasPrefix(tail, "(") && strings.HasSuffix(tail, ")"):
				e.Reply = tail[1 : len(tail)-1]
			case strings.HasPrefix(tail, ","):
				e.Reply = strings.TrimSpace(tail[1:])
			default:
				e.Reply = tail
			}
			return
		}
		var val string
		if strings.HasPrefix(v, "<") {
			end := strings.Index(v, ">, ")
			if end < 0 {
				if strings.HasSuffix(v, ">") {
					end = len(v) - 1
				} else {
					return
				}
			}
			val, body = v[1:end], strings.TrimPrefix(v[end+1:], ", ")
		} else {
			val, body, _ = strings.Cut(v, ", ")
		}
		switch k {
		case "to":
			e.Recipient = val
		case "orig_to":
			e.OrigTo = val
		case "relay":
			e.Relay = val
		case "dsn":
			e.DSN = val
		}
	}
}

func isKey(k string) bool {
	if k == "" || len(k) > 20 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// messageID strips white space and angle brackets.
func messageID(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "<")
	if i := strings.IndexByte(v, '>'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}
