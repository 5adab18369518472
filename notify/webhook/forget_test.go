package webhook

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// TestForgetRecutsPendingBatch: erasure wins over a request's
// immutability. A batch that failed holds events of two people; one is
// forgotten before the retry; the retry sends the other's event alone,
// under a new webhook-id.
func TestForgetRecutsPendingBatch(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n == 0 {
			return 503
		}
		return 200
	})
	ctx := context.Background()
	gone := &ledger.Message{ID: "m-gone", Recipients: []string{"gone@example.com"}, CreatedAt: time.Now()}
	stay := &ledger.Message{ID: "m-stay", Recipients: []string{"stay@example.com"}, CreatedAt: time.Now()}
	if err := s.Record(ctx, []*ledger.Message{gone, stay}, []*ledger.Event{
		{ID: "e-gone", Type: ledger.Delivered, MessageID: gone.ID, Recipient: "gone@example.com", Time: time.Now()},
		{ID: "e-stay", Type: ledger.Delivered, MessageID: stay.ID, Recipient: "stay@example.com", Time: time.Now()},
	}); err != nil {
		t.Fatal(err)
	}
	opt := testOptions(t)
	opt.Backoff = []time.Duration{time.Second}
	n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, n)
	// the first attempt fails and is stored
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r, err := s.PendingRequest(ctx, "app"); err == nil && r.Events == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed batch was not stored")
		}
	}
	first, _ := s.PendingRequest(ctx, "app")
	rep, err := s.Forget(ctx, "gone@example.com")
	if err != nil || rep.WebhookRequests != 1 {
		t.Fatalf("forget: %+v, %v", rep, err)
	}
	hs := rc.waitFor(t, 20*time.Second, func(h []hit) bool { return len(h) == 1 })
	stop()
	bes := allBatch(t, hs, DefaultParam)
	if len(bes) != 1 || bes[0].EventID != "e-stay" {
		t.Fatalf("after forget the batch held %+v, want e-stay alone", bes)
	}
	if id := hs[0].Header.Get("webhook-id"); id == first.WebhookID || id == "" {
		t.Errorf("the re-cut batch kept the webhook-id %q of the request that held the erased event", id)
	}
}
