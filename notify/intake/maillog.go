// Package intake turns what happens to a message after Postfix accepted it
// into ledger events: delivery status from the mail log (delivered,
// soft_bounce, hard_bounce) and returned mail (DSNs, ARF complaints,
// unsubscribe mail) that leadpushctl ingest reads from the pipe transport.
//
// A bounce seen both in the log and as a DSN is one event: both record a
// hard bounce under the dedup key "hard:MESSAGE:RECIPIENT".
package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/bounce"
	"github.com/leadpush/leadpush/notify/maillog"
)

// LogStore is what the log consumer needs of the ledger.
type LogStore interface {
	MessageByQueueID(ctx context.Context, queueID string) (*ledger.Message, error)
	RecordState(ctx context.Context, events []*ledger.Event, name, value string) error
	State(ctx context.Context, name string) (string, error)
}

// DefaultMaxAge is how long, by default, a delivery line waits for its
// message to be recorded. The milter records off the SMTP path through a
// batching writer that keeps records in memory and then in
// store.spool_dir while the ledger cannot be written, and writes them
// when it can: a delivery line must wait as long as such an outage may
// last, or its event (and, for a hard bounce, the suppression) is lost.
const DefaultMaxAge = 24 * time.Hour

// maxPending bounds the lines kept waiting; past it the oldest are
// dropped (counted and logged).
const maxPending = 10000

// maxUntrusted bounds the queue ids remembered as never recorded.
const maxUntrusted = 100000

// LogConsumer follows the mail log and records delivery status of the
// queue ids the milter recorded.
//
// Guarantee: the position saved in the ledger never passes a delivery
// line whose event is not yet written. A line whose queue id is not (yet)
// in the ledger is pending: it is saved with the position, in the same
// transaction as the events, and looked up again (at once after a
// restart, then less and less often as it ages) until its message
// appears or MaxAge passes. Lines of queue ids that will never be
// recorded (mail from clients outside Trusted and not SASL-authenticated,
// and Postfix's own notifications, as the log's client= and bounce lines
// say) are dropped without a lookup.
type LogConsumer struct {
	Store  LogStore
	Path   string
	Format maillog.Format // the MTA's log format; zero: Postfix
	Poll   time.Duration  // default 250ms
	Logger *slog.Logger
	// MaxAge is how long a delivery line whose message is not (yet) in
	// the ledger keeps waiting. Zero: DefaultMaxAge.
	MaxAge time.Duration
	// Trusted are the milter's trusted networks (milter.trusted_networks).
	// When set, a queue id whose smtpd client is outside them and did not
	// authenticate is remembered as not ours. Nil: every unknown line
	// waits MaxAge.
	Trusted []netip.Prefix
	Now     func() time.Time

	follower  atomic.Pointer[maillog.Follower]
	pending   []maillog.Entry // saved with pos
	pos       maillog.Position
	retry     map[string]time.Time // queue id -> next lookup of its pending lines
	untrusted map[string]struct{}
	order     []string // untrusted, oldest first, to bound it
	cache     qidCache
	lastTime  atomic.Int64 // log time of the last delivery line handled (unix ns)
	nPending  atomic.Int64
	retryCap  time.Duration // longest pause between lookups; tests shorten it

	// Lines counts delivery lines read; Events, events recorded; Unknown,
	// lines of mail that is not ours (untrusted, Postfix's own, or older
	// than MaxAge when read, with no message); Dropped, pending lines given
	// up after MaxAge or past maxPending; Lookups, ledger lookups by queue
	// id.
	Lines, Events, Unknown, Dropped, Lookups atomic.Int64
}

// stateName is where the position in Path is kept.
func (c *LogConsumer) stateName() string { return "maillog:" + c.Path }

// savedState is the stored value: the position and the lines before it
// still waiting for their message. It reads a bare Position (older
// programs) as one with nothing pending.
type savedState struct {
	maillog.Position
	Pending []maillog.Entry `json:"pending,omitempty"`
}

