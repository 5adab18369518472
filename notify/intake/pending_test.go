package intake

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// countingStore counts lookups and write transactions.
type countingStore struct {
	LogStore
	lookups, writes atomic.Int64
}

func (s *countingStore) MessageByQueueID(ctx context.Context, q string) (*ledger.Message, error) {
	s.lookups.Add(1)
	return s.LogStore.MessageByQueueID(ctx, q)
}

func (s *countingStore) RecordState(ctx context.Context, evs []*ledger.Event, name, value string) error {
	s.writes.Add(1)
	return s.LogStore.RecordState(ctx, evs, name, value)
}

func startConsumer(t *testing.T, c *LogConsumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sent(qid, rcpt string) string {
	return "to=<" + rcpt + ">, relay=x[192.0.2.1]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)"
}

// TestLogConsumerPendingSurvivesRestart: a delivery line read before its
// message is recorded is saved with the position; a consumer that
// stops (as a SIGKILL would) before the message arrives records the
// event after its restart, though the log gets no new line.
func TestLogConsumerPendingSurvivesRestart(t *testing.T) {
	s := openStore(t)
	now := time.Now()
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, []byte(logLine(now, "smtp", "AB12C", sent("AB12C", "a@example.net"))+
		logLine(now, "cleanup", "AB12D", "message-id=<x@example.com>")), 0o644)
	c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet}
	stop := startConsumer(t, c)
	waitUntil(t, "the line to be pending", func() bool { return c.Stats().Pending == 1 })
	stop()
	v, err := s.State(context.Background(), c.stateName())
	if err != nil {
		t.Fatal(err)
	}
	var st savedState
	json.Unmarshal([]byte(v), &st)
	fi, _ := os.Stat(path)
	if st.Offset != fi.Size() || len(st.Pending) != 1 {
		t.Fatalf("saved %s: want the position at the end and the line pending", v)
	}
	recordMessage(t, s, "AB12C", now.Add(-time.Second), "a@example.net")
	c2 := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet}
	startConsumer(t, c2)
	waitUntil(t, "the delivered event after the restart", func() bool { return len(events(t, s, ledger.Delivered)) == 1 })
	waitUntil(t, "nothing pending", func() bool { return c2.Stats().Pending == 0 })
}

// TestLogConsumerWaitsLongerThanOldGrace: a line whose message comes a
// minute later (a ledger locked for a minute) still gets its event.
func TestLogConsumerWaitsLongerThanOldGrace(t *testing.T) {
	s := openStore(t)
	now := time.Now()
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, []byte(logLine(now.Add(-90*time.Second), "smtp", "AB12C", sent("AB12C", "a@example.net"))), 0o644)
	c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet, retryCap: 50 * time.Millisecond}
	startConsumer(t, c)
	waitUntil(t, "the line to be pending", func() bool { return c.Stats().Pending == 1 })
	time.Sleep(200 * time.Millisecond)
	recordMessage(t, s, "AB12C", now.Add(-100*time.Second), "a@example.net")
	waitUntil(t, "the delivered event", func() bool { return len(events(t, s, ledger.Delivered)) == 1 })
	if c.Dropped.Load() != 0 {
		t.Errorf("dropped %d", c.Dropped.Load())
	}
}

// TestLogConsumerDropsAfterMaxAge: a pending line whose message does not
// come within MaxAge is dropped and counted; a line already older than
// MaxAge when read is mail from before the ledger (unknown), not dropped.
func TestLogConsumerDropsAfterMaxAge(t *testing.T) {
	s := openStore(t)
	now := time.Now()
	path := filepath.Join(t.TempDir(), "maillog")
	os.WriteFile(path, []byte(logLine(now.Add(-3*time.Second), "smtp", "AB12C", sent("AB12C", "a@example.net"))+
		logLine(now.Add(-time.Second), "smtp", "AB12D", sent("AB12D", "b@example.net"))), 0o644)
	c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet, MaxAge: 2 * time.Second, retryCap: 100 * time.Millisecond}
	startConsumer(t, c)
	waitUntil(t, "one unknown, one pending", func() bool { return c.Unknown.Load() == 1 && c.Stats().Pending == 1 })
	waitUntil(t, "the pending line dropped", func() bool { return c.Dropped.Load() == 1 && c.Stats().Pending == 0 })
}

// TestLogConsumerUntrustedCostsNothing: 300 messages from an untrusted
// client cost no lookup; 300 of unknown origin (their client= line came
// before the saved position) a few each, and quiet polls write nothing.
func TestLogConsumerUntrustedCostsNothing(t *testing.T) {
	for _, classified := range []bool{true, false} {
		t.Run(fmt.Sprint("classified=", classified), func(t *testing.T) {
			s := &countingStore{LogStore: openStore(t)}
			now := time.Now()
			path := filepath.Join(t.TempDir(), "maillog")
			var b strings.Builder
			for i := 0; i < 300; i++ {
				q := fmt.Sprintf("AB%04X", i)
				if classified {
					b.WriteString(logLine(now, "smtpd", q, "client=mx.example.org[203.0.113.9]"))
				}
				b.WriteString(logLine(now, "local", q, sent(q, "user@example.net")))
			}
			os.WriteFile(path, []byte(b.String()), 0o644)
			c := &LogConsumer{Store: s, Path: path, Poll: 10 * time.Millisecond, Logger: quiet, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
			startConsumer(t, c)
			waitUntil(t, "the lines to be read", func() bool { return c.Lines.Load() == 300 })
			w := s.writes.Load()
			time.Sleep(2 * time.Second) // 200 polls
			lookups, writes := s.lookups.Load(), s.writes.Load()-w
			t.Logf("2s: %d lookups, %d writes after the lines were read, %d unknown, %d pending", lookups, writes, c.Unknown.Load(), c.Stats().Pending)
			if classified && (lookups != 0 || c.Unknown.Load() != 300 || c.Stats().Pending != 0) {
				t.Errorf("untrusted mail: %d lookups, %d unknown, %d pending; want 0, 300, 0", lookups, c.Unknown.Load(), c.Stats().Pending)
			}
			if !classified && lookups > 300*30 {
				t.Errorf("%d lookups for 300 lines in 2s: want fewer than 30 each", lookups)
			}
			if writes != 0 {
				t.Errorf("%d write transactions on quiet polls", writes)
			}
		})
	}
}
