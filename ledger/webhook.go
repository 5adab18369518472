package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EndpointState is the stored delivery state of one webhook endpoint: its
// cursor over the events (the last seq delivered or skipped) and the retry
// state of the batch at its head.
type EndpointState struct {
	Cursor      int64 // last event seq delivered or skipped
	Gen         int64 // bumped by ReplayEndpoint: a commit of an older generation is void
	PendingLast int64 // last seq of the batch being retried, 0 = none
	Paused      bool
	Verified    bool
	Attempts    int // failed attempts of the pending batch
	// FirstFailure, NextAttempt and LastAttempt are zero when unset.
	FirstFailure, NextAttempt, LastAttempt time.Time
	LastStatus                             int // HTTP status of the last attempt, 0 = none or no response
	LastError                              string
	Dead                                   int64 // events given up after the notifier's max age, ever
	// PendingID is the webhook-id of the stored request being retried
	// (PendingRequest), "" = none stored.
	PendingID string
	// The last verification: why it failed ("" when it passed or never
	// ran), when it ran, and when it is tried again (zero: not scheduled).
	VerifyReason string
	VerifiedAt   time.Time
	NextVerify   time.Time
}

// Verification is the outcome of one verification of an endpoint.
type Verification struct {
	Verified bool
	Reason   string    // why it failed; for a pass, how ("HEAD 200", "test request 204", "verify = false")
	At, Next time.Time // when it ran; when it is tried again (zero: not scheduled)
}

// Request is one webhook request exactly as first sent: a retry sends Body
// again byte for byte under the same WebhookID, whatever happened to the
// ledger or the configuration meanwhile.
//
// EventIDs name the events in Body. They are for erasure (forget,
// retention), which wins over immutability: an erasure that removes an
// event of a pending request deletes the request (its row and the
// endpoint's pending_id) and leaves pending_last, so the notifier cuts the
// same range again from what is left in the ledger and sends it under a
// new webhook-id (a batch's id digests the events it holds), and logs it.
type Request struct {
	WebhookID         string
	ContentType       string
	Body              []byte
	FirstSeq, LastSeq int64
	Events            int
	EventIDs          []string
	Created           time.Time
}

// Delivery is what a webhook worker commits after a request: the
// endpoint's new cursor and retry state, the attempts to keep in its
// history, and whether the endpoint pauses (410 Gone).
type Delivery struct {
	Cursor, PendingLast               int64
	Attempts                          int
	FirstFailure, NextAttempt, LastAt time.Time
	LastStatus                        int
	LastError                         string
	Pause                             bool      // set the endpoint paused
	AddDead                           int64     // events given up by this commit
	History                           []Attempt // finished attempts, in order
	// Request, when set, is stored as the pending request (the first
	// failure of a new request).
	Request *Request
}

// AttemptResult is the outcome of one finished webhook request.
type AttemptResult string

// Attempt results.
const (
	AttemptDelivered AttemptResult = "delivered"
	AttemptFailed    AttemptResult = "failed"
	AttemptGone      AttemptResult = "gone" // 410: the endpoint was paused
	AttemptDead      AttemptResult = "dead" // given up after max age: a dead letter
)

