package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/intake"
)

// newRegistry is /metrics' registry, with the Go runtime (go_*) and
// process (process_*) collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// registerWriter exposes the ledger writer's counters.
func registerWriter(reg *prometheus.Registry, w *ledger.Writer) {
	for name, m := range map[string]struct {
		help string
		f    func(ledger.WriterStats) float64
	}{
		"queued":          {"Records (messages and events) waiting in memory.", func(s ledger.WriterStats) float64 { return float64(s.Queued) }},
		"written_total":   {"Records committed to the ledger.", func(s ledger.WriterStats) float64 { return float64(s.Written) }},
		"failures_total":  {"Transactions that failed.", func(s ledger.WriterStats) float64 { return float64(s.Failures) }},
		"spooled_total":   {"Records written to the spool directory.", func(s ledger.WriterStats) float64 { return float64(s.Spooled) }},
		"lost_total":      {"Records kept nowhere (memory, spool and store all failed).", func(s ledger.WriterStats) float64 { return float64(s.Lost) }},
		"last_write_secs": {"Duration of the last commit.", func(s ledger.WriterStats) float64 { return s.LastWrite.Seconds() }},
	} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "leadpush", Subsystem: "ledger_writer", Name: name,
			Help: m.help}, func() float64 { return m.f(w.Stats()) }))
	}
}

// registerMaillog exposes the mail-log follower's health and counters
// (leadpush_maillog_*).
func registerMaillog(reg *prometheus.Registry, c *intake.LogConsumer) {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "leadpush", Subsystem: "maillog", Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "leadpush", Subsystem: "maillog", Name: name, Help: help}, f)
	}
	reg.MustRegister(
		gauge("readable", "1 when the mail log could be opened at the last try, 0 when not (no delivery status is recorded meanwhile).", func() float64 {
			if c.Stats().Readable {
				return 1
			}
			return 0
		}),
		gauge("lag_bytes", "Bytes of the mail log (and of rotated files still to read) not yet handled.", func() float64 { return float64(c.Stats().BehindBytes) }),
		gauge("lag_seconds", "How far the log time of the last line handled lies behind now, while there is more to read; 0 when caught up.", func() float64 { return c.Stats().BehindSeconds }),
		gauge("pending_lines", "Delivery lines waiting for their message to be recorded (saved with the position).", func() float64 { return float64(c.Stats().Pending) }),
		counter("lines_total", "Delivery lines read.", func() float64 { return float64(c.Lines.Load()) }),
		counter("events_total", "Events recorded from the mail log.", func() float64 { return float64(c.Events.Load()) }),
		counter("unknown_lines_total", "Delivery lines of mail that is never recorded (untrusted clients, Postfix's own notifications).", func() float64 { return float64(c.Unknown.Load()) }),
		counter("dropped_lines_total", "Delivery lines given up: their message was not recorded within maillog.pending_max_age, or too many waited.", func() float64 { return float64(c.Dropped.Load()) }),
		counter("lookups_total", "Ledger lookups of queue ids.", func() float64 { return float64(c.Lookups.Load()) }),
	)
}

// healthOnly serves /healthz and /metrics when tracking is off.
func healthOnly(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
