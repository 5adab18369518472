package ledger

import (
	"context"
	"database/sql"
	"fmt"
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
