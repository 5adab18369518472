package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite" // database/sql driver "sqlite"
)

// SQLite is the embedded Store: one file in WAL mode. Each process holds
// one write connection (SQLite allows one writer at a time anyway) and a
// small pool of readers; several processes share the file, waiting on each
// other's write locks for up to BusyTimeout.
type SQLite struct {
	w, r *sql.DB
	path string

	// Statements prepared once: the milter asks suppressed for every RCPT,
	// and the writer commits small batches when mail is slow; preparing a
	// statement cost as much as running it. The write statements run in
	// transactions through Tx.StmtContext, which reuses them on the one
	// write connection.
	suppressed        *sql.Stmt
	insMsg, updCounts *sql.Stmt
	// messageByID is Message's query: the tracker asks it for every hit
	// on a message not in its cache, which on a ledger of 100 000
	// messages is most hits (bench TestTrackerScale).
	messageByID *sql.Stmt

	insEvents [eventStmts]*sql.Stmt // insEvents[i] inserts 1<<i events

	policy atomic.Pointer[Policy]
}

var _ Store = (*SQLite)(nil)

// WriteCacheKiB is the page cache of the write connection. Every insert
// descends the events table and its three indexes; with SQLite's default
// 2 MiB their inner pages are evicted by the new leaves once the ledger
// holds a million or so events, and read again through the OS: with
// 1.5 million events the tracker spent 34-36 us of CPU a hit with 2 MiB,
// 33 with 16 MiB, 29-30 with 64 MiB (TestTrackerProfile with
// BENCH_TRACKER_GROW=1500000). It fills only as pages are used.
const WriteCacheKiB = 64 << 10

// BusyTimeout is how long a writer waits for another process's lock.
const BusyTimeout = 5 * time.Second

// OpenSQLite opens (creating if needed) the database at path and brings
// its schema up to date.
func OpenSQLite(path string) (*SQLite, error) {
	return openSQLite(path, false)
}

// OpenSQLiteReadOnly opens an existing ledger for reading only: no file is
// created or migrated, so a reader that may run as another user (an
// operator's `leadpushctl messages`) changes nothing on disk. Writes fail.
// It fails when the ledger lacks a migration this program knows: the
// daemons apply them when they start.
func OpenSQLiteReadOnly(path string) (*SQLite, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return openSQLite(path, true)
}

func openSQLite(path string, readOnly bool) (*SQLite, error) {
	if dir := filepath.Dir(path); dir != "" && !readOnly {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	q := url.Values{}
	pragmas := []string{
		fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		// NORMAL in WAL mode survives a crash or kill -9 of any process;
		// only a power loss can take the last commits.
		"synchronous(NORMAL)",
		"foreign_keys(ON)",
	}
	if readOnly {
		pragmas = []string{fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()), "query_only(1)"}
		q.Set("mode", "ro")
	}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", fmt.Sprintf("%s&_txlock=immediate&_pragma=cache_size(-%d)", dsn, WriteCacheKiB))
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	// Idle readers stay open: a new connection runs the pragmas again,
	// and 20 SMTP sessions asking at once would otherwise churn them.
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s := &SQLite{w: w, r: r, path: path}
	// Processes opening a new file at once race to switch it to WAL, and
	// SQLite answers the losers SQLITE_BUSY at once, without its busy
	// handler: wait for the winner, as the handler would.
	if readOnly {
		err = s.checkMigrated(context.Background())
	} else {
		err = s.migrate(context.Background())
		for deadline := time.Now().Add(BusyTimeout); isBusy(err) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			err = s.migrate(context.Background())
		}
	}
	if err != nil {
		s.Close()
		return nil, permissionHint(path, err)
	}
	for _, p := range []struct {
		db   *sql.DB
		stmt **sql.Stmt
		q    string
	}{
		{r, &s.suppressed, `SELECT ` + suppressionCols + `
			FROM suppressions WHERE address = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY stream`},
		{w, &s.insMsg, `INSERT OR IGNORE INTO messages (id, queue_id, envelope_from, recipients,
			from_hdr, to_hdr, subject, message_id_hdr, tag, tracking, headers, sasl_user, client_addr,
			return_path, links, created_at, stream) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`},
		{w, &s.updCounts, `UPDATE messages SET opens = opens + ?, clicks = clicks + ? WHERE id = ?`},
		{r, &s.messageByID, `SELECT ` + messageCols + ` FROM messages WHERE id = ?`},
	} {
		if *p.stmt, err = p.db.Prepare(p.q); err != nil {
			s.Close()
			return nil, fmt.Errorf("ledger: prepare: %w", err)
		}
	}
	for i := range s.insEvents {
		if s.insEvents[i], err = w.Prepare(insertEventsQuery(1 << i)); err != nil {
			s.Close()
			return nil, fmt.Errorf("ledger: prepare: %w", err)
		}
	}
	return s, nil
}

