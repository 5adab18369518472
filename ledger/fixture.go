package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// This file serves tests and benchmarks of other packages that need the
// SQLite file itself: they may not touch SQL (the store is the only
// package that does).

// HoldWriteLock takes SQLite's write lock on the database at path from a
// connection of its own, as another process's long transaction would,
// and keeps it until release is called: for tests of what must not stall
// while the ledger is locked.
func HoldWriteLock(path string) (release func() error, err error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(100)")
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(context.Background())
	if err != nil {
		db.Close()
		return nil, err
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		conn.Close()
		db.Close()
		return nil, err
	}
	return func() error {
		_, err := conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
		db.Close()
		return err
	}, nil
}

// GrowSQLite appends n open events spread over 5000 message ids to the
// ledger at path in one statement, for benchmarks on a grown ledger; the
// messages themselves are not written.
func GrowSQLite(path string, n int) error {
	g, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer g.Close()
	if _, err := g.Exec(fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d)
		INSERT INTO events (id, type, message_id, recipient, time, detail) SELECT printf('%%020d', x), 'open',
		printf('m%%019d', (x * 7919) %% 5000), 'reader@example.org', x,
		'{"ip":"127.0.0.1","user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","ua_family":"Chrome","ua_major":"120","source":"tracker"}' FROM c`, n)); err != nil {
		return fmt.Errorf("ledger: grow %s: %w", path, err)
	}
	_, err = g.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return err
}

// ForgetMigrationForTest undoes the record of one migration (not the
// change itself), as if the ledger had been written by an older program:
// for tests of what refuses or applies migrations.
func ForgetMigrationForTest(ctx context.Context, s *SQLite, name string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM schema_migrations WHERE name = ?`, name); err != nil {
		return err
	}
	// The change itself, so that applying it again works.
	for _, m := range sqliteMigrations {
		if m.name == name && strings.HasPrefix(m.sql, "CREATE INDEX ") {
			idx := strings.Fields(m.sql)[2]
			_, err := s.w.ExecContext(ctx, `DROP INDEX `+idx)
			return err
		}
	}
	return nil
}

// Fixture describes a ledger grown to the shape of a real sender's: many
// messages, each with its processing, delivery, opens and clicks, the
// opens from many distinct browsers and mail clients.
type Fixture struct {
	Messages int           // messages, created evenly over Span before Now
	Events   int           // events spread over them, in time order
	Span     time.Duration // 0: 100 days
	Now      time.Time     // zero: time.Now()
	// NewMessageID mints the messages' ids (token.NewMessageID, so that
	// tracking tokens can name them); nil: NewID.
	NewMessageID func() string
	// Name tells fixtures of the same size apart in CachedFixture (say,
	// "token" for ids from token.NewMessageID); "" is "id".
	Name string
	// Window is how far back from an event its message may have been
	// created (opens come days after the send); 0: 7 days.
	Window time.Duration
}

// fixtureTx is how many events one transaction of BuildFixture inserts.
const fixtureTx = 1_000_000

// FixtureRecipient is the recipient of the fixture's message i.
func FixtureRecipient(i int) string { return fmt.Sprintf("reader%d@example.org", i) }

