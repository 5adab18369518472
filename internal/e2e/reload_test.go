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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/webhook"
)

// TestLeadpushdReload: SIGHUP with no webhook configured keeps leadpushd
// running; SIGHUP after a [[webhook]] was added starts delivering to it
// from the end of the event stream, without a restart; SIGHUP with an
// invalid file changes nothing.
func TestLeadpushdReload(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		var evs []webhook.BatchEvent
		json.Unmarshal([]byte(form.Get("leadpush_events")), &evs)
		mu.Lock()
		for _, ev := range evs {
			seen[ev.EventID] = true
		}
		mu.Unlock()
	}))
	defer srv.Close()
	dbPath := filepath.Join(dir, "leadpush.db")
	e := &env{dir: dir, cfg: filepath.Join(dir, "leadpush.toml")}
	addr, admin := freeAddr(t), freeAddr(t)
	base := fmt.Sprintf("[store]\npath = %q\n[tracker]\nlisten = %q\n[admin]\nlisten = %q\n", dbPath, addr, admin)
	hook := fmt.Sprintf("[[webhook]]\nname = \"late\"\nurl = %q\nsecret = \"s\"\n", srv.URL)
	os.WriteFile(e.cfg, []byte(base), 0o600)
	store, err := ledger.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	msg := &ledger.Message{ID: ledger.NewID(), Recipients: []string{"c@example.com"}, Tracking: "all", CreatedAt: time.Now()}
	store.Record(context.Background(), []*ledger.Message{msg}, nil)
	record := func(n int) []string {
		var evs []*ledger.Event
		var ids []string
		for i := 0; i < n; i++ {
			ev := &ledger.Event{ID: ledger.NewID(), Type: ledger.Open, MessageID: msg.ID, Recipient: "c@example.com", Time: time.Now()}
			evs = append(evs, ev)
			ids = append(ids, ev.ID)
		}
		if err := store.Record(context.Background(), nil, evs); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	old := record(5)
	cmd := e.startDaemon(t, "leadpushd")
	waitHTTP(t, "http://"+admin+"/healthz")
	logText := func() string { b, _ := os.ReadFile(filepath.Join(dir, "leadpushd.log")); return string(b) }
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(logText(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("leadpushd did not log %q:\n%s", what, logText())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// 1. no webhooks: SIGHUP reloads and the daemon lives on
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`msg="configuration reloaded"`)
	time.Sleep(200 * time.Millisecond)
	waitHTTP(t, "http://"+admin+"/healthz")

	// 2. a new endpoint, from the end of the stream
	os.WriteFile(e.cfg, []byte(base+"[log]\nlevel = \"debug\"\n"+hook), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`msg="reload: webhooks replaced"`)
	waitLog(`changed="[log.level [[webhook]]]"`)
	fresh := record(5)
	waitSeen := func(ids []string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			mu.Lock()
			missing := 0
			for _, id := range ids {
				if !seen[id] {
					missing++
				}
			}
			mu.Unlock()
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d events not delivered to the endpoint added by SIGHUP:\n%s", missing, len(ids), logText())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitSeen(fresh)
	mu.Lock()
	for _, id := range old {
		if seen[id] {
			t.Errorf("event %s recorded before the endpoint was added was delivered to it", id)
		}
	}
	mu.Unlock()
	// the endpoint's metrics
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, "http://"+admin+"/metrics")
		ok := m[`leadpush_webhook_backlog_events{endpoint="late"}`] == 0 && m[`leadpush_webhook_last_success_timestamp_seconds{endpoint="late"}`] > 0 &&
			m["leadpush_webhook_delivered_events_total"] >= 5 && m[`leadpush_webhook_verified{endpoint="late"}`] == 1
		for _, name := range []string{`leadpush_webhook_failed_attempts{endpoint="late"}`, `leadpush_webhook_dead_letter_events_total{endpoint="late"}`,
			"leadpush_webhook_failed_requests_total", "leadpush_webhook_gave_up_events_total", `leadpush_webhook_backlog_events{endpoint="late"}`} {
			if _, has := m[name]; !has {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook metrics: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 3. an invalid file changes nothing: the endpoint keeps receiving
	os.WriteFile(e.cfg, []byte(base+hook+"[tracker]\nbogus = 1\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`level=ERROR msg="reload: configuration invalid; keeping the running one"`)
	waitSeen(record(3))
	waitHTTP(t, "http://"+admin+"/healthz")
}

// scrape reads a /metrics page into name{labels} -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		var v float64
		if _, err := fmt.Sscan(l[i+1:], &v); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}
