package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func openTest(t testing.TB) *SQLite {
	t.Helper()
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sampleMessage() *Message {
	return &Message{ID: NewID(), QueueID: "4ABC", EnvelopeFrom: "app@example.com", Recipients: []string{"customer@example.com"},
		From: "Support <app@example.com>", To: "customer@example.com", Subject: "Your password reset link",
		Tag: "password reset", Tracking: TrackClicks, Headers: []Header{{"Contact-ID", "12345"}},
		CreatedAt: time.Now().Round(0)}
}

func TestRecordAndRead(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	m := sampleMessage()
	ev := &Event{ID: NewID(), Type: Processed, MessageID: m.ID, Time: m.CreatedAt, Detail: Detail{Source: "milter"}}
	if err := s.Record(ctx, []*Message{m}, []*Event{ev}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tag != "password reset" || got.Tracking != "clicks" || len(got.Headers) != 1 || got.Headers[0].Value != "12345" ||
		!got.CreatedAt.Equal(m.CreatedAt) || got.Recipients[0] != "customer@example.com" {
		t.Errorf("read back %+v", got)
	}
	if q, err := s.MessageByQueueID(ctx, "4ABC"); err != nil || q.ID != m.ID {
		t.Errorf("by queue id: %v %v", q, err)
	}
	if _, err := s.Message(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing message: %v", err)
	}
	evs, err := s.Events(ctx, Filter{MessageID: m.ID})
	if err != nil || len(evs) != 1 || evs[0].Type != Processed || evs[0].Detail.Source != "milter" || evs[0].Seq == 0 {
		t.Errorf("events %+v %v", evs, err)
	}
	if ms, _ := s.Messages(ctx, Filter{Tag: "other"}); len(ms) != 0 {
		t.Errorf("tag filter matched %d", len(ms))
	}
}

func TestDedupCountersSuppression(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	m := sampleMessage()
	s.Record(ctx, []*Message{m}, nil)
	now := time.Now()
	evs := []*Event{
		{ID: NewID(), Type: Open, MessageID: m.ID, Time: now},
		{ID: NewID(), Type: Click, MessageID: m.ID, Time: now},
		{ID: NewID(), Type: Click, MessageID: m.ID, Time: now},
		{ID: NewID(), Type: HardBounce, MessageID: m.ID, Recipient: "Customer@Example.COM", Time: now, DedupKey: "hb:" + m.ID + ":customer@example.com"},
	}
	if err := s.Record(ctx, nil, evs); err != nil {
		t.Fatal(err)
	}
	// the same bounce again, from another source: skipped
	dup := &Event{ID: NewID(), Type: HardBounce, MessageID: m.ID, Recipient: "customer@example.com", Time: now, DedupKey: "hb:" + m.ID + ":customer@example.com"}
	if err := s.Record(ctx, nil, []*Event{dup}); err != nil {
		t.Fatal(err)
	}
	if dup.Seq != 0 {
		t.Error("duplicate got a seq")
	}
	all, _ := s.Events(ctx, Filter{Type: HardBounce})
	if len(all) != 1 {
		t.Errorf("%d hard bounces, want 1", len(all))
	}
	got, _ := s.Message(ctx, m.ID)
	if got.Opens != 1 || got.Clicks != 2 {
		t.Errorf("opens=%d clicks=%d", got.Opens, got.Clicks)
	}
	sp, err := s.Suppressed(ctx, "<customer@EXAMPLE.com>", now)
	if err != nil || sp.Reason != "hard_bounce" || sp.EventID != evs[3].ID {
		t.Fatalf("suppression %+v %v", sp, err)
	}
	// an unsubscribe later refreshes it
	s.Record(ctx, nil, []*Event{{ID: NewID(), Type: Unsubscribe, MessageID: m.ID, Recipient: "customer@example.com", Time: now.Add(time.Second)}})
	sp, _ = s.Suppressed(ctx, "customer@example.com", now)
	if sp.Reason != "unsubscribe" || !sp.CreatedAt.Equal(time.Unix(0, now.UnixNano())) {
		t.Errorf("refreshed suppression %+v", sp)
	}
	past := now.Add(-time.Hour)
	s.Suppress(ctx, Suppression{Address: "gone@example.com", Reason: "manual", ExpiresAt: &past})
	if _, err := s.Suppressed(ctx, "gone@example.com", now); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired suppression still live: %v", err)
	}
	if ok, _ := s.Unsuppress(ctx, "CUSTOMER@example.com"); !ok {
		t.Error("unsuppress found nothing")
	}
}

func TestReopenKeepsSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	m := sampleMessage()
	s.Record(context.Background(), []*Message{m}, nil)
	s.Close()
	s, err = OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Message(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
}

// flaky fails while down is set, recording what it was given otherwise.
type flaky struct {
	down atomic.Bool
	mu   sync.Mutex
	s    *SQLite
}

func (f *flaky) Record(ctx context.Context, m []*Message, e []*Event) error {
	if f.down.Load() {
		return errors.New("database is locked")
	}
	return f.s.Record(ctx, m, e)
}

func TestWriterSpoolsWhileStoreDown(t *testing.T) {
	s := openTest(t)
	f := &flaky{s: s}
	f.down.Store(true)
	spool := t.TempDir()
	w := NewWriter(f, WriterOptions{SpoolDir: spool, Retry: time.Millisecond})
	var ids []string
	for i := 0; i < 50; i++ {
		m := sampleMessage()
		ids = append(ids, m.ID)
		w.Add(m, &Event{ID: NewID(), Type: Processed, MessageID: m.ID, Time: m.CreatedAt})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Spooled != 100 || st.Written != 0 || st.Lost != 0 { // 50 messages and their events
		t.Fatalf("while down: %+v", st)
	}
	// the database returns: the spool is replayed (ticker or next write)
	f.down.Store(false)
	m := sampleMessage()
	w.Add(m)
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	w2 := NewWriter(f, WriterOptions{SpoolDir: spool}) // replays at start whatever is left
	w2.Close(ctx)
	for _, id := range append(ids, m.ID) {
		if _, err := s.Message(context.Background(), id); err != nil {
			t.Fatalf("message %s not recorded after recovery: %v", id, err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(spool, "*"))
	if len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
	evs, _ := s.Events(context.Background(), Filter{Type: Processed})
	if len(evs) != 50 {
		t.Errorf("%d processed events, want 50", len(evs))
	}
}

// TestWriterCloseReplaysOverflow: records that overflowed a full queue to
// the spool are in the store after Close, when the store works.
func TestWriterCloseReplaysOverflow(t *testing.T) {
	s := openTest(t)
	spool := t.TempDir()
	w := NewWriter(s, WriterOptions{SpoolDir: spool, QueueSize: 1})
	var ids []string
	for i := 0; i < 200; i++ {
		m := sampleMessage()
		ids = append(ids, m.ID)
		w.Add(m)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Spooled == 0 || st.Lost != 0 {
		t.Fatalf("stats %+v: the test needs overflow", st)
	}
	for _, id := range ids {
		if _, err := s.Message(context.Background(), id); err != nil {
			t.Fatalf("overflowed record %s not written at Close: %v", id, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "*")); len(left) != 0 {
		t.Errorf("spool files left after Close: %v", left)
	}
}

func TestWriterCountsWhatItCannotKeep(t *testing.T) {
	f := &flaky{}
	f.down.Store(true)
	// spool directory that cannot be created: a file stands in its way
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	w := NewWriter(f, WriterOptions{SpoolDir: filepath.Join(blocker, "spool"), QueueSize: 2, Retry: time.Millisecond})
	for i := 0; i < 10; i++ {
		w.Add(sampleMessage())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	w.Close(ctx)
	st := w.Stats()
	if st.Lost != 10 || st.Written != 0 {
		t.Errorf("stats %+v: every record must be counted as lost", st)
	}
}

// BenchmarkLedgerWrites compares events/s sustained through the batching
// Writer with raw SQLite inserts in 1000-row transactions, in the same run.
func BenchmarkLedgerWrites(b *testing.B) {
	ev := func() *Event {
		return &Event{ID: NewID(), Type: Open, MessageID: "m", Recipient: "r@example.com", Time: time.Now(),
			Detail: Detail{IP: "192.0.2.1", UserAgent: "Mozilla/5.0", Source: "tracker"}}
	}
	b.Run("raw-1000-row-tx", func(b *testing.B) {
		s := openTest(b)
		for done := 0; done < b.N; {
			n := min(1000, b.N-done)
			tx, _ := s.w.Begin()
			st, _ := tx.Prepare(`INSERT INTO events (id, type, message_id, recipient, time, detail) VALUES (?,?,?,?,?,?)`)
			for i := 0; i < n; i++ {
				e := ev()
				if _, err := st.Exec(e.ID, e.Type, e.MessageID, e.Recipient, e.Time.UnixNano(), mustJSON(e.Detail)); err != nil {
					b.Fatal(err)
				}
			}
			st.Close()
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			done += n
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("writer", func(b *testing.B) {
		s := openTest(b)
		w := NewWriter(s, WriterOptions{})
		for i := 0; i < b.N; i++ {
			w.Add(nil, ev())
			if i%5000 == 4999 && w.Stats().Queued > 10000 {
				w.Sync(context.Background()) // sustained: never outrun the store
			}
		}
		w.Close(context.Background())
		if st := w.Stats(); st.Written != int64(b.N) || st.Lost != 0 {
			b.Fatalf("written %d of %d, lost %d", st.Written, b.N, st.Lost)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

func TestNewIDSortsByTime(t *testing.T) {
	a := NewID()
	time.Sleep(2 * time.Millisecond)
	b := NewID()
	if len(a) != 20 || len(b) != 20 || a >= b {
		t.Errorf("ids %q then %q: want 20 characters, sorting by time", a, b)
	}
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := NewID()
		if seen[id] {
			t.Fatalf("repeated id %q", id)
		}
		seen[id] = true
	}
}

// A batch larger than one statement's rows in which some events were
// recorded before and one comes twice: only the new ones count, each
// once, in order, with the sequence numbers the ledger gave them; the
// repeated suppression is written once.
func TestRecordMixedReplay(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	m := sampleMessage()
	if err := s.Record(ctx, []*Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	open := func() *Event { return &Event{ID: NewID(), Type: Open, MessageID: m.ID, Time: now} }
	var old []*Event
	for range 40 {
		old = append(old, open())
	}
	if err := s.Record(ctx, nil, old); err != nil {
		t.Fatal(err)
	}
	unsub := &Event{ID: NewID(), Type: Unsubscribe, MessageID: m.ID, Recipient: "r@example.org", Time: now}
	var batch, fresh []*Event
	for i := range 75 {
		switch {
		case i%5 == 0:
			again := *old[i/5]
			again.Seq = 0
			batch = append(batch, &again) // replayed: recorded before
		case i == 33:
			batch = append(batch, unsub)
			fresh = append(fresh, unsub)
		case i == 34:
			dup := *unsub
			batch = append(batch, &dup) // the same event twice in one batch
		default:
			e := open()
			batch = append(batch, e)
			fresh = append(fresh, e)
		}
	}
	if err := s.Record(ctx, nil, batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.Message(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := 40 + len(fresh) - 1; got.Opens != want {
		t.Errorf("opens = %d, want %d", got.Opens, want)
	}
	all, err := s.Events(ctx, Filter{MessageID: m.ID, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 40+len(fresh) {
		t.Fatalf("%d events, want %d", len(all), 40+len(fresh))
	}
	for i, e := range fresh {
		stored := all[40+i]
		if stored.ID != e.ID || e.Seq != stored.Seq {
			t.Errorf("event %d: stored %s seq %d, recorded %s seq %d", i, stored.ID, stored.Seq, e.ID, e.Seq)
		}
	}
	for i := range batch {
		if i%5 == 0 || i == 34 {
			if batch[i].Seq != 0 {
				t.Errorf("batch[%d], recorded before, got seq %d", i, batch[i].Seq)
			}
		}
	}
	if sp, err := s.Suppressed(ctx, "r@example.org", now); err != nil || sp.EventID != unsub.ID {
		t.Errorf("suppression %+v %v", sp, err)
	}
}

// gated delays the first Record until released and remembers how many
// events each transaction held.
type gated struct {
	s       *SQLite
	release chan struct{}
	mu      sync.Mutex
	sizes   []int
}

// gatedStore is a ledger holding one message and a gated Recorder on it.
func gatedStore(t *testing.T) (*SQLite, *gated, *Message) {
	s := openTest(t)
	m := sampleMessage()
	if err := s.Record(context.Background(), []*Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	return s, &gated{s: s, release: make(chan struct{})}, m
}

// opens are n open events of m.
func opens(m *Message, n int) []*Event {
	var evs []*Event
	for range n {
		evs = append(evs, &Event{ID: NewID(), Type: Open, MessageID: m.ID, Time: time.Now()})
	}
	return evs
}

func (g *gated) Record(ctx context.Context, msgs []*Message, events []*Event) error {
	<-g.release
	g.mu.Lock()
	g.sizes = append(g.sizes, len(msgs)+len(events))
	g.mu.Unlock()
	return g.s.Record(ctx, msgs, events)
}

// MaxBatch bounds what one transaction holds by messages and events, not
// by Add calls: the tracker adds up to 256 events at once, and a backlog
// of such calls in one transaction would hold SQLite's write lock, which
// leadpush-milter shares, for seconds.
func TestWriterBatchCountsEvents(t *testing.T) {
	s, g, m := gatedStore(t)
	w := NewWriter(g, WriterOptions{MaxBatch: 20, Linger: -1})
	for range 30 {
		w.Add(nil, opens(m, 8)...)
	}
	close(g.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range g.sizes {
		total += n
		if n > 20+8-1 {
			t.Errorf("a transaction held %d events, MaxBatch is 20 (Adds of 8)", n)
		}
	}
	if total != 240 {
		t.Errorf("%d events written, want 240", total)
	}
	if got, _ := s.Message(context.Background(), m.ID); got.Opens != 240 {
		t.Errorf("opens = %d, want 240", got.Opens)
	}
}

func TestWriteConnectionCache(t *testing.T) {
	s := openTest(t)
	var kib int
	if err := s.w.QueryRow("PRAGMA cache_size").Scan(&kib); err != nil {
		t.Fatal(err)
	}
	if kib != -WriteCacheKiB {
		t.Errorf("write connection cache_size = %d, want %d (KiB)", kib, -WriteCacheKiB)
	}
}

// QueueSize bounds the records waiting in memory, not the Add calls: the
// tracker adds up to 256 events at once, and 20000 such calls held in
// memory while the database is locked would be five million events.
func TestWriterQueueCountsRecords(t *testing.T) {
	_, g, m := gatedStore(t)
	w := NewWriter(g, WriterOptions{QueueSize: 10, Linger: -1}) // no spool: what does not fit is lost
	for range 5 {
		w.Add(nil, opens(m, 4)...)
	}
	if st := w.Stats(); st.Queued != 8 || st.Lost != 12 {
		t.Errorf("while the store waits: %+v, want 8 queued and 12 lost", st)
	}
	close(g.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Written != 8 || st.Queued != 0 {
		t.Errorf("after close: %+v, want 8 written", st)
	}
}

// Events reads MsgSeq, Opens and Clicks packed in one column; values too
// large for it are read again exactly.
func TestEventCountersBeyondPacking(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	small := &Event{ID: NewID(), Type: Open, MessageID: "m", Time: time.Now()}
	big := &Event{ID: NewID(), Type: Click, MessageID: "m", Time: time.Now()}
	if err := s.Record(ctx, nil, []*Event{small, big}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(`UPDATE events SET msg_seq = 5000000000, opens = 2097152, clicks = 7 WHERE seq = ?`, big.Seq); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, Filter{MessageID: "m"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("%v, %v", evs, err)
	}
	if e := evs[0]; e.MsgSeq != 1 || e.Opens != 1 || e.Clicks != 0 {
		t.Errorf("small: %d %d %d", e.MsgSeq, e.Opens, e.Clicks)
	}
	if e := evs[1]; e.MsgSeq != 5000000000 || e.Opens != 2097152 || e.Clicks != 7 {
		t.Errorf("big: %d %d %d", e.MsgSeq, e.Opens, e.Clicks)
	}
}

// BenchmarkRecordSpread records tracker-like opens spread over 5000
// messages in 1000-event transactions: each batch numbers the events of
// a thousand messages (Event.MsgSeq and the counters as of each event).
func BenchmarkRecordSpread(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	var msgs []*Message
	for i := range 5000 {
		msgs = append(msgs, &Message{ID: fmt.Sprintf("m%05d", i), CreatedAt: time.Now()})
	}
	if err := s.Record(ctx, msgs, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(1000, b.N-done)
		evs := make([]*Event, n)
		for i := range evs {
			evs[i] = &Event{ID: NewID(), Type: Open, MessageID: msgs[(done+i)*7%5000].ID, Recipient: "r@example.com", Time: time.Now(),
				Detail: Detail{IP: "192.0.2.1", UserAgent: "Mozilla/5.0", Source: "tracker"}}
		}
		if err := s.Record(ctx, nil, evs); err != nil {
			b.Fatal(err)
		}
		done += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