// Attempt is one finished request, kept in the endpoint's history.
type Attempt struct {
	WebhookID         string
	FirstSeq, LastSeq int64
	Events            int
	Time              time.Time
	Result            AttemptResult
	Status            int    // HTTP status, 0 = no response
	Response          string // first 512 bytes of the response body
	Error             string
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

// EnsureEndpoints implements WebhookStore.
func (s *SQLite) EnsureEndpoints(ctx context.Context, names []string, since time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer tx.Rollback()
	for _, name := range names {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM webhook_endpoints WHERE name = ?`, name).Scan(&one)
		if err == nil {
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
		var start sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MIN(seq) FROM events WHERE time >= ?`, since.UnixNano()).Scan(&start); err != nil {
			return fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
		cursor := int64(0)
		if start.Valid {
			cursor = start.Int64 - 1
		} else if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&cursor); err != nil {
			return fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (name, cursor) VALUES (?, ?)`, name, cursor); err != nil {
			return fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	return nil
}

// Endpoint implements WebhookStore.
func (s *SQLite) Endpoint(ctx context.Context, name string) (EndpointState, error) {
	var st EndpointState
	var paused, verified int
	var ff, na, la, va, nv int64
	err := s.r.QueryRowContext(ctx, `SELECT cursor, gen, pending_last, paused, verified, attempts, first_failure,
		next_attempt, last_attempt, last_status, last_error, dead, pending_id, verify_reason, verified_at, next_verify
		FROM webhook_endpoints WHERE name = ?`, name).
		Scan(&st.Cursor, &st.Gen, &st.PendingLast, &paused, &verified, &st.Attempts, &ff, &na, &la, &st.LastStatus, &st.LastError,
			&st.Dead, &st.PendingID, &st.VerifyReason, &va, &nv)
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("ledger: endpoint %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return st, fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	st.Paused, st.Verified = paused != 0, verified != 0
	st.FirstFailure, st.NextAttempt, st.LastAttempt = fromNanos(ff), fromNanos(na), fromNanos(la)
	st.VerifiedAt, st.NextVerify = fromNanos(va), fromNanos(nv)
	return st, nil
}

// CommitDelivery implements WebhookStore.
func (s *SQLite) CommitDelivery(ctx context.Context, name string, gen int64, d Delivery) (bool, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	defer tx.Rollback()
	var cur int64
	if err := tx.QueryRowContext(ctx, `SELECT gen FROM webhook_endpoints WHERE name = ?`, name).Scan(&cur); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			err = ErrNotFound
		}
		return false, fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	if cur != gen {
		return false, nil
	}
	if err := insertHistory(ctx, tx, name, d.History); err != nil {
		return false, err
	}
	paused := 0
	if d.Pause {
		paused = 1
	}
	pendingID := "pending_id" // unchanged
	var pargs []any
	switch {
	case d.Request != nil:
		r := d.Request
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_requests WHERE endpoint = ?`, name); err != nil {
			return false, fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_requests (endpoint, webhook_id, first_seq, last_seq, events,
			event_ids, content_type, body, created_at) VALUES (?,?,?,?,?,?,?,?,?)`, name, r.WebhookID, r.FirstSeq, r.LastSeq,
			r.Events, mustJSON(nonNil(r.EventIDs)), r.ContentType, r.Body, nanos(r.Created)); err != nil {
			return false, fmt.Errorf("ledger: endpoint %s: pending request: %w", name, err)
		}
		pendingID, pargs = "?", []any{r.WebhookID}
	case d.PendingLast == 0:
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_requests WHERE endpoint = ?`, name); err != nil {
			return false, fmt.Errorf("ledger: endpoint %s: %w", name, err)
		}
		pendingID = "''"
	}
	args := append([]any{d.Cursor, d.PendingLast, d.Attempts, nanos(d.FirstFailure), nanos(d.NextAttempt), nanos(d.LastAt),
		d.LastStatus, d.LastError, paused, d.AddDead}, pargs...)
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET cursor = ?, pending_last = ?, attempts = ?,
		first_failure = ?, next_attempt = ?, last_attempt = ?, last_status = ?, last_error = ?,
		paused = MAX(paused, ?), dead = dead + ?, pending_id = `+pendingID+` WHERE name = ?`, append(args, name)...); err != nil {
		return false, fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("ledger: commit: %w", err)
	}
	return true, nil
}

func insertHistory(ctx context.Context, tx *sql.Tx, name string, as []Attempt) error {
	const cols = 10
	// Chunked multi-row inserts: one statement per 50 rows keeps a json
	// endpoint's commit of hundreds of deliveries cheap.
	for len(as) > 0 {
		n := min(len(as), 50)
		q := `INSERT INTO webhook_history (endpoint, webhook_id, first_seq, last_seq, events, time, result, status, response, error) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?,?,?),", n), ",")
		args := make([]any, 0, n*cols)
		for _, a := range as[:n] {
			args = append(args, name, a.WebhookID, a.FirstSeq, a.LastSeq, a.Events, a.Time.UnixNano(), string(a.Result), a.Status, a.Response, a.Error)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("ledger: webhook history: %w", err)
		}
		as = as[n:]
	}
	return nil
}

// SetEndpointVerification implements WebhookStore.
func (s *SQLite) SetEndpointVerification(ctx context.Context, name string, v Verification) error {
	return s.updateEndpoint(ctx, name, `UPDATE webhook_endpoints SET verified = ?, verify_reason = ?, verified_at = ?,
		next_verify = ? WHERE name = ?`, v.Verified, v.Reason, nanos(v.At), nanos(v.Next), name)
}

