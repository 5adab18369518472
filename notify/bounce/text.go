package bounce

import (
	"regexp"
	"strings"
)

// Signals of a non-standard bounce, lower case. Subjects and sender names
// come from the MTAs listed in the package tests' testdata.
var (
	bounceSubjects = []string{
		"undeliverable", "undelivered mail", "delivery status notification", "mail delivery failed",
		"returned mail", "failure notice", "delivery failure", "delivery failed", "delivery has failed",
		"non-delivery", "nondeliverable", "could not be delivered", "couldn't be delivered",
		"delayed mail", "delivery delayed", "warning: could not send message", "message not delivered",
		"mail system error", "returned to sender", "delivery notification", "not delivered",
		"mail delivery failure", "delivery failure report", "warning: message", "delivery status",
		"undeliverable mail", "mail could not be delivered", "error sending message", "delivery problem",
		"不達", "配信エラー", "送信エラー",
	}
	bounceBody = []string{
		"qmail-send program", "created automatically by mail delivery software",
		"delivery has failed to these recipients", "your message wasn't delivered",
		"your message couldn't be delivered", "unable to deliver your message",
		"wasn't able to deliver your message", "could not be delivered to one or more",
		"the following addresses had permanent fatal errors", "this is the mail system at host",
		"delivery to the following recipient failed", "delivery to the following recipients failed",
		"message could not be delivered", "delivery has been delayed", "has not yet been delivered",
		"the following address(es) failed", "following recipients could not be reached",
		"following recipient(s) could not be reached", "did not reach the following recipient",
		"your message did not reach some or all of the intended recipients",
		"the following recipients did not receive this message", "could not be delivered to the following",
		"unable to deliver message to", "was not delivered to", "transcript of session follows",
		"sorry, we were unable to deliver your message", "delivery to the following recipient has been delayed",
		"i'm sorry to have to inform you that your message could not",
		"配信できませんでした", "送信できませんでした", "届きませんでした", "宛先不明",
	}
	bounceSenders = []string{"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
	delayWords    = []string{
		"delayed", "delay)", "has not yet been delivered", "not yet been delivered", "will continue trying",
		"still trying", "will retry", "will be retried", "still being retried", "temporary failure",
		"will keep trying", "has been delayed", "delivery attempts will continue", "no action is required on your part",
	}
	permanentWords = []string{
		"permanent", "giving up", "gave up", "will not be retried", "could not be delivered for more than",
		"cannot send message for", "retry timeout exceeded", "message expired",
	}
	copyMarkers = []string{
		"below this line is a copy of the message", "this is a copy of the message",
		"original message follows", "----- original message -----", "original message headers",
		"------ this is a copy of", "--- the header of the original message is following",
		"returned message follows", "unsent message below", "unsent message follows",
	}
	autoSubjects = []string{
		"out of office", "out of the office", "automatic reply", "auto:", "autoreply", "auto-reply",
		"auto reply", "abwesenheitsnotiz", "automatische antwort", "réponse automatique",
		"reponse automatique", "risposta automatica", "respuesta automática", "respuesta automatica",
		"afwezigheidsbericht", "automatisch antwoord", "vacation reply", "away from my mail",
		"autosvar", "automaattinen vastaus",
	}
)

// autoReplySignal says why a message is an auto-reply (RFC 3834 and the
// vendor headers that predate it), or "".
func autoReplySignal(h header, subject string) string {
	if v := strings.ToLower(strings.TrimSpace(h.get("Auto-Submitted"))); v != "" && !strings.HasPrefix(v, "no") {
		return "Auto-Submitted: " + clean(v)
	}
	for _, n := range []string{"X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply"} {
		if h.has(n) {
			return n + " header"
		}
	}
	if p := strings.ToLower(strings.TrimSpace(h.get("Precedence"))); p == "auto_reply" || p == "auto-reply" {
		return "Precedence: " + p
	}
	if s := autoSubject(subject); s != "" {
		return "auto-reply subject (" + s + ")"
	}
	return ""
}

func autoSubject(subject string) string {
	s := strings.ToLower(subject)
	for _, w := range autoSubjects {
		if strings.Contains(s, w) {
			return w
		}
	}
	return ""
}

// bounceSignal says why msg looks like a non-standard bounce, or "".
func bounceSignal(msg *part, rep *Report) string {
	if msg.header.has("X-Failed-Recipients") {
		return "X-Failed-Recipients header"
	}
	subj := strings.ToLower(rep.Subject)
	if autoSubject(subj) != "" {
		return ""
	}
	for _, w := range bounceSubjects {
		if strings.Contains(subj, w) {
			return "bounce subject (" + w + ")"
		}
	}
	human, _ := splitCopy(bodyText(msg))
	lower := strings.ToLower(human)
	for _, w := range bounceBody {
		if strings.Contains(lower, w) {
			return "bounce text (" + w + ")"
		}
	}
	if l := localPart(rep.From); l != "" && containsAny(l, bounceSenders) {
		// Exim and others mark their bounces Auto-Submitted: auto-replied
		// (RFC 3834 section 5): from the mailer daemon that is a bounce.
		return "sent by " + l
	}
	return ""
}

// bodyText concatenates the text/plain leaves outside enclosed messages,
// or the text/html ones when there is no plain text.
func bodyText(msg *part) string {
	var plain, htm []string
	msg.walk(false, func(p *part) {
		if len(p.parts) > 0 || p.msg != nil {
			return
		}
		switch p.mediaType {
		case "text/plain":
			plain = append(plain, p.text())
		case "text/html":
			htm = append(htm, p.text())
		}
	})
	if len(plain) == 0 {
		plain = htm
	}
	return strings.Join(plain, "\n")
}

// splitCopy cuts text at the line that introduces the returned message,
// returning the explanation and the copy (without the marker line).
func splitCopy(text string) (human, copied string) {
	lower := strings.ToLower(text)
	best := -1
	for _, m := range copyMarkers {
		if i := strings.Index(lower, m); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	if best < 0 {
		return text, ""
	}
	start := strings.LastIndexByte(text[:best], '\n') + 1
	rest := text[best:]
	if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
		copied = rest[nl+1:]
	}
	return text[:start], copied
}

var (
	addrText    = `(?:"[^"\n<>]{1,64}"|[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+)@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+`
	angleLineRE = regexp.MustCompile(`^<(` + addrText + `)>:?\s*(.*)$`)
	bareLineRE  = regexp.MustCompile(`^(` + addrText + `):?$`)
	colonLineRE = regexp.MustCompile(`^(` + addrText + `):\s+(.+)$`)
	// "addr on 11/30/2026" (Exchange 2003), "addr, ERROR CODE :550" (Zoho),
	// "addr (reason)".
	leadLineRE = regexp.MustCompile(`^"?<?(` + addrText + `)>?"?(?:,\s*|\s+on\s+|\s+\()(.*)$`)
	// Sendmail: "550 5.1.1 <addr>... User unknown", v5 "550 addr... User unknown".
	sendmailLineRE = regexp.MustCompile(`^(?:<<<\s*)?([245]\d\d[ -](?:[245]\.\d\.\d{1,3}\s+)?)<?(` + addrText + `)>?\.\.\.\s*(.*)$`)
	senderLineRE   = regexp.MustCompile(`(?i)^(?:>\s*)?(?:from|sender|sender address|original sender|return-path|reply-to|envelope-from|mail from|差出人|送信者)\s*[:：]`)
	// "宛先: <addr>", "Failed Recipient: addr", "Unknown user: addr": a
	// labelled address line.
	labelLineRE = regexp.MustCompile(`^([^<>@:："]{1,60}?)\s*[:：]\s*<?(` + addrText + `)>?\s*$`)
	rcptLineRE  = regexp.MustCompile(`(?i)^>>>\s*rcpt to:\s*<(` + addrText + `)>`)
	proseRE     = regexp.MustCompile(`(?i)(?:delivered to|delivery to|your message to|message to|deliver your message to|deliver message to|did not reach the following recipient|following recipients? failed[a-z ]*)\s*:?\s*<?(` + addrText + `)`)
	hostRE      = regexp.MustCompile(`(?i)\bhost\s+([a-z0-9-]+(?:\.[a-z0-9-]+)+)`)
)

// senderLabels are labels of address lines that never name a recipient.
var senderLabels = map[string]bool{"from": true, "sender": true, "reply-to": true, "return-path": true,
	"message-id": true, "references": true, "in-reply-to": true, "差出人": true, "送信者": true,
	"cc": true, "bcc": true, "list-unsubscribe": true, "reply to": true, "sent by": true, "from address": true,
	"sender address": true, "original sender": true, "return path": true, "envelope from": true, "mail from": true,
	"errors-to": true, "disposition-notification-to": true, "return-receipt-to": true, "x-sender": true,
	"x-envelope-from": true, "resent-from": true, "delivered-to": true, "x-original-to": true}

// recipientLabel reports whether the label of a labelled address line
// ("Failed Recipient", "To", "宛先") can name a recipient: it must say so,
// and not be a sender's or an identifier's label ("From", "Content-ID").
func recipientLabel(label string) bool {
	l := strings.ToLower(strings.TrimSpace(label))
	if senderLabels[l] {
		return false
	}
	for _, w := range strings.FieldsFunc(l, func(r rune) bool { return r == ' ' || r == '-' || r == '_' || r == '\t' }) {
		switch w {
		case "to", "rcpt", "recipient", "recipients", "address", "addresses", "user", "mailbox", "account",
			"destination", "failed", "unknown", "invalid", "addressee":
			return true
		}
	}
	return strings.Contains(l, "宛先") || strings.Contains(l, "受信者") || strings.Contains(l, "あて先")
}

// parseTextBounce reads recipients and reasons out of a bounce's prose:
// qmail and Yahoo "<addr>:" paragraphs, Exim's indented address lists,
// Sendmail's "<addr>... reason" transcripts, Postfix's "<addr>: host ...
// said:", Exchange 2003's "addr on DATE", Zoho's "addr, ERROR CODE", and
// the "wasn't delivered to addr" sentences of Gmail, Lotus and Exchange.
// Exim's X-Failed-Recipients, where present, says who failed. The sender
// of the returned message is never taken for a recipient. When nobody is
// named, one recipient with an empty Address carries the diagnostic.
func parseTextBounce(rep *Report, msg *part, why string) {
	rep.Kind = KindBounce
	rep.Reason = "non-standard bounce: " + why
	human, copied := splitCopy(bodyText(msg))
	var inline header
	if h := returned(msg); len(h) > 0 {
		setOriginal(rep, h)
	} else if copied != "" {
		inline = inlineHeader(copied)
		setOriginal(rep, inline)
	}
	if rep.OriginalMessageID == "" {
		if m := msgIDLineRE.FindStringSubmatch(human + "\n" + copied); m != nil {
			rep.OriginalMessageID = messageID(m[1])
		}
	}

	lowerAll := strings.ToLower(rep.Subject + "\n" + human)
	delayed := containsAny(lowerAll, delayWords) && !containsAny(lowerAll, permanentWords)
	skip := senders(rep, msg, inline)
	var failed []string // X-Failed-Recipients, in order
	for _, v := range msg.header.all("X-Failed-Recipients") {
		for _, a := range addresses(decodeHeader(v)) {
			if validAddress(a) && len(failed) < maxRecipients {
				failed = append(failed, a)
			}
		}
	}
	lines := strings.Split(human, "\n")
	for _, l := range lines[:min(len(lines), 20000)] {
		// "From: news@example.com", "Sender Address: ...": a wrapped
		// bounce or a gateway's summary names the sender too.
		if l = strings.TrimSpace(l); len(l) < 1000 && strings.IndexByte(l, '@') > 0 && senderLineRE.MatchString(l) {
			for _, a := range addrRE.FindAllString(l, 5) {
				skip[strings.ToLower(normalizeAddress(a))] = true
			}
		}
	}
	found := map[string]int{} // lower-case address -> index in rep.Recipients
	// No bounce names its recipients further down than maxLines, nor
	// mentions them more than maxMentions times: the caps bound the work
	// on a huge or hostile text.
	const maxLines, maxMentions = 20000, 2 * maxRecipients
	mentions := 0
	for i := 0; i < len(lines) && i < maxLines && len(rep.Recipients) < maxRecipients && mentions < maxMentions; i++ {
		t := strings.TrimSpace(lines[i])
		if len(t) > 2000 || !strings.Contains(t, "@") {
			continue // no MTA writes such lines; do not run the patterns on them
		}
		var addr, inlineText string
		prose, transcript := false, false
		// The first byte tells which patterns can match; the regular
		// expressions are the slow part of reading a bounce.
		c0 := t[0]
		addrStart := c0 == '"' || c0 == '<' || isDigit(c0) || isLetter(c0) || strings.IndexByte(".!#$%&'*+/=?^_{|}~-", c0) >= 0
		if m := matchIf(isDigit(c0) || c0 == '<', sendmailLineRE, t); m != nil {
			addr, inlineText = m[2], m[1]+m[3]
		} else if m := matchIf(c0 == '>', rcptLineRE, t); m != nil {
			addr, transcript = m[1], true
		} else if m := matchIf(c0 == '<', angleLineRE, t); m != nil {
			addr, inlineText = m[1], m[2]
		} else if m := matchIf(addrStart, bareLineRE, t); m != nil {
			addr = m[1]
		} else if m := matchIf(addrStart, colonLineRE, t); m != nil {
			addr, inlineText = m[1], m[2]
		} else if m := matchIf(addrStart, leadLineRE, t); m != nil {
			addr, inlineText = m[1], m[2]
			if strings.HasSuffix(inlineText, ")") && !strings.Contains(inlineText, "(") {
				inlineText = strings.TrimSuffix(inlineText, ")")
			}
		} else if m := matchIf(strings.ContainsAny(t, ":："), labelLineRE, t); m != nil && recipientLabel(m[1]) {
			addr = m[2]
		} else if m := matchIf(proseHint(t), proseRE, t); m != nil {
			addr, prose = m[1], true
		}
		if addr == "" {
			continue
		}
		mentions++
		addr = normalizeAddress(addr)
		key := strings.ToLower(addr)
		if !validAddress(addr) || skip[key] || containsAny(localPart(addr), bounceSenders) || ourReturnPath(key, rep.EnvelopeTo) {
			continue
		}
		// The paragraph after the address explains it.
		para := []string{}
		if inlineText != "" && !strings.HasPrefix(strings.ToLower(inlineText), "on ") {
			para = append(para, inlineText)
		}
		j := i + 1
		if !prose {
			for ; j < len(lines) && j < i+12; j++ {
				l := strings.TrimSpace(lines[j])
				if transcript {
					l = strings.TrimSpace(strings.TrimLeft(l, "<>"))
				}
				if l == "" || angleLineRE.MatchString(l) || bareLineRE.MatchString(l) || rcptLineRE.MatchString(l) {
					break
				}
				para = append(para, l)
			}
		}
		diag := replyLine(para)
		if diag == "" {
			// Gmail and Exchange put the reply a few lines further down.
			diag = replyLine(lines[i+1 : min(len(lines), i+16)])
		}
		if diag == "" {
			diag = strings.Join(para, " ")
		}
		if len(para) == 0 {
			// Lotus, the Japanese carriers: the reason follows after a
			// blank line ("because:", a sentence in Japanese).
			para = following(lines, i+1, 8)
			if diag == "" {
				diag = strings.Join(para, " ")
			}
		}
		if k, dup := found[key]; dup {
			// A second mention (Sendmail's transcript after its summary)
			// may say more.
			if rep.Recipients[k].Status == "" && findStatus(diag) != "" {
				rep.Recipients[k] = textRecipient(addr, diag, strings.Join(para, " "), delayed)
			}
		} else {
			found[key] = len(rep.Recipients)
			rep.Recipients = append(rep.Recipients, textRecipient(addr, diag, strings.Join(para, " "), delayed))
		}
		if !prose {
			i = j - 1
		}
	}
	if len(failed) > 0 {
		// The header is the MTA's own list: keep its recipients, in its
		// order, with what the text said about them.
		// The whole text explains a recipient the text does not name
		// only when it names nobody: else it explains the others.
		all, ctx := "", ""
		if len(found) == 0 {
			all, ctx = replyLine(lines), strings.Join(following(lines, 0, 40), " ")
		}
		out := make([]Recipient, 0, len(failed))
		for _, a := range failed {
			if k, ok := found[strings.ToLower(a)]; ok {
				out = append(out, rep.Recipients[k])
			} else {
				out = append(out, textRecipient(a, all, ctx, delayed))
			}
		}
		rep.Recipients = out
	}
	if len(rep.Recipients) == 1 && len(failed) <= 1 {
		// One recipient whose own lines say nothing: the reason is
		// elsewhere in the text, often before the address.
		if r := rep.Recipients[0]; r.BounceReason == Undefined || r.BounceReason == OnHold {
			ctx := strings.Join(following(lines, 0, 40), " ")
			if n := textRecipient(r.Address, r.Diagnostic, ctx, delayed); n.BounceReason != Undefined && n.BounceReason != OnHold {
				rep.Recipients[0] = n
			}
		}
	}
	if len(rep.Recipients) == 0 {
		diag := replyLine(lines)
		para := diag
		if diag == "" {
			para = strings.Join(following(lines, 0, 40), " ")
		}
		r := textRecipient("", diag, para, delayed)
		rep.Recipients = append(rep.Recipients, r)
		rep.Reason += "; no recipient named"
	}
}

// matchIf is re.FindStringSubmatch(s) when cond holds, else nil.
func matchIf(cond bool, re *regexp.Regexp, s string) []string {
	if !cond {
		return nil
	}
	return re.FindStringSubmatch(s)
}

// proseHint reports whether proseRE can match line: it needs one of its
// verbs.
func proseHint(line string) bool {
	l := strings.ToLower(line)
	return strings.Contains(l, "deliver") || strings.Contains(l, "message to") ||
		strings.Contains(l, "did not reach") || strings.Contains(l, "failed")
}

// following returns up to n non-blank lines from lines[from:], trimmed.
func following(lines []string, from, n int) []string {
	var out []string
	for j := from; j < len(lines) && len(out) < n && j < from+4*n; j++ {
		if l := strings.TrimSpace(lines[j]); l != "" && len(l) < 2000 {
			out = append(out, l)
		}
	}
	return out
}

// ourReturnPath reports whether the lower-cased addr is another address of
// the VERP return path the report came to (same domain, same local part
// before "+"): the sender's, never a recipient.
func ourReturnPath(addr, envelopeTo string) bool {
	env := strings.ToLower(normalizeAddress(envelopeTo))
	i, j := strings.LastIndexByte(env, '@'), strings.LastIndexByte(addr, '@')
	if i <= 0 || j <= 0 || env[i:] != addr[j:] {
		return false
	}
	base, _, _ := strings.Cut(env[:i], "+")
	local, _, _ := strings.Cut(addr[:j], "+")
	return base == local
}

// senders returns the lower-cased addresses that sent the bounce or the
// returned message (From, Sender, Return-Path, Reply-To), which are never
// recipients of the bounce.
func senders(rep *Report, msg *part, inline header) map[string]bool {
	skip := map[string]bool{}
	add := func(v string) {
		for _, a := range addresses(decodeHeader(v)) {
			if a != "" {
				skip[strings.ToLower(a)] = true
			}
		}
	}
	add(rep.From)
	if rep.EnvelopeTo != "" {
		skip[strings.ToLower(normalizeAddress(rep.EnvelopeTo))] = true
	}
	names := []string{"From", "Sender", "Return-Path", "Reply-To"}
	msg.walk(true, func(p *part) {
		if p.msg == nil {
			return
		}
		for _, n := range names {
			for _, v := range p.msg.header.all(n) {
				add(v)
			}
		}
	})
	for _, h := range []header{inline, returned(msg)} {
		for _, n := range names {
			for _, v := range h.all(n) {
				add(v)
			}
		}
	}
	return skip
}

func textRecipient(addr, diag, para string, delayed bool) Recipient {
	diag = strings.TrimSpace(diag)
	if strings.HasSuffix(diag, ")") && strings.Count(diag, ")") > strings.Count(diag, "(") {
		diag = strings.TrimSpace(strings.TrimSuffix(diag, ")")) // Sendmail's "(reason: 550 ...)"
	}
	if len(diag) > 1000 {
		diag = diag[:1000]
	}
	if len(para) > 4000 {
		para = para[:4000]
	}
	r := Recipient{Address: addr, Diagnostic: clean(diag), Action: "failed"}
	if delayed {
		r.Action = "delayed"
	}
	r.Status = effectiveStatus("", r.Diagnostic+" "+para)
	r.Code = findReply(r.Diagnostic)
	if m := hostRE.FindStringSubmatch(para); m != nil {
		r.RemoteMTA = strings.ToLower(m[1])
	}
	r.Class, r.BounceReason = Diagnose(r.Action, r.Status, r.Code, r.Diagnostic+" "+para)
	return r
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// replyLine returns the first line holding an SMTP reply or enhanced
// status, from the code on ("Remote host said: 550 5.1.1 ..." gives
// "550 5.1.1 ...").
func replyLine(lines []string) string {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if i := replyIndex(l); i >= 0 {
			return strings.TrimSpace(l[i:])
		}
		if findStatus(l) != "" {
			return l
		}
	}
	return ""
}

var msgIDLineRE = regexp.MustCompile(`(?im)^\s*message-id:\s*(<[^>\n]+>)`)

// inlineHeader parses the header block of a message copied into the text
// of a bounce, skipping blank lines before it.
func inlineHeader(copied string) header {
	copied = strings.TrimLeft(copied, " \t\n")
	h, _ := parseFields([]byte(copied))
	return h
}
