// Package ledger is Leadpush's record of messages, events and suppressions.
//
// Every part of the product records through it: the milter (messages,
// processed and reject events), leadpushd (tracking hits, delivery status
// from the mail log, bounces and complaints, webhook delivery state) and
// leadpushctl. The schema and all SQL live here, behind the interfaces of
// store.go ([Store] is all of them), so a PostgreSQL store can serve
// operators who run several MTA hosts behind one tracking domain. No other
// package sees SQL or a database handle. [SQLite] is the embedded store;
// ledgertest is the suite of tests every store must pass.
//
// Events are append-only and ordered by Seq; webhook delivery reads them in
// that order, so an event and its "outbox row" are one and the same row,
// written in one transaction. The ordering guarantee that makes a cursor
// over Seq safe is part of the contract: see [EventReader].
package ledger

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"time"
)

// EventType names what happened to a message. ARCHITECTURE.md maps the
// ledger's names to the seeds' names (002: sent, open, ...) and numbers
// (001: 0 Processed, ...).
type EventType string

// Event types.
const (
	Processed   EventType = "processed"
	Reject      EventType = "reject"
	Delivered   EventType = "delivered"
	SoftBounce  EventType = "soft_bounce"
	HardBounce  EventType = "hard_bounce"
	Open        EventType = "open"
	Click       EventType = "click"
	Unsubscribe EventType = "unsubscribe"
	Spam        EventType = "spam"
)

// EventTypes lists every event type in the order of seed 001's numbers.
var EventTypes = []EventType{Processed, Reject, Delivered, SoftBounce, HardBounce, Open, Click, Unsubscribe, Spam}

// ValidEventType reports whether t is one of EventTypes.
func ValidEventType(t string) bool {
	for _, e := range EventTypes {
		if string(e) == t {
			return true
		}
	}
	return false
}

// TrackingMode is what the milter rewrites in a message (seed 000's
// X-Leadpush-Tracking values).
type TrackingMode string

// Tracking modes.
const (
	TrackAll    TrackingMode = "all"
	TrackOpens  TrackingMode = "opens"
	TrackClicks TrackingMode = "clicks"
	TrackNone   TrackingMode = "none"
)

// TrackingModes lists every tracking mode.
var TrackingModes = []TrackingMode{TrackAll, TrackOpens, TrackClicks, TrackNone}

// Opens reports whether the mode tracks opens.
func (m TrackingMode) Opens() bool { return m == TrackAll || m == TrackOpens }

// Clicks reports whether the mode tracks clicks.
func (m TrackingMode) Clicks() bool { return m == TrackAll || m == TrackClicks }

// SuppressionReason is why an address is on the suppression list. The
// milter's SMTP reply and `leadpushctl suppressions add --reason` use it.
type SuppressionReason string

// Suppression reasons.
const (
	ReasonHardBounce  SuppressionReason = "hard_bounce"
	ReasonUnsubscribe SuppressionReason = "unsubscribe"
	ReasonSpam        SuppressionReason = "spam"
	ReasonManual      SuppressionReason = "manual"
	// ReasonSoftBounceLimit: the address soft-bounced for a dead-looking
	// reason (mailbox full, expired, suspended) on Policy.SoftBounceLimit
	// messages within Policy.SoftBounceWindow.
	ReasonSoftBounceLimit SuppressionReason = "soft_bounce_limit"
)

// SuppressionReasons lists every suppression reason.
var SuppressionReasons = []SuppressionReason{ReasonHardBounce, ReasonSoftBounceLimit, ReasonUnsubscribe, ReasonSpam, ReasonManual}

// ValidSuppressionReason reports whether r is one of SuppressionReasons.
func ValidSuppressionReason(r string) bool {
	for _, v := range SuppressionReasons {
		if string(v) == r {
			return true
		}
	}
	return false
}

// Suppresses is the rule of what suppresses what: the reason an event of
// type t puts its recipient on the suppression list with, and whether it
// does (seed 002: bounces and unsubscribes; a spam complaint too, as every
// ESP does). Every Store applies it in the transaction that records the
// event.
func Suppresses(t EventType) (SuppressionReason, bool) {
	switch t {
	case HardBounce:
		return ReasonHardBounce, true
	case Unsubscribe:
		return ReasonUnsubscribe, true
	case Spam:
		return ReasonSpam, true
	}
	return "", false
}

// Scopes of suppression entries (Suppression.Stream). Any other value is
// the name of the one stream the entry applies to.
const (
	// ScopeAll: the entry applies to every stream (hard bounces, spam
	// complaints, soft-bounce limits, entries made before streams).
	ScopeAll = ""
	// ScopeBroadcast: the entry applies to every stream of kind broadcast
	// (an unsubscribe from a stream whose unsubscribe_scope is broadcast).
	ScopeBroadcast = "@broadcast"
)

// Applies reports whether the entry turns away mail of the named stream,
// broadcast telling the stream's kind. An empty stream is one not known
// yet: only entries for every stream apply to it.
func (sp *Suppression) Applies(stream string, broadcast bool) bool {
	switch sp.Stream {
	case ScopeAll:
		return true
	case ScopeBroadcast:
		return broadcast
	}
	return stream != "" && sp.Stream == stream
}

