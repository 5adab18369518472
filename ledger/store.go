package ledger

import (
	"context"
	"time"
)

// The contract. Every program reaches the ledger through these interfaces
// (consumers declare the smaller ones they need); [SQLite] implements them
// all, and package ledgertest holds the tests any implementation must pass.

// Recorder writes messages and events.
type Recorder interface {
	// Record writes messages and events in one transaction. A message or
	// event whose id is already recorded is skipped, and so is an event
	// whose DedupKey is (replays are idempotent). Open and click events
	// bump their message's counters, and the events of Suppresses put
	// their recipient on the suppression list, in the same transaction.
	// Inserted events get their Seq, MsgSeq, Opens and Clicks set; those
	// of an event skipped get zero MsgSeq, Opens and Clicks.
	Record(ctx context.Context, msgs []*Message, events []*Event) error
}

// EventReader reads messages and events.
//
// Ordering guarantee: every recorded event gets a Seq greater than that
// of every event committed before its transaction, and an event becomes
// visible to readers only once every event with a lower Seq is visible
// or will never exist. A reader that has seen every event up to Seq N and
// then asks for those after N (Filter.AfterSeq) therefore never misses
// one: webhook cursors, pending batches and replays rely on it. Seq may
// have gaps. SQLite gives this because one writer at a time assigns Seq
// inside its write transaction; a store with concurrent writers (such as
// PostgreSQL with its sequences) must serialise the transactions that
// insert events, or read only below a visibility horizon.
type EventReader interface {
	Message(ctx context.Context, id string) (*Message, error)
	// Event returns one event by its id.
	Event(ctx context.Context, id string) (*Event, error)
	// MessagesByID returns the recorded messages among ids, by id, in
	// as few queries as the store can (one for up to 500 ids in SQLite):
	// the webhook notifier needs every message of a batch, and a batch's
	// events are often on as many messages. Ids not recorded (and "")
	// are absent from the map; repeated ids are looked up once.
	MessagesByID(ctx context.Context, ids []string) (map[string]*Message, error)
	// MessageByQueueID returns the newest message with that queue id.
	MessageByQueueID(ctx context.Context, queueID string) (*Message, error)
	// MessageByHeaderID returns the newest message with that Message-ID header.
	MessageByHeaderID(ctx context.Context, messageID string) (*Message, error)
	// Messages returns messages newest first.
	Messages(ctx context.Context, f Filter) ([]*Message, error)
	// Events returns events in Seq order, the first Limit of them; with
	// Filter.Newest, the last Limit, newest first.
	Events(ctx context.Context, f Filter) ([]*Event, error)
	// LastSeq is the highest Seq recorded, 0 for none.
	LastSeq(ctx context.Context) (int64, error)
	// CountEvents counts the events of the given types with after < Seq
	// <= upto; upto < 0 means no upper bound.
	CountEvents(ctx context.Context, after, upto int64, types []EventType) (int64, error)
}

// Policy is the store's part of the rule of what suppresses what that
// depends on configuration: hard bounces, unsubscribes and complaints
// always suppress (Suppresses); soft bounces marked Escalates suppress an
// address, with reason soft_bounce_limit, once they came for the same
// bounce reason from SoftBounceLimit different messages within
// SoftBounceWindow (Mandrill's
// rejection blacklist does the same). A zero limit turns that off.
//
// An unsubscribe suppresses its recipient in the scope of the stream its
// message was sent in: UnsubscribeScopes maps a stream's name to the scope
// written (ScopeAll, ScopeBroadcast or a stream's name). A stream not in
// the map (removed from the configuration) gets an entry for itself; a
// message without a stream (recorded before streams, or unknown) one for
// every stream. Hard bounces, complaints and soft-bounce limits always
// suppress for every stream.
type Policy struct {
	SoftBounceLimit   int
	SoftBounceWindow  time.Duration
	UnsubscribeScopes map[string]string
}

// UnsubscribeScope is the scope an unsubscribe from a message of stream
// writes, by the rule of Policy.
func (p Policy) UnsubscribeScope(stream string) string {
	if stream == "" {
		return ScopeAll
	}
	if sc, ok := p.UnsubscribeScopes[stream]; ok {
		return sc
	}
	return stream
}

// Defaults of Policy.
const (
	DefaultSoftBounceLimit  = 5
	DefaultSoftBounceWindow = 14 * 24 * time.Hour
)

// SuppressionStore is the suppression list.
type SuppressionStore interface {
	// SetPolicy sets the soft-bounce rule for what this handle records;
	// until it is called, the defaults apply.
	SetPolicy(p Policy)
	// SoftBounces returns the soft bounces counted toward an address's
	// limit within the policy's window, newest first.
	SoftBounces(ctx context.Context, address string, now time.Time) ([]SoftBounceCount, error)
	// Suppress adds or refreshes an entry, one per address and scope
	// (sp.Stream): a later write's reason, event and expiry win, the first
	// creation time stays.
	Suppress(ctx context.Context, sp Suppression) error
	// Unsuppress removes the entries of an address in the given scopes,
	// or in every scope when none is given; it reports whether one was
	// listed.
	Unsuppress(ctx context.Context, address string, scopes ...string) (bool, error)
	// Suppressed returns a live entry of an address in any scope (the one
	// for every stream first), or ErrNotFound.
	Suppressed(ctx context.Context, address string, now time.Time) (*Suppression, error)
	// SuppressionsOf returns every live entry of an address, the one for
	// every stream first; none is an empty list, not an error. Callers
	// pick what applies to a stream with Suppression.Applies.
	SuppressionsOf(ctx context.Context, address string, now time.Time) ([]*Suppression, error)
	// Suppressions lists every entry, expired ones included, by address
	// and scope.
	Suppressions(ctx context.Context) ([]*Suppression, error)
	// WrittenSuppressions calls fn with the address and write time of
	// every entry written at or after since (expired or not), or, when
	// since is zero, of every entry live at now. The write time is the
	// store's clock when the entry was written, not its event's time.
	WrittenSuppressions(ctx context.Context, since, now time.Time, fn func(address string, written time.Time)) error
}