// permissionHint adds to an error what a sysadmin needs when the ledger
// or its directory belongs to another user: SQLite says only "attempt to
// write a readonly database" or "unable to open database file".
func permissionHint(path string, err error) error {
	msg := err.Error()
	if !strings.Contains(msg, "readonly database") && !strings.Contains(msg, "unable to open") &&
		!errors.Is(err, os.ErrPermission) {
		return err
	}
	var owners []string
	for _, p := range []string{filepath.Dir(path), path, path + "-wal", path + "-shm"} {
		if fi, serr := os.Stat(p); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				owners = append(owners, fmt.Sprintf("%s uid %d mode %v", p, st.Uid, fi.Mode().Perm()))
			}
		}
	}
	return fmt.Errorf("%w (this process runs as uid %d; %s: the ledger, its directory and its -wal and -shm files must "+
		"belong to the service user, e.g. chown -R leadpush:leadpush %s)", err, os.Geteuid(), strings.Join(owners, ", "), filepath.Dir(path))
}

// isBusy reports an SQLITE_BUSY error, extended codes included.
func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == 5
}

// Path is the database file.
func (s *SQLite) Path() string { return s.path }

// Close closes the database.
func (s *SQLite) Close() error {
	var errs []error
	for _, st := range append([]*sql.Stmt{s.suppressed, s.insMsg, s.updCounts, s.messageByID}, s.insEvents[:]...) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, s.w.Close(), s.r.Close())...)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs and slices are marshalled here
	}
	return string(b)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Record implements Store.
func (s *SQLite) Record(ctx context.Context, msgs []*Message, events []*Event) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	defer tx.Rollback()
	if err := s.recordTx(ctx, tx, msgs, events); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	return nil
}

// RecordTx is Record inside a transaction the caller owns, for callers that
// store more in the same commit (the mail-log follower's position).
func (s *SQLite) RecordTx(ctx context.Context, tx *sql.Tx, msgs []*Message, events []*Event) error {
	return s.recordTx(ctx, tx, msgs, events)
}