// PendingRequest implements WebhookStore.
func (s *SQLite) PendingRequest(ctx context.Context, name string) (*Request, error) {
	var r Request
	var ids string
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT q.webhook_id, q.content_type, q.body, q.first_seq, q.last_seq, q.events,
		q.event_ids, q.created_at FROM webhook_endpoints e JOIN webhook_requests q
		ON q.endpoint = e.name AND q.webhook_id = e.pending_id WHERE e.name = ?`, name).
		Scan(&r.WebhookID, &r.ContentType, &r.Body, &r.FirstSeq, &r.LastSeq, &r.Events, &ids, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("ledger: pending request of %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: pending request of %s: %w", name, err)
	}
	r.Created = fromNanos(created)
	if err := json.Unmarshal([]byte(ids), &r.EventIDs); err != nil {
		return nil, fmt.Errorf("ledger: pending request of %s: %w", name, err)
	}
	return &r, nil
}

// SetEndpointPaused implements WebhookStore.
func (s *SQLite) SetEndpointPaused(ctx context.Context, name string, paused bool) error {
	if paused {
		return s.updateEndpoint(ctx, name, `UPDATE webhook_endpoints SET paused = 1 WHERE name = ?`, name)
	}
	return s.updateEndpoint(ctx, name, `UPDATE webhook_endpoints SET paused = 0, next_attempt = 0 WHERE name = ?`, name)
}

// ReplayEndpoint implements WebhookStore.
func (s *SQLite) ReplayEndpoint(ctx context.Context, name string, cursor int64) error {
	if err := s.updateEndpoint(ctx, name, `UPDATE webhook_endpoints SET cursor = ?, gen = gen + 1, pending_last = 0,
		attempts = 0, first_failure = 0, next_attempt = 0, pending_id = '' WHERE name = ?`, cursor, name); err != nil {
		return err
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM webhook_requests WHERE endpoint = ?`, name); err != nil {
		return fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	return nil
}

func (s *SQLite) updateEndpoint(ctx context.Context, name, q string, args ...any) error {
	res, err := s.w.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("ledger: endpoint %s: %w", name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("ledger: endpoint %s: %w", name, ErrNotFound)
	}
	return nil
}

// PruneHistory implements WebhookStore.
func (s *SQLite) PruneHistory(ctx context.Context, before, deadBefore time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM webhook_history WHERE time < ? AND (result != ? OR time < ?)`,
		before.UnixNano(), string(AttemptDead), deadBefore.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("ledger: prune webhook history: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// History implements WebhookStore: newest first.
func (s *SQLite) History(ctx context.Context, name string, limit int) ([]Attempt, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.r.QueryContext(ctx, `SELECT webhook_id, first_seq, last_seq, events, time, result, status, response, error
		FROM webhook_history WHERE endpoint = ? ORDER BY id DESC LIMIT ?`, name, limit)
	if err != nil {
		return nil, fmt.Errorf("ledger: webhook history: %w", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		var t int64
		var res string
		if err := rows.Scan(&a.WebhookID, &a.FirstSeq, &a.LastSeq, &a.Events, &t, &res, &a.Status, &a.Response, &a.Error); err != nil {
			return nil, fmt.Errorf("ledger: webhook history: %w", err)
		}
		a.Time, a.Result = time.Unix(0, t), AttemptResult(res)
		out = append(out, a)
	}
	return out, rows.Err()
}

// LastSeq implements EventReader.
func (s *SQLite) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	return seq, nil
}

// CountEvents implements EventReader.
func (s *SQLite) CountEvents(ctx context.Context, after, upto int64, types []EventType) (int64, error) {
	if len(types) == 0 {
		return 0, nil
	}
	q := `SELECT COUNT(*) FROM events WHERE seq > ? AND type IN (` + strings.TrimSuffix(strings.Repeat("?,", len(types)), ",") + `)`
	args := []any{after}
	for _, t := range types {
		args = append(args, string(t))
	}
	if upto >= 0 {
		q += ` AND seq <= ?`
		args = append(args, upto)
	}
	var c int64
	if err := s.r.QueryRowContext(ctx, q, args...).Scan(&c); err != nil {
		return 0, fmt.Errorf("ledger: count events: %w", err)
	}
	return c, nil
}
