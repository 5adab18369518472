package maillog

import (
	"fmt"
	"strings"
	"time"
)

// Format is the mail log's dialect: the value of the maillog.format
// setting.
type Format string

// Formats.
const (
	// Postfix reads "postfix/smtp[PID]: QID: to=<a>, ..., status=sent"
	// lines (any syslog_name before the last "/"). The zero Format is
	// Postfix.
	Postfix Format = "postfix"
	// Sendmail reads "sm-mta[PID]: QID: to=<a>,<b>, ..., stat=Sent" lines
	// (tags sm-mta, sendmail, sm-msp-queue, and sm-mta-*/sendmail-* for
	// other -L names).
	Sendmail Format = "sendmail"
	// Auto reads both, deciding per line by the syslog tag: a tag with a
	// "/" is Postfix's, one of Sendmail's names is Sendmail's.
	Auto Format = "auto"
)

// ParseFormat returns the Format named s ("" is Postfix), or an error
// naming the accepted values.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case "":
		return Postfix, nil
	case Postfix, Sendmail, Auto:
		return f, nil
	}
	return "", fmt.Errorf("maillog: format %q: want %q, %q or %q", s, Postfix, Sendmail, Auto)
}

// Parser reads the lines of one mail log in order. Postfix lines are
// parsed alone (ParseLine); Sendmail logs the expiry of a message only as
// "QID: NEWQID: DSN: Cannot send message for 5 days", naming no recipient,
// so the Parser remembers which recipients of each queue id were last
// deferred (at most maxTracked queue ids, forgotten at "QID: done") and
// gives each of them an expired entry. After a restart it knows only the
// deferrals it has read since: an expiry of a queue id it knows nothing of
// gets one entry without a recipient, as Postfix's qmgr line has.
//
// The zero Parser reads Postfix. A Parser is not safe for concurrent use.
type Parser struct {
	Format Format

	deferred map[string]*deferral // Sendmail queue id -> recipients last deferred
	order    []string             // queue ids in deferred, oldest first
}

// deferral is what a Sendmail queue id's last deferrals said.
type deferral struct {
	rcpts []string // in log order, no duplicates
	relay string   // of the last deferral
	reply string
}

// maxTracked bounds the queue ids a Parser remembers deferrals of.
const maxTracked = 50000

// Parse appends the entries of one line to dst and returns it: none for a
// line that carries nothing useful, one for most, several for a Sendmail
// line naming several recipients or an expiry of several deferred ones.
func (p *Parser) Parse(dst []Entry, line []byte, now time.Time) []Entry {
	f := p.Format
	if f == "" {
		f = Postfix
	}
	if f == Postfix {
		if e, ok := ParseLine(line, now); ok {
			dst = append(dst, e)
		}
		return dst
	}
	h, ok := splitLine(line, now)
	if !ok {
		return dst
	}
	if h.hasSlash {
		if f == Auto {
			if e, ok := ParseLine(line, now); ok {
				dst = append(dst, e)
			}
		}
		return dst
	}
	if f != Sendmail && f != Auto || !sendmailProg(h.prog) {
		return dst
	}
	return p.sendmail(dst, h)
}

// sendmailProg reports whether a syslog tag is one of Sendmail's: the
// daemon's default "sendmail", Debian's "sm-mta" and "sm-msp-queue", and
// other -L names built on them ("sm-mta-out", "sendmail-in").
func sendmailProg(prog string) bool {
	switch prog {
	case "sendmail", "sm-mta", "sm-msp-queue":
		return true
	}
	return strings.HasPrefix(prog, "sm-mta-") || strings.HasPrefix(prog, "sendmail-")
}