func (s *SQLite) recordTx(ctx context.Context, tx *sql.Tx, msgs []*Message, events []*Event) error {
	if len(msgs) > 0 {
		ins := tx.StmtContext(ctx, s.insMsg)
		defer ins.Close()
		for _, m := range msgs {
			_, err := ins.ExecContext(ctx, m.ID, m.QueueID, m.EnvelopeFrom, mustJSON(nonNil(m.Recipients)), m.From, m.To, m.Subject,
				m.MessageID, m.Tag, m.Tracking, mustJSON(nonNil(m.Headers)), m.SASLUser, m.ClientAddr, m.ReturnPath,
				mustJSON(nonNil(m.Links)), m.CreatedAt.UnixNano(), m.Stream)
			if err != nil {
				return fmt.Errorf("ledger: insert message %s: %w", m.ID, err)
			}
		}
	}
	if len(events) == 0 {
		return nil
	}
	counts := map[string]openClick{} // per message: one UPDATE per batch, not per hit
	ms := msgSeqs{last: map[string]msgSeq{}}
	if err := ms.load(ctx, tx, events); err != nil {
		return err
	}
	var detail []byte
	args := make([]any, 0, eventCols*min(len(events), maxEventRows))
	for rest := events; len(rest) > 0; {
		chunk := rest[:eventRows(len(rest))]
		rest = rest[len(chunk):]
		before := ms.assign(chunk)
		args = args[:0]
		for _, e := range chunk {
			detail = e.Detail.appendJSON(detail[:0])
			var dedup any
			if e.DedupKey != "" {
				dedup = e.DedupKey
			}
			args = append(args, e.ID, e.Type, e.MessageID, e.Recipient, e.Time.UnixNano(), string(detail), dedup,
				e.MsgSeq, e.Opens, e.Clicks)
		}
		ins := tx.StmtContext(ctx, s.insEvents[bits.Len(uint(len(chunk)))-1])
		res, err := ins.ExecContext(ctx, args...)
		ins.Close()
		if err != nil {
			return fmt.Errorf("ledger: insert events %s..%s: %w", chunk[0].ID, chunk[len(chunk)-1].ID, err)
		}
		inserted, err := insertedEvents(ctx, tx, res, chunk)
		if err != nil {
			return err
		}
		if len(inserted) != len(chunk) {
			// Some were recorded before: number again only what went in.
			if err := ms.reassign(ctx, tx, before, chunk, inserted); err != nil {
				return err
			}
		}
		for _, e := range inserted {
			switch e.Type {
			case Open:
				counts[e.MessageID] = counts[e.MessageID].add(1, 0)
			case Click:
				counts[e.MessageID] = counts[e.MessageID].add(0, 1)
			}
			if reason, ok := Suppresses(e.Type); ok && e.Recipient != "" {
				scope := ScopeAll
				if e.Type == Unsubscribe {
					if scope, err = s.unsubscribeScope(ctx, tx, e.MessageID); err != nil {
						return err
					}
				}
				if err := suppressTx(ctx, tx, Suppression{Address: e.Recipient, Stream: scope, Reason: reason, EventID: e.ID,
					CreatedAt: e.Time, BounceReason: e.Detail.BounceReason}, false); err != nil {
					return err
				}
			}
			if e.Type == SoftBounce && e.Escalates && e.Recipient != "" {
				if err := s.escalate(ctx, tx, e); err != nil {
					return err
				}
			}
		}
	}
	if len(counts) == 0 {
		return nil
	}
	upd := tx.StmtContext(ctx, s.updCounts)
	defer upd.Close()
	for id, n := range counts {
		if _, err := upd.ExecContext(ctx, n.opens, n.clicks, id); err != nil {
			return fmt.Errorf("ledger: counters: %w", err)
		}
	}
	return nil
}

// Events are inserted up to maxEventRows in one statement: a statement
// per row cost a sixth more (cursors opened, database/sql and driver
// overhead per statement). A statement for each power of two up to
// maxEventRows is prepared at open: a batch takes at most log2 of them
// beyond its full chunks.
const (
	eventStmts   = 6
	maxEventRows = 1 << (eventStmts - 1)
)

// eventRows is how many of n events the next statement inserts.
func eventRows(n int) int {
	return 1 << (bits.Len(uint(min(n, maxEventRows))) - 1)
}

const eventCols = 10

