package bounce

import "strings"

// Class says whether a delivery failure is permanent.
type Class string

// Classes. The empty Class means "not a failure" (delivered, relayed,
// expanded) or "cannot tell".
const (
	Hard Class = "hard"
	Soft Class = "soft"
)

// Diagnose classifies one delivery result, from a DSN recipient block, a
// non-standard bounce or a mail log line alike, so that all of them agree.
//
// action is the DSN Action (failed, delayed, delivered, relayed, expanded)
// or the Postfix log status (bounced, deferred, expired, sent); "" when
// unknown. status is the enhanced status code (RFC 3463), replyCode the
// SMTP reply code (RFC 5321 section 4.2); either may be ""/0, and both are
// then looked for in text, the diagnostic or reply text.
//
// The reason comes from the status code first, where the code names one
// (5.1.1 user unknown, 5.2.2 mailbox full, 4.4.7 expired, ...), then from
// the wording of text, then from what is left of the codes. A specific
// status inside the text beats a generic x.0.0 one. The class follows from
// the reason: Hard only for a dead address (Reason.Dead) with a permanent
// code; everything else, including every policy rejection, is Soft.
//
// A final failure with a temporary code (4.x.x, 4xx: the MTA gave up
// retrying) and Postfix's "expired" are Soft: the reason is the one the
// last error names when it names a condition (mailbox full, a policy
// block), else Expired. For an expired log line, pass the reply of the
// recipient's last deferral as text, so that the log and Postfix's DSN
// agree. Delays ("delayed", "deferred") are Soft too.
//
// Results that are not failures (delivered, 2.x.x, 2xx) give "", "". So
// does an unknown action with nothing recognisable in codes or text.
func Diagnose(action, status string, replyCode int, text string) (Class, Reason) {
	act := strings.ToLower(strings.TrimSpace(action))
	switch act {
	case "delivered", "relayed", "expanded", "sent":
		return "", ""
	}
	st := effectiveStatus(status, text)
	if replyCode == 0 {
		replyCode = findReply(text)
	}
	cls := 0
	if st != "" {
		cls = int(st[0] - '0')
	} else if replyCode >= 200 && replyCode < 600 {
		cls = replyCode / 100
	}
	if cls == 2 {
		return "", ""
	}
	lower := strings.ToLower(text)
	r := reasonOf(st, replyCode, lower)
	if r == "" {
		if act == "" && cls == 0 {
			return "", ""
		}
		if act == "expired" {
			return Soft, Expired
		}
		r = Undefined
		if strings.TrimSpace(text) != "" {
			r = OnHold
		}
	}
	switch act {
	case "delayed", "deferred":
		// Not final: the MTA is still trying. Delivery trouble without a
		// more telling cause is reported as expired, as sisimai does for
		// delay notices (its "expired" covers "has been delayed").
		switch r {
		case Undefined, OnHold, NetworkError, SystemError, TooManyConn:
			r = Expired
		}
		return Soft, r
	}
	if cls == 4 || act == "expired" {
		// A final failure after temporary errors: the MTA gave up
		// retrying; nobody said the address is dead. A cause the last
		// error names (mailbox full, a policy block) is kept; any other
		// is expiry.
		switch r {
		case UserUnknown, HostUnknown, HasMoved, Undefined, OnHold, NetworkError, SystemError, TooManyConn:
			r = Expired
		}
		return Soft, r
	}
	return classOf(r, cls), r
}

// Classify is the class Diagnose gives a failure of unknown action.
func Classify(status string, replyCode int, text string) Class {
	c, _ := Diagnose("", status, replyCode, text)
	return c
}

