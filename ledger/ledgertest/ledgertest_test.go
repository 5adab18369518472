package ledgertest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// sequenced is a store that breaks the ordering guarantee the way a
// database with a shared sequence and concurrent transactions does: a
// transaction takes its Seq numbers at once and becomes visible only at
// its commit, which may come after a later transaction's.
type sequenced struct {
	mu      sync.Mutex
	next    int64
	visible []*ledger.Event
	slow    bool // every other transaction commits late
}

func (s *sequenced) Record(ctx context.Context, _ []*ledger.Message, evs []*ledger.Event) error {
	s.mu.Lock()
	late := s.slow
	s.slow = !s.slow
	for _, e := range evs {
		s.next++
		e.Seq = s.next
	}
	s.mu.Unlock()
	if late {
		time.Sleep(2 * time.Millisecond) // the commit comes after others'
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range evs {
		c := *e
		s.visible = append(s.visible, &c)
	}
	return nil
}

func (s *sequenced) Events(ctx context.Context, f ledger.Filter) ([]*ledger.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*ledger.Event
	for _, e := range s.visible {
		if e.Seq > f.AfterSeq {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *ledger.Event) int { return int(a.Seq - b.Seq) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func (s *sequenced) Message(context.Context, string) (*ledger.Message, error) {
	return nil, ledger.ErrNotFound
}
func (s *sequenced) MessageByQueueID(context.Context, string) (*ledger.Message, error) {
	return nil, ledger.ErrNotFound
}
func (s *sequenced) MessageByHeaderID(context.Context, string) (*ledger.Message, error) {
	return nil, ledger.ErrNotFound
}
func (s *sequenced) Messages(context.Context, ledger.Filter) ([]*ledger.Message, error) {
	return nil, nil
}
func (s *sequenced) LastSeq(context.Context) (int64, error) { return 0, nil }
func (s *sequenced) MessagesByID(context.Context, []string) (map[string]*ledger.Message, error) {
	return map[string]*ledger.Message{}, nil
}
func (s *sequenced) CountEvents(context.Context, int64, int64, []ledger.EventType) (int64, error) {
	return 0, nil
}

// TestCursorOrderingCatchesReordering: the ordering check of the suite
// fails on a store whose commits become visible out of Seq order, so it
// would fail a PostgreSQL store that forgot to serialise its writers.
func TestCursorOrderingCatchesReordering(t *testing.T) {
	s := &sequenced{}
	r, err := CursorOrdering([]ledger.Recorder{s, s, s, s}, s, 100)
	if err != nil {
		t.Fatal(err)
	}
	if r.Missed == 0 {
		t.Errorf("no event missed on a store that reorders commits: %+v", r)
	}
	t.Logf("reordering store: %+v", r)
}

func (s *sequenced) Event(context.Context, string) (*ledger.Event, error) {
	return nil, ledger.ErrNotFound
}