func insertEventsQuery(n int) string {
	return `INSERT OR IGNORE INTO events (id, type, message_id, recipient, time, detail, dedup_key, msg_seq, opens, clicks) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?,?,?,?),", n), ",")
}

// msgSeq is a message's latest event number and counters.
type msgSeq struct {
	seq           int64
	opens, clicks int
}

// msgSeqs numbers the events of one Record call per message (Event.MsgSeq,
// Opens, Clicks), continuing from each message's latest recorded event.
type msgSeqs struct{ last map[string]msgSeq }

// load looks up the messages of chunk not seen yet in this transaction:
// one statement for up to 500 of them, so a batch of tracker hits spread
// over a thousand messages costs a few statements, not a thousand.
func (ms msgSeqs) load(ctx context.Context, tx *sql.Tx, chunk []*Event) error {
	var ids []any
	for _, e := range chunk {
		if e.MessageID == "" {
			continue
		}
		if _, ok := ms.last[e.MessageID]; ok {
			continue
		}
		ms.last[e.MessageID] = msgSeq{} // none recorded, unless found below
		ids = append(ids, e.MessageID)
	}
	for len(ids) > 0 {
		part := ids[:min(len(ids), 500)]
		ids = ids[len(part):]
		// MAX(seq) of one message is one seek in events_message.
		rows, err := tx.QueryContext(ctx, `SELECT e.message_id, e.msg_seq, e.opens, e.clicks FROM (VALUES `+
			strings.TrimSuffix(strings.Repeat("(?),", len(part)), ",")+`) v
			JOIN events e ON e.seq = (SELECT MAX(seq) FROM events WHERE message_id = v.column1)`, part...)
		if err != nil {
			return fmt.Errorf("ledger: event numbers: %w", err)
		}
		var legacy []string
		for rows.Next() {
			var id string
			var l msgSeq
			if err := rows.Scan(&id, &l.seq, &l.opens, &l.clicks); err != nil {
				rows.Close()
				return fmt.Errorf("ledger: event numbers: %w", err)
			}
			if l.seq == 0 {
				legacy = append(legacy, id)
				continue
			}
			ms.last[id] = l
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: event numbers: %w", err)
		}
		// Events recorded before the ledger numbered them: count them.
		for _, id := range legacy {
			var l msgSeq
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(type = 'open'), 0), COALESCE(SUM(type = 'click'), 0)
				FROM events WHERE message_id = ?`, id).Scan(&l.seq, &l.opens, &l.clicks); err != nil {
				return fmt.Errorf("ledger: event number of %s: %w", id, err)
			}
			ms.last[id] = l
		}
	}
	return nil
}

// assign numbers the events of chunk and returns the state before it.
func (ms msgSeqs) assign(chunk []*Event) map[string]msgSeq {
	before := map[string]msgSeq{}
	for _, e := range chunk {
		if e.MessageID == "" {
			e.MsgSeq, e.Opens, e.Clicks = 0, 0, 0
			continue
		}
		l := ms.last[e.MessageID]
		if _, ok := before[e.MessageID]; !ok {
			before[e.MessageID] = l
		}
		l = l.next(e.Type)
		e.MsgSeq, e.Opens, e.Clicks = l.seq, l.opens, l.clicks
		ms.last[e.MessageID] = l
	}
	return before
}

func (l msgSeq) next(t EventType) msgSeq {
	l.seq++
	switch t {
	case Open:
		l.opens++
	case Click:
		l.clicks++
	}
	return l
}

// reassign numbers again, from the state before chunk, only the events of
// chunk that were inserted, and corrects their rows; the others keep none.
func (ms msgSeqs) reassign(ctx context.Context, tx *sql.Tx, before map[string]msgSeq, chunk, inserted []*Event) error {
	maps.Copy(ms.last, before)
	in := make(map[*Event]bool, len(inserted))
	for _, e := range inserted {
		in[e] = true
	}
	for _, e := range chunk {
		if e.MessageID == "" {
			continue
		}
		if !in[e] {
			e.MsgSeq, e.Opens, e.Clicks = 0, 0, 0
			continue
		}
		l := ms.last[e.MessageID].next(e.Type)
		ms.last[e.MessageID] = l
		if l.seq == e.MsgSeq && l.opens == e.Opens && l.clicks == e.Clicks {
			continue
		}
		e.MsgSeq, e.Opens, e.Clicks = l.seq, l.opens, l.clicks
		if _, err := tx.ExecContext(ctx, `UPDATE events SET msg_seq = ?, opens = ?, clicks = ? WHERE seq = ?`,
			e.MsgSeq, e.Opens, e.Clicks, e.Seq); err != nil {
			return fmt.Errorf("ledger: event number of %s: %w", e.ID, err)
		}
	}
	return nil
}

