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

// LogConsumer follows the mail log and records delivery status of the
// queue ids the milter recorded. Lines of other queue ids are passed over
// without being remembered, so memory stays bounded whatever the log holds.
type LogConsumer struct {
	Store  LogStore
	Path   string
	Format maillog.Format // the MTA's log format; zero: Postfix
	Poll   time.Duration  // default 250ms
	Logger *slog.Logger
	// Grace is how long a status line for a queue id not (yet) in the
	// ledger is retried: the milter records off the SMTP path, so a fast
	// delivery can be logged a moment before its message is committed.
	Grace time.Duration // default 30s
	Now   func() time.Time

	pending []maillog.Entry // bounded by maxPending
	cache   qidCache

	Lines, Events, Unknown, Dropped atomic.Int64
}

const maxPending = 10000

// stateName is where the position in Path is kept.
func (c *LogConsumer) stateName() string { return "maillog:" + c.Path }

// Run follows the log until ctx ends, resuming where the last run stopped.
func (c *LogConsumer) Run(ctx context.Context) error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var pos maillog.Position
	if v, err := c.Store.State(ctx, c.stateName()); err == nil {
		if err := json.Unmarshal([]byte(v), &pos); err != nil {
			c.Logger.Warn("mail log position unreadable; starting at the beginning", "err", err)
		}
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	// Idle: a status line read before the milter committed its message
	// is retried at the next poll, not only when the log grows again.
	f := &maillog.Follower{Path: c.Path, Poll: c.Poll, Logger: c.Logger, Idle: true, Format: c.Format}
	c.Logger.Info("following mail log", "path", c.Path, "offset", pos.Offset)
	return f.Run(ctx, pos, func(entries []maillog.Entry, pos maillog.Position) error {
		return c.handle(ctx, entries, pos)
	})
}

func (c *LogConsumer) handle(ctx context.Context, entries []maillog.Entry, pos maillog.Position) error {
	if len(entries) == 0 && len(c.pending) == 0 {
		return nil // a quiet poll with nothing put aside
	}
	c.Lines.Add(int64(len(entries)))
	now := c.Now()
	var events []*ledger.Event
	var keep []maillog.Entry
	for _, e := range append(c.pending, entries...) {
		if e.Status == "" || e.QueueID == "" {
			continue
		}
		m, err := c.lookup(ctx, e.QueueID)
		if err == nil && !plausible(m, e) {
			err = ledger.ErrNotFound // an older message that had the same queue id
		}
		if errors.Is(err, ledger.ErrNotFound) {
			if now.Sub(e.Time) < c.Grace && len(keep) < maxPending {
				keep = append(keep, e) // maybe not committed yet: retry with the next batch
			} else {
				c.Unknown.Add(1) // not ours (untrusted or older than the ledger)
			}
			continue
		}
		if err != nil {
			return err // the follower retries the same batch
		}
		if ev := LogEvent(e, m); ev != nil {
			events = append(events, ev)
		}
	}
	b, _ := json.Marshal(pos)
	if err := c.Store.RecordState(ctx, events, c.stateName(), string(b)); err != nil {
		c.Logger.Warn("recording delivery status failed; retrying", "err", err)
		return err
	}
	c.pending = keep
	c.Events.Add(int64(len(events)))
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
