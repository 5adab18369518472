package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Two handles on one file: the milter's cache and another process
// (leadpushd, leadpushctl) writing the list.
func openPair(t *testing.T) (milter, other *SQLite) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "l.db")
	var err error
	if milter, err = OpenSQLite(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { milter.Close() })
	if other, err = OpenSQLite(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	return milter, other
}

func wantListed(t *testing.T, c *SuppressionCache, addr string, reason SuppressionReason) {
	t.Helper()
	sp, err := c.Suppressed(context.Background(), addr, time.Now())
	if err != nil || sp.Reason != reason {
		t.Fatalf("Suppressed(%q) = %+v, %v; want reason %q", addr, sp, err, reason)
	}
}

func wantUnlisted(t *testing.T, c *SuppressionCache, addr string) {
	t.Helper()
	if sp, err := c.Suppressed(context.Background(), addr, time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Suppressed(%q) = %+v, %v; want ErrNotFound", addr, sp, err)
	}
}

func TestSuppressionCache(t *testing.T) {
	db, other := openPair(t)
	ctx := context.Background()
	past := time.Now().Add(-time.Hour)
	if err := other.Suppress(ctx, Suppression{Address: "Old@Example.com", Reason: "hard_bounce"}); err != nil {
		t.Fatal(err)
	}
	c := NewSuppressionCache(db, time.Hour, nil)

	// Before the first load every answer comes from the database.
	wantUnlisted(t, c, "new@example.com")
	wantListed(t, c, "old@example.com", "hard_bounce")
	if st := c.Stats(); st.Lookups != 2 || st.Memory != 0 {
		t.Fatalf("before loading: %+v, want 2 lookups", st)
	}

	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	// Unlisted addresses are answered from memory; listed ones, in any
	// case, from the database.
	for range 3 {
		wantUnlisted(t, c, "new@example.com")
	}
	wantListed(t, c, "<OLD@example.COM>", "hard_bounce")
	if st := c.Stats(); st.Entries != 1 || st.Memory != 3 || st.Lookups != 3 {
		t.Fatalf("after loading: %+v, want 1 entry, 3 memory answers, 3 lookups", st)
	}

	// Another process lists an address, for an event an hour old (a
	// replayed spool): the next reload sees it, as the entry's updated_at
	// is when it was written.
	wantUnlisted(t, c, "new@example.com")
	if err := other.Record(ctx, nil, []*Event{{ID: NewID(), Type: Unsubscribe, Recipient: "new@example.com", Time: past}}); err != nil {
		t.Fatal(err)
	}
	wantUnlisted(t, c, "new@example.com") // not reloaded yet: the documented window
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	wantListed(t, c, "new@example.com", "unsubscribe")

	// Removed: the database has the last word until the next full load
	// forgets the hash.
	if ok, err := other.Unsuppress(ctx, "new@example.com"); err != nil || !ok {
		t.Fatalf("Unsuppress = %v, %v", ok, err)
	}
	wantUnlisted(t, c, "new@example.com")
	before := c.Stats().Lookups
	wantUnlisted(t, c, "new@example.com")
	if c.Stats().Lookups != before+1 {
		t.Fatal("a removed address still held must be looked up")
	}

	// Expired entries answer no, and a full load leaves them out.
	exp := time.Now().Add(-time.Minute)
	if err := other.Suppress(ctx, Suppression{Address: "gone@example.com", Reason: "manual", ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	wantUnlisted(t, c, "gone@example.com")
	c.full = time.Time{} // as if cacheFullEvery had passed
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("after a full load: %d entries, want 1 (old@)", st.Entries)
	}
	before = c.Stats().Lookups
	wantUnlisted(t, c, "new@example.com")
	wantUnlisted(t, c, "gone@example.com")
	if c.Stats().Lookups != before {
		t.Fatal("a full load must forget removed and expired addresses")
	}
	wantListed(t, c, "old@example.com", "hard_bounce")
}

// A set that has not been reloaded for three periods is not trusted: a
// database that cannot be read must not let new entries through unseen.
func TestSuppressionCacheStale(t *testing.T) {
	db, other := openPair(t)
	ctx := context.Background()
	c := NewSuppressionCache(db, 10*time.Millisecond, nil)
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Suppress(ctx, Suppression{Address: "late@example.com", Reason: "manual"}); err != nil {
		t.Fatal(err)
	}
	c.loaded.Store(time.Now().Add(-2 * time.Second).UnixNano())
	wantListed(t, c, "late@example.com", "manual")

	// Reload errors are counted, and leave the set stale.
	db.r.Close()
	if err := c.Reload(ctx); err == nil {
		t.Fatal("Reload on a closed database succeeded")
	}
	if st := c.Stats(); st.ReloadErrors != 1 || st.LastReloadAge < 2*time.Second {
		t.Fatalf("after a failed reload: %+v", st)
	}
}

// Run keeps the set fresh: an entry written by another process takes
// effect within the refresh period.
func TestSuppressionCacheRun(t *testing.T) {
	db, other := openPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	c := NewSuppressionCache(db, 20*time.Millisecond, nil)
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().LastReloadAge < 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run never loaded the set")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := other.Suppress(ctx, Suppression{Address: "run@example.com", Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	for c.Stats().Entries != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("entry not loaded: %+v", c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantListed(t, c, "run@example.com", "spam")
}

// TestSuppressionCacheScopes: the set is keyed by address alone; an
// address listed in any scope is asked of the database, which returns
// every entry with its scope, and an unlisted one is answered from memory.
func TestSuppressionCacheScopes(t *testing.T) {
	db, other := openPair(t)
	ctx := context.Background()
	other.Suppress(ctx, Suppression{Address: "left@example.com", Stream: "news", Reason: ReasonUnsubscribe})
	other.Suppress(ctx, Suppression{Address: "left@example.com", Stream: ScopeBroadcast, Reason: ReasonManual})
	c := NewSuppressionCache(db, time.Hour, nil)
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := c.SuppressionsOf(ctx, "Left@Example.com", time.Now())
	if err != nil || len(list) != 2 || list[0].Stream != ScopeBroadcast || list[1].Stream != "news" {
		t.Fatalf("SuppressionsOf(listed) = %+v, %v", list, err)
	}
	if list[1].Applies("tx", false) || !list[1].Applies("news", true) {
		t.Errorf("scope news applies wrongly")
	}
	if list, err := c.SuppressionsOf(ctx, "ok@example.com", time.Now()); err != nil || len(list) != 0 {
		t.Errorf("SuppressionsOf(unlisted) = %+v, %v", list, err)
	}
	if st := c.Stats(); st.Lookups != 1 || st.Memory != 1 {
		t.Errorf("stats %+v: want 1 database lookup and 1 memory answer", st)
	}
}