// insertedEvents returns the events of chunk that its INSERT OR IGNORE
// inserted, with their Seq set; the others were recorded before (a
// replayed spool, a repeated bounce). When every row went in, their
// sequence numbers are consecutive, ending at the last insert id. When
// some were ignored (rare: only replays repeat records), the ids are
// looked up: the rows this statement inserted hold the n highest sequence
// numbers among them, as AUTOINCREMENT never goes back.
func insertedEvents(ctx context.Context, tx *sql.Tx, res sql.Result, chunk []*Event) ([]*Event, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return nil, fmt.Errorf("ledger: insert events: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	if int(n) == len(chunk) {
		last, err := res.LastInsertId()
		if err != nil {
			return nil, fmt.Errorf("ledger: insert events: %w", err)
		}
		for i, e := range chunk {
			e.Seq = last - n + 1 + int64(i)
		}
		return chunk, nil
	}
	ids := make([]any, len(chunk))
	for i, e := range chunk {
		ids[i] = e.ID
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, seq FROM events WHERE id IN (`+
		strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")+`) ORDER BY seq DESC LIMIT ?`, append(ids, n)...)
	if err != nil {
		return nil, fmt.Errorf("ledger: insert events: %w", err)
	}
	defer rows.Close()
	seqs := make(map[string]int64, n)
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, fmt.Errorf("ledger: insert events: %w", err)
		}
		seqs[id] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: insert events: %w", err)
	}
	var out []*Event
	for _, e := range chunk {
		if seq, ok := seqs[e.ID]; ok {
			delete(seqs, e.ID) // the same event twice in one chunk: the first went in
			e.Seq = seq
			out = append(out, e)
		}
	}
	return out, nil
}

// openClick counts the opens and clicks a batch adds to one message.
// unsubscribeScope is the scope an unsubscribe from a message writes: by
// the stream the message was sent in (Policy.UnsubscribeScope).
func (s *SQLite) unsubscribeScope(ctx context.Context, tx *sql.Tx, messageID string) (string, error) {
	var stream string
	err := tx.QueryRowContext(ctx, `SELECT stream FROM messages WHERE id = ?`, messageID).Scan(&stream)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("ledger: stream of %s: %w", messageID, err)
	}
	return s.currentPolicy().UnsubscribeScope(stream), nil
}

type openClick struct{ opens, clicks int }

func (c openClick) add(o, k int) openClick { return openClick{c.opens + o, c.clicks + k} }

// suppressTx writes an entry; with keep, an address already listed keeps
// its entry (a soft-bounce limit never replaces an unsubscribe).
func suppressTx(ctx context.Context, tx *sql.Tx, sp Suppression, keep bool) error {
	addr := NormalizeAddress(sp.Address)
	if addr == "" {
		return nil
	}
	// updated_at is when the entry was written, not when its event
	// happened (a spooled event may be written hours later): the
	// SuppressionCache reads the entries written since it last looked.
	written := time.Now()
	created := sp.CreatedAt
	if created.IsZero() {
		created = written
	}
	var exp any
	if sp.ExpiresAt != nil {
		exp = sp.ExpiresAt.UnixNano()
	}
	// A later event refreshes the entry: its reason, event and expiry win,
	// the first creation time stays.
	q := `INSERT INTO suppressions (address, reason, event_id, created_at, updated_at, expires_at, bounce_reason, stream)
		VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(address, stream) DO UPDATE SET reason = excluded.reason,
		event_id = excluded.event_id, updated_at = excluded.updated_at, expires_at = excluded.expires_at,
		bounce_reason = excluded.bounce_reason`
	if keep {
		q = `INSERT INTO suppressions (address, reason, event_id, created_at, updated_at, expires_at, bounce_reason, stream)
		VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(address, stream) DO NOTHING`
	}
	_, err := tx.ExecContext(ctx, q, addr, sp.Reason, sp.EventID, created.UnixNano(), written.UnixNano(), exp, sp.BounceReason, sp.Stream)
	if err != nil {
		return fmt.Errorf("ledger: suppress %s: %w", addr, err)
	}
	return nil
}

// NormalizeAddress returns the form addresses are compared in: trimmed,
// angle brackets removed, the domain lower-cased. The local part keeps its
// case (RFC 5321 section 2.4) but is lower-cased too, because every mailbox
// provider treats it case-insensitively and a suppression must not be
// dodged by case.
func NormalizeAddress(a string) string {
	a = strings.TrimSpace(a)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	return strings.ToLower(a)
}

const messageCols = `id, queue_id, envelope_from, recipients, from_hdr, to_hdr, subject, message_id_hdr, tag,
	tracking, headers, sasl_user, client_addr, return_path, links, opens, clicks, created_at, stream`

const suppressionCols = `address, reason, event_id, created_at, updated_at, expires_at, bounce_reason, stream`

func scanMessage(row interface{ Scan(...any) error }) (*Message, error) {
	var m Message
	var rcpts, hdrs, links string
	var created int64
	err := row.Scan(&m.ID, &m.QueueID, &m.EnvelopeFrom, &rcpts, &m.From, &m.To, &m.Subject, &m.MessageID, &m.Tag,
		&m.Tracking, &hdrs, &m.SASLUser, &m.ClientAddr, &m.ReturnPath, &links, &m.Opens, &m.Clicks, &created, &m.Stream)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	m.CreatedAt = time.Unix(0, created)
	if err := errors.Join(json.Unmarshal([]byte(rcpts), &m.Recipients), json.Unmarshal([]byte(hdrs), &m.Headers),
		json.Unmarshal([]byte(links), &m.Links)); err != nil {
		return nil, fmt.Errorf("ledger: message %s: %w", m.ID, err)
	}
	return &m, nil
}

// Message implements Store.
func (s *SQLite) Message(ctx context.Context, id string) (*Message, error) {
	return scanMessage(s.messageByID.QueryRowContext(ctx, id))
}

// messagesByIDChunk is how many ids one MessagesByID query takes.
const messagesByIDChunk = 500

// MessagesByID implements Store.
func (s *SQLite) MessagesByID(ctx context.Context, ids []string) (map[string]*Message, error) {
	out := make(map[string]*Message, len(ids))
	seen := make(map[string]bool, len(ids))
	var args []any
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		rows, err := s.r.QueryContext(ctx, `SELECT `+messageCols+` FROM messages WHERE id IN (`+
			strings.TrimSuffix(strings.Repeat("?,", len(args)), ",")+`)`, args...)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			m, err := scanMessage(rows)
			if err != nil {
				return err
			}
			out[m.ID] = m
		}
		args = args[:0]
		return rows.Err()
	}
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if args = append(args, id); len(args) == messagesByIDChunk {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// MessageByQueueID implements Store.
func (s *SQLite) MessageByQueueID(ctx context.Context, queueID string) (*Message, error) {
	return scanMessage(s.r.QueryRowContext(ctx, `SELECT `+messageCols+` FROM messages WHERE queue_id = ?
		ORDER BY created_at DESC LIMIT 1`, queueID))
}

// MessageByHeaderID implements Store.
func (s *SQLite) MessageByHeaderID(ctx context.Context, messageID string) (*Message, error) {
	return scanMessage(s.r.QueryRowContext(ctx, `SELECT `+messageCols+` FROM messages WHERE message_id_hdr = ?
		ORDER BY created_at DESC LIMIT 1`, messageID))
}

func limit(f Filter) int {
	if f.Limit <= 0 {
		return 1000
	}
	return f.Limit
}

// Messages implements Store: newest first.
func (s *SQLite) Messages(ctx context.Context, f Filter) ([]*Message, error) {
	var where []string
	var args []any
	if f.Stream != "" {
		where, args = append(where, "stream = ?"), append(args, f.Stream)
	}
	if f.Tag != "" {
		where, args = append(where, "tag = ?"), append(args, f.Tag)
	}
	if f.QueueID != "" {
		where, args = append(where, "queue_id = ?"), append(args, f.QueueID)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, f.Since.UnixNano())
	}
	q := `SELECT ` + messageCols + ` FROM messages`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY created_at DESC LIMIT %d", limit(f))
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []*Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Events implements Store: in recording order.
func (s *SQLite) Events(ctx context.Context, f Filter) ([]*Event, error) {
	var where []string
	var args []any
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	if f.MessageID != "" {
		where, args = append(where, "message_id = ?"), append(args, f.MessageID)
	}
	if !f.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, f.Since.UnixNano())
	}
	if f.AfterSeq > 0 {
		where, args = append(where, "seq > ?"), append(args, f.AfterSeq)
	}
	q := `SELECT seq, id, type, message_id, recipient, time, detail, ` + packedCounts + ` FROM events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	order := "seq"
	if f.Newest {
		order = "seq DESC"
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d", order, limit(f))
	return s.events(ctx, q, args...)
}

// events runs a query of events' seq, id, type, message_id, recipient,
// time and detail.
func (s *SQLite) events(ctx context.Context, q string, args ...any) ([]*Event, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []*Event
	var unpacked []*Event
	for rows.Next() {
		var e Event
		var t, packed int64
		var detail string
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.MessageID, &e.Recipient, &t, &detail, &packed); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		e.Time = time.Unix(0, t)
		if packed >= 0 {
			e.MsgSeq, e.Opens, e.Clicks = packed>>42, int(packed>>21&countMask), int(packed&countMask)
		} else {
			unpacked = append(unpacked, &e)
		}
		out = append(out, &e)
		if detail == "{}" { // an event without details: no decoder needed
			continue
		}
		if err := json.Unmarshal([]byte(detail), &e.Detail); err != nil {
			return nil, fmt.Errorf("ledger: event %s: %w", e.ID, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	for _, e := range unpacked {
		var opens, clicks int64
		if err := s.r.QueryRowContext(ctx, `SELECT msg_seq, opens, clicks FROM events WHERE seq = ?`, e.Seq).
			Scan(&e.MsgSeq, &opens, &clicks); err != nil {
			return nil, fmt.Errorf("ledger: event %s: %w", e.ID, err)
		}
		e.Opens, e.Clicks = int(opens), int(clicks)
	}
	return out, nil
}

// packedCounts reads an event's MsgSeq, Opens and Clicks as one column,
// 21 bits each: every column read through the driver costs about as much
// as SQLite's whole evaluation of this expression, and webhook delivery
// reads them for every event. A value too large for its bits gives -1,
// and the row is read again exactly.
const (
	countMask    = 1<<21 - 1
	packedCounts = `CASE WHEN msg_seq <= 2097151 AND opens <= 2097151 AND clicks <= 2097151
		THEN (msg_seq << 42) | (opens << 21) | clicks ELSE -1 END`
)

// Suppress adds or refreshes an address on the suppression list.
func (s *SQLite) Suppress(ctx context.Context, sp Suppression) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	defer tx.Rollback()
	if err := suppressTx(ctx, tx, sp, false); err != nil {
		return err
	}
	return tx.Commit()
}

// Unsuppress implements SuppressionStore.
func (s *SQLite) Unsuppress(ctx context.Context, address string, scopes ...string) (bool, error) {
	var n int64
	addr := NormalizeAddress(address)
	if len(scopes) == 0 {
		res, err := s.w.ExecContext(ctx, `DELETE FROM suppressions WHERE address = ?`, addr)
		if err != nil {
			return false, fmt.Errorf("ledger: %w", err)
		}
		n, _ = res.RowsAffected()
	}
	for _, sc := range scopes {
		res, err := s.w.ExecContext(ctx, `DELETE FROM suppressions WHERE address = ? AND stream = ?`, addr, sc)
		if err != nil {
			return false, fmt.Errorf("ledger: %w", err)
		}
		d, _ := res.RowsAffected()
		n += d
	}
	return n > 0, nil
}

// Suppressed implements SuppressionStore.
func (s *SQLite) Suppressed(ctx context.Context, address string, now time.Time) (*Suppression, error) {
	list, err := s.SuppressionsOf(ctx, address, now)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, ErrNotFound
	}
	return list[0], nil
}

// SuppressionsOf implements SuppressionStore.
func (s *SQLite) SuppressionsOf(ctx context.Context, address string, now time.Time) ([]*Suppression, error) {
	rows, err := s.suppressed.QueryContext(ctx, NormalizeAddress(address), now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []*Suppression
	for rows.Next() {
		sp, err := scanSuppression(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, rows.Err()
}

func scanSuppression(row interface{ Scan(...any) error }) (*Suppression, error) {
	var sp Suppression
	var c, u int64
	var exp sql.NullInt64
	err := row.Scan(&sp.Address, &sp.Reason, &sp.EventID, &c, &u, &exp, &sp.BounceReason, &sp.Stream)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	sp.CreatedAt, sp.UpdatedAt = time.Unix(0, c), time.Unix(0, u)
	if exp.Valid {
		t := time.Unix(0, exp.Int64)
		sp.ExpiresAt = &t
	}
	return &sp, nil
}

// Suppressions lists the suppression list, including expired entries.
func (s *SQLite) Suppressions(ctx context.Context) ([]*Suppression, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+suppressionCols+` FROM suppressions ORDER BY address, stream`)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []*Suppression
	for rows.Next() {
		sp, err := scanSuppression(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, rows.Err()
}

// WrittenSuppressions implements SuppressionStore.
func (s *SQLite) WrittenSuppressions(ctx context.Context, since, now time.Time, fn func(string, time.Time)) error {
	q, args := `SELECT address, updated_at FROM suppressions WHERE updated_at >= ?`, []any{since.UnixNano()}
	if since.IsZero() {
		q, args = `SELECT address, updated_at FROM suppressions WHERE expires_at IS NULL OR expires_at > ?`, []any{now.UnixNano()}
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		var u int64
		if err := rows.Scan(&a, &u); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		fn(a, time.Unix(0, u))
	}
	return rows.Err()
}

// SetPolicy implements SuppressionStore.
func (s *SQLite) SetPolicy(p Policy) { s.policy.Store(&p) }

func (s *SQLite) currentPolicy() Policy {
	if p := s.policy.Load(); p != nil {
		return *p
	}
	return Policy{SoftBounceLimit: DefaultSoftBounceLimit, SoftBounceWindow: DefaultSoftBounceWindow}
}

// escalate counts a soft bounce toward its address's limit and suppresses
// the address when the limit is reached, in the event's transaction.
func (s *SQLite) escalate(ctx context.Context, tx *sql.Tx, e *Event) error {
	p := s.currentPolicy()
	if p.SoftBounceLimit <= 0 {
		return nil
	}
	addr := NormalizeAddress(e.Recipient)
	if _, err := tx.ExecContext(ctx, `INSERT INTO soft_bounces (address, message_id, time, bounce_reason, event_id) VALUES (?,?,?,?,?)
		ON CONFLICT(address, message_id) DO NOTHING`, addr, e.MessageID, e.Time.UnixNano(), e.Detail.BounceReason, e.ID); err != nil {
		return fmt.Errorf("ledger: soft bounce of %s: %w", addr, err)
	}
	var n int
	// The same reason each time: a full mailbox one day and an expiry the
	// next say less about the mailbox than five full ones.
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM soft_bounces WHERE address = ? AND time >= ? AND bounce_reason = ?`,
		addr, e.Time.Add(-p.SoftBounceWindow).UnixNano(), e.Detail.BounceReason).Scan(&n); err != nil {
		return fmt.Errorf("ledger: soft bounces of %s: %w", addr, err)
	}
	if n < p.SoftBounceLimit {
		return nil
	}
	return suppressTx(ctx, tx, Suppression{Address: addr, Reason: ReasonSoftBounceLimit, EventID: e.ID, CreatedAt: e.Time,
		BounceReason: e.Detail.BounceReason}, true)
}

// SoftBounces implements SuppressionStore.
func (s *SQLite) SoftBounces(ctx context.Context, address string, now time.Time) ([]SoftBounceCount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT message_id, event_id, time, bounce_reason FROM soft_bounces
		WHERE address = ? AND time >= ? ORDER BY time DESC`, NormalizeAddress(address), now.Add(-s.currentPolicy().SoftBounceWindow).UnixNano())
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	defer rows.Close()
	var out []SoftBounceCount
	for rows.Next() {
		var c SoftBounceCount
		var t int64
		if err := rows.Scan(&c.MessageID, &c.EventID, &t, &c.BounceReason); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		c.Time = time.Unix(0, t)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Event implements EventReader.
func (s *SQLite) Event(ctx context.Context, id string) (*Event, error) {
	evs, err := s.events(ctx, `SELECT seq, id, type, message_id, recipient, time, detail, `+packedCounts+` FROM events WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}