// Run follows the log until ctx ends, resuming where the last run stopped.
func (c *LogConsumer) Run(ctx context.Context) error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.retry = map[string]time.Time{}
	c.untrusted = map[string]struct{}{}
	var st savedState
	if v, err := c.Store.State(ctx, c.stateName()); err == nil {
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			c.Logger.Warn("mail log position unreadable; starting at the beginning", "err", err)
			st = savedState{}
		}
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	c.pos, c.pending = st.Position, st.Pending
	c.nPending.Store(int64(len(c.pending)))
	// Idle: a status line read before the milter committed its message
	// is retried at the next poll, not only when the log grows again.
	f := &maillog.Follower{Path: c.Path, Poll: c.Poll, Logger: c.Logger, Idle: true, Format: c.Format}
	c.follower.Store(f)
	if c.Trusted != nil {
		f.Origin = c.origin
	}
	c.Logger.Info("following mail log", "path", c.Path, "offset", st.Offset, "pending", len(c.pending))
	return f.Run(ctx, st.Position, func(entries []maillog.Entry, pos maillog.Position) error {
		return c.handle(ctx, entries, pos)
	})
}

// Stats is the consumer's state for metrics.
type Stats struct {
	Readable    bool
	BehindBytes int64
	// BehindSeconds is how far the log time of the last line handled
	// lies behind now while there is more to read; 0 when caught up.
	BehindSeconds float64
	Pending       int
}

// Stats reports the follower's state; it is safe to call concurrently.
func (c *LogConsumer) Stats() Stats {
	st := Stats{Readable: true, Pending: int(c.nPending.Load())}
	if f := c.follower.Load(); f != nil {
		st.Readable = f.Readable()
		st.BehindBytes = f.Behind()
	}
	if t := c.lastTime.Load(); st.BehindBytes > 0 && t != 0 {
		st.BehindSeconds = max(time.Since(time.Unix(0, t)).Seconds(), 0)
	}
	return st
}

// origin remembers queue ids the milter will never record.
func (c *LogConsumer) origin(o maillog.Origin) {
	ours := o.Local || o.SASL
	if o.Client.IsValid() {
		for _, p := range c.Trusted {
			if p.Contains(o.Client) {
				ours = true
			}
		}
	}
	if o.Internal {
		ours = false
	}
	if ours {
		delete(c.untrusted, o.QueueID) // a short queue id used again
		return
	}
	if _, ok := c.untrusted[o.QueueID]; ok {
		return
	}
	c.untrusted[o.QueueID] = struct{}{}
	c.order = append(c.order, o.QueueID)
	if len(c.order) > maxUntrusted {
		delete(c.untrusted, c.order[0])
		c.order = c.order[1:]
	}
}

// retryAfter is the pause before looking up again a line of age age: at
// each poll while it is fresh, then a quarter of its age, at most 5
// minutes: a line that waits an hour costs about 45 lookups, one that
// waits a day about 320 (a line of mail never recorded and not known as
// untrusted; those cost none).
func (c *LogConsumer) retryAfter(age time.Duration) time.Duration {
	poll := c.Poll
	if poll <= 0 {
		poll = maillog.DefaultPoll
	}
	limit := c.retryCap
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	return min(max(age/4, poll), limit)
}