// statusReasons maps the enhanced status codes that name a cause by
// themselves (RFC 3463 section 3, RFC 3886, RFC 7505, RFC 7372).
var statusReasons = map[string]Reason{
	"1.1": UserUnknown, "1.2": HostUnknown, "1.3": UserUnknown, "1.6": HasMoved,
	"1.7": Rejected, "1.8": Rejected, "1.9": SystemError, "1.10": NotAccept,
	"2.1": Suspend, "2.2": MailboxFull, "2.3": ExceedLimit, "2.4": SystemError,
	"3.0": SystemError, "3.1": SystemFull, "3.2": NotAccept, "3.3": SystemError, "3.4": MesgTooBig, "3.5": SystemError,
	"4.1": NetworkError, "4.2": NetworkError, "4.3": SystemError, "4.4": HostUnknown, "4.5": SystemFull,
	"4.6": NetworkError, "4.7": Expired,
	"5.3": TooManyConn, "5.4": SyntaxError, "5.5": SyntaxError, "5.2": SyntaxError, "5.1": SyntaxError,
	"6.0": ContentError, "6.1": ContentError, "6.2": ContentError, "6.3": ContentError, "6.4": ContentError,
	"6.5": ContentError, "6.6": ContentError, "6.7": ContentError, "6.8": ContentError, "6.9": ContentError,
	"7.0": SecurityError, "7.2": Rejected, "7.3": SecurityError, "7.4": SecurityError, "7.5": SecurityError,
	"7.6": SecurityError, "7.7": SecurityError, "7.8": SecurityError, "7.9": SecurityError, "7.10": SecurityError,
	"7.11": SecurityError, "7.13": Suspend, "7.14": SecurityError, "7.15": SecurityError, "7.16": MesgTooBig,
	"7.17": HasMoved, "7.18": HasMoved, "7.20": AuthFailure, "7.21": AuthFailure, "7.22": AuthFailure,
	"7.23": AuthFailure, "7.24": AuthFailure, "7.25": RequirePTR, "7.26": AuthFailure, "7.27": NotAccept,
	"7.28": SpamDetected, "7.29": AuthFailure, "7.30": SecurityError,
}

// strongStatus lists the codes whose meaning no wording overrides: the
// MTA that wrote them knew exactly what happened.
var strongStatus = map[string]bool{
	"1.1": true, "1.2": true, "1.3": true, "1.6": true, "2.2": true, "2.3": true,
	"3.4": true, "4.7": true, "7.13": true, "7.25": true,
	"7.20": true, "7.21": true, "7.22": true, "7.23": true, "7.24": true, "7.26": true,
}

type wording struct {
	r     Reason
	words []string
}