// sendmail parses the message part of a Sendmail line (after "QID: "):
//
//	from=<a>, size=1, class=0, nrcpts=1, msgid=<m@x>, proto=ESMTP, ...
//	to=<a>,<b>, [ctladdr=..., ]delay=..., xdelay=..., mailer=relay, pri=1,
//	    relay=mx. [192.0.2.1], dsn=5.1.1, [reply=550 ..., ]stat=User unknown
//	NEWQID: DSN: Cannot send message for 5 days   (also "sender notify:")
//	done; delay=00:00:01, ntries=1
//
// stat= is last and free text; reply= (8.17) comes just before it. A long
// recipient list is split over several lines, each but the last with
// " [more]" after its list (deliver.c, logdelivery).
func (p *Parser) sendmail(dst []Entry, h header) []Entry {
	qid, body, ok := strings.Cut(h.msg, ": ")
	if !ok {
		if q, ok2 := strings.CutSuffix(h.msg, ": done"); ok2 {
			qid, body = q, "done"
		}
	}
	if !validQueueID(qid) {
		return dst
	}
	e := Entry{Time: h.time, Host: h.host, Program: h.prog, PID: h.pid, QueueID: qid, Raw: h.raw}
	switch {
	case body == "done" || strings.HasPrefix(body, "done;"):
		p.forget(qid)
		e.Removed = true
		return append(dst, e)
	case strings.HasPrefix(body, "from="):
		if id := fieldValue(body, "msgid="); id != "" {
			e.MessageID = messageID(id)
			if e.MessageID != "" {
				return append(dst, e)
			}
		}
		return dst
	case strings.HasPrefix(body, "to="):
		return p.delivery(dst, e, body[len("to="):])
	}
	// "NEWQID: DSN: Cannot send message for 5 days"
	newQID, notice, ok := strings.Cut(body, ": ")
	if !ok || !validQueueID(newQID) {
		return dst
	}
	kind, text, ok := strings.Cut(notice, ": ")
	if !ok || !strings.HasPrefix(text, "Cannot send message for ") {
		return dst // a bounce notice ("DSN: User unknown"), a delay warning
	}
	switch kind {
	case "DSN", "sender notify", "postmaster notify", "return to sender":
	default:
		return dst
	}
	e.Status, e.DSN, e.Reply = StatusExpired, "4.4.7", text
	d := p.deferred[qid]
	if d == nil || len(d.rcpts) == 0 {
		return append(dst, e)
	}
	e.Relay = d.relay
	if d.reply != "" {
		e.Reply = text + " (last reply: " + d.reply + ")"
	}
	for _, r := range d.rcpts {
		e.Recipient = r
		dst = append(dst, e)
	}
	p.forget(qid)
	return dst
}

// delivery parses a to= line (rest is after "to=").
func (p *Parser) delivery(dst []Entry, e Entry, rest string) []Entry {
	list, fields, ok := splitRecipients(rest)
	if !ok || list[0] == "NO-TO-LIST" {
		return dst
	}
	fields, stat, ok := strings.Cut(fields, ", stat=")
	if !ok {
		return dst
	}
	fields, reply, _ := strings.Cut(fields, ", reply=")
	for f := range strings.SplitSeq(fields, ", ") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "relay":
			e.Relay = sendmailRelay(v)
		case "dsn":
			e.DSN = v
		}
	}
	word, text := stat, ""
	if i := strings.IndexAny(stat, " :("); i >= 0 {
		word, text = stat[:i], strings.TrimSpace(strings.TrimPrefix(stat[i:], ":"))
	}
	switch {
	case word == "Sent":
		e.Status = StatusSent
		if strings.HasPrefix(text, "(") && strings.HasSuffix(text, ")") {
			text = text[1 : len(text)-1]
		}
	case word == "Deferred" || strings.HasPrefix(e.DSN, "4."):
		e.Status = StatusDeferred
	case strings.EqualFold(word, "queued") || strings.EqualFold(word, "quarantined"):
		return dst // in the queue, not tried: no result
	default:
		// A permanent failure: its stat is the error text ("User
		// unknown", "Service unavailable"); temporary ones say Deferred.
		e.Status, text = StatusBounced, stat
	}
	e.Reply = text
	if reply != "" {
		e.Reply = reply // the remote server's own words
	}
	for _, r := range list {
		e.Recipient = r
		dst = append(dst, e)
		switch e.Status {
		case StatusDeferred:
			p.defer1(e.QueueID, r, e.Relay, e.Reply)
		default:
			p.settle(e.QueueID, r)
		}
	}
	return dst
}

