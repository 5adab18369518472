package bounce

// Reason is why a delivery failed, in the vocabulary of sisimai 5 (the
// reference bounce analyser), so operators can compare our answers with
// its documentation and with other tools that speak it. The empty Reason
// means "not a failure" (delivered, relayed, expanded, complaint).
//
// Only four reasons say the address is dead and make a failure Hard:
// UserUnknown, HostUnknown, HasMoved and, with a permanent (5.x.x or 5xx)
// code, NotAccept. Every other reason is Soft: a temporary condition of the
// receiver, or a policy or content rejection that is the sender's problem.
type Reason string

// Reasons. The comments give the typical RFC 3463 status codes.
const (
	// UserUnknown: the mailbox does not exist (5.1.1, 5.1.3, "user unknown").
	UserUnknown Reason = "userunknown"
	// HostUnknown: the domain does not exist or has no mail host (5.1.2, 5.4.4).
	HostUnknown Reason = "hostunknown"
	// HasMoved: the user moved and left no forwarding (5.1.6).
	HasMoved Reason = "hasmoved"
	// NotAccept: the host accepts no mail at all, e.g. a null MX (5.1.10 of
	// RFC 7505, 5.3.2).
	NotAccept Reason = "notaccept"

	// MailboxFull: the mailbox is over its quota (4.2.2, 5.2.2).
	MailboxFull Reason = "mailboxfull"
	// ExceedLimit: the message exceeds a per-mailbox size limit (5.2.3).
	ExceedLimit Reason = "exceedlimit"
	// MesgTooBig: the message exceeds the system's size limit (5.3.4).
	MesgTooBig Reason = "mesgtoobig"
	// Expired: the sending MTA gave up retrying (4.4.7, Postfix "expired").
	Expired Reason = "expired"
	// Suspend: the mailbox exists but is disabled or suspended (5.2.1).
	Suspend Reason = "suspend"
	// SystemFull: the receiving system is out of storage (4.3.1, 452).
	SystemFull Reason = "systemfull"
	// SystemError: the receiving system failed (4.3.0, 5.3.0, loops).
	SystemError Reason = "systemerror"
	// NetworkError: DNS or connection trouble on the way (4.4.1, 4.4.2).
	NetworkError Reason = "networkerror"
	// TooManyConn: too many connections or recipients (4.7.0 with 421).
	TooManyConn Reason = "toomanyconn"
	// Speeding: the sender is rate limited.
	Speeding Reason = "speeding"
	// MailerError: a local delivery program (pipe, procmail) failed.
	MailerError Reason = "mailererror"
	// OnHold: the failure is real but its cause cannot be told yet.
	OnHold Reason = "onhold"
	// SyntaxError: the receiver did not understand a command (5.5.2).
	SyntaxError Reason = "syntaxerror"

	// Blocked: the sending IP or host name is refused (DNSBL, no PTR).
	Blocked Reason = "blocked"
	// BadReputation: refused for the sending IP's reputation.
	BadReputation Reason = "badreputation"
	// RequirePTR: refused because the sending IP has no valid PTR.
	RequirePTR Reason = "requireptr"
	// Filtered: the recipient's filter refused the sender or message.
	Filtered Reason = "filtered"
	// SpamDetected: the content was judged spam.
	SpamDetected Reason = "spamdetected"
	// VirusDetected: the content carried a virus.
	VirusDetected Reason = "virusdetected"
	// PolicyViolation: refused by a receiving-site policy.
	PolicyViolation Reason = "policyviolation"
	// SecurityError: a security requirement failed (5.7.0, 5.7.1 auth).
	SecurityError Reason = "securityerror"
	// AuthFailure: SPF, DKIM or DMARC failed (5.7.23 to 5.7.26).
	AuthFailure Reason = "authfailure"
	// Rejected: the envelope sender was refused (5.1.7, 5.1.8).
	Rejected Reason = "rejected"
	// ContentError: the message's format or headers were refused (5.6.x).
	ContentError Reason = "contenterror"
	// NoRelaying: the receiver does not relay for this domain (5.7.1 relay).
	NoRelaying Reason = "norelaying"
	// NotCompliantRFC: the message breaks an RFC (duplicate headers, ...).
	NotCompliantRFC Reason = "notcompliantrfc"

	// Undefined: a failure whose cause the text does not tell.
	Undefined Reason = "undefined"
)

// Reasons lists every Reason, hard ones first, for documentation and
// validation.
var Reasons = []Reason{
	UserUnknown, HostUnknown, HasMoved, NotAccept,
	MailboxFull, ExceedLimit, MesgTooBig, Expired, Suspend, SystemFull, SystemError, NetworkError,
	TooManyConn, Speeding, MailerError, OnHold, SyntaxError,
	Blocked, BadReputation, RequirePTR, Filtered, SpamDetected, VirusDetected, PolicyViolation,
	SecurityError, AuthFailure, Rejected, ContentError, NoRelaying, NotCompliantRFC,
	Undefined,
}

// Valid reports whether r is one of Reasons.
func (r Reason) Valid() bool {
	for _, x := range Reasons {
		if r == x {
			return true
		}
	}
	return false
}

// Dead reports whether r says the address itself is dead: user unknown,
// host unknown, has moved, not accepting mail. A permanent failure for a
// dead reason is a hard bounce.
func (r Reason) Dead() bool {
	switch r {
	case UserUnknown, HostUnknown, HasMoved, NotAccept:
		return true
	}
	return false
}

// DeadLooking reports whether a soft bounce for r, repeated over several
// messages and days, suggests an abandoned mailbox: mailbox full, expired
// (the host never answers), suspended, not accepting with a temporary
// code. The ledger escalates such repeats to a suppression
// (soft_bounce_limit); it never escalates the other soft reasons.
func (r Reason) DeadLooking() bool {
	switch r {
	case MailboxFull, Expired, Suspend, NotAccept, ExceedLimit:
		return true
	}
	return false
}

// Policy reports whether r is a policy or content rejection: the
// receiver refused the sender, its IP or the message, not the address.
// Such failures never suppress the recipient; they are counted per
// receiving domain instead.
func (r Reason) Policy() bool {
	switch r {
	case Blocked, BadReputation, RequirePTR, Filtered, SpamDetected, VirusDetected, PolicyViolation,
		SecurityError, AuthFailure, Rejected, ContentError, NoRelaying, NotCompliantRFC, Speeding:
		return true
	}
	return false
}

// Temporary reports whether r is a transient condition of the receiver
// or the network (soft, and not a policy rejection).
func (r Reason) Temporary() bool {
	switch r {
	case MailboxFull, ExceedLimit, MesgTooBig, Expired, Suspend, SystemFull, SystemError, NetworkError,
		TooManyConn, MailerError, OnHold, SyntaxError:
		return true
	}
	return false
}

// classOf is the class of a failure for reason r whose status or reply
// class is cls (4 or 5; 0 when unknown): Hard only for the dead reasons,
// and for NotAccept only when permanent.
func classOf(r Reason, cls int) Class {
	switch {
	case r == "":
		return ""
	case r == NotAccept:
		if cls == 4 {
			return Soft
		}
		return Hard
	case r.Dead():
		return Hard
	}
	return Soft
}
