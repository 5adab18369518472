// Package ledger is Leadpush's record of messages, events and suppressions.
//
// Every part of the product records through it: the milter (messages,
// processed and reject events), leadpushd (tracking hits, delivery status
// from the mail log, bounces and complaints) and leadpushctl. The schema and
// all SQL live here, behind the [Store] interface, so a PostgreSQL store can
// serve operators who run several MTA hosts behind one tracking domain.
//
// Events are append-only and ordered by Seq; webhook delivery reads them in
// that order, so an event and its "outbox row" are one and the same row,
// written in one transaction.
package ledger

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"time"
)

// Event types, as the ledger names them. ARCHITECTURE.md maps them to the
// seeds' names (002: sent, open, ...) and numbers (001: 0 Processed, ...).
const (
	Processed   = "processed"
	Reject      = "reject"
	Delivered   = "delivered"
	SoftBounce  = "soft_bounce"
	HardBounce  = "hard_bounce"
	Open        = "open"
	Click       = "click"
	Unsubscribe = "unsubscribe"
	Spam        = "spam"
)

// EventTypes lists every event type in the order of seed 001's numbers.
var EventTypes = []string{Processed, Reject, Delivered, SoftBounce, HardBounce, Open, Click, Unsubscribe, Spam}

// ValidEventType reports whether t is one of EventTypes.
func ValidEventType(t string) bool {
	for _, e := range EventTypes {
		if e == t {
			return true
		}
	}
	return false
}

// Tracking modes (seed 000).
const (
	TrackAll    = "all"
	TrackOpens  = "opens"
	TrackClicks = "clicks"
	TrackNone   = "none"
)

// Header is one recorded custom header, kept as sent.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Message is one message the milter accepted from a trusted sender.
type Message struct {
	ID           string    `json:"id"`       // minted by the milter (token.NewMessageID)
	QueueID      string    `json:"queue_id"` // Postfix queue id (macro i)
	EnvelopeFrom string    `json:"envelope_from"`
	Recipients   []string  `json:"recipients"` // envelope recipients accepted
	From         string    `json:"from"`       // From: header, decoded
	To           string    `json:"to"`         // To: header, decoded
	Subject      string    `json:"subject"`    // decoded (RFC 2047)
	MessageID    string    `json:"message_id"` // Message-ID: header
	Tag          string    `json:"tag"`
	Tracking     string    `json:"tracking"`
	Headers      []Header  `json:"headers"` // custom headers (record_headers, X-Leadpush-Record), in order
	SASLUser     string    `json:"sasl_user"`
	ClientAddr   string    `json:"client_addr"`
	ReturnPath   string    `json:"return_path"` // the VERP envelope sender set, if any
	Links        []string  `json:"links"`       // original URLs rewritten for click tracking
	Opens        int       `json:"opens"`
	Clicks       int       `json:"clicks"`
	CreatedAt    time.Time `json:"created_at"`
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
}

// Event is one thing that happened to a message (or to a recipient of it).
type Event struct {
	Seq       int64     `json:"seq"` // set by the store; order of recording
	ID        string    `json:"id"`  // unguessable; webhook idempotency key
	Type      string    `json:"type"`
	MessageID string    `json:"message_id"`
	Recipient string    `json:"recipient"`
	Time      time.Time `json:"time"`
	Detail    Detail    `json:"detail"`
	// DedupKey, when set, makes recording idempotent: a second event with
	// the same key is silently skipped (a bounce seen in the log and again
	// as a DSN, a replayed log line).
	DedupKey string `json:"-"`
}

// Suppression is an address on the rejection blacklist.
type Suppression struct {
	Address   string     `json:"address"` // normalised (see NormalizeAddress)
	Reason    string     `json:"reason"`  // hard_bounce, unsubscribe, spam, manual
	EventID   string     `json:"event_id,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Filter selects messages or events. Zero fields do not filter.
type Filter struct {
	Tag       string
	Type      string
	MessageID string
	QueueID   string
	Since     time.Time
	AfterSeq  int64
	Limit     int // 0 = 1000
}

// ErrNotFound is returned by lookups of a single row that does not exist.
var ErrNotFound = errors.New("ledger: not found")

// Store is what the rest of the product needs of the ledger.
type Store interface {
	// Record writes messages and events in one transaction. Events with a
	// DedupKey already recorded are skipped; open and click events bump
	// the message's counters.
	Record(ctx context.Context, msgs []*Message, events []*Event) error
	Message(ctx context.Context, id string) (*Message, error)
	// MessageByQueueID returns the newest message with that queue id.
	MessageByQueueID(ctx context.Context, queueID string) (*Message, error)
	// MessageByHeaderID returns the newest message with that Message-ID header.
	MessageByHeaderID(ctx context.Context, messageID string) (*Message, error)
	Messages(ctx context.Context, f Filter) ([]*Message, error)
	Events(ctx context.Context, f Filter) ([]*Event, error)
	Close() error
}

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
