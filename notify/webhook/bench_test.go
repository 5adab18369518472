package webhook

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkDeliver measures events delivered per second to a local
// receiver that reads every body, b.N events per run.
func BenchmarkDeliver(b *testing.B) {
	for _, format := range []string{FormatBatch, FormatJSON} {
		b.Run(format, func(b *testing.B) {
			s := openStore(b, "")
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			defer srv.Close()
			recordN(b, s, "e", b.N)
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
