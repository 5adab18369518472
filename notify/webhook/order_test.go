package webhook

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// TestNoEventSkippedWithConcurrentWriters: four processes' worth of ledger
// handles record events concurrently while the notifier delivers; every
// event reaches the receiver exactly once. The cursor over seq is safe only
// because of the ledger's ordering guarantee (ledger.EventReader), which
// the contract suite checks for every store.
func TestNoEventSkippedWithConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	s := openStore(t, path)
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret, BatchSize: 7}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	start(t, n)
	m := &ledger.Message{ID: "m-order", CreatedAt: time.Now()}
	if err := s.Record(context.Background(), []*ledger.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	const writers, batches = 4, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[string]bool{}
	for w := range writers {
		h := openStore(t, path)
		wg.Go(func() {
			for b := range batches {
				var evs []*ledger.Event
				for range 1 + (b+w)%4 {
					evs = append(evs, &ledger.Event{ID: ledger.NewID(), Type: ledger.Open, MessageID: m.ID, Recipient: "r@example.com", Time: time.Now()})
				}
				if err := h.Record(context.Background(), nil, evs); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, e := range evs {
					want[e.ID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	hs := rc.waitFor(t, 30*time.Second, func(h []hit) bool { return len(allBatch(t, h, DefaultParam)) >= len(want) })
	got := map[string]int{}
	for _, be := range allBatch(t, hs, DefaultParam) {
		got[be.EventID]++
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("event %s delivered %d times", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d distinct events delivered, %d recorded", len(got), len(want))
	}
}
