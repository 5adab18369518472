package tracker

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

type fakeConfirmer struct {
	mu   sync.Mutex
	sent map[string]string // to -> link
	ch   chan struct{}
}

func (f *fakeConfirmer) SendConfirmation(ctx context.Context, to, link string) error {
	f.mu.Lock()
	f.sent[to] = link
	f.mu.Unlock()
	f.ch <- struct{}{}
	return nil
}

// TestUnsubscribeConfirmation: on the page of a message with several
// recipients, an address typed gets a signed, expiring link when it is
// one of them (and nothing otherwise, with the same answer); the link's
// page unsubscribes exactly that recipient; one-click still refuses.
func TestUnsubscribeConfirmation(t *testing.T) {
	fc := &fakeConfirmer{sent: map[string]string{}, ch: make(chan struct{}, 10)}
	now := time.Now()
	clock := func() time.Time { return now }
	var mu sync.Mutex
	e := newEnv(t, func(o *Options) {
		o.Confirm, o.BaseURL, o.ConfirmTTL = fc, "https://t.example.com/", time.Hour
		o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock() }
	})
	id := e.addMessage("jane@example.com", "bob@example.com")
	multi := e.sign(token.Unsubscribe, id, "", "")

	w := e.do(req{target: "/u/" + multi})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `name="email"`) {
		t.Fatalf("GET: %d\n%s", w.Code, w.Body)
	}
	if w = e.do(req{method: "POST", target: "/u/" + multi, body: "email=not-an-address"}); w.Code != 400 {
		t.Errorf("bad address: %d", w.Code)
	}
	for _, a := range []string{"eve@example.com", "Bob@Example.com"} {
		w = e.do(req{method: "POST", target: "/u/" + multi, body: "email=" + url.QueryEscape(a)})
		if w.Code != 200 || !strings.Contains(w.Body.String(), "we have sent it a link") {
			t.Errorf("POST %s: %d\n%s", a, w.Code, w.Body)
		}
	}
	// a second request within confirmEvery sends nothing more
	e.do(req{method: "POST", target: "/u/" + multi, body: "email=bob%40example.com"})
	select {
	case <-fc.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no confirmation sent")
	}
	time.Sleep(200 * time.Millisecond)
	fc.mu.Lock()
	link, ok := fc.sent["bob@example.com"]
	n := len(fc.sent)
	fc.mu.Unlock()
	if !ok || n != 1 || len(fc.ch) != 0 {
		t.Fatalf("confirmations %v (pending %d), want one, to bob@example.com", fc.sent, len(fc.ch))
	}
	if !strings.HasPrefix(link, "https://t.example.com/u/") {
		t.Fatalf("link %q", link)
	}
	tok := strings.TrimPrefix(link, "https://t.example.com/u/")
	// one-click on the message's own link still refuses
	if w = e.do(req{method: "POST", target: "/u/" + multi, body: "List-Unsubscribe=One-Click"}); w.Code != 400 {
		t.Errorf("one-click: %d", w.Code)
	}
	// the link's page names bob; its button unsubscribes bob only
	if w = e.do(req{target: "/u/" + tok}); w.Code != 200 || !strings.Contains(w.Body.String(), "bob@example.com") {
		t.Errorf("confirmation page: %d\n%s", w.Code, w.Body)
	}
	if w = e.do(req{method: "POST", target: "/u/" + tok, body: "confirm=1"}); w.Code != 200 || !strings.Contains(w.Body.String(), "bob@example.com has been unsubscribed") {
		t.Errorf("confirmation POST: %d\n%s", w.Code, w.Body)
	}
	// expired
	mu.Lock()
	clock = func() time.Time { return now.Add(2 * time.Hour) }
	mu.Unlock()
	if w = e.do(req{method: "POST", target: "/u/" + tok, body: "confirm=1"}); w.Code != 410 || !strings.Contains(w.Body.String(), "expired") {
		t.Errorf("expired link: %d\n%s", w.Code, w.Body)
	}
	events := e.stop()
	if len(events) != 1 || events[0].Type != ledger.Unsubscribe || events[0].Recipient != "bob@example.com" ||
		events[0].MessageID != id || events[0].Detail.Reason != "confirmed" {
		t.Errorf("recorded %+v, want one unsubscribe of bob@example.com", events)
	}
}
