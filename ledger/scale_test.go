package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/token"
)

// The ledger rows of the real shape (bench.sh step "ledgerscale"): a
// ledger grown by BuildFixture to BENCH_LEDGER_EVENTS events (default
// 10 000 000) over BENCH_LEDGER_MESSAGES messages (default 100 000),
// cached in BENCH_FIXTURE_DIR (default bench/out). Skipped without
// LEADPUSH_BENCH=1.
//
//	LEADPUSH_BENCH=1 go test -run '^$' -bench '^BenchmarkLedgerScaleWrites$' -benchtime 200000x ./ledger/
//	LEADPUSH_BENCH=1 go test -run '^$' -bench '^BenchmarkLedgerScaleTimeline$' -benchtime 2000x ./ledger/

func scaleEnv(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

// scaleFixture returns the cached fixture of events events (building it
// when missing) and its message ids.
func scaleFixture(tb testing.TB, events int) (string, []string) {
	tb.Helper()
	if os.Getenv("LEADPUSH_BENCH") != "1" {
		tb.Skip("set LEADPUSH_BENCH=1 (see bench/bench.sh)")
	}
	dir := os.Getenv("BENCH_FIXTURE_DIR")
	if dir == "" {
		dir = filepath.Join("..", "bench", "out")
	}
	// token ids: the tracker's benchmark (bench TestTrackerScale) uses the same fixture.
	f := Fixture{Messages: scaleEnv(tb, "BENCH_LEDGER_MESSAGES", 100_000), Events: events, Name: "token",
		NewMessageID: token.NewMessageID}
	t0 := time.Now()
	path, built, err := CachedFixture(dir, f)
	if err != nil {
		tb.Fatal(err)
	}
	if built {
		tb.Logf("built fixture %s (%d messages, %d events) in %v", path, f.Messages, f.Events, time.Since(t0).Round(time.Second))
	}
	s, err := OpenSQLiteReadOnly(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	msgs, err := s.Messages(context.Background(), Filter{Limit: f.Messages})
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return path, ids
}

// scaleCopies are writable copies of fixtures, one per size and process
// (a benchmark function runs more than once), removed by TestMain.
var scaleCopies = struct {
	sync.Mutex
	dir   string
	paths map[int]string
}{paths: map[int]string{}}

func scaleCopy(tb testing.TB, events int) (string, []string) {
	tb.Helper()
	src, ids := scaleFixture(tb, events)
	scaleCopies.Lock()
	defer scaleCopies.Unlock()
	if p, ok := scaleCopies.paths[events]; ok {
		return p, ids
	}
	if scaleCopies.dir == "" {
		d, err := os.MkdirTemp("", "leadpush-ledgerscale-")
		if err != nil {
			tb.Fatal(err)
		}
		scaleCopies.dir = d
	}
	p := filepath.Join(scaleCopies.dir, fmt.Sprintf("%d.db", events))
	if err := CopyLedger(src, p); err != nil {
		tb.Fatal(err)
	}
	scaleCopies.paths[events] = p
	return p, ids
}

func TestMain(m *testing.M) {
	code := m.Run()
	if scaleCopies.dir != "" {
		os.RemoveAll(scaleCopies.dir)
	}
	os.Exit(code)
}

// BenchmarkLedgerScaleWrites writes b.N tracking events, spread at random
// over the fixture's messages with the fixture's user agents, through the
// batching Writer: into the fixture's messages with no events ("empty")
// and into the grown ledger ("grown"). Target: the per-event cost grown
// within 1.5x of empty.
func BenchmarkLedgerScaleWrites(b *testing.B) {
	for _, c := range []struct {
		name   string
		events int
	}{{"empty", 0}, {"grown", scaleEnv(b, "BENCH_LEDGER_EVENTS", 10_000_000)}} {
		b.Run(c.name, func(b *testing.B) {
			path, ids := scaleCopy(b, c.events)
			s, err := OpenSQLite(path)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			uas := FixtureUserAgents(1000)
			rng := rand.New(rand.NewPCG(uint64(b.N), 7))
			evs := make([]*Event, b.N)
			for i := range evs {
				m, ua := rng.IntN(len(ids)), uas[rng.IntN(len(uas))]
				typ := Open
				var url string
				if i%4 == 3 {
					typ, url = Click, fmt.Sprintf("https://www.example.com/articles/%d?utm_source=digest", i%500)
				}
				evs[i] = &Event{ID: NewID(), Type: typ, MessageID: ids[m], Recipient: FixtureRecipient(m), Time: time.Now(),
					Detail: Detail{IP: fmt.Sprintf("198.51.%d.%d", i%250, i/250%250), UserAgent: ua.Raw, UAFamily: ua.Family,
						UAMajor: ua.Major, URL: url, Source: "tracker"}}
			}
			w := NewWriter(s, WriterOptions{})
			b.ResetTimer()
			for i, e := range evs {
				w.Add(nil, e)
				if i%5000 == 4999 && w.Stats().Queued > 10000 {
					w.Sync(context.Background()) // sustained: never outrun the store
				}
			}
			w.Close(context.Background())
			b.StopTimer()
			if st := w.Stats(); st.Written != int64(b.N) || st.Lost != 0 {
				b.Fatalf("written %d of %d, lost %d", st.Written, b.N, st.Lost)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/event")
		})
	}
}

// BenchmarkLedgerScaleTimeline reads what `leadpushctl message ID` reads
// (the message, then its events) and what `leadpushctl events --message
// ID` reads (its newest 100 events), for messages chosen at random, from
// a read-only handle on the grown fixture, as leadpushctl opens it.
// Target: a timeline under 10 ms.
func BenchmarkLedgerScaleTimeline(b *testing.B) {
	path, ids := scaleFixture(b, scaleEnv(b, "BENCH_LEDGER_EVENTS", 10_000_000))
	s, err := OpenSQLiteReadOnly(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.Run("message", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, uint64(b.N)))
		var n int
		for range b.N {
			m, err := s.Message(ctx, ids[rng.IntN(len(ids))])
			if err != nil {
				b.Fatal(err)
			}
			evs, err := s.Events(ctx, Filter{MessageID: m.ID})
			if err != nil {
				b.Fatal(err)
			}
			n += len(evs)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/timeline")
		b.ReportMetric(float64(n)/float64(b.N), "events/timeline")
	})
	b.Run("lookup", func(b *testing.B) { // the tracker's per-hit Message, on a cache miss
		rng := rand.New(rand.NewPCG(3, uint64(b.N)))
		for range b.N {
			if _, err := s.Message(ctx, ids[rng.IntN(len(ids))]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1000/float64(b.N), "us/lookup")
	})
	b.Run("events-message", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(2, uint64(b.N)))
		for range b.N {
			if _, err := s.Events(ctx, Filter{MessageID: ids[rng.IntN(len(ids))], Limit: 100, Newest: true}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/query")
	})
}
