package ledger

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestPrunedPagesReused: the file does not grow without bound under
// retention. SQLite keeps the pages pruning frees on its free list and
// fills them before it extends the file, so a ledger that prunes what it
// writes stays the same size (no VACUUM needed).
func TestPrunedPagesReused(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	day := 24 * time.Hour
	size := func() int64 {
		s.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		fi, err := os.Stat(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	now := time.Now()
	write := func(round int, created time.Time) {
		for b := range 20 {
			var msgs []*Message
			var evs []*Event
			for i := range 100 {
				m := sampleMessage()
				m.ID = fmt.Sprintf("r%d-b%d-m%d", round, b, i)
				m.CreatedAt = created
				msgs = append(msgs, m)
				for range 5 {
					evs = append(evs, &Event{ID: NewID(), Type: Open, MessageID: m.ID, Recipient: "customer@example.com", Time: created,
						Detail: Detail{IP: "198.51.100.7", UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0", Source: "tracker"}})
				}
			}
			if err := s.Record(ctx, msgs, evs); err != nil {
				t.Fatal(err)
			}
		}
	}
	prune := func(at time.Time) {
		for range 1000 {
			p, err := s.Prune(ctx, Retention{Messages: 90 * day}, at)
			if err != nil {
				t.Fatal(err)
			}
			if p == (Pruned{}) {
				return
			}
		}
		t.Fatal("pruning never finished")
	}
	write(0, now.Add(-200*day))
	first := size()
	for round := 1; round <= 4; round++ {
		prune(now)
		write(round, now.Add(-200*day))
	}
	if last := size(); last > first*12/10 {
		t.Errorf("file grew from %d to %d bytes over four rounds of prune and write", first, last)
	}
	var free int64
	s.w.QueryRow("PRAGMA freelist_count").Scan(&free)
	t.Logf("size %d bytes after 5 rounds of 2000 messages and 10000 events, %d pages free", size(), free)
}

// TestPruneBoundedByEvents: a message with more events than one pruning
// transaction deletes goes over several, its events first.
func TestPruneBoundedByEvents(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	old := time.Now().Add(-200 * 24 * time.Hour)
	m := sampleMessage()
	m.CreatedAt = old
	var evs []*Event
	for range pruneEvents + 500 {
		evs = append(evs, &Event{ID: NewID(), Type: Open, MessageID: m.ID, Time: old})
	}
	if err := s.Record(ctx, []*Message{m}, evs); err != nil {
		t.Fatal(err)
	}
	r := Retention{Messages: 90 * 24 * time.Hour}
	var got []Pruned
	for range 5 {
		p, err := s.Prune(ctx, r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if p == (Pruned{}) {
			break
		}
		got = append(got, p)
	}
	if len(got) != 2 || got[0] != (Pruned{Events: pruneEvents}) || got[1] != (Pruned{Messages: 1, Events: 500}) {
		t.Errorf("prune passes %+v, want %d events, then the last 500 with the message", got, pruneEvents)
	}
}
