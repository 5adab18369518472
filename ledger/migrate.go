package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// A migration is one named change of the SQLite schema.
//
// How to change the schema: append a migration to sqliteMigrations with a
// new name, "YYYYMMDD-topic" (the day it was written and a word or two),
// and never edit or remove one that has landed. The ledger records the
// names it has applied in schema_migrations, not a count, so two changes
// written on different branches (two "migration 4"s under the old
// numbering) both apply after they are merged, each once, in the list's
// order; TestMigrationNames fails on a name used twice or not in that form.
// A migration must stand on its own: it may rely on those before it in the
// list but not on one that another branch may land first, and it must not
// assume it runs right after its predecessor (create what it needs with IF
// NOT EXISTS when in doubt). A database that records a name this program
// does not know was migrated by a newer program: opening it fails with a
// message that says so, rather than running on a schema it cannot read.
//
// A PostgreSQL store keeps its own list in its own dialect, under the same
// names where the change is the same.
type migration struct {
	name string
	sql  string
}

var sqliteMigrations = []migration{
	// messages, events, suppressions.
	{"20261101-core", `CREATE TABLE messages (
		id TEXT PRIMARY KEY,
		queue_id TEXT NOT NULL DEFAULT '',
		envelope_from TEXT NOT NULL DEFAULT '',
		recipients TEXT NOT NULL DEFAULT '[]',
		from_hdr TEXT NOT NULL DEFAULT '',
		to_hdr TEXT NOT NULL DEFAULT '',
		subject TEXT NOT NULL DEFAULT '',
		message_id_hdr TEXT NOT NULL DEFAULT '',
		tag TEXT NOT NULL DEFAULT '',
		tracking TEXT NOT NULL DEFAULT 'all',
		headers TEXT NOT NULL DEFAULT '[]',
		sasl_user TEXT NOT NULL DEFAULT '',
		client_addr TEXT NOT NULL DEFAULT '',
		return_path TEXT NOT NULL DEFAULT '',
		links TEXT NOT NULL DEFAULT '[]',
		opens INTEGER NOT NULL DEFAULT 0,
		clicks INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL
	);
	CREATE INDEX messages_queue_id ON messages(queue_id, created_at);
	CREATE INDEX messages_message_id_hdr ON messages(message_id_hdr, created_at);
	CREATE INDEX messages_created_at ON messages(created_at);
	CREATE INDEX messages_tag ON messages(tag, created_at);
	CREATE TABLE events (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		id TEXT NOT NULL UNIQUE,
		type TEXT NOT NULL,
		message_id TEXT NOT NULL DEFAULT '',
		recipient TEXT NOT NULL DEFAULT '',
		time INTEGER NOT NULL,
		detail TEXT NOT NULL DEFAULT '{}',
		dedup_key TEXT
	);
	-- Only bounces, deliveries and the like carry a dedup key: a partial
	-- index spares every tracking hit an insert into it.
	CREATE UNIQUE INDEX events_dedup ON events(dedup_key) WHERE dedup_key IS NOT NULL;
	CREATE INDEX events_message ON events(message_id, seq);
	CREATE INDEX events_time ON events(time);
	CREATE TABLE suppressions (
		address TEXT PRIMARY KEY,
		reason TEXT NOT NULL,
		event_id TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		expires_at INTEGER
	);`},
	// named state committed with events (the mail-log position), and
	// returned mail as received, so nothing leadpushctl ingest reads is lost.
	{"20261110-state-inbound", `CREATE TABLE state (
		name TEXT PRIMARY KEY,
		value TEXT NOT NULL
	);
	CREATE TABLE inbound (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		received_at INTEGER NOT NULL,
		kind TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		envelope_to TEXT NOT NULL DEFAULT '',
		message_id TEXT NOT NULL DEFAULT '',
		events INTEGER NOT NULL DEFAULT 0,
		raw BLOB
	);
	CREATE INDEX inbound_kind ON inbound(kind, received_at);`},
	// leadpush-milter's SuppressionCache reads what was written since its
	// last look.
	{"20261122-suppressions-updated-at", `CREATE INDEX suppressions_updated_at ON suppressions(updated_at);`},
	// the webhook notifier's state: per endpoint, the cursor (last seq
	// handled) and the retry state of the batch at its head; finished
	// attempts in webhook_history. (Kept in webhook_schema by the notifier
	// until the ledger owned every table.)
	{"20261125-webhook", `CREATE TABLE webhook_endpoints (
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
	CREATE INDEX webhook_history_time ON webhook_history(time);`},
	// retention prunes returned mail by the time it arrived.
	{"20261202-inbound-received-at", `CREATE INDEX inbound_received_at ON inbound(received_at);`},
	// bounce reasons on suppressions; the soft bounces that count toward
	// the soft-bounce limit, one per address and message.
	{"20261202-soft-bounce-limit", `ALTER TABLE suppressions ADD COLUMN bounce_reason TEXT NOT NULL DEFAULT '';
	CREATE TABLE soft_bounces (
		address TEXT NOT NULL,
		message_id TEXT NOT NULL,
		time INTEGER NOT NULL,
		bounce_reason TEXT NOT NULL DEFAULT '',
		event_id TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (address, message_id)
	) WITHOUT ROWID;
	CREATE INDEX soft_bounces_time ON soft_bounces(time);`},
	// per-message event numbers and the message's counters as of each
	// event (Event.MsgSeq, Opens, Clicks): webhook bodies built from them do
	// not change between the first attempt and a retry or replay. Events
	// recorded before keep 0.
	{"20261202-event-msg-seq", `ALTER TABLE events ADD COLUMN msg_seq INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE events ADD COLUMN opens INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE events ADD COLUMN clicks INTEGER NOT NULL DEFAULT 0;`},
	// the body of each webhook endpoint's pending request, stored when it
	// first fails and resent verbatim (webhook_requests), and the outcome
	// of its verification.
	{"20261202-webhook-requests", `CREATE TABLE webhook_requests (
		endpoint TEXT NOT NULL,
		webhook_id TEXT NOT NULL,
		first_seq INTEGER NOT NULL,
		last_seq INTEGER NOT NULL,
		events INTEGER NOT NULL,
		event_ids TEXT NOT NULL DEFAULT '[]', -- the events in the body, for a later erasure
		content_type TEXT NOT NULL,
		body BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (endpoint, webhook_id)
	);
	ALTER TABLE webhook_endpoints ADD COLUMN pending_id TEXT NOT NULL DEFAULT '';
	ALTER TABLE webhook_endpoints ADD COLUMN verify_reason TEXT NOT NULL DEFAULT '';
	ALTER TABLE webhook_endpoints ADD COLUMN verified_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE webhook_endpoints ADD COLUMN next_verify INTEGER NOT NULL DEFAULT 0;`},
	// message streams: each message names its stream; a suppression entry
	// has a scope ('' every stream, a stream's name, '@broadcast'), so an
	// address may be listed once per scope. SQLite cannot change a primary
	// key in place: the table is copied (existing entries scope '').
	{"20261202-streams", `ALTER TABLE messages ADD COLUMN stream TEXT NOT NULL DEFAULT '';
	CREATE INDEX messages_stream ON messages(stream, created_at);
	CREATE TABLE suppressions_scoped (
		address TEXT NOT NULL,
		stream TEXT NOT NULL DEFAULT '',
		reason TEXT NOT NULL,
		event_id TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		updated_at INTEGER NOT NULL,
		expires_at INTEGER,
		bounce_reason TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (address, stream)
	);
	INSERT INTO suppressions_scoped (address, stream, reason, event_id, created_at, updated_at, expires_at, bounce_reason)
		SELECT address, '', reason, event_id, created_at, updated_at, expires_at, bounce_reason FROM suppressions;
	DROP TABLE suppressions;
	ALTER TABLE suppressions_scoped RENAME TO suppressions;
	CREATE INDEX suppressions_updated_at ON suppressions(updated_at);`},
}

