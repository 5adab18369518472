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
	}
	bounceSenders = []string{"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
	delayWords    = []string{
		"delayed", "delay)", "has not yet been delivered", "not yet been delivered", "will continue trying",
		"still trying", "will retry", "will be retried", "still being retried", "temporary failure",
	}
	copyMarkers = []string{
		"below this line is a copy of the message", "this is a copy of the message",
		"original message follows", "----- original message -----", "original message headers",
		"------ this is a copy of", "--- the header of the original message is following",
		"returned message follows", "unsent message below",
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
	if l := localPart(rep.From); l != "" && containsAny(l, bounceSenders) && autoReplySignal(msg.header, "") == "" {
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
	angleLineRE = regexp.MustCompile(`^<(` + addrRE.String() + `)>:?\s*(.*)$`)
	bareLineRE  = regexp.MustCompile(`^(` + addrRE.String() + `):?$`)
	colonLineRE = regexp.MustCompile(`^(` + addrRE.String() + `):\s+(.+)$`)
	proseRE     = regexp.MustCompile(`(?i)(?:delivered to|delivery to|your message to|message to|deliver your message to)\s+<?(` + addrRE.String() + `)`)
	hostRE      = regexp.MustCompile(`(?i)\bhost\s+([a-z0-9-]+(?:\.[a-z0-9-]+)+)`)
)

// parseTextBounce reads recipients and reasons out of a bounce's prose:
// qmail and Yahoo "<addr>:" paragraphs, Exim's indented address lists,
// Sendmail's "<addr>" + "(reason: ...)", Postfix's "<addr>: host ... said:",
// and the "wasn't delivered to addr" sentences of Gmail and Exchange.
func parseTextBounce(rep *Report, msg *part, why string) {
	rep.Kind = KindBounce
	rep.Reason = "non-standard bounce: " + why
	human, copied := splitCopy(bodyText(msg))
	if h := returned(msg); len(h) > 0 {
		setOriginal(rep, h)
	} else if copied != "" {
		setOriginal(rep, inlineHeader(copied))
	}
	if rep.OriginalMessageID == "" {
		if m := msgIDLineRE.FindStringSubmatch(human + "\n" + copied); m != nil {
			rep.OriginalMessageID = messageID(m[1])
		}
	}

	lowerAll := strings.ToLower(rep.Subject + "\n" + human)
	delayed := containsAny(lowerAll, delayWords) && !strings.Contains(lowerAll, "permanent")
	skip := map[string]bool{strings.ToLower(rep.From): true, strings.ToLower(normalizeAddress(rep.EnvelopeTo)): true}
	lines := strings.Split(human, "\n")
	for i := 0; i < len(lines) && len(rep.Recipients) < maxRecipients; i++ {
		t := strings.TrimSpace(lines[i])
		if len(t) > 2000 {
			continue // no MTA writes such lines; do not run the patterns on them
		}
		var addr, inline string
		prose := false
		if m := angleLineRE.FindStringSubmatch(t); m != nil {
			addr, inline = m[1], m[2]
		} else if m := bareLineRE.FindStringSubmatch(t); m != nil {
			addr = m[1]
		} else if m := colonLineRE.FindStringSubmatch(t); m != nil {
			addr, inline = m[1], m[2]
		} else if m := proseRE.FindStringSubmatch(t); m != nil {
			addr, prose = m[1], true
		}
		if addr == "" {
			continue
		}
		addr = normalizeAddress(addr)
		key := strings.ToLower(addr)
		if skip[key] || containsAny(localPart(addr), bounceSenders) {
			continue
		}
		skip[key] = true
		// The paragraph after the address explains it.
		para := []string{}
		if inline != "" {
			para = append(para, inline)
		}
		j := i + 1
		if !prose {
			for ; j < len(lines) && j < i+12; j++ {
				l := strings.TrimSpace(lines[j])
				if l == "" || angleLineRE.MatchString(l) || bareLineRE.MatchString(l) {
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
		rep.Recipients = append(rep.Recipients, textRecipient(addr, diag, strings.Join(para, " "), delayed))
		if !prose {
			i = j - 1
		}
	}
	if len(rep.Recipients) == 0 {
		addr := ""
		if to := addresses(rep.OriginalHeaders["To"]); len(to) == 1 {
			addr = to[0]
		}
		diag := replyLine(lines)
		rep.Recipients = append(rep.Recipients, textRecipient(addr, diag, diag, delayed))
		if addr == "" {
			rep.Reason += "; no recipient named"
		}
	}
}

func textRecipient(addr, diag, para string, delayed bool) Recipient {
	diag = strings.TrimSpace(diag)
	if strings.HasSuffix(diag, ")") && strings.Count(diag, ")") > strings.Count(diag, "(") {
		diag = strings.TrimSpace(strings.TrimSuffix(diag, ")")) // Sendmail's "(reason: 550 ...)"
	}
	r := Recipient{Address: addr, Diagnostic: clean(diag), Action: "failed"}
	r.Status = findStatus(r.Diagnostic)
	if m := hostRE.FindStringSubmatch(para); m != nil {
		r.RemoteMTA = strings.ToLower(m[1])
	}
	r.Class = Classify(r.Status, findReply(r.Diagnostic), r.Diagnostic+" "+para)
	if r.Class == "" {
		r.Class = Hard
		if delayed {
			r.Class = Soft
		}
	}
	if delayed && r.Class == Soft {
		r.Action = "delayed"
	}
	return r
}

// replyLine returns the first line holding an SMTP reply or enhanced
// status, from the code on ("Remote host said: 550 5.1.1 ..." gives
// "550 5.1.1 ...").
func replyLine(lines []string) string {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if loc := replyRE.FindStringSubmatchIndex(l); loc != nil {
			return strings.TrimSpace(l[loc[2]:])
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