// SoftBounceCount is one message's soft bounce counted toward the
// soft-bounce limit.
type SoftBounceCount struct {
	MessageID    string    `json:"message_id"`
	EventID      string    `json:"event_id"`
	Time         time.Time `json:"time"`
	BounceReason string    `json:"bounce_reason"`
}

// StateStore keeps named values committed with events (the mail-log
// follower's position).
type StateStore interface {
	// RecordState is Record of events plus one named value, in one
	// transaction.
	RecordState(ctx context.Context, events []*Event, name, value string) error
	// State returns a named value, or ErrNotFound.
	State(ctx context.Context, name string) (string, error)
}

// InboundStore keeps returned mail as leadpushctl ingest received it.
type InboundStore interface {
	// RecordInbound stores returned mail with the events it gave, in one
	// transaction, and sets in.ID.
	RecordInbound(ctx context.Context, in *Inbound, events []*Event) error
	// InboundList lists stored returned mail, newest first, optionally of
	// one kind; limit <= 0 means 100.
	InboundList(ctx context.Context, kind string, limit int) ([]*Inbound, error)
	// InboundOf lists the returned mail matched to a message, newest first.
	InboundOf(ctx context.Context, messageID string) ([]*Inbound, error)
}

// WebhookStore keeps each webhook endpoint's delivery state and history.
// Endpoints are named; a name not yet ensured is ErrNotFound.
type WebhookStore interface {
	// EnsureEndpoints creates the state of new endpoints: a new endpoint's
	// cursor starts before the first event at or after since (after the
	// last event if there is none), so it neither floods its receiver
	// with the ledger's past nor misses what was recorded before it first
	// ran. Existing endpoints are left as they are.
	EnsureEndpoints(ctx context.Context, names []string, since time.Time) error
	// Endpoint returns an endpoint's state.
	Endpoint(ctx context.Context, name string) (EndpointState, error)
	// CommitDelivery stores a worker's outcome and its history, unless the
	// endpoint's generation is no longer gen (a replay in between voids
	// it): then it changes nothing and reports false. A d.Request becomes
	// the endpoint's pending request (replacing any other); a commit with
	// no pending batch (d.PendingLast 0) drops the stored one.
	CommitDelivery(ctx context.Context, name string, gen int64, d Delivery) (bool, error)
	// SetEndpointVerification stores the outcome of an endpoint's
	// verification.
	SetEndpointVerification(ctx context.Context, name string, v Verification) error
	// PendingRequest returns the stored request an endpoint is retrying
	// (EndpointState.PendingID), or ErrNotFound.
	PendingRequest(ctx context.Context, name string) (*Request, error)
	// SetEndpointPaused pauses or resumes an endpoint; resuming also
	// cancels the wait for a pending retry.
	SetEndpointPaused(ctx context.Context, name string, paused bool) error
	// ReplayEndpoint moves the cursor to cursor, drops any pending retry
	// (and its stored request) and bumps the generation.
	ReplayEndpoint(ctx context.Context, name string, cursor int64) error
	// History returns an endpoint's finished attempts, newest first.
	History(ctx context.Context, name string, limit int) ([]Attempt, error)
	// PruneHistory deletes attempts older than before, dead letters only
	// when older than deadBefore; it returns how many went.
	PruneHistory(ctx context.Context, before, deadBefore time.Time) (int64, error)
}

// RetentionStore keeps the ledger's size and its personal data bounded.
type RetentionStore interface {
	// Prune deletes, in one short transaction, up to a few hundred of the
	// records older than their horizon in r: messages with every event
	// about them, events of no recorded message, returned mail. Callers
	// repeat it until it deletes fewer than that. Suppressions are never
	// pruned. Freed space is reused by later writes.
	Prune(ctx context.Context, r Retention, now time.Time) (Pruned, error)
	// Forget erases a person: the messages sent to them alone, with every
	// event about those; the address taken out of the messages sent to
	// others too; their events (with tracking IP and user agent); the
	// returned mail naming them. A suppression entry stays.
	Forget(ctx context.Context, address string) (ForgetReport, error)
	// Backup writes a consistent copy of the live ledger to a new file.
	Backup(ctx context.Context, path string) error
}

// Store is the whole ledger: what leadpushd and leadpushctl open.
type Store interface {
	Recorder
	EventReader
	SuppressionStore
	StateStore
	InboundStore
	WebhookStore
	RetentionStore
	Close() error
}