// legacyUserVersion maps PRAGMA user_version, which counted the first
// migrations before they had names, to those names.
var legacyUserVersion = []string{"20261101-core", "20261110-state-inbound", "20261122-suppressions-updated-at"}

var migrationName = regexp.MustCompile(`^[0-9]{8}-[a-z0-9]+(-[a-z0-9]+)*$`)

// migrate applies the migrations the database has not recorded, in one
// immediate transaction (one process applies them; the others wait on the
// lock and find nothing left to do).
func (s *SQLite) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: migrate %s: %w", s.path, err)
	}
	defer tx.Rollback()
	applied, err := appliedMigrations(ctx, tx)
	if err != nil {
		return fmt.Errorf("ledger: migrate %s: %w", s.path, err)
	}
	known := map[string]bool{}
	for _, m := range sqliteMigrations {
		known[m.name] = true
	}
	var unknown []string
	for name := range applied {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("ledger: %s was migrated by a newer program (%s unknown to this one); upgrade Leadpush",
			s.path, strings.Join(unknown, ", "))
	}
	now := time.Now().UnixNano()
	for _, m := range sqliteMigrations {
		if applied[m.name] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("ledger: migration %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`, m.name, now); err != nil {
			return fmt.Errorf("ledger: migration %s: %w", m.name, err)
		}
	}
	return tx.Commit()
}

// appliedMigrations returns the names recorded in schema_migrations,
// creating the table first and carrying over what a ledger written before
// it recorded: the PRAGMA user_version count and the notifier's
// webhook_schema table.
func appliedMigrations(ctx context.Context, tx *sql.Tx) (map[string]bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return nil, err
	}
	if n == 0 {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_migrations (
			name TEXT PRIMARY KEY,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return nil, err
		}
		var legacy []string
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return nil, err
		}
		if v > len(legacyUserVersion) {
			return nil, fmt.Errorf("schema version %d is newer than this program's; upgrade Leadpush", v)
		}
		legacy = append(legacy, legacyUserVersion[:v]...)
		var wv sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT version FROM webhook_schema`).Scan(&wv)
		switch {
		case err == nil && wv.Int64 >= 1:
			legacy = append(legacy, "20261125-webhook")
		case err == nil, errors.Is(err, sql.ErrNoRows), isNoSuchTable(err):
		default:
			return nil, err
		}
		now := time.Now().UnixNano()
		for _, name := range legacy {
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`, name, now); err != nil {
				return nil, err
			}
		}
		if _, err := tx.ExecContext(ctx, `DROP TABLE IF EXISTS webhook_schema`); err != nil {
			return nil, err
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT name FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	applied := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		applied[name] = true
	}
	return applied, rows.Err()
}

func isNoSuchTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// checkMigrated fails unless every migration this program knows is
// recorded: a read-only handle cannot apply them.
func (s *SQLite) checkMigrated(ctx context.Context) error {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("ledger: %s is not migrated to this version yet (start leadpush-milter or leadpushd once): %w", s.path, err)
	}
	defer rows.Close()
	applied := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		applied[name] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	var missing []string
	for _, m := range sqliteMigrations {
		if !applied[m.name] {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ledger: %s lacks migrations %s (start leadpush-milter or leadpushd once to apply them)",
			s.path, strings.Join(missing, ", "))
	}
	return nil
}
