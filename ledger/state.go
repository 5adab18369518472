package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// RecordState is Record plus one named state value, in one transaction:
// the mail-log follower stores its events and the position after them
// together, so a restart neither loses nor repeats an event.
func (s *SQLite) RecordState(ctx context.Context, events []*Event, name, value string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	defer tx.Rollback()
	if err := s.recordTx(ctx, tx, nil, events); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO state (name, value) VALUES (?, ?)
		ON CONFLICT(name) DO UPDATE SET value = excluded.value`, name, value); err != nil {
		return fmt.Errorf("ledger: state %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	return nil
}

// State returns a named state value, or ErrNotFound.
func (s *SQLite) State(ctx context.Context, name string) (string, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM state WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("ledger: %w", err)
	}
	return v, nil
}

// Inbound is one piece of returned mail as leadpushctl ingest received it.
type Inbound struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	Kind       string    `json:"kind"` // bounce, complaint, unsubscribe, autoreply, unknown
	Reason     string    `json:"reason"`
	EnvelopeTo string    `json:"envelope_to"`
	MessageID  string    `json:"message_id"` // the matched message, if any
	Events     int       `json:"events"`     // events recorded from it
	Raw        []byte    `json:"-"`
}

// RecordInbound stores returned mail with the events it gave, in one
// transaction.
func (s *SQLite) RecordInbound(ctx context.Context, in *Inbound, events []*Event) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	defer tx.Rollback()
	if err := s.recordTx(ctx, tx, nil, events); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO inbound (received_at, kind, reason, envelope_to, message_id, events, raw)
		VALUES (?,?,?,?,?,?,?)`, in.ReceivedAt.UnixNano(), in.Kind, in.Reason, in.EnvelopeTo, in.MessageID, in.Events, in.Raw)
	if err != nil {
		return fmt.Errorf("ledger: inbound: %w", err)
	}
	in.ID, _ = res.LastInsertId()
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	return nil
}

// InboundList lists stored returned mail, newest first, optionally of one kind.
func (s *SQLite) InboundList(ctx context.Context, kind string, limit int) ([]*Inbound, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.inbound(ctx, `SELECT id, received_at, kind, reason, envelope_to, message_id, events, raw
		FROM inbound WHERE ? = '' OR kind = ? ORDER BY id DESC LIMIT ?`, kind, kind, limit)
}

func (s *SQLite) inbound(ctx context.Context, q string, args ...any) ([]*Inbound, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []*Inbound
	for rows.Next() {
		var in Inbound
		var t int64
		if err := rows.Scan(&in.ID, &t, &in.Kind, &in.Reason, &in.EnvelopeTo, &in.MessageID, &in.Events, &in.Raw); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		in.ReceivedAt = time.Unix(0, t)
		out = append(out, &in)
	}
	return out, rows.Err()
}

// InboundOf implements InboundStore.
func (s *SQLite) InboundOf(ctx context.Context, messageID string) ([]*Inbound, error) {
	return s.inbound(ctx, `SELECT id, received_at, kind, reason, envelope_to, message_id, events, raw
		FROM inbound WHERE message_id = ? ORDER BY id DESC LIMIT 100`, messageID)
}