// BuildFixture writes a new ledger at path (which must not exist) holding
// f.Messages messages and f.Events events, fast: the messages are inserted
// from Go in one transaction, the events by SQLite itself (a recursive
// query per million events, no round trip per row), into the events table
// without its secondary indexes, which are then built once by sorting.
// The events are in time order (Seq follows Time), each on a message
// created within f.Window before it, recipient FixtureRecipient(i): 5%
// processed, 8% delivered, 60% opens, 25% clicks, 1% soft bounces, 0.5%
// hard bounces, 0.3% unsubscribes and 0.2% complaints, with the details
// the tracker, the milter and the log follower write (IP, one of
// FixtureUserAgents(1000) with its family and major version, URL, status,
// relay, report). Written directly, the events do not bump the messages'
// counters or suppress their recipients as Record would. The file is
// built under path+".tmp" with the journal off and renamed when complete.
func BuildFixture(path string, f Fixture) error {
	if f.Span <= 0 {
		f.Span = 100 * 24 * time.Hour
	}
	if f.Window <= 0 {
		f.Window = 7 * 24 * time.Hour
	}
	if f.Now.IsZero() {
		f.Now = time.Now()
	}
	if f.NewMessageID == nil {
		f.NewMessageID = NewID
	}
	if f.Messages <= 0 || f.Events < 0 {
		return fmt.Errorf("ledger: fixture: %d messages, %d events", f.Messages, f.Events)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("ledger: fixture: %s exists", path)
	}
	tmp := path + ".tmp"
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		os.Remove(p)
	}
	s, err := OpenSQLite(tmp) // the schema, migrated
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", "file:"+tmp+"?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)&_pragma=cache_size(-262144)"+
		"&_pragma=temp_store(MEMORY)")
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	fail := func(err error) error {
		db.Close()
		return fmt.Errorf("ledger: fixture %s: %w", path, err)
	}
	ctx := context.Background()
	start, span := f.Now.Add(-f.Span).UnixNano(), f.Span.Nanoseconds()

	// Messages, and a numbered copy of their ids for the event query.
	tx, err := db.Begin()
	if err != nil {
		return fail(err)
	}
	ins, err := tx.Prepare(`INSERT INTO messages (id, queue_id, envelope_from, recipients, from_hdr, to_hdr, subject,
		message_id_hdr, tag, tracking, headers, sasl_user, client_addr, return_path, links, created_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		tx.Rollback()
		return fail(err)
	}
	if _, err := tx.Exec(`CREATE TEMP TABLE fx_msgs (i INTEGER PRIMARY KEY, id TEXT NOT NULL)`); err != nil {
		tx.Rollback()
		return fail(err)
	}
	num, err := tx.Prepare(`INSERT INTO fx_msgs (i, id) VALUES (?, ?)`)
	if err != nil {
		tx.Rollback()
		return fail(err)
	}
	tags := []string{"newsletter", "welcome", "password-reset", "receipt", "digest", "promo"}
	for i := range f.Messages {
		id := f.NewMessageID()
		rcpt := FixtureRecipient(i)
		links := make([]string, 1+i%5)
		for k := range links {
			links[k] = fmt.Sprintf("https://www.example.com/articles/%d?utm_source=%s&utm_medium=email", (i+k)%500, tags[i%len(tags)])
		}
		created := start + int64(float64(span)*float64(i)/float64(f.Messages))
		if _, err := ins.Exec(id, fmt.Sprintf("%010X", i+1), fmt.Sprintf("bounces+%d@mail.example.com", i), mustJSON([]string{rcpt}),
			"Example News <news@example.com>", rcpt, fmt.Sprintf("Your %s, issue %d", tags[i%len(tags)], i/len(tags)),
			fmt.Sprintf("<%d.%s@mail.example.com>", i, id), tags[i%len(tags)], string(TrackAll),
			mustJSON([]Header{{Name: "X-Campaign", Value: fmt.Sprintf("c%d", i/1000)}}), "app", "10.0.0.5",
			fmt.Sprintf("bounces+%s@mail.example.com", id), mustJSON(links), created); err != nil {
			tx.Rollback()
			return fail(err)
		}
		if _, err := num.Exec(i, id); err != nil {
			tx.Rollback()
			return fail(err)
		}
	}
	ins.Close()
	num.Close()
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	if _, err := db.Exec(`CREATE TEMP TABLE fx_ua (i INTEGER PRIMARY KEY, ua TEXT NOT NULL, family TEXT NOT NULL, major TEXT NOT NULL)`); err != nil {
		return fail(err)
	}
	for i, ua := range FixtureUserAgents(1000) {
		if _, err := db.Exec(`INSERT INTO fx_ua VALUES (?,?,?,?)`, i, ua.Raw, ua.Family, ua.Major); err != nil {
			return fail(err)
		}
	}

	// The events table's secondary indexes are dropped, and built again
	// once the rows are in: inserting into events_message in message
	// order, not Seq order, would touch a random page per row.
	var idx []string
	rows, err := db.QueryContext(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL`)
	if err != nil {
		return fail(err)
	}
	var names []string
	for rows.Next() {
		var name, q string
		if err := rows.Scan(&name, &q); err != nil {
			rows.Close()
			return fail(err)
		}
		names, idx = append(names, name), append(idx, q)
	}
	rows.Close()
	for _, n := range names {
		if _, err := db.Exec(`DROP INDEX ` + n); err != nil {
			return fail(err)
		}
	}
	// Event x (0-based) happens at start + span*x/Events, on a message
	// created up to Window before it; h is a cheap hash of x choosing its
	// type, message, user agent and IP.
	window := int64(float64(f.Messages) * float64(f.Window) / float64(f.Span))
	window = max(window, 1)
	q := fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x+1 FROM c WHERE x < ?),
		h(x, h, t, m) AS (SELECT x, (x * 2654435761) %% 4294967291, %[1]d + CAST(%[2]d * (x / %[3]d.0) AS INTEGER),
			CAST(%[4]d * (x / %[3]d.0) AS INTEGER) - ((x * 40503) %% min(%[5]d, CAST(%[4]d * (x / %[3]d.0) AS INTEGER) + 1)) FROM c),
		k(x, h, t, m, typ) AS (SELECT x, h, t, min(m, %[6]d), CASE
			WHEN h %% 1000 < 50 THEN 'processed' WHEN h %% 1000 < 130 THEN 'delivered'
			WHEN h %% 1000 < 730 THEN 'open' WHEN h %% 1000 < 980 THEN 'click'
			WHEN h %% 1000 < 990 THEN 'soft_bounce' WHEN h %% 1000 < 995 THEN 'hard_bounce'
			WHEN h %% 1000 < 998 THEN 'unsubscribe' ELSE 'spam' END FROM h)
		INSERT INTO events (id, type, message_id, recipient, time, detail)
		SELECT printf('fx%%018d', k.x), k.typ, fx_msgs.id, 'reader' || k.m || '@example.org', k.t, CASE k.typ
			WHEN 'processed' THEN '{"source":"milter"}'
			WHEN 'delivered' THEN '{"status":"2.0.0","relay":"mx' || (k.h %% 7) || '.example.net[192.0.2.' || (k.h %% 200) ||
				']:25","delivery_report":"250 2.0.0 Ok: queued as ' || printf('%%X', k.h) || '","source":"maillog"}'
			WHEN 'open' THEN json_object('ip', '198.51.' || (k.h %% 250) || '.' || (k.h / 250 %% 250), 'user_agent', fx_ua.ua,
				'ua_family', fx_ua.family, 'ua_major', fx_ua.major, 'source', 'tracker')
			WHEN 'click' THEN json_object('ip', '198.51.' || (k.h %% 250) || '.' || (k.h / 250 %% 250), 'user_agent', fx_ua.ua,
				'ua_family', fx_ua.family, 'ua_major', fx_ua.major,
				'url', 'https://www.example.com/articles/' || (k.h %% 500) || '?utm_source=digest&utm_medium=email', 'source', 'tracker')
			WHEN 'soft_bounce' THEN '{"status":"4.2.2","relay":"mx.example.net[192.0.2.9]:25","delivery_report":"452 4.2.2 Mailbox full","source":"maillog","bounce_reason":"mailboxfull"}'
			WHEN 'hard_bounce' THEN '{"status":"5.1.1","relay":"mx.example.net[192.0.2.9]:25","delivery_report":"550 5.1.1 User unknown","source":"dsn","bounce_reason":"userunknown"}'
			WHEN 'unsubscribe' THEN '{"ip":"203.0.113.7","source":"tracker"}'
			ELSE '{"source":"arf"}' END
		FROM k CROSS JOIN fx_msgs CROSS JOIN fx_ua WHERE fx_msgs.i = k.m AND fx_ua.i = k.h / 1000 %% 1000`,
		start, span, f.Events, f.Messages, window, f.Messages-1)
	// CROSS JOIN keeps the generated rows outermost: they are inserted,
	// and get their Seq, in x order.
	for lo := 0; lo < f.Events; lo += fixtureTx {
		hi := min(lo+fixtureTx, f.Events) - 1
		if _, err := db.Exec(q, lo, hi); err != nil {
			return fail(err)
		}
	}
	for _, q := range idx {
		if _, err := db.Exec(q); err != nil {
			return fail(err)
		}
	}
	if _, err := db.Exec(`PRAGMA journal_mode=WAL`); err != nil {
		return fail(err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("ledger: fixture %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// FixtureUA is a user agent of the fixture with what the tracker's parser
// reports of it.
type FixtureUA struct{ Raw, Family, Major string }

// FixtureUserAgents returns n distinct, realistic user agents (browsers on
// the desktop and phones, mail clients, webmail proxies), the same on
// every call.
func FixtureUserAgents(n int) []FixtureUA {
	type tmpl struct {
		family, format string
		lo, hi         int
	}
	ts := []tmpl{
		{"Chrome", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d Safari/537.36", 90, 131},
		{"Chrome", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d Safari/537.36", 90, 131},
		{"Chrome Mobile", "Mozilla/5.0 (Linux; Android 1%[2]d; SM-G99%[3]d) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%[1]d.0.0.0 Mobile Safari/537.36", 90, 131},
		{"Firefox", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:%[1]d.0) Gecko/20100101 Firefox/%[1]d.%[2]d", 90, 133},
		{"Firefox", "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:%[1]d.0) Gecko/20100101 Firefox/%[1]d.%[3]d", 90, 133},
		{"Edge", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%[1]d.0.0.0 Safari/537.36 Edg/%[1]d.0.%[2]d.%[3]d", 90, 131},
		{"Mobile Safari", "Mozilla/5.0 (iPhone; CPU iPhone OS %[1]d_%[2]d like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/%[1]d.%[2]d Mobile/15E%[3]d Safari/604.1", 12, 18},
		{"Safari", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/%[1]d.%[2]d Safari/605.1.%[3]d", 12, 18},
		{"Apple Mail", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.%[3]d (KHTML, like Gecko) Mail/%[1]d.%[2]d", 12, 18},
		{"Outlook", "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.%[3]d%[2]d; Pro) Outlook/%[1]d", 14, 17},
		{"Thunderbird", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:%[1]d.0) Gecko/20100101 Thunderbird/%[1]d.%[2]d.%[3]d", 91, 128},
		{"GoogleImageProxy", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy) build/%[1]d%[2]d%[3]d", 1, 9},
		{"YahooMailProxy", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html build/%[1]d.%[2]d.%[3]d", 1, 9},
	}
	out := make([]FixtureUA, 0, n)
	seen := map[string]bool{}
	for i := 0; len(out) < n; i++ {
		t := ts[i%len(ts)]
		major := t.lo + (i/len(ts))%(t.hi-t.lo+1)
		raw := fmt.Sprintf(t.format, major, (i/7)%10, 4000+i%997)
		if seen[raw] {
			continue
		}
		seen[raw] = true
		out = append(out, FixtureUA{Raw: raw, Family: t.family, Major: fmt.Sprint(major)})
	}
	return out
}

// CachedFixture returns the path of a fixture ledger of f's shape in dir,
// building it first when it is not there, and whether it was built now.
// The name holds the shape: a cached file is reused across runs, and the
// caller copies it before writing to it (CopyLedger). f.Now is the time
// it was built, so its messages age between runs.
func CachedFixture(dir string, f Fixture) (path string, built bool, err error) {
	// The schema's last migration is in the name: a fixture written before
	// a new one is not reused.
	name := f.Name
	if name == "" {
		name = "id"
	}
	path = filepath.Join(dir, fmt.Sprintf("ledger-fixture-v2-%s-%s-%dm-%de.db", name, sqliteMigrations[len(sqliteMigrations)-1].name,
		f.Messages, f.Events))
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	return path, true, BuildFixture(path, f)
}

// CopyLedger copies a ledger that no process writes to (a fixture) to a
// new file; it fails when the ledger's write-ahead log holds pages not
// yet in the file.
func CopyLedger(from, to string) error {
	if fi, err := os.Stat(from + "-wal"); err == nil && fi.Size() > 0 {
		return fmt.Errorf("ledger: copy %s: its -wal holds %d bytes not checkpointed", from, fi.Size())
	}
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
		return err
	}
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