func (c *LogConsumer) handle(ctx context.Context, entries []maillog.Entry, pos maillog.Position) error {
	now := c.Now()
	changed := pos != c.pos
	var events []*ledger.Event
	keep := make([]maillog.Entry, 0, len(c.pending))
	type found struct {
		m   *ledger.Message
		err error
	}
	looked := map[string]found{} // one lookup per queue id and call
	dropped, unknown, lines := 0, 0, 0
	var lastTime time.Time
	consider := func(e maillog.Entry, old bool) error {
		if e.Status == "" || e.QueueID == "" {
			return nil
		}
		if !old {
			lines++
			if e.Time.After(lastTime) {
				lastTime = e.Time
			}
		}
		if _, ok := c.untrusted[e.QueueID]; ok {
			unknown++
			changed = changed || old
			return nil
		}
		age := now.Sub(e.Time)
		if next, ok := c.retry[e.QueueID]; old && ok && now.Before(next) && age < c.MaxAge {
			keep = append(keep, e) // not due yet: no lookup
			return nil
		}
		r, ok := looked[e.QueueID]
		if !ok {
			c.Lookups.Add(1)
			r.m, r.err = c.lookup(ctx, e.QueueID)
			if r.err == nil && !plausible(r.m, e) {
				r.err = ledger.ErrNotFound // an older message that had the same queue id
			}
			looked[e.QueueID] = r
		}
		if errors.Is(r.err, ledger.ErrNotFound) {
			switch {
			case age < c.MaxAge:
				e.Raw = ""             // not needed to record it; keeps the saved state small
				keep = append(keep, e) // maybe not committed yet
				c.retry[e.QueueID] = now.Add(c.retryAfter(age))
				changed = changed || !old
			case old:
				dropped++ // waited MaxAge; its message never came
				changed = true
			default:
				unknown++ // already too old when read: mail from before the ledger
			}
			return nil
		}
		if r.err != nil {
			return r.err // the follower retries the same batch
		}
		changed = true
		if ev := LogEvent(e, r.m); ev != nil {
			events = append(events, ev)
		}
		return nil
	}
	for _, e := range c.pending {
		if err := consider(e, true); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := consider(e, false); err != nil {
			return err
		}
	}
	if over := len(keep) - maxPending; over > 0 {
		keep = keep[over:] // the oldest go first
		dropped += over
		changed = true
	}
	if !changed && len(events) == 0 {
		return nil // nothing to write: no empty transaction per poll
	}
	b, err := json.Marshal(savedState{Position: pos, Pending: keep})
	if err != nil {
		return err
	}
	if err := c.Store.RecordState(ctx, events, c.stateName(), string(b)); err != nil {
		c.Logger.Warn("recording delivery status failed; retrying", "err", err, "events", len(events))
		return err
	}
	if dropped > 0 {
		c.Logger.Warn("delivery lines dropped: their message was not recorded in time", "lines", dropped,
			"max_age", c.MaxAge, "max_pending", maxPending)
	}
	waiting := make(map[string]bool, len(keep))
	for _, e := range keep {
		waiting[e.QueueID] = true
	}
	for q := range c.retry {
		if !waiting[q] {
			delete(c.retry, q)
		}
	}
	c.pending, c.pos = keep, pos
	c.nPending.Store(int64(len(keep)))
	c.Lines.Add(int64(lines))
	c.Events.Add(int64(len(events)))
	c.Unknown.Add(int64(unknown))
	c.Dropped.Add(int64(dropped))
	if !lastTime.IsZero() {
		c.lastTime.Store(lastTime.UnixNano())
	}
	return nil
}

func (c *LogConsumer) lookup(ctx context.Context, qid string) (*ledger.Message, error) {
	if m := c.cache.get(qid); m != nil {
		return m, nil
	}
	m, err := c.Store.MessageByQueueID(ctx, qid)
	if err == nil {
		c.cache.put(qid, m)
	}
	return m, err
}

// maxQueueLife bounds how long after its recording a message's log lines
// may come (Postfix's maximal_queue_lifetime is 5 days by default).
const maxQueueLife = 10 * 24 * time.Hour

// plausible reports whether a log line can be about m: Postfix reuses
// short queue ids, so the line must come after the message was recorded
// (with a minute's slack for second-resolution log times) and within its
// queue lifetime.
func plausible(m *ledger.Message, e maillog.Entry) bool {
	return !e.Time.Before(m.CreatedAt.Add(-time.Minute)) && e.Time.Sub(m.CreatedAt) < maxQueueLife
}

