package bounce

import "strings"

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
		rcpts = addresses(decodeHeader(orig.get("To")))
	}
	seen := map[string]bool{}
	for _, a := range rcpts {
		if a == "" || seen[strings.ToLower(a)] || len(rep.Recipients) >= maxRecipients {
			continue
		}
		seen[strings.ToLower(a)] = true
		rep.Recipients = append(rep.Recipients, Recipient{Address: a})
	}
	rep.Reason = "feedback report (RFC 5965)"
	if rep.FeedbackType != "" {
		rep.Reason += ", type " + rep.FeedbackType
	}
}
