package ledger

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestBuildFixture builds a small fixture and checks its shape: the
// counts, Seq in time order, every event on a message created before it,
// the details the readers decode, a timeline through Events.
func TestBuildFixture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fx.db")
	now := time.Now()
	if err := BuildFixture(path, Fixture{Messages: 300, Events: 2_500_000 / 100, Now: now}); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	msgs, err := s.Messages(ctx, Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 300 {
		t.Fatalf("%d messages, want 300", len(msgs))
	}
	created := map[string]time.Time{}
	for _, m := range msgs {
		created[m.ID] = m.CreatedAt
	}
	if n, _ := s.LastSeq(ctx); n != 25000 {
		t.Fatalf("last seq %d, want 25000", n)
	}
	types := map[EventType]int{}
	var last time.Time
	uas := map[string]bool{}
	for after := int64(0); ; {
		evs, err := s.Events(ctx, Filter{AfterSeq: after, Limit: 5000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			after = e.Seq
			types[e.Type]++
			if e.Time.Before(last) {
				t.Fatalf("event %d at %v, before the one recorded before it (%v)", e.Seq, e.Time, last)
			}
			last = e.Time
			c, ok := created[e.MessageID]
			if !ok || c.After(e.Time) {
				t.Fatalf("event %d on message %q created %v, at %v", e.Seq, e.MessageID, c, e.Time)
			}
			if e.Type == Open && (e.Detail.UserAgent == "" || e.Detail.UAFamily == "" || e.Detail.IP == "") {
				t.Fatalf("open without its details: %+v", e.Detail)
			}
			uas[e.Detail.UserAgent] = true
		}
	}
	if types[Open] < 12000 || types[Click] < 5000 || types[Delivered] == 0 || types[Processed] == 0 || types[HardBounce] == 0 {
		t.Errorf("event types %v", types)
	}
	if len(uas) < 900 {
		t.Errorf("%d distinct user agents, want about 1000", len(uas))
	}
	if last.After(now) || last.Before(now.Add(-time.Hour)) {
		t.Errorf("last event at %v, want just before %v", last, now)
	}
	tl, err := s.Events(ctx, Filter{MessageID: msgs[0].ID})
	if err != nil || len(tl) == 0 {
		t.Fatalf("timeline of %s: %d events, %v", msgs[0].ID, len(tl), err)
	}
	if ua := FixtureUserAgents(1000); len(ua) != 1000 || ua[0] != FixtureUserAgents(1)[0] {
		t.Errorf("FixtureUserAgents: %d, not stable", len(ua))
	}
}