// splitRecipients splits "<a>,<b>, delay=..." into the addresses, without
// angle brackets, and the fields after them (from "delay=..."). The list
// ends at the first ", " outside quotes and angle brackets that is
// followed by a field name and "=", or at " [more]". ok is false when no
// field follows or an address is empty.
func splitRecipients(s string) (list []string, fields string, ok bool) {
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if quoted {
			if c == '\\' {
				i++
			} else if c == '"' {
				quoted = false
			}
			continue
		}
		switch {
		case c == '"':
			quoted = true
		case c == '<':
			depth++
		case c == '>' && depth > 0:
			depth--
		case depth > 0:
		case c == ' ' && strings.HasPrefix(s[i:], " [more], ") && strings.TrimSpace(s[start:i]) == "":
			// "<a>,<b>, [more], delay=...": the list ended with its comma.
			return finishList(list, s[i+len(" [more], "):])
		case c == ',':
			list = append(list, s[start:i])
			start = i + 1
			if strings.HasPrefix(s[i:], ", ") && isFieldStart(s[i+2:]) {
				return finishList(list, s[i+2:])
			}
		}
	}
	return nil, "", false
}

// finishList strips the addresses of white space and angle brackets; ok
// is false if one is empty or absurdly long.
func finishList(list []string, fields string) ([]string, string, bool) {
	if len(list) == 0 || len(list) > 10000 {
		return nil, "", false
	}
	for i, a := range list {
		a = strings.TrimSpace(a)
		if strings.HasPrefix(a, "<") {
			if !strings.HasSuffix(a, ">") {
				return nil, "", false
			}
			a = a[1 : len(a)-1]
		}
		if a == "" || len(a) > 1024 || strings.HasPrefix(a, "<") || strings.HasSuffix(a, ">") {
			return nil, "", false
		}
		list[i] = a
	}
	return list, fields, true
}

// isFieldStart reports whether s begins with one of the field names
// Sendmail writes after a to= list, and "=".
func isFieldStart(s string) bool {
	k, _, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	switch k {
	case "ctladdr", "delay", "xdelay", "mailer", "pri", "relay", "dsn", "reply", "stat":
		return true
	}
	return false
}

// sendmailRelay writes Sendmail's "relay=mx.example.net. [192.0.2.1]" the
// way Postfix writes its relay, "mx.example.net[192.0.2.1]"; "[127.0.0.1]
// [127.0.0.1]" (no name) becomes "[127.0.0.1]", and a name alone loses
// its final dot. Other values (a mailer's host) are kept.
func sendmailRelay(v string) string {
	name, addr, ok := strings.Cut(v, " [")
	if !ok || !strings.HasSuffix(addr, "]") {
		return strings.TrimSuffix(v, ".") // "mx.example.org." without an address
	}
	addr = "[" + addr
	name = strings.TrimSuffix(name, ".")
	if name == addr || name == "" {
		return addr
	}
	return name + addr
}

// fieldValue returns the value of key (such as "msgid=") in a
// ", "-separated list, or "".
func fieldValue(s, key string) string {
	for f := range strings.SplitSeq(s, ", ") {
		if v, ok := strings.CutPrefix(f, key); ok {
			return v
		}
	}
	return ""
}

// defer1 notes that rcpt of qid was deferred.
func (p *Parser) defer1(qid, rcpt, relay, reply string) {
	if p.deferred == nil {
		p.deferred = map[string]*deferral{}
	}
	d := p.deferred[qid]
	if d == nil {
		if len(p.order) >= maxTracked {
			delete(p.deferred, p.order[0])
			p.order = p.order[1:]
		}
		d = &deferral{}
		p.deferred[qid] = d
		p.order = append(p.order, qid)
	}
	d.relay, d.reply = relay, reply
	for _, r := range d.rcpts {
		if r == rcpt {
			return
		}
	}
	if len(d.rcpts) < 1000 {
		d.rcpts = append(d.rcpts, rcpt)
	}
}

// settle notes that rcpt of qid has a final result.
func (p *Parser) settle(qid, rcpt string) {
	d := p.deferred[qid]
	if d == nil {
		return
	}
	for i, r := range d.rcpts {
		if r == rcpt {
			d.rcpts = append(d.rcpts[:i], d.rcpts[i+1:]...)
			return
		}
	}
}

// forget drops what the Parser remembers of qid.
func (p *Parser) forget(qid string) {
	if _, ok := p.deferred[qid]; !ok {
		return
	}
	delete(p.deferred, qid)
	for i, q := range p.order {
		if q == qid {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}