// Header is one recorded custom header, kept as sent.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Message is one message the milter accepted from a trusted sender.
type Message struct {
	ID           string   `json:"id"`       // minted by the milter (token.NewMessageID)
	QueueID      string   `json:"queue_id"` // Postfix queue id (macro i)
	EnvelopeFrom string   `json:"envelope_from"`
	Recipients   []string `json:"recipients"` // envelope recipients accepted
	From         string   `json:"from"`       // From: header, decoded
	To           string   `json:"to"`         // To: header, decoded
	Subject      string   `json:"subject"`    // decoded (RFC 2047)
	MessageID    string   `json:"message_id"` // Message-ID: header
	Tag          string   `json:"tag"`
	// Stream is the message stream it was sent in (config [[stream]]);
	// "" for messages recorded before streams existed. A name no longer
	// configured is kept as it is.
	Stream     string       `json:"stream"`
	Tracking   TrackingMode `json:"tracking"`
	Headers    []Header     `json:"headers"` // custom headers (record_headers, X-Leadpush-Record), in order
	SASLUser   string       `json:"sasl_user"`
	ClientAddr string       `json:"client_addr"`
	ReturnPath string       `json:"return_path"` // the VERP envelope sender set, if any
	Links      []string     `json:"links"`       // original URLs rewritten for click tracking
	Opens      int          `json:"opens"`
	Clicks     int          `json:"clicks"`
	CreatedAt  time.Time    `json:"created_at"`
}

// Detail holds the type-specific facts of an event; empty fields are left
// out of its JSON.
type Detail struct {
	IP            string `json:"ip,omitempty"`
	UserAgent     string `json:"user_agent,omitempty"`
	UAFamily      string `json:"ua_family,omitempty"`
	UAMajor       string `json:"ua_major,omitempty"`
	URL           string `json:"url,omitempty"`
	Machine       bool   `json:"machine,omitempty"`
	MachineReason string `json:"machine_reason,omitempty"`
	Status        string `json:"status,omitempty"` // enhanced status code, e.g. 5.1.1
	Relay         string `json:"relay,omitempty"`
	Report        string `json:"delivery_report,omitempty"` // the remote reply or diagnostic
	Source        string `json:"source,omitempty"`          // milter, maillog, dsn, arf, mail, tracker, api, manual
	Reason        string `json:"reason,omitempty"`
	// BounceReason is a bounce's cause in sisimai's vocabulary
	// (userunknown, mailboxfull, blocked, ...; notify/bounce.Reason).
	BounceReason string `json:"bounce_reason,omitempty"`
}

// Event is one thing that happened to a message (or to a recipient of it).
type Event struct {
	Seq       int64     `json:"seq"` // set by the store; order of recording
	ID        string    `json:"id"`  // unguessable; webhook idempotency key
	Type      EventType `json:"type"`
	MessageID string    `json:"message_id"`
	Recipient string    `json:"recipient"`
	Time      time.Time `json:"time"`
	Detail    Detail    `json:"detail"`
	// MsgSeq numbers the events of one message, 1, 2, 3, ... in the order
	// they were recorded (Seq order), and Opens and Clicks are the
	// message's counters as of this event, this one included. The store
	// sets all three when it records the event, from the message's
	// previous event, so they hold even when the message itself is
	// recorded later (a spool replay) or elsewhere. Webhook payloads carry
	// them, so a retried or replayed request says what it said the first
	// time. Zero MsgSeq: an event without a message id, or recorded
	// before the ledger kept these.
	MsgSeq int64 `json:"msg_seq,omitempty"`
	Opens  int   `json:"opens,omitempty"`
	Clicks int   `json:"clicks,omitempty"`
	// DedupKey, when set, makes recording idempotent: a second event with
	// the same key is silently skipped (a bounce seen in the log and again
	// as a DSN, a replayed log line).
	DedupKey string `json:"-"`
	// Escalates marks a soft bounce that counts toward the soft-bounce
	// limit (Policy): a final failure for a dead-looking reason, not a
	// deferral or a delay notice.
	Escalates bool `json:"-"`
}

// Suppression is an address on the rejection blacklist.
type Suppression struct {
	Address string `json:"address"` // normalised (see NormalizeAddress)
	// Stream is the entry's scope: ScopeAll (""), ScopeBroadcast, or the
	// name of one stream. An address has at most one entry per scope.
	Stream string            `json:"stream"`
	Reason SuppressionReason `json:"reason"`
	// BounceReason is the bounce's cause when Reason is hard_bounce or
	// soft_bounce_limit (sisimai's vocabulary).
	BounceReason string     `json:"bounce_reason,omitempty"`
	EventID      string     `json:"event_id,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
}

// Filter selects messages or events. Zero fields do not filter.
type Filter struct {
	Tag       string
	Stream    string // messages of this stream
	Type      EventType
	MessageID string
	QueueID   string
	Since     time.Time
	AfterSeq  int64
	Limit     int // 0 = 1000
	// Newest makes Events return the Limit events with the highest Seq,
	// newest first (leadpushctl events), instead of the lowest in Seq
	// order.
	Newest bool
}

// ErrNotFound is returned by lookups of a single row that does not exist.
var ErrNotFound = errors.New("ledger: not found")

// NewID mints an event id: 48 bits of the time in milliseconds and 48
// random bits, as 20 characters of a base32 alphabet in ASCII order, so ids
// sort by time. Event ids are idempotency keys, not secrets; ordered ids
// append to the end of the unique index instead of splitting its pages at
// random, which was the largest cost of recording a tracking hit.
func NewID() string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic("ledger: crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return idEnc.EncodeToString(b[:])
}

var idEnc = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)