// LogEvent maps one delivery line of a recorded message to its event, or
// nil for lines that are not delivery results.
func LogEvent(e maillog.Entry, m *ledger.Message) *ledger.Event {
	rcpt := e.OrigTo
	if rcpt == "" {
		rcpt = e.Recipient
	}
	rcpt = ledger.NormalizeAddress(rcpt)
	if rcpt == "" && len(m.Recipients) == 1 {
		// A line naming no recipient (Postfix's qmgr expiry line,
		// Sendmail's after a restart): the message's only recipient; with
		// several, the event is about the message and names nobody.
		rcpt = ledger.NormalizeAddress(m.Recipients[0])
	}
	ev := &ledger.Event{ID: ledger.NewID(), MessageID: m.ID, Recipient: rcpt, Time: e.Time,
		Detail: ledger.Detail{Status: e.DSN, Relay: e.Relay, Report: e.Reply, Source: "maillog"}}
	switch e.Status {
	case maillog.StatusSent:
		ev.Type = ledger.Delivered
		ev.DedupKey = "delivered:" + m.ID + ":" + rcpt
		return ev
	case maillog.StatusDeferred:
		// The first deferral of each recipient, and again when the reason
		// changes; Postfix repeats the same deferral on every retry.
		_, reason := bounce.Diagnose(e.Status, e.DSN, 0, e.Reply)
		ev.Type, ev.Detail.Reason, ev.Detail.BounceReason = ledger.SoftBounce, "deferred", string(reason)
		ev.DedupKey = "soft:" + m.ID + ":" + rcpt + ":" + reasonKey(e.DSN, e.Reply)
		return ev
	case maillog.StatusBounced, maillog.StatusExpired:
	default:
		return nil
	}
	// The same classifier as returned mail: a log bounce and a DSN of the
	// same recipient agree on class and reason, and share a dedup key.
	class, reason := bounce.Diagnose(e.Status, e.DSN, 0, e.Reply)
	ev.Detail.BounceReason = string(reason)
	if class == bounce.Hard {
		ev.Type, ev.DedupKey = ledger.HardBounce, HardBounceKey(m.ID, rcpt)
		return ev
	}
	ev.Type, ev.DedupKey, ev.Escalates = ledger.SoftBounce, SoftFailureKey(m.ID, rcpt), reason.DeadLooking()
	if e.Status == maillog.StatusExpired || reason == bounce.Expired {
		ev.Detail.Reason = "expired"
	}
	return ev
}

// HardBounceKey is the dedup key of a hard bounce, shared by the log and
// DSN intake.
func HardBounceKey(messageID, rcpt string) string {
	return "hard:" + messageID + ":" + ledger.NormalizeAddress(rcpt)
}

// SoftFailureKey is the dedup key of a final soft failure (the MTA gave
// up: a policy rejection, a full mailbox, an expiry), shared by the log
// and DSN intake so the two count once.
func SoftFailureKey(messageID, rcpt string) string {
	return "softfail:" + messageID + ":" + ledger.NormalizeAddress(rcpt)
}

// reasonKey identifies a deferral reason without the parts that change
// from one retry to the next (addresses, ports, numbers).
func reasonKey(dsn, reply string) string {
	norm := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, strings.ToLower(reply))
	sum := sha256.Sum256([]byte(dsn + "|" + strings.Join(strings.Fields(norm), " ")))
	return hex.EncodeToString(sum[:6])
}

// qidCache remembers the last queue ids looked up: a message's log lines
// come close together.
type qidCache struct {
	keys [256]string
	msgs [256]*ledger.Message
	next int
}

func (q *qidCache) get(qid string) *ledger.Message {
	for i, k := range q.keys {
		if k == qid {
			return q.msgs[i]
		}
	}
	return nil
}

func (q *qidCache) put(qid string, m *ledger.Message) {
	q.keys[q.next], q.msgs[q.next] = qid, m
	q.next = (q.next + 1) % len(q.keys)
}