// wordings are checked in order; the first match names the reason. The
// order settles overlaps: the sender's own rejections before the
// recipient's ("sender address rejected: domain not found" is about the
// sender), sending limits before mailbox quotas ("daily sending quota"),
// quotas before expiry ("mailbox is full: retry timeout exceeded") and
// before the dead-address wordings ("mailbox full, rejected"),
// the dead-address wordings before policy ones, and vague temporary
// wordings last. Japanese phrases cover the carriers' ISO-2022-JP notices.
var wordings = []wording{
	{Rejected, []string{
		"sender address rejected", "sender rejected", "sender verify failed", "sender verification failed",
		"invalid sender", "domain of sender address", "sender domain", "unroutable sender",
		"envelope sender", "bad sender", "sender denied", "sender is not allowed", "mail from not owned",
		"null sender is not allowed", "empty envelope senders", "sender address has been blacklisted",
		"email address is not verified", "sender not pre-approved",
	}},
	{NoRelaying, []string{
		"relay access denied", "relaying denied", "relay not permitted", "not permitted to relay",
		"unable to relay", "relay denied", "we do not relay", "relaying not allowed", "not allowed to relay",
		"no relaying", "not configured to relay", "not an open relay", "we don't handle mail for",
	}},
	{Speeding, []string{
		"rate limit", "rate-limit", "ratelimit", "sending quota", "message quota", "throttl",
		"too many messages from", "sent too many messages", "sending rate", "max emails per hour", "slow down", "too fast",
		"temporarily deferred due to unexpected volume", "unusual rate", "exceeded the rate",
	}},
	{MailboxFull, []string{
		"mailbox full", "mailbox is full", "mailbox has exceeded", "mailbox quota", "over quota", "overquota",
		"quota exceeded", "exceeded storage allocation", "exceeds quota", "insufficient storage",
		"mailbox size limit", "storage allocation", "user is over", "account is full", "full mailbox",
		"mailfolder is full", "not enough storage space", "does not have enough space", "disk quota",
		"quota violation", "over the allowed quota", "exceeding its mailbox quota", "too much mail data",
		"out of storage", "mailbox would exceed", "user has too many messages", "mail file is full", "file is full",
		"容量", "メールボックスがいっぱい",
	}},
	{MesgTooBig, []string{
		"message size exceeds", "message too large", "message too big", "message is too large",
		"message is too big", "message file too big", "message length exceeds", "exceeds the maximum size",
		"exceeded maximum inbound message size", "max message size exceeded", "size limit", "message exceeds",
		"too large for this", "exceeds size limit", "メールサイズ",
	}},
	{Expired, []string{
		"cannot send message for", "delivery time expired", "message expired", "message timed out",
		"retry timeout exceeded", "retry time not reached for any host after a long failure period",
		"could not be delivered for more than", "in the queue too long", "too long in queue",
		"unable to deliver message after multiple retries", "maximum time in queue",
		"was not reachable within the allowed queue period", "have been failing for a long time",
	}},
	{Suspend, []string{
		"account has been disabled", "account is disabled", "account disabled", "mailbox is disabled",
		"mailbox has been disabled", "has been suspended", "is currently suspended", "user suspended",
		"account suspended", "mailbox currently suspended", "temporarily inactive", "deactivated mailbox",
		"account that you tried to reach is disabled", "account is locked", "mailbox is frozen",
		"account has been locked", "account is inactive", "account inactive",
	}},
	{HasMoved, []string{
		"has moved", "address has changed", "has been replaced by", "no longer uses this address",
	}},
	{NotAccept, []string{
		"does not accept mail", "null mx", "nullmx", "accepts no mail", "host does not accept",
		"no mx record found", "domain does not receive mail",
	}},
	{HostUnknown, []string{
		"host unknown", "unknown host", "host or domain name not found", "domain not found", "no such domain",
		"domain does not exist", "domain doesn't exist", "unrouteable address", "unroutable address",
		"name or service not known", "unknown domain", "domain name not found", "domain must exist",
		"mail domain mentioned in email address is unknown", "domain is not reachable",
		"dns records for the destination computer could not be found", "ドメインが存在しません",
	}},
	{UserUnknown, []string{
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient",
		"no such address", "no such person", "unknown recipient", "recipient unknown", "invalid recipient",
		"recipient not found", "recipientnotfound", "recipnotfound", "mailbox unavailable",
		"mailbox not found", "mailbox does not exist", "mailbox doesn't exist", "not a valid mailbox",
		"user not found", "address unknown", "unknown address", "addressee unknown", "does not exist",
		"doesn't exist", "no mailbox", "not listed in domino directory", "not listed in the domino directory",
		"not listed in public name", "invalid mailbox", "bad destination mailbox", "is not a valid user",
		"doesn't have a", "no account by that name", "account does not exist", "unknown local part",
		"unknown local-part", "mailbox is inactive", "not a valid recipient", "not a valid address", "invalid address", "address invalid", "bad address",
		"not our customer", "no longer valid", "no longer active", "is not a known user",
		"no mail box available", "recipient address rejected: access denied", "address not present in directory",
		"couldn't be found", "could not be found", "wasn't found at", "unknown or illegal alias",
		"宛先不明", "存在しません", "見つかりません", "存在しない",
	}},
	{VirusDetected, []string{
		"virus", "malware", "infected", "potentially executable attachment", "prohibited attachment",
	}},
	{RequirePTR, []string{
		"ptr record", "reverse dns", "rdns", "reverse lookup", "reverse-dns", "no ptr", "ip name lookup failed",
		"cannot find your hostname", "cannot resolve your address", "reverse hostname", "reverse host name",
	}},
	{BadReputation, []string{
		"reputation", "sender score",
	}},
	{Blocked, []string{
		"blocked using", "blacklist", "blocklist", "block list", "black list", "dnsbl", "rbl", "spamhaus",
		"barracuda", "sorbs", "spamcop", "client host rejected", "banned sending ip", "ip address blocked",
		"your ip", "ip blocked", "refused to talk to me", "helo command rejected", "not allowed to send from",
		"listed at", "listed in", "access denied. ip", "dynamic ip", "dialup", "blocked by", "greylist", "graylist",
	}},
	{AuthFailure, []string{
		"dmarc", "dkim", "spf", "sender policy framework", "unauthenticated email", "failed authentication",
		"not authenticated", "authentication checks",
	}},
	{SpamDetected, []string{
		"spam", "unsolicited", "bulk mail", "bulk email", "content filter", "junk",
		"message content rejected", "suspicious", "phishing", "message filtered",
	}},
	{Filtered, []string{
		"user reject", "recipient preferences", "rejected by recipient", "blocked by the recipient",
		"only accepting mail from", "not accepting mail from", "is not accepting any mail", "filtered by the recipient",
		"resolver.rst.notauthorized", "not authorized to send to", "受信拒否", "拒否",
	}},
	{PolicyViolation, []string{
		"policy", "organizational settings", "not permitted by", "prohibited",
	}},
	{SecurityError, []string{
		"authentication required", "authentication failed", "authentication failure", "must authenticate",
		"tls required", "starttls", "encryption required", "tls is required", "not authorized",
		"unauthenticated", "access denied", "security",
	}},
	{NotCompliantRFC, []string{
		"rfc 5322", "rfc5322", "rfc 2822", "rfc2822", "rfc 822", "not rfc compliant", "not compliant",
		"duplicate header", "multiple from", "malformed header",
	}},
	{ContentError, []string{
		"header violates", "invalid header", "header error", "header size", "header is not", "headers are not",
		"header field", "invalid mime", "mime complexity", "mime header", "8-bit data", "8bit data", "content error",
		"invalid content", "binary content", "line too long", "bare lf", "bare linefeed",
	}},
	{TooManyConn, []string{
		"too many connections", "connection limit", "too many concurrent", "too many sessions",
		"too many recipients", "too many smtp sessions", "too many errors", "maximum connection",
	}},
	{SystemFull, []string{
		"insufficient system storage", "mail system full", "system storage", "disk full", "out of disk",
		"insufficient disk",
	}},
	{NetworkError, []string{
		"timed out", "connection refused", "no route to host", "host is unreachable", "network is unreachable",
		"host not found, try again", "name server", "lost connection", "connection reset", "mail loop",
		"routing loop", "forwarding loop", "too many hops", "hop count exceeded", "loops back to myself",
		"dns lookup", "dns error", "temporary lookup failure", "could not connect", "unable to connect",
		"connection dropped", "network error",
	}},
	{MailerError, []string{
		"command died", "procmail", "maildrop", "mail delivery program", "pipe to |", "mailer error",
		"command failed", "exit code", "x-unix",
	}},
	{SystemError, []string{
		"internal error", "local error", "system error", "server error", "temporary local problem",
		"configuration error", "service unavailable", "service not available", "service currently unavailable",
		"temporarily unavailable", "try again later", "transaction failed", "system config",
		"server is misconfigured", "local problem", "queue file write error", "temporary failure",
	}},
	{SyntaxError, []string{
		"syntax error", "command unrecognized", "unrecognized command", "command not recognized",
	}},
	{Blocked, []string{"blocked", "refused"}},
}

