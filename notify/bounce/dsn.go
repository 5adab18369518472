package bounce

import (
	"net/mail"
	"regexp"
	"strings"
)

const maxRecipients = 1000

// parseDSN reads a message/delivery-status part (RFC 3464 section 2):
// one per-message block, then one block per recipient, blocks separated
// by blank lines. It tolerates missing blocks and blank lines: a block
// with recipient fields is a recipient block wherever it stands, and a
// repeated Final-Recipient starts a new recipient.
func parseDSN(rep *Report, msg, ds *part) {
	rep.Kind = KindBounce
	setOriginal(rep, returned(msg))
	for _, block := range fieldBlocks(ds.body) {
		var cur *Recipient
		flush := func() {
			if cur != nil && len(rep.Recipients) < maxRecipients {
				finishRecipient(cur)
				rep.Recipients = append(rep.Recipients, *cur)
			}
			cur = nil
		}
		for _, f := range block {
			name := strings.ToLower(f.name)
			switch name {
			case "final-recipient", "original-recipient", "action", "status", "diagnostic-code", "remote-mta":
			default:
				continue
			}
			if cur == nil || (name == "final-recipient" && cur.Address != "") {
				flush()
				cur = &Recipient{}
			}
			v := clean(f.value)
			switch name {
			case "final-recipient":
				cur.Address = normalizeAddress(stripType(v))
			case "original-recipient":
				cur.Original = normalizeAddress(stripType(v))
			case "action":
				a := strings.ToLower(strings.TrimSpace(v))
				if i := strings.IndexAny(a, " \t(;"); i >= 0 {
					a = a[:i]
				}
				cur.Action = a
			case "status":
				cur.Status = findStatus(v)
			case "diagnostic-code":
				cur.Diagnostic = stripType(v)
			case "remote-mta":
				cur.RemoteMTA = stripType(v)
			}
		}
		flush()
	}
	failed := 0
	for _, r := range rep.Recipients {
		if r.Class != "" {
			failed++
		}
	}
	switch {
	case len(rep.Recipients) == 0:
		rep.Reason = "delivery status notification without recipient fields"
	case failed == 0:
		rep.Reason = "delivery status notification without failures"
	default:
		rep.Reason = "delivery status notification (RFC 3464)"
	}
}

// finishRecipient fills the class from action, status and diagnostic.
func finishRecipient(r *Recipient) {
	if r.Address == "" && r.Original != "" {
		r.Address = r.Original
	}
	if r.Status == "" {
		r.Status = findStatus(r.Diagnostic)
	}
	switch r.Action {
	case "delivered", "relayed", "expanded":
		r.Class = ""
	case "delayed":
		r.Class = Soft
	default:
		r.Class = Classify(r.Status, findReply(r.Diagnostic), r.Diagnostic)
		if r.Class == "" && (r.Action == "failed" || r.Action == "") {
			// "failed" means the MTA gave up (RFC 3464 section 2.3.3).
			r.Class = Hard
		}
		if r.Action == "" && strings.HasPrefix(r.Status, "2.") {
			r.Class = ""
		}
	}
}

// fieldBlocks splits a body of header-like fields into blank-line
// separated blocks, skipping lines that are not fields.
func fieldBlocks(b []byte) []header {
	var blocks []header
	var cur header
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.TrimSpace(line) == "":
			if len(cur) > 0 && len(blocks) < maxRecipients+1 {
				blocks = append(blocks, cur)
			}
			cur = nil
		case line[0] == ' ' || line[0] == '\t':
			if len(cur) > 0 {
				cur[len(cur)-1].value = strings.TrimSpace(cur[len(cur)-1].value + " " + strings.TrimSpace(line))
			}
		default:
			name, val, ok := strings.Cut(line, ":")
			name = strings.TrimSpace(name)
			if ok && name != "" && !strings.ContainsAny(name, " \t") {
				cur = append(cur, field{name: name, value: strings.TrimSpace(val)})
			}
		}
	}
	if len(cur) > 0 && len(blocks) < maxRecipients+1 {
		blocks = append(blocks, cur)
	}
	return blocks
}

var typePrefixRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,20}\s*;\s*`)

// stripType removes the address-type or diagnostic-type prefix ("rfc822;",
// "smtp;", "dns;", "X-Postfix;").
func stripType(v string) string {
	return strings.TrimSpace(typePrefixRE.ReplaceAllString(strings.TrimSpace(v), ""))
}

// normalizeAddress strips angle brackets and lower-cases the domain.
func normalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	a = strings.TrimPrefix(a, "<")
	if i := strings.IndexByte(a, '>'); i >= 0 {
		a = a[:i]
	}
	a = strings.Trim(strings.TrimSpace(a), `.,;:'"()[]`)
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		a = a[:i] + "@" + strings.ToLower(a[i+1:])
	}
	if strings.ContainsAny(a, " \t") {
		if f := strings.Fields(a); len(f) > 0 {
			return normalizeAddress(f[0])
		}
	}
	return a
}

var addrRE = regexp.MustCompile(`[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+`)

// firstAddress returns the first address of an address-list header value.
func firstAddress(v string) string {
	if v == "" {
		return ""
	}
	if l, err := mail.ParseAddressList(v); err == nil && len(l) > 0 {
		return normalizeAddress(l[0].Address)
	}
	if m := addrRE.FindString(v); m != "" {
		return normalizeAddress(m)
	}
	return ""
}

// addresses returns every address of an address-list header value.
func addresses(v string) []string {
	if l, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(l))
		for _, a := range l {
			out = append(out, normalizeAddress(a.Address))
		}
		return out
	}
	var out []string
	for _, m := range addrRE.FindAllString(v, 50) {
		out = append(out, normalizeAddress(m))
	}
	return out
}

// localPart returns the lower-cased local part of an address.
func localPart(a string) string {
	a = normalizeAddress(a)
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		a = a[:i]
	}
	return strings.ToLower(a)
}
