package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// fixture is a ledger with one message and five events an hour apart,
// and a config naming it (and one webhook).
func fixture(t *testing.T) (cfg string, store *ledger.SQLite, msg *ledger.Message, ids []string) {
	t.Helper()
	dir := t.TempDir()
	db := filepath.Join(dir, "l.db")
	cfg = filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[store]\npath = %q\n[[webhook]]\nname = \"app\"\nurl = \"http://127.0.0.1:1/h\"\nsecret = \"s\"\n", db)), 0o600)
	store, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	msg = &ledger.Message{ID: ledger.NewID(), Recipients: []string{"r@example.com"}, Tracking: "all", CreatedAt: time.Now().Add(-10 * time.Hour)}
	var evs []*ledger.Event
	for i := 0; i < 5; i++ {
		ev := &ledger.Event{ID: ledger.NewID(), Type: ledger.Open, MessageID: msg.ID, Recipient: "r@example.com", Time: time.Now().Add(time.Duration(i-5) * time.Hour)}
		evs = append(evs, ev)
		ids = append(ids, ev.ID)
	}
	if err := store.Record(context.Background(), []*ledger.Message{msg}, evs); err != nil {
		t.Fatal(err)
	}
	return cfg, store, msg, ids
}

func ctl(cfg string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(append([]string{"-config", cfg}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func jsonIDs(t *testing.T, out string) []string {
	t.Helper()
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var v struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		ids = append(ids, v.ID+v.Name)
	}
	return ids
}

func TestEventsNewestFirstUnderLimit(t *testing.T) {
	cfg, _, _, ids := fixture(t)
	code, out, errs := ctl(cfg, "events", "--json", "--limit", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if got := jsonIDs(t, out); len(got) != 2 || got[0] != ids[4] || got[1] != ids[3] {
		t.Errorf("events --limit 2: %v, want the two newest, newest first (%v)", got, ids[3:])
	}
	_, out, _ = ctl(cfg, "events")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 6 {
		t.Errorf("events: %d lines, want a header and 5", len(lines))
	}
}

func TestSinceForms(t *testing.T) {
	cfg, _, _, ids := fixture(t)
	for _, tc := range []struct {
		since string
		want  int
	}{{"1d", 5}, {"2w", 5}, {"1d2h", 5}, {"150m", 2}, {"2h30m", 2}, {time.Now().Add(-90 * time.Minute).UTC().Format(time.RFC3339), 1}, {"2000-01-01", 5}} {
		code, out, errs := ctl(cfg, "events", "--json", "--since", tc.since)
		if code != 0 {
			t.Errorf("--since %s: exit %d: %s", tc.since, code, errs)
			continue
		}
		if got := jsonIDs(t, out); len(got) != tc.want {
			t.Errorf("--since %s: %d events, want %d", tc.since, len(got), tc.want)
		}
	}
	if code, _, _ := ctl(cfg, "messages", "--since", "1d"); code != 0 {
		t.Errorf("messages --since 1d: exit %d", code)
	}
	_ = ids
}

func TestUsageErrorsSayWhat(t *testing.T) {
	cfg, _, _, _ := fixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"events", "--since", "yesterday"}, `"yesterday": want a duration back from now`},
		{[]string{"events", "extra"}, `unexpected argument "extra"`},
		{[]string{"events", "--limit", "x"}, `invalid value "x" for flag -limit`},
		{[]string{"message"}, "missing argument"},
		{[]string{"webhooks", "pause"}, "missing argument"},
		{[]string{"webhooks", "frobnicate", "x"}, `unknown subcommand "frobnicate"`},
	} {
		code, _, errs := ctl(cfg, tc.args...)
		if code != 64 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 64 and %q", tc.args, code, errs, tc.want)
		}
	}
}

func TestJSONListings(t *testing.T) {
	cfg, store, msg, _ := fixture(t)
	if err := store.RecordInbound(context.Background(), &ledger.Inbound{ReceivedAt: time.Now(), Kind: "bounce", MessageID: msg.ID}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(cfg, "inbound", "--json")
	var in struct {
		Kind      string `json:"kind"`
		MessageID string `json:"message_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &in) != nil || in.Kind != "bounce" || in.MessageID != msg.ID {
		t.Errorf("inbound --json: exit %d, %q %s", code, out, errs)
	}
	code, out, errs = ctl(cfg, "webhooks", "list", "--json")
	var wh struct {
		Name    string `json:"name"`
		Cursor  int64  `json:"cursor"`
		Backlog int64  `json:"backlog"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &wh) != nil || wh.Name != "app" {
		t.Fatalf("webhooks list --json: exit %d, %q %s", code, out, errs)
	}
	// a new endpoint starts at the end of the stream (start = "end")
	last, _ := store.LastSeq(context.Background())
	if wh.Cursor != last || wh.Backlog != 0 {
		t.Errorf("new endpoint: cursor %d backlog %d, want %d and 0", wh.Cursor, wh.Backlog, last)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestEventsFollow(t *testing.T) {
	cfg, store, msg, ids := fixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuf{}
	c := &cli{cfgPath: cfg, out: out, ctx: ctx, poll: 10 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- cmdEvents(c, []string{"--json", "--follow", "--limit", "2"}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("events --follow returned %v", err)
		}
		if c.store != nil {
			c.store.Close()
		}
	}()
	ev := &ledger.Event{ID: ledger.NewID(), Type: ledger.Click, MessageID: msg.ID, Recipient: "r@example.com", Time: time.Now()}
	for deadline := time.Now().Add(5 * time.Second); strings.Count(out.String(), "\n") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("events --follow printed %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := store.Record(context.Background(), nil, []*ledger.Event{ev}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), ev.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("the new event never showed: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := jsonIDs(t, out.String()); len(got) != 3 || got[0] != ids[3] || got[1] != ids[4] || got[2] != ev.ID {
		t.Errorf("events --follow --limit 2: %v, want the last two oldest first, then the new one", got)
	}
}
