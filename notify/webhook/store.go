package webhook

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The notifier keeps two tables in the ledger's SQLite file. The ledger's
// events table is the outbox; webhook_endpoints holds, per endpoint, the
// cursor (last seq handled) and the retry state of the batch at its head
// (the "queue row"); webhook_history holds finished attempts.
//
// Schema versions are kept in webhook_schema, apart from the ledger's
// PRAGMA user_version. Append only.
var schema = []string{
	`CREATE TABLE webhook_endpoints (
		name TEXT PRIMARY KEY,
		cursor INTEGER NOT NULL DEFAULT 0,   -- last event seq delivered or skipped
		gen INTEGER NOT NULL DEFAULT 0,      -- bumped by Replay: a commit of an older generation is void
		paused INTEGER NOT NULL DEFAULT 0,
		verified INTEGER NOT NULL DEFAULT 0,
		pending_last INTEGER NOT NULL DEFAULT 0, -- last seq of the batch being retried, 0 = none
		attempts INTEGER NOT NULL DEFAULT 0,     -- failed attempts of that batch
		first_failure INTEGER NOT NULL DEFAULT 0,
		next_attempt INTEGER NOT NULL DEFAULT 0,
		last_attempt INTEGER NOT NULL DEFAULT 0,
		last_status INTEGER NOT NULL DEFAULT 0,
		last_error TEXT NOT NULL DEFAULT '',
		dead INTEGER NOT NULL DEFAULT 0          -- events given up after MaxAge
	);
	CREATE TABLE webhook_history (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		endpoint TEXT NOT NULL,
		webhook_id TEXT NOT NULL,
		first_seq INTEGER NOT NULL,
		last_seq INTEGER NOT NULL,
		events INTEGER NOT NULL,
		time INTEGER NOT NULL,
		result TEXT NOT NULL,            -- delivered, failed, gone, dead
		status INTEGER NOT NULL DEFAULT 0, -- HTTP status, 0 = no response
		response TEXT NOT NULL DEFAULT '', -- first 512 bytes of the response body
		error TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX webhook_history_endpoint ON webhook_history(endpoint, id);
	CREATE INDEX webhook_history_time ON webhook_history(time);`,
}

// History results.
const (
	resDelivered = "delivered"
	resFailed    = "failed"
	resGone      = "gone"
	resDead      = "dead"
)

func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS webhook_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	var v int
	err = tx.QueryRowContext(ctx, `SELECT version FROM webhook_schema`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_schema (version) VALUES (0)`); err != nil {
			return fmt.Errorf("webhook: migrate: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	if v > len(schema) {
		return fmt.Errorf("webhook: schema version %d is newer than this program's %d", v, len(schema))
	}
	for i := v; i < len(schema); i++ {
		if _, err := tx.ExecContext(ctx, schema[i]); err != nil {
			return fmt.Errorf("webhook: migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_schema SET version = ?`, len(schema)); err != nil {
		return fmt.Errorf("webhook: migrate: %w", err)
	}
	return tx.Commit()
}

// state is an endpoint's row.
type state struct {
	Cursor, Gen, PendingLast          int64
	Paused, Verified                  bool
	Attempts                          int
	FirstFailure, NextAttempt, LastAt time.Time
	LastStatus                        int
	LastError                         string
	Dead                              int64
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// ensure creates the rows of new endpoints. A new endpoint's cursor starts
// before the first event younger than startAfter, so it neither floods the
// receiver with the ledger's whole past nor misses events recorded before
// the daemon first ran it.
func ensure(ctx context.Context, db *sql.DB, names []string, since time.Time) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer tx.Rollback()
	for _, name := range names {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM webhook_endpoints WHERE name = ?`, name).Scan(&one)
		if err == nil {
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("webhook: endpoint %s: %w", name, err)
		}
		var start sql.NullInt64
		// The ledger's events table, read directly: Store has no
		// "first seq at or after a time" lookup.
		if err := tx.QueryRowContext(ctx, `SELECT MIN(seq) FROM events WHERE time >= ?`, since.UnixNano()).Scan(&start); err != nil {
			return fmt.Errorf("webhook: endpoint %s: %w", name, err)
		}
		cursor := int64(0)
		if start.Valid {
			cursor = start.Int64 - 1
		} else if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&cursor); err != nil {
			return fmt.Errorf("webhook: endpoint %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (name, cursor) VALUES (?, ?)`, name, cursor); err != nil {
			return fmt.Errorf("webhook: endpoint %s: %w", name, err)
		}
	}
	return tx.Commit()
}

func loadState(ctx context.Context, db *sql.DB, name string) (state, error) {
	var s state
	var paused, verified int
	var ff, na, la int64
	err := db.QueryRowContext(ctx, `SELECT cursor, gen, pending_last, paused, verified, attempts, first_failure,
		next_attempt, last_attempt, last_status, last_error, dead FROM webhook_endpoints WHERE name = ?`, name).
		Scan(&s.Cursor, &s.Gen, &s.PendingLast, &paused, &verified, &s.Attempts, &ff, &na, &la, &s.LastStatus, &s.LastError, &s.Dead)
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("webhook: %w: %s", ErrUnknownEndpoint, name)
	}
	if err != nil {
		return s, fmt.Errorf("webhook: endpoint %s: %w", name, err)
	}
	s.Paused, s.Verified = paused != 0, verified != 0
	s.FirstFailure, s.NextAttempt, s.LastAt = fromNanos(ff), fromNanos(na), fromNanos(la)
	return s, nil
}

// attempt is one finished request, for webhook_history.
type attempt struct {
	WebhookID         string
	FirstSeq, LastSeq int64
	Events            int
	Time              time.Time
	Result            string
	Status            int
	Response, Error   string
}

func insertHistory(ctx context.Context, tx *sql.Tx, name string, as []attempt) error {
	if len(as) == 0 {
		return nil
	}
	const cols = 10
	// Chunked multi-row inserts: one statement per 50 rows keeps a json
	// endpoint's commit of hundreds of deliveries cheap.
	for len(as) > 0 {
		n := min(len(as), 50)
		q := `INSERT INTO webhook_history (endpoint, webhook_id, first_seq, last_seq, events, time, result, status, response, error) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?,?,?),", n), ",")
		args := make([]any, 0, n*cols)
		for _, a := range as[:n] {
			args = append(args, name, a.WebhookID, a.FirstSeq, a.LastSeq, a.Events, a.Time.UnixNano(), a.Result, a.Status, a.Response, a.Error)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("webhook: history: %w", err)
		}
		as = as[n:]
	}
	return nil
}