// phrase is one wording, with the index of its rule in wordings.
type phrase struct {
	s    string
	rule int
}

// phrases indexes the wordings by their first two bytes, so matchWording
// reads a text once instead of once per wording: bigram[b0<<8|b1] is 1 +
// the index in buckets of the phrases that start so, 0 for none.
var (
	bigram  [1 << 16]uint16
	buckets [][]phrase
)

func init() {
	for ri, w := range wordings {
		for _, s := range w.words {
			if len(s) < 2 || s != strings.ToLower(s) {
				panic("bounce: bad wording " + s)
			}
			k := uint16(s[0])<<8 | uint16(s[1])
			if bigram[k] == 0 {
				buckets = append(buckets, nil)
				bigram[k] = uint16(len(buckets))
			}
			buckets[bigram[k]-1] = append(buckets[bigram[k]-1], phrase{s, ri})
		}
	}
}

// matchWording returns the reason of the first rule of wordings with a
// phrase in lower, or "".
func matchWording(lower string) Reason {
	best := len(wordings)
	for i := 0; i+1 < len(lower); i++ {
		b := bigram[uint16(lower[i])<<8|uint16(lower[i+1])]
		if b == 0 {
			continue
		}
		for _, p := range buckets[b-1] {
			if p.rule < best && strings.HasPrefix(lower[i:], p.s) {
				best = p.rule
			}
		}
	}
	if best == len(wordings) {
		return ""
	}
	return wordings[best].r
}

