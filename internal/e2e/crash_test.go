package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/webhook"
)

// TestLeadpushdKill9LosesNoWebhook: a child leadpushd is killed with
// SIGKILL again and again while 10 000 events are recorded and flow to a
// receiver that fails a third of its requests; in the end every event id
// has reached the receiver at least once.
func TestLeadpushdKill9LosesNoWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	var mu sync.Mutex
	seen := map[string]int{}
	var reqs atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		if reqs.Add(1)%3 == 0 {
			http.Error(w, "try again", 500)
			return
		}
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		var evs []webhook.BatchEvent
		json.Unmarshal([]byte(form.Get("leadpush_events")), &evs)
		mu.Lock()
		for _, ev := range evs {
			seen[ev.EventID]++
		}
		mu.Unlock()
	}))
	defer srv.Close()
	dbPath := filepath.Join(dir, "leadpush.db")
	cfg := filepath.Join(dir, "leadpush.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
[store]
path = %q
[tracking]
base_url = "http://127.0.0.1:1"
keys = [%q]
[tracker]
listen = %q
[admin]
listen = %q
[webhooks]
backoff = ["100ms", "200ms", "400ms"]
[[webhook]]
name = "crash"
url = %q
format = "batch"
secret = "s"
batch_size = 200
start = "beginning"
`, dbPath, testKey, freeAddr(t), freeAddr(t), srv.URL)), 0o600)
	store, err := ledger.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	msg := &ledger.Message{ID: ledger.NewID(), Recipients: []string{"c@example.com"}, Tracking: "all", CreatedAt: time.Now()}
	store.Record(context.Background(), []*ledger.Message{msg}, nil)

	const total = 10000
	ids := make([]string, 0, total)
	recorded := make(chan struct{})
	go func() { // events keep coming while leadpushd dies
		defer close(recorded)
		for b := 0; b < total/500; b++ {
			var evs []*ledger.Event
			for i := 0; i < 500; i++ {
				ev := &ledger.Event{ID: ledger.NewID(), Type: ledger.Open, MessageID: msg.ID, Recipient: "c@example.com", Time: time.Now()}
				evs = append(evs, ev)
				ids = append(ids, ev.ID)
			}
			if err := store.Record(context.Background(), nil, evs); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	start := func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, "leadpushd"), "-config", cfg)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kills := 0
	for i := 0; i < 12; i++ { // bounded: a dozen lives of 200-500 ms
		cmd := start()
		time.Sleep(time.Duration(200+37*i%300) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		kills++
	}
	<-recorded
	// a last life, left running until everything arrived
	cmd := start()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range ids {
			if seen[id] == 0 {
				missing++
			}
		}
		twice := 0
		for _, n := range seen {
			if n > 1 {
				twice++
			}
		}
		mu.Unlock()
		if missing == 0 {
			t.Logf("%d events, %d SIGKILLs, %d requests: every event arrived; %d arrived more than once", total, kills, reqs.Load(), twice)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never reached the receiver after %d SIGKILLs", missing, total, kills)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
