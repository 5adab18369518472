package ledger

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SuppressionCache answers the milter's question for every RCPT, "is this
// address suppressed?", from memory when the answer is no, which it almost
// always is: an SQLite read transaction per recipient was a tenth of the
// milter's CPU under Postfix. It holds a 64-bit keyed hash of every listed
// address, reloads the entries written since its last look every Refresh
// (through an index on updated_at), and asks SQLite only about addresses
// whose hash it holds, so what it answers yes to is always what the
// database says (expiry, unsuppress). Memory: about 16 bytes per listed
// address.
//
// An entry written by another process takes effect within Refresh. If
// reloading fails for longer than three Refresh periods (a locked or gone
// database), every recipient is looked up in SQLite again, as without the
// cache, until a reload succeeds.
type SuppressionCache struct {
	db      SuppressionStore
	refresh time.Duration
	log     *slog.Logger
	seed    maphash.Seed

	mu     sync.RWMutex
	set    map[uint64]struct{}
	cursor int64 // updated_at from which the next reload reads

	loaded    atomic.Int64 // unix nanoseconds of the last successful reload
	full      time.Time    // last full load (Run's goroutine only)
	memory    atomic.Int64 // answers given from memory
	lookups   atomic.Int64 // answers SQLite gave
	reloadErr atomic.Int64 // reloads that failed
}

// Reload timing. An entry's updated_at is taken inside its write
// transaction, which commits well within cacheOverlap (a writer holds the
// lock for milliseconds; BusyTimeout bounds the wait before it), so each
// reload reads from cacheOverlap before the newest entry it saw. A full
// load every cacheFullEvery forgets deleted and expired entries and
// survives a clock stepped back.
const (
	cacheOverlap   = 30 * time.Second
	cacheFullEvery = 10 * time.Minute
)

// NewSuppressionCache returns a cache of db's suppression list. It answers
// through SQLite until its first Reload; call Run to keep it fresh.
func NewSuppressionCache(db SuppressionStore, refresh time.Duration, log *slog.Logger) *SuppressionCache {
	if log == nil {
		log = slog.Default()
	}
	return &SuppressionCache{db: db, refresh: refresh, log: log, seed: maphash.MakeSeed()}
}

// SuppressionCacheStats counts the cache's answers.
type SuppressionCacheStats struct {
	Entries       int   // addresses held
	Memory        int64 // recipients answered from memory (not listed)
	Lookups       int64 // recipients looked up in SQLite
	ReloadErrors  int64 // failed reloads
	LastReloadAge time.Duration
}

// Stats returns the counters.
func (c *SuppressionCache) Stats() SuppressionCacheStats {
	c.mu.RLock()
	n := len(c.set)
	c.mu.RUnlock()
	st := SuppressionCacheStats{Entries: n, Memory: c.memory.Load(), Lookups: c.lookups.Load(), ReloadErrors: c.reloadErr.Load(), LastReloadAge: -1}
	if l := c.loaded.Load(); l != 0 {
		st.LastReloadAge = time.Since(time.Unix(0, l))
	}
	return st
}

func (c *SuppressionCache) hash(addr string) uint64 { return maphash.String(c.seed, addr) }

// fresh reports whether the set may answer: loaded, and recently enough.
func (c *SuppressionCache) fresh() bool {
	l := c.loaded.Load()
	return l != 0 && time.Since(time.Unix(0, l)) <= 3*c.refresh+time.Second
}

// Suppressed returns the live suppression of an address, or ErrNotFound,
// as SQLite.Suppressed does.
func (c *SuppressionCache) Suppressed(ctx context.Context, address string, now time.Time) (*Suppression, error) {
	if !c.listed(address) {
		return nil, ErrNotFound
	}
	return c.db.Suppressed(ctx, address, now)
}

// SuppressionsOf returns every live entry of an address, whatever their
// scope, as SQLite.SuppressionsOf does: the set is keyed by address alone,
// so an address listed in one stream is looked up in the database, which
// tells the scopes apart.
func (c *SuppressionCache) SuppressionsOf(ctx context.Context, address string, now time.Time) ([]*Suppression, error) {
	if !c.listed(address) {
		return nil, nil
	}
	return c.db.SuppressionsOf(ctx, address, now)
}

// listed reports whether the database must be asked: the set is not
// fresh, or it holds the address; it counts the answer.
func (c *SuppressionCache) listed(address string) bool {
	if c.fresh() {
		h := c.hash(NormalizeAddress(address))
		c.mu.RLock()
		_, listed := c.set[h]
		c.mu.RUnlock()
		if !listed {
			c.memory.Add(1)
			return false
		}
	}
	c.lookups.Add(1)
	return true
}

// Reload reads the entries written since the last reload (all of them the
// first time, and every cacheFullEvery).
func (c *SuppressionCache) Reload(ctx context.Context) error {
	full := c.loaded.Load() == 0 || time.Since(c.full) >= cacheFullEvery
	c.mu.RLock()
	from := c.cursor
	c.mu.RUnlock()
	start := time.Now()
	var hashes []uint64
	newest := from
	since := time.Unix(0, from)
	if full {
		since = time.Time{}
	}
	err := c.db.WrittenSuppressions(ctx, since, start, func(a string, written time.Time) {
		hashes = append(hashes, c.hash(a))
		newest = max(newest, written.UnixNano())
	})
	if err != nil {
		c.reloadErr.Add(1)
		return fmt.Errorf("ledger: reload suppressions: %w", err)
	}
	// Never past now: a clock stepped back would otherwise hide entries
	// until the next full load.
	cursor := min(newest, start.UnixNano()) - int64(cacheOverlap)
	c.mu.Lock()
	if full {
		c.set = make(map[uint64]struct{}, len(hashes))
	}
	for _, h := range hashes {
		c.set[h] = struct{}{}
	}
	c.cursor = max(cursor, 0)
	c.mu.Unlock()
	if full {
		c.full = start
	}
	// Fresh from when the query began: anything committed after that is
	// read by the next reload.
	c.loaded.Store(start.UnixNano())
	return nil
}

// Run reloads every Refresh until ctx ends. Failures are logged once per
// minute at most, and answered meanwhile through SQLite (see the type).
func (c *SuppressionCache) Run(ctx context.Context) {
	var lastLog time.Time
	t := time.NewTicker(c.refresh)
	defer t.Stop()
	for {
		if err := c.Reload(ctx); err != nil && ctx.Err() == nil && time.Since(lastLog) > time.Minute {
			lastLog = time.Now()
			c.log.Warn("suppression list not reloaded; looking recipients up in the database", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
