package ledger

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WriterOptions configure a Writer. Zero values take the defaults.
type WriterOptions struct {
	QueueSize int           // records (messages and events) waiting in memory; default 20000
	MaxBatch  int           // records per transaction (at least one Add); default 1000
	SpoolDir  string        // where records wait on disk while the store fails; "" = memory only
	Retry     time.Duration // first pause after a failed write; default 100ms, doubling to 5s
	// Linger is how long the writer waits for more records after the first
	// of a batch: fewer, larger transactions under load. Default 20ms;
	// negative: none.
	Linger time.Duration
	Logger *slog.Logger // default slog.Default()
}

// WriterStats counts what a Writer did, in records: a message or an event
// is one record.
type WriterStats struct {
	Queued   int64 // records waiting in memory now
	Written  int64 // records committed
	Batches  int64 // transactions committed
	Failures int64 // failed transactions
	Spooled  int64 // records written to the spool directory
	Replayed int64 // spooled records later committed
	Lost     int64 // records that could be kept neither in the store, memory nor spool
	// LastWrite is how long the last commit took.
	LastWrite time.Duration
}

// Writer records messages and events off the caller's path: Add never
// waits on the database. One goroutine commits what has queued up in one
// transaction. While the store fails, batches go to JSON-lines files in
// SpoolDir and are replayed, in order, once it works again; recording is
// idempotent (ids are unique), so a replay after a crash repeats nothing.
// Only when memory and spool are both exhausted is a record lost, and then
// it is counted and logged.
type Writer struct {
	rec   Recorder
	opt   WriterOptions
	log   *slog.Logger
	ch    chan item
	done  chan struct{}
	stop  chan struct{}
	once  sync.Once
	spool sync.Mutex // serialises spool file writes

	queued, written, batches, failures, spooled, replayed, lost atomic.Int64
	lastWrite                                                   atomic.Int64
	lastLostLog                                                 atomic.Int64
	closeCtx                                                    atomic.Pointer[context.Context]
}

type item struct {
	msg    *Message
	events []*Event
	sync   chan struct{} // Sync marker: closed when everything before it is handled
}

// size is what an item adds to a transaction: its message and events.
func (it item) size() int {
	n := len(it.events)
	if it.msg != nil {
		n++
	}
	return n
}

// spoolRecord is the on-disk form of an item; Event.DedupKey is kept.
type spoolRecord struct {
	Message *Message     `json:"message,omitempty"`
	Events  []spoolEvent `json:"events,omitempty"`
}

type spoolEvent struct {
	*Event
	DedupKey string `json:"dedup_key,omitempty"`
}

// NewWriter starts a Writer. It first replays what an earlier process left
// in SpoolDir.
func NewWriter(rec Recorder, opt WriterOptions) *Writer {
	if opt.QueueSize <= 0 {
		opt.QueueSize = 20000
	}
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 1000
	}
	if opt.Retry <= 0 {
		opt.Retry = 100 * time.Millisecond
	}
	if opt.Linger == 0 {
		opt.Linger = 20 * time.Millisecond
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	w := &Writer{rec: rec, opt: opt, log: opt.Logger, ch: make(chan item, opt.QueueSize),
		done: make(chan struct{}), stop: make(chan struct{})}
	go w.run()
	return w
}

// Add queues a message (may be nil) and its events. It never blocks: when
// they would take the queue past QueueSize records they go straight to the
// spool directory.
func (w *Writer) Add(msg *Message, events ...*Event) {
	it := item{msg: msg, events: events}
	n := int64(it.size())
	if n == 0 {
		return
	}
	select {
	case <-w.stop:
		w.overflow([]item{it}, "writer closed")
		return
	default:
	}
	if w.queued.Add(n) > int64(w.opt.QueueSize) {
		w.queued.Add(-n)
		w.overflow([]item{it}, "queue full")
		return
	}
	select {
	case w.ch <- it:
	default: // Sync markers fill the channel's last slots
		w.queued.Add(-n)
		w.overflow([]item{it}, "queue full")
	}
}

// Sync waits until everything added before it has been committed or
// spooled, or ctx ends.
func (w *Writer) Sync(ctx context.Context) error {
	c := make(chan struct{})
	select {
	case w.ch <- item{sync: c}:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return errors.New("ledger: writer closed")
	}
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting records and commits what is queued, retrying until
// ctx ends; what is still unwritten then goes to the spool.
func (w *Writer) Close(ctx context.Context) error {
	w.once.Do(func() { close(w.stop) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		// run notices ctx through closeCtx and spools the rest.
		w.closeCtx.Store(&ctx)
		<-w.done
		return ctx.Err()
	}
}

// Stats returns the counters.
func (w *Writer) Stats() WriterStats {
	return WriterStats{Queued: w.queued.Load(), Written: w.written.Load(), Batches: w.batches.Load(),
		Failures: w.failures.Load(), Spooled: w.spooled.Load(), Replayed: w.replayed.Load(), Lost: w.lost.Load(),
		LastWrite: time.Duration(w.lastWrite.Load())}
}

func (w *Writer) closing() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *Writer) run() {
	defer close(w.done)
	w.replay()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		var first item
		select {
		case first = <-w.ch:
		case <-tick.C:
			w.replay()
			continue
		case <-w.stop:
			// drain what is queued, then what overflowed to the spool, and leave
			select {
			case first = <-w.ch:
			default:
				w.replay()
				return
			}
		}
		batch, size := []item{first}, first.size()
		var linger <-chan time.Time
		var timer *time.Timer
		if w.opt.Linger > 0 && first.sync == nil {
			timer = time.NewTimer(w.opt.Linger)
			linger = timer.C
		}
	collect:
		for size < w.opt.MaxBatch {
			select {
			case it := <-w.ch:
				batch, size = append(batch, it), size+it.size()
				if it.sync != nil {
					break collect // someone waits: write now
				}
				continue
			default:
			}
			if linger == nil {
				break
			}
			select {
			case it := <-w.ch:
				batch, size = append(batch, it), size+it.size()
				if it.sync != nil {
					break collect
				}
			case <-linger:
				break collect
			case <-w.stop:
				linger = nil
			}
		}
		if timer != nil {
			timer.Stop()
		}
		w.write(batch)
	}
}