// reasonOf names the cause of a failure: a strong status code first, then
// the wording, then the rest of the codes.
func reasonOf(st string, reply int, lower string) Reason {
	key := ""
	if st != "" {
		key = st[strings.IndexByte(st, '.')+1:]
	}
	if strongStatus[key] {
		return statusReasons[key]
	}
	if strings.HasPrefix(key, "6.") {
		return ContentError // media and content errors (RFC 3463 section 3.7)
	}
	if r := matchWording(lower); r != "" {
		return r
	}
	if r, ok := statusReasons[key]; ok {
		return r
	}
	switch {
	case strings.HasPrefix(key, "7."):
		return SecurityError
	case strings.HasPrefix(key, "6."):
		return ContentError
	}
	switch reply {
	case 421:
		return SystemError
	case 452:
		return SystemFull
	case 552:
		return MailboxFull
	case 553:
		return UserUnknown // "mailbox name not allowed" (RFC 5321 section 4.2.3)
	case 500, 501, 502, 503, 504:
		return SyntaxError
	}
	return ""
}

// effectiveStatus is the status code of a result: the one given, unless it
// is missing or generic (x.0.0) and the text holds a specific one of the
// same class.
func effectiveStatus(status, text string) string {
	st := findStatus(status)
	if st != "" && !strings.HasSuffix(st, ".0.0") {
		return st
	}
	t := findStatus(text)
	if t == "" || strings.HasSuffix(t, ".0.0") {
		if st == "" {
			return t
		}
		return st
	}
	if st == "" || st[0] == t[0] {
		return t
	}
	return st
}

// findStatus returns the first enhanced status code in s (RFC 3463: class
// 2, 4 or 5, subject 0 to 7, detail of up to three digits) that is not
// part of a longer dotted number such as an IP address, nor a version
// number ("Lotus SMTP MTA v4.6.1", "Release 5.0.8"). It scans by hand: it
// runs on every diagnostic and line of a bounce.
func findStatus(s string) string {
	for i := 0; i+4 < len(s); i++ {
		c := s[i]
		if (c != '2' && c != '4' && c != '5') || s[i+1] != '.' || s[i+2] < '0' || s[i+2] > '7' || s[i+3] != '.' || !isDigit(s[i+4]) {
			continue
		}
		a, b := i, i+5
		for b < len(s) && b < i+7 && isDigit(s[b]) {
			b++
		}
		if a > 0 {
			c := s[a-1]
			if c == '-' && a >= 4 && isDigit(s[a-2]) && isDigit(s[a-3]) && isDigit(s[a-4]) && (a == 4 || !isDigit(s[a-5])) {
				// "550-5.7.26": a continuation line of a reply.
			} else if isDigit(c) || c == '.' || isLetter(c) || c == '-' || c == '/' || c == '_' {
				continue
			}
		}
		if b < len(s) {
			c := s[b]
			if isDigit(c) || isLetter(c) || (c == '.' && b+1 < len(s) && isDigit(s[b+1])) {
				i = b - 1
				continue
			}
		}
		if versionWord(s[:a]) {
			continue
		}
		return s[a:b]
	}
	return ""
}

// versionWord reports whether before ends with a word that introduces a
// version number.
func versionWord(before string) bool {
	before = strings.ToLower(strings.TrimRight(before, " \t:"))
	for _, w := range []string{"release", "version", "ver", "rev", "build", "v"} {
		if strings.HasSuffix(before, w) {
			i := len(before) - len(w)
			if i == 0 || !isLetter(before[i-1]) {
				return true
			}
		}
	}
	return false
}

// findReply returns the first SMTP reply code (RFC 5321 section 4.2) in s:
// three digits, the first 2, 4 or 5, not inside a number, an address
// literal, an IPv6 address or a dotted string, followed by a space, "-",
// ":" or the end.
func findReply(s string) int {
	if i := replyIndex(s); i >= 0 {
		return int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
	}
	return 0
}

// replyIndex is the index of the code findReply returns, or -1.
func replyIndex(s string) int {
	for i := 0; i+2 < len(s); i++ {
		c := s[i]
		if (c != '2' && c != '4' && c != '5') || !isDigit(s[i+1]) || !isDigit(s[i+2]) {
			continue
		}
		if i > 0 {
			p := s[i-1]
			if p == ':' && i >= 2 && s[i-2] == ' ' {
				// "ERROR CODE :550" (Zoho), not "2001:db8::550".
			} else if isDigit(p) || p == '.' || p == '[' || p == ':' {
				continue
			}
		}
		if j := i + 3; j == len(s) || s[j] == ' ' || s[j] == '-' || s[j] == ':' {
			return i
		}
	}
	return -1
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
