package bounce

import (
	"regexp"
	"strconv"
	"strings"
)

// Class says whether a delivery failure is permanent.
type Class string

// Classes. The empty Class means "not a failure" (delivered, relayed,
// expanded) or "cannot tell".
const (
	Hard Class = "hard"
	Soft Class = "soft"
)

// Wording fallbacks, checked in this order: quota first, because texts
// about full mailboxes often also say "rejected" or "unavailable"; then
// the permanent wordings; temporary wordings last.
var (
	quotaWords = []string{
		"mailbox full", "mailbox is full", "mailbox has exceeded", "over quota", "overquota",
		"quota exceeded", "exceeded storage", "exceeds quota", "insufficient storage",
		"mailbox size limit", "storage allocation", "user is over", "account is full",
		"quota", // last: widest
	}
	hardWords = []string{
		"user unknown", "unknown user", "no such user", "does not exist", "doesn't exist",
		"no such mailbox", "unknown recipient", "recipient unknown", "invalid recipient",
		"recipient not found", "recipientnotfound", "address rejected", "mailbox unavailable",
		"mailbox not found", "not a valid mailbox", "account has been disabled", "account disabled",
		"no mailbox", "unrouteable address", "host or domain name not found", "domain not found",
		"couldn't be found", "could not be found", "permanent error", "permanently",
		"doesn't have a", "not our customer", "no longer", "invalid address", "bad destination",
	}
	softWords = []string{
		"try again later", "temporarily", "temporary", "greylist", "graylist", "deferred",
		"connection timed out", "connection refused", "timed out", "too many connections",
		"rate limit", "delayed", "will retry", "will be retried", "still trying",
		"has not yet been delivered", "not yet been delivered",
	}
)

// Classify maps a delivery result to hard or soft, from the enhanced status
// code (RFC 3463) first, then the SMTP reply code, then the wording of text.
// status may be "" and replyCode 0 when unknown. A 2.x.x status or 2xx reply
// gives "", as does text that says nothing recognisable.
//
// 4.x.x is soft; 5.2.2 (mailbox full) is soft; other specific 5.x.x codes
// are hard. The unspecific 5.0.0 and bare 5xx replies are hard unless the
// wording says the mailbox is full or the condition is temporary.
func Classify(status string, replyCode int, text string) Class {
	lower := strings.ToLower(text)
	if cls, sub, det, ok := splitStatus(status); ok {
		switch cls {
		case 2:
			return ""
		case 4:
			return Soft
		case 5:
			if sub == 2 && det == 2 {
				return Soft
			}
			if sub == 0 && det == 0 {
				return permanentByWords(lower)
			}
			return Hard
		}
	}
	switch replyCode / 100 {
	case 2:
		return ""
	case 4:
		return Soft
	case 5:
		return permanentByWords(lower)
	}
	return byWords(lower)
}

// permanentByWords classifies a permanent reply without a specific status:
// hard unless the words say the mailbox is full or it is temporary.
func permanentByWords(lower string) Class {
	if containsAny(lower, quotaWords) {
		return Soft
	}
	if containsAny(lower, hardWords) {
		return Hard
	}
	if containsAny(lower, softWords) {
		return Soft
	}
	return Hard
}

func byWords(lower string) Class {
	switch {
	case lower == "":
		return ""
	case containsAny(lower, quotaWords):
		return Soft
	case containsAny(lower, hardWords):
		return Hard
	case containsAny(lower, softWords):
		return Soft
	}
	return ""
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// splitStatus parses "c.s.d" (RFC 3463 section 2), tolerating text after it.
func splitStatus(s string) (cls, sub, det int, ok bool) {
	st := findStatus(s)
	if st == "" {
		return 0, 0, 0, false
	}
	parts := strings.SplitN(st, ".", 3)
	cls, _ = strconv.Atoi(parts[0])
	sub, _ = strconv.Atoi(parts[1])
	det, _ = strconv.Atoi(parts[2])
	return cls, sub, det, true
}

var statusRE = regexp.MustCompile(`[245]\.\d{1,3}\.\d{1,3}`)

// findStatus returns the first enhanced status code in s that is not part
// of a longer dotted number such as an IP address.
func findStatus(s string) string {
	for _, loc := range statusRE.FindAllStringIndex(s, 20) {
		a, b := loc[0], loc[1]
		if a > 0 && (isDigit(s[a-1]) || s[a-1] == '.') {
			continue
		}
		if b < len(s) && (isDigit(s[b]) || (s[b] == '.' && b+1 < len(s) && isDigit(s[b+1]))) {
			continue
		}
		return s[a:b]
	}
	return ""
}

var replyRE = regexp.MustCompile(`(?:^|[^\d.\[:])([245]\d\d)(?:[ \-:]|$)`)

// findReply returns the first SMTP reply code (RFC 5321 section 4.2) in s.
func findReply(s string) int {
	m := replyRE.FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
