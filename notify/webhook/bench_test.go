package webhook

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// BenchmarkDeliver measures events delivered per second to a local
// receiver that reads every body, b.N events per run: every event on one
// message (the best case), and "batch-spread", every event on a message of
// its own (the shape of real traffic: a batch loads all its messages).
func BenchmarkDeliver(b *testing.B) {
	for _, format := range []string{FormatBatch, FormatJSON, "batch-spread"} {
		b.Run(format, func(b *testing.B) {
			s := openStore(b, "")
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			defer srv.Close()
			if format == "batch-spread" {
				format = FormatBatch
				recordSpread(b, s, b.N)
			} else {
				recordN(b, s, "e", b.N)
			}
			n, err := New(s, []Endpoint{{URL: srv.URL, Secret: testSecret, Format: format}}, Options{
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			b.ResetTimer()
			t0 := time.Now()
			go func() { n.Run(ctx); close(done) }()
			tick := time.NewTicker(2 * time.Millisecond)
			for n.Stats().Delivered < int64(b.N) {
				<-tick.C
			}
			el := time.Since(t0)
			b.StopTimer()
			tick.Stop()
			cancel()
			<-done
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
		})
	}
}

// recordSpread records n messages with one delivered event each.
func recordSpread(b *testing.B, s *ledger.SQLite, n int) {
	b.Helper()
	for chunk := 0; chunk < n; chunk += 1000 {
		var msgs []*ledger.Message
		var evs []*ledger.Event
		for i := chunk; i < min(n, chunk+1000); i++ {
			m := &ledger.Message{ID: fmt.Sprintf("m%07d", i), From: "a@example.com", Recipients: []string{fmt.Sprintf("r%d@example.net", i)},
				Subject: "Weekly", Tag: "news", Headers: []ledger.Header{{Name: "X-Id", Value: "1"}}, CreatedAt: time.Now()}
			msgs = append(msgs, m)
			evs = append(evs, &ledger.Event{ID: fmt.Sprintf("s%07d", i), Type: ledger.Delivered, MessageID: m.ID, Recipient: m.Recipients[0], Time: time.Now()})
		}
		if err := s.Record(context.Background(), msgs, evs); err != nil {
			b.Fatal(err)
		}
	}
}
