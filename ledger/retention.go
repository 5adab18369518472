package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// Retention says how long records are kept. A zero duration keeps them
// forever. Suppressions are never pruned by it (they expire by their own
// rule), and webhook attempt history is pruned by the notifier
// (webhooks.history).
type Retention struct {
	Messages time.Duration // messages, with every event about them, from the message's creation
	Inbound  time.Duration // returned mail as ingest received it (personal data: raw bounces)
}

// Pruned counts what one pruning pass deleted.
type Pruned struct {
	Messages, Events, Inbound int64
}

// ForgetReport counts what Forget erased for one address.
type ForgetReport struct {
	Address         string `json:"address"`
	MessagesDeleted int64  `json:"messages_deleted"` // messages to that address alone, with all their events
	MessagesEdited  int64  `json:"messages_edited"`  // messages to several recipients, the address taken out
	Events          int64  `json:"events_deleted"`   // events of that recipient (tracking IP and user agent with them)
	Inbound         int64  `json:"inbound_deleted"`  // returned mail naming the address
	// WebhookRequests are pending webhook requests (failed, waiting for a
	// retry) that held the person's events: dropped, so the notifier cuts
	// their range again without those events, under a new webhook-id.
	WebhookRequests int64 `json:"webhook_requests_dropped"`
	Suppressed      bool  `json:"suppressed"` // the suppression entry stays, so mail to the address stays refused
}

// pruneBatch is how many messages (or inbound rows, or orphan events) one
// pruning transaction deletes: small enough that the milter's and the
// tracker's writers wait for it a few milliseconds at most.
const pruneBatch = 500

// pruneEvents is how many events of old messages one pruning transaction
// deletes at most (about 0.25 s of the write lock on 2 busy cores).
const pruneEvents = 2000

// Prune implements RetentionStore: one transaction deleting up to
// pruneBatch records of each kind older than their horizon. Call it
// until it returns zero counts.
func (s *SQLite) Prune(ctx context.Context, r Retention, now time.Time) (Pruned, error) {
	var p Pruned
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return p, fmt.Errorf("ledger: prune: %w", err)
	}
	defer tx.Rollback()
	if r.Messages > 0 {
		before := now.Add(-r.Messages).UnixNano()
		rows, err := tx.QueryContext(ctx, `SELECT id FROM messages WHERE created_at < ? ORDER BY created_at LIMIT ?`, before, pruneBatch)
		if err != nil {
			return p, fmt.Errorf("ledger: prune: %w", err)
		}
		var ids []any
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return p, fmt.Errorf("ledger: prune: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) > 0 {
			// Their events, at most pruneEvents of them: a message has a
			// hundred events or more on a real ledger (opens, clicks), and
			// deleting one costs a random page of the table and of each
			// index; 500 messages' 50 000 events held the write lock for
			// 6-11 s on a ledger of 10 M events (bench TestTrackerScale).
			// The messages go once their events are gone, in this
			// transaction or a later one.
			in := strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")
			res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE message_id IN (`+in+`) LIMIT ?)`,
				append(ids, pruneEvents)...)
			if err != nil {
				return p, fmt.Errorf("ledger: prune events: %w", err)
			}
			p.Events, _ = res.RowsAffected()
			if p.Events < pruneEvents {
				res, err = tx.ExecContext(ctx, `DELETE FROM messages WHERE id IN (`+in+`)`, ids...)
				if err != nil {
					return p, fmt.Errorf("ledger: prune messages: %w", err)
				}
				p.Messages, _ = res.RowsAffected()
			}
		}
		// Events of no recorded message (a hit for a message pruned or
		// never recorded) go by their own time, once the old messages are
		// gone: until then the scan of old events finds only events of
		// messages still to prune (on 10 M events it read a million of
		// them, 3 s, to find none).
		if len(ids) < pruneBatch && p.Events < pruneEvents {
			res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e
				LEFT JOIN messages m ON m.id = e.message_id WHERE e.time < ? AND m.id IS NULL LIMIT ?)`, before, pruneBatch)
			if err != nil {
				return p, fmt.Errorf("ledger: prune events: %w", err)
			}
			n, _ := res.RowsAffected()
			p.Events += n
		}
	}
	if r.Inbound > 0 {
		res, err := tx.ExecContext(ctx, `DELETE FROM inbound WHERE id IN (SELECT id FROM inbound WHERE received_at < ?
			ORDER BY received_at LIMIT ?)`, now.Add(-r.Inbound).UnixNano(), pruneBatch)
		if err != nil {
			return p, fmt.Errorf("ledger: prune inbound: %w", err)
		}
		p.Inbound, _ = res.RowsAffected()
	}
	// Soft bounces older than the policy's window count no more.
	if _, err := tx.ExecContext(ctx, `DELETE FROM soft_bounces WHERE (address, message_id) IN
		(SELECT address, message_id FROM soft_bounces WHERE time < ? LIMIT ?)`,
		now.Add(-s.currentPolicy().SoftBounceWindow).UnixNano(), pruneBatch); err != nil {
		return p, fmt.Errorf("ledger: prune soft bounces: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return p, fmt.Errorf("ledger: prune: %w", err)
	}
	return p, nil
}

