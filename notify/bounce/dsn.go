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
	// Recipient blocks are read across blank lines: some MTAs put blank
	// lines inside a block, others none between blocks. A new recipient
	// starts at a Final-Recipient (or an Original-Recipient not followed
	// by one) and at a field the current recipient already has.
	var cur *Recipient
	seen := map[string]bool{}
	flush := func() {
		if cur != nil && len(rep.Recipients) < maxRecipients {
			finishRecipient(cur)
			rep.Recipients = append(rep.Recipients, *cur)
		}
		cur = nil
		clear(seen)
	}
	for _, block := range fieldBlocks(ds.body) {
		for _, f := range block {
			name := strings.ToLower(f.name)
			switch name {
			case "final-recipient", "original-recipient", "action", "status", "diagnostic-code", "remote-mta":
			default:
				continue
			}
			switch {
			case cur == nil:
				cur = &Recipient{}
			case seen[name]:
				flush()
				cur = &Recipient{}
			case name == "final-recipient" && seen["action"]:
				// Final-Recipient after the previous one's fields.
				flush()
				cur = &Recipient{}
			case name == "original-recipient" && seen["action"]:
				flush()
				cur = &Recipient{}
			}
			seen[name] = true
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
	}
	flush()
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

// finishRecipient fills the status, class and reason from action, status
// and diagnostic, and drops an address that is no address (a pipe path, a
// bare "@host").
func finishRecipient(r *Recipient) {
	if !validAddress(r.Address) {
		r.Address = ""
	}
	if !validAddress(r.Original) {
		r.Original = ""
	}
	if r.Address == "" && r.Original != "" {
		r.Address = r.Original
	}
	r.Status = effectiveStatus(r.Status, r.Diagnostic)
	r.Code = findReply(r.Diagnostic)
	action := r.Action
	if action == "" && strings.HasPrefix(r.Status, "2.") {
		action = "delivered"
	}
	if action == "" {
		action = "failed" // a recipient block in a report is about a failure
	}
	r.Class, r.BounceReason = Diagnose(action, r.Status, r.Code, r.Diagnostic)
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

// stripType removes the address-type or diagnostic-type prefix ("rfc822;",
// "smtp;", "dns;", "X-Postfix;", "RFC822 ;", "rfc/822;").
func stripType(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || !isLetter(v[0]) {
		return v
	}
	i := 1
	for i < len(v) && i <= 21 && (isLetter(v[i]) || isDigit(v[i]) || v[i] == '.' || v[i] == '/' || v[i] == '-') {
		i++
	}
	j := i
	for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
		j++
	}
	if j < len(v) && v[j] == ';' && i <= 21 {
		return strings.TrimSpace(v[j+1:])
	}
	return v
}

// normalizeAddress reduces an address as MTAs write it ("<a@b>", "Name
// <a@b>", "<@relay:a@b>", "a@b.") to the bare address, keeping a quoted
// local part whole and lower-casing the domain.
func normalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	if i := indexUnquoted(a, '<'); i >= 0 {
		a = a[i+1:]
		if j := indexUnquoted(a, '>'); j >= 0 {
			a = a[:j]
		}
	}
	a = strings.TrimSpace(a)
	if strings.HasPrefix(a, "@") {
		// A source route (RFC 5321 section 4.1.2): "@relay,@relay:local@domain".
		if i := strings.IndexByte(a, ':'); i >= 0 {
			a = a[i+1:]
		}
	}
	a = strings.TrimLeft(a, ".,;:'([")
	var local, rest string
	if strings.HasPrefix(a, `"`) {
		j := closingQuote(a)
		if j < 0 {
			return strings.Trim(a, `"`)
		}
		local, rest = a[:j+1], a[j+1:]
		if !strings.HasPrefix(rest, "@") {
			return local
		}
	} else {
		if i := strings.IndexAny(a, " \t"); i >= 0 {
			a = firstAddressField(a)
		}
		at := strings.LastIndexByte(a, '@')
		if at < 0 {
			return strings.TrimRight(a, ".,;:'\")]")
		}
		local, rest = a[:at], a[at:]
	}
	dom := strings.TrimPrefix(rest, "@")
	if i := strings.IndexAny(dom, " \t,;>()<\"'"); i >= 0 {
		dom = dom[:i]
	}
	dom = strings.TrimRight(dom, ".:]")
	dom = strings.TrimPrefix(dom, "[")
	if strings.HasPrefix(rest, "@[") {
		dom = "[" + dom + "]" // an address literal
	}
	return local + "@" + strings.ToLower(dom)
}

// firstAddressField returns the first white-space separated field of a
// that holds an "@", else the first field.
func firstAddressField(a string) string {
	f := strings.Fields(a)
	for _, x := range f {
		if strings.Contains(x, "@") {
			return x
		}
	}
	if len(f) > 0 {
		return f[0]
	}
	return ""
}

// indexUnquoted is strings.IndexByte outside double quotes.
func indexUnquoted(s string, c byte) int {
	q := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q:
			i++
		case s[i] == '"':
			q = !q
		case s[i] == c && !q:
			return i
		}
	}
	return -1
}

// closingQuote returns the index of the quote that closes the one at s[0].
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// validAddress reports whether a looks like a mailbox address: a local
// part and a domain, no pipe or path, no bare "@host" fragment.
func validAddress(a string) bool {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > 320 {
		return false
	}
	local, dom := a[:at], a[at+1:]
	if local[0] == '|' || local[0] == '/' || strings.ContainsAny(dom, " \t/|\\@") {
		return false
	}
	if !strings.HasPrefix(local, `"`) && strings.ContainsAny(local, " \t<>()[],;:\\@") {
		return false
	}
	return true
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