// write commits a batch, or spools it when the store fails; if the spool
// fails too it keeps retrying (the batch stays in memory) until the writer
// is closed and its deadline has passed.
func (w *Writer) write(batch []item) {
	var msgs []*Message
	var events []*Event
	var syncs []chan struct{}
	n := 0
	for _, it := range batch {
		if it.sync != nil {
			syncs = append(syncs, it.sync)
			continue
		}
		n += it.size()
		if it.msg != nil {
			msgs = append(msgs, it.msg)
		}
		events = append(events, it.events...)
	}
	defer func() {
		w.queued.Add(int64(-n))
		for _, c := range syncs {
			close(c)
		}
	}()
	if n == 0 {
		return
	}
	pause := w.opt.Retry
	for attempt := 0; ; attempt++ {
		start := time.Now()
		err := w.rec.Record(context.Background(), msgs, events)
		if err == nil {
			w.lastWrite.Store(int64(time.Since(start)))
			w.written.Add(int64(n))
			w.batches.Add(1)
			if attempt > 0 {
				w.log.Info("ledger writes recovered", "attempts", attempt+1)
			}
			return
		}
		w.failures.Add(1)
		w.log.Warn("ledger write failed", "records", n, "attempt", attempt+1, "err", err)
		if w.opt.SpoolDir != "" {
			if err := w.toSpool(batch); err == nil {
				w.spooled.Add(int64(n))
				return
			}
		}
		if w.closing() {
			if p := w.closeCtx.Load(); p != nil && (*p).Err() != nil {
				w.lost.Add(int64(n))
				w.log.Error("ledger records lost at shutdown: store and spool both failed", "records", n)
				return
			}
		}
		time.Sleep(pause)
		pause = min(pause*2, 5*time.Second)
	}
}

// overflow handles records that cannot wait in memory.
func (w *Writer) overflow(items []item, why string) {
	n := 0
	for _, it := range items {
		n += it.size()
	}
	if w.opt.SpoolDir != "" {
		if err := w.toSpool(items); err == nil {
			w.spooled.Add(int64(n))
			return
		} else {
			why += ": " + err.Error()
		}
	}
	w.lost.Add(int64(n))
	// at most one log line a second: an outage must not flood the log
	now := time.Now().Unix()
	if last := w.lastLostLog.Load(); last != now && w.lastLostLog.CompareAndSwap(last, now) {
		w.log.Error("ledger records lost", "reason", why, "lost_total", w.lost.Load())
	}
}

func (w *Writer) toSpool(items []item) error {
	w.spool.Lock()
	defer w.spool.Unlock()
	if err := os.MkdirAll(w.opt.SpoolDir, 0o750); err != nil {
		return err
	}
	name := filepath.Join(w.opt.SpoolDir, fmt.Sprintf("spool-%020d-%d.jsonl", time.Now().UnixNano(), os.Getpid()))
	f, err := os.OpenFile(name+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	for _, it := range items {
		if it.sync != nil {
			continue
		}
		r := spoolRecord{Message: it.msg}
		for _, e := range it.events {
			r.Events = append(r.Events, spoolEvent{Event: e, DedupKey: e.DedupKey})
		}
		if err = enc.Encode(r); err != nil {
			break
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name+".tmp", name)
	}
	if err != nil {
		os.Remove(name + ".tmp")
		return fmt.Errorf("ledger: spool: %w", err)
	}
	return nil
}

// replay commits spooled files, oldest first, deleting each once written.
func (w *Writer) replay() {
	if w.opt.SpoolDir == "" {
		return
	}
	w.spool.Lock()
	names, _ := filepath.Glob(filepath.Join(w.opt.SpoolDir, "spool-*.jsonl"))
	w.spool.Unlock()
	sort.Strings(names)
	for _, name := range names {
		msgs, events, err := readSpool(name)
		if err != nil {
			w.log.Error("ledger spool file unreadable, left in place", "file", name, "err", err)
			bad := strings.TrimSuffix(name, ".jsonl") + ".bad"
			os.Rename(name, bad)
			continue
		}
		if err := w.rec.Record(context.Background(), msgs, events); err != nil {
			return // still failing; try again later
		}
		if err := os.Remove(name); err != nil {
			w.log.Error("ledger spool file written but not removed", "file", name, "err", err)
			return
		}
		n := int64(len(msgs) + len(events))
		w.replayed.Add(n)
		w.written.Add(n)
		w.log.Info("ledger spool replayed", "file", name, "records", n)
	}
}

func readSpool(name string) (msgs []*Message, events []*Event, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var r spoolRecord
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, events, nil
			}
			return nil, nil, err
		}
		if r.Message != nil {
			msgs = append(msgs, r.Message)
		}
		for _, e := range r.Events {
			if e.Event == nil {
				continue
			}
			e.Event.DedupKey = e.DedupKey
			events = append(events, e.Event)
		}
	}
}