// Forget implements RetentionStore.
func (s *SQLite) Forget(ctx context.Context, address string) (ForgetReport, error) {
	addr := NormalizeAddress(address)
	rep := ForgetReport{Address: addr}
	if addr == "" || !strings.Contains(addr, "@") {
		return rep, fmt.Errorf("ledger: forget: %q is not an address", address)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	defer tx.Rollback()
	// Messages: the recipients list is JSON; the substring match finds
	// the candidates, the decoded list decides.
	rows, err := tx.QueryContext(ctx, `SELECT id, recipients, to_hdr FROM messages WHERE instr(lower(recipients), ?) > 0
		OR instr(lower(to_hdr), ?) > 0`, addr, addr)
	if err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	type cand struct {
		id    string
		rcpts []string
		to    string
	}
	var cands []cand
	for rows.Next() {
		var c cand
		var rc string
		if err := rows.Scan(&c.id, &rc, &c.to); err != nil {
			rows.Close()
			return rep, fmt.Errorf("ledger: forget: %w", err)
		}
		if err := json.Unmarshal([]byte(rc), &c.rcpts); err != nil {
			rows.Close()
			return rep, fmt.Errorf("ledger: forget: message %s: %w", c.id, err)
		}
		cands = append(cands, c)
	}
	rows.Close()
	// The ids of the events erased, for the pending webhook requests.
	erased := map[string]bool{}
	collect := func(q string, args ...any) error {
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("ledger: forget: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("ledger: forget: %w", err)
			}
			erased[id] = true
		}
		return rows.Err()
	}
	for _, c := range cands {
		others := slices.DeleteFunc(slices.Clone(c.rcpts), func(r string) bool { return NormalizeAddress(r) == addr })
		if len(others) == 0 {
			// The person's message alone: it goes with every event about it.
			if err := collect(`SELECT id FROM events WHERE message_id = ?`, c.id); err != nil {
				return rep, err
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE message_id = ?`, c.id)
			if err != nil {
				return rep, fmt.Errorf("ledger: forget: %w", err)
			}
			n, _ := res.RowsAffected()
			rep.Events += n
			if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id = ?`, c.id); err != nil {
				return rep, fmt.Errorf("ledger: forget: %w", err)
			}
			rep.MessagesDeleted++
			continue
		}
		to := c.to
		if strings.Contains(strings.ToLower(to), addr) {
			to = "" // the header as sent named the person; it cannot be edited safely
		}
		if _, err := tx.ExecContext(ctx, `UPDATE messages SET recipients = ?, to_hdr = ? WHERE id = ?`, mustJSON(others), to, c.id); err != nil {
			return rep, fmt.Errorf("ledger: forget: %w", err)
		}
		rep.MessagesEdited++
	}
	// Events of the recipient on messages kept (or on none).
	if err := collect(`SELECT id FROM events WHERE lower(recipient) = ?`, addr); err != nil {
		return rep, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE lower(recipient) = ?`, addr)
	if err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	n, _ := res.RowsAffected()
	rep.Events += n
	// Erasure wins over a request's immutability: a pending request that
	// holds an erased event goes, and the range is sent again without it.
	if len(erased) > 0 {
		rows, err := tx.QueryContext(ctx, `SELECT endpoint, webhook_id, event_ids FROM webhook_requests`)
		if err != nil {
			return rep, fmt.Errorf("ledger: forget: %w", err)
		}
		type key struct{ endpoint, id string }
		var drop []key
		for rows.Next() {
			var k key
			var ids string
			if err := rows.Scan(&k.endpoint, &k.id, &ids); err != nil {
				rows.Close()
				return rep, fmt.Errorf("ledger: forget: %w", err)
			}
			var list []string
			json.Unmarshal([]byte(ids), &list)
			if slices.ContainsFunc(list, func(id string) bool { return erased[id] }) {
				drop = append(drop, k)
			}
		}
		rows.Close()
		for _, k := range drop {
			if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_requests WHERE endpoint = ? AND webhook_id = ?`, k.endpoint, k.id); err != nil {
				return rep, fmt.Errorf("ledger: forget: %w", err)
			}
			rep.WebhookRequests++
		}
	}
	// The soft bounces counted toward the person's limit name them too.
	if _, err := tx.ExecContext(ctx, `DELETE FROM soft_bounces WHERE address = ?`, addr); err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	res, err = tx.ExecContext(ctx, `DELETE FROM inbound WHERE instr(lower(CAST(raw AS TEXT)), ?) > 0 OR lower(envelope_to) = ?`, addr, addr)
	if err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	rep.Inbound, _ = res.RowsAffected()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM suppressions WHERE address = ?`, addr).Scan(&one)
	rep.Suppressed = err == nil
	if err := tx.Commit(); err != nil {
		return rep, fmt.Errorf("ledger: forget: %w", err)
	}
	return rep, nil
}

// Backup implements RetentionStore: VACUUM INTO, a consistent copy of the
// live database as of one read transaction, while writers go on.
func (s *SQLite) Backup(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("ledger: backup: %s exists", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ledger: backup: %w", err)
	}
	if _, err := s.r.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("ledger: backup to %s: %w", path, err)
	}
	return nil
}

// RunRetention prunes every interval (and once shortly after it starts)
// until ctx ends, in small transactions with a pause between them so that
// writers are never held up for long. onPrune, if not nil, receives each
// pass's counts.
func RunRetention(ctx context.Context, s RetentionStore, r Retention, interval time.Duration, log *slog.Logger, onPrune func(Pruned)) {
	if r.Messages <= 0 && r.Inbound <= 0 {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	wait := min(interval, time.Minute)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = interval
		var total Pruned
		for ctx.Err() == nil {
			t0 := time.Now()
			p, err := s.Prune(ctx, r, time.Now())
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("retention: pruning failed; will retry", "err", err)
				}
				break
			}
			if onPrune != nil {
				onPrune(p)
			}
			total.Messages, total.Events, total.Inbound = total.Messages+p.Messages, total.Events+p.Events, total.Inbound+p.Inbound
			if p.Messages < pruneBatch && p.Events < pruneBatch && p.Inbound < pruneBatch {
				break
			}
			// Let the other writers in between two transactions, and
			// take at most half the write lock's time while catching up.
			select {
			case <-ctx.Done():
			case <-time.After(max(20*time.Millisecond, time.Since(t0))):
			}
		}
		if total != (Pruned{}) {
			log.Info("retention: pruned", "messages", total.Messages, "events", total.Events, "inbound", total.Inbound)
		}
	}
}
