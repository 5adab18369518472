package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcurrentFirstOpen: the milter, leadpushd and a burst of
// leadpushctl ingest processes may open a new ledger at once; the schema
// migration runs in an immediate transaction, so exactly one applies it.
func TestConcurrentFirstOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenSQLite(path)
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestMigrationNames: names, not positions, record what a ledger has
// applied, so two branches' migrations both apply after a merge; the one
// thing that must not happen is the same name twice.
func TestMigrationNames(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range sqliteMigrations {
		if !migrationName.MatchString(m.name) {
			t.Errorf("migration %q: want YYYYMMDD-topic", m.name)
		}
		if seen[m.name] {
			t.Errorf("migration %q twice", m.name)
		}
		seen[m.name] = true
	}
	for _, name := range legacyUserVersion {
		if !seen[name] {
			t.Errorf("legacy migration %q is not in the list", name)
		}
	}
}

func schemaOf(t *testing.T, s *SQLite) []string {
	t.Helper()
	rows, err := s.r.Query(`SELECT type || ' ' || name || ' ' || COALESCE(sql, '') FROM sqlite_master
		WHERE name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.Join(strings.Fields(s), " "))
	}
	return out
}

// TestUpgradeFromNumberedSchema: a ledger written before migrations had
// names (PRAGMA user_version 1 to 3, the notifier's webhook_schema) ends
// with the same schema as a new one, its data kept, each migration applied
// once.
func TestUpgradeFromNumberedSchema(t *testing.T) {
	fresh := openTest(t)
	want := schemaOf(t, fresh)
	for v := 0; v <= len(legacyUserVersion); v++ {
		for _, webhook := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "old.db")
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range sqliteMigrations[:v] {
				if _, err := db.Exec(m.sql); err != nil {
					t.Fatal(err)
				}
			}
			if v >= 1 {
				if _, err := db.Exec(`INSERT INTO events (id, type, time) VALUES ('old', 'open', 1)`); err != nil {
					t.Fatal(err)
				}
			}
			if webhook {
				if _, err := db.Exec(`CREATE TABLE webhook_schema (version INTEGER NOT NULL); INSERT INTO webhook_schema VALUES (1);` +
					sqliteMigrations[3].sql); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err := OpenSQLite(path)
			if err != nil {
				t.Fatalf("user_version %d, webhook %v: %v", v, webhook, err)
			}
			if got := schemaOf(t, s); !slices.Equal(got, want) {
				t.Errorf("user_version %d, webhook %v: schema\n%v\nwant\n%v", v, webhook, got, want)
			}
			if n, _ := s.LastSeq(context.Background()); v >= 1 && n != 1 {
				t.Errorf("user_version %d: the old event is gone", v)
			}
			s.Close()
			// Opening again applies nothing twice.
			s, err = OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}
	}
}

// TestNewerLedgerRefused: a ledger a newer program migrated is not opened
// by an older one, which says why.
func TestNewerLedgerRefused(t *testing.T) {
	s := openTest(t)
	if _, err := s.w.Exec(`INSERT INTO schema_migrations (name, applied_at) VALUES ('20991231-future', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err := OpenSQLite(s.Path())
	if err == nil || !strings.Contains(err.Error(), "20991231-future") || !strings.Contains(err.Error(), "newer program") {
		t.Errorf("opening a newer ledger: %v", err)
	}
}

// TestStreamsMigrationKeepsSuppressions: entries written before streams
// become entries for every stream, and messages get no stream.
func TestStreamsMigrationKeepsSuppressions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for _, m := range sqliteMigrations {
		if m.name == "20261202-streams" {
			break
		}
		if _, err := db.Exec(m.sql); err != nil {
			t.Fatal(err)
		}
		db.Exec(`INSERT INTO schema_migrations VALUES (?, 0)`, m.name)
	}
	if _, err := db.Exec(`INSERT INTO suppressions (address, reason, created_at, updated_at, bounce_reason) VALUES ('old@example.com', 'unsubscribe', 1, 2, '');
		INSERT INTO messages (id, created_at) VALUES ('m1', 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	list, err := s.SuppressionsOf(ctx, "old@example.com", time.Unix(0, 0))
	if err != nil || len(list) != 1 || list[0].Stream != ScopeAll || list[0].Reason != ReasonUnsubscribe || !list[0].Applies("any", false) {
		t.Fatalf("old entry after migration: %+v, %v", list, err)
	}
	if m, err := s.Message(ctx, "m1"); err != nil || m.Stream != "" {
		t.Errorf("old message: %+v, %v", m, err)
	}
	// the new key: one entry per address and scope
	if err := s.Suppress(ctx, Suppression{Address: "old@example.com", Stream: "news", Reason: ReasonManual}); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.SuppressionsOf(ctx, "old@example.com", time.Now()); len(list) != 2 {
		t.Errorf("entries %+v", list)
	}
}
