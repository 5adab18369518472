package bounce

import (
	"regexp"
	"strings"
)

// parseARF reads an abuse feedback report (RFC 5965 section 3.1). The
// complained-about recipient is the Original-Rcpt-To, else the
// Removal-Recipient (RFC 6650 asks FBLs to redact, some send this), else
// the To of the returned message.
func parseARF(rep *Report, msg, fb *part) {
	rep.Kind = KindComplaint
	var h header
	for _, b := range fieldBlocks(fb.body) {
		h = append(h, b...)
	}
	rep.FeedbackType = strings.ToLower(clean(strings.TrimSpace(h.get("Feedback-Type"))))
	rep.UserAgent = clean(h.get("User-Agent"))
	rep.SourceIP = clean(strings.TrimSpace(h.get("Source-IP")))
	orig := returned(msg)
	setOriginal(rep, orig)

	var rcpts []string
	for _, name := range []string{"Original-Rcpt-To", "Removal-Recipient"} {
		for _, v := range h.all(name) {
			rcpts = append(rcpts, addresses(stripType(clean(v)))...)
		}
		if len(rcpts) > 0 {
			break
		}
	}
	if len(rcpts) == 0 && orig != nil {
		rcpts = addresses(stripType(orig.get("X-HmXmrOriginalRecipient")))
	}
	if len(rcpts) == 0 && orig != nil {
		rcpts = addresses(decodeHeader(orig.get("To")))
	}
	addRecipients(rep, rcpts)
	rep.Reason = "feedback report (RFC 5965)"
	if rep.FeedbackType != "" {
		rep.Reason += ", type " + rep.FeedbackType
	}
}

// addRecipients appends the valid addresses of rcpts, once each.
func addRecipients(rep *Report, rcpts []string) {
	seen := map[string]bool{}
	for _, a := range rcpts {
		if !validAddress(a) || seen[strings.ToLower(a)] || len(rep.Recipients) >= maxRecipients {
			continue
		}
		seen[strings.ToLower(a)] = true
		rep.Recipients = append(rep.Recipients, Recipient{Address: a})
	}
}

// parseJMRP recognises the complaints of Microsoft's Junk Mail Reporting
// Program (Outlook.com, Hotmail) in their older, non-ARF shape: a message
// from staff@hotmail.com, or one enclosing the reported message with its
// X-HmXmrOriginalRecipient header. It reports whether msg was one.
func parseJMRP(rep *Report, msg *part) bool {
	var orig header
	msg.walk(true, func(p *part) {
		if orig == nil && p.msg != nil && p.msg.header.has("X-HmXmrOriginalRecipient") {
			orig = p.msg.header
		}
	})
	from := strings.ToLower(rep.From)
	subj := strings.ToLower(rep.Subject)
	jmrpSender := (from == "staff@hotmail.com" || strings.HasSuffix(from, "@jmrp.outlook.com") ||
		strings.HasSuffix(from, "@outlook.com") && strings.HasPrefix(from, "staff@")) &&
		strings.Contains(subj, "complaint")
	if !jmrpSender {
		// The header alone is not enough: Microsoft's own bounces may
		// enclose a message that has it.
		dom := from[strings.LastIndexByte(from, '@')+1:]
		ms := dom == "hotmail.com" || dom == "outlook.com" || dom == "live.com" || dom == "msn.com"
		if orig == nil || !ms || findPart(msg, "message/delivery-status") != nil || strings.Contains(subj, "undeliverable") {
			return false
		}
	}
	rep.Kind = KindComplaint
	rep.FeedbackType = "abuse"
	rep.UserAgent = "Microsoft JMRP"
	if orig == nil {
		orig = returned(msg)
	}
	setOriginal(rep, orig)
	if m := jmrpIPRE.FindStringSubmatch(rep.Subject); m != nil {
		rep.SourceIP = m[1]
	}
	rcpts := addresses(stripType(orig.get("X-HmXmrOriginalRecipient")))
	if len(rcpts) == 0 {
		rcpts = addresses(decodeHeader(orig.get("To")))
	}
	addRecipients(rep, rcpts)
	rep.Reason = "Microsoft JMRP complaint"
	return true
}

var jmrpIPRE = regexp.MustCompile(`(?i)complaint about message from ([0-9a-f.:]+)`)
