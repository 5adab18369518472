// Command leadpushd is Leadpush's companion daemon: it serves the tracking
// URLs the milter writes into messages, follows the mail log for delivery
// status, and posts every event to the configured webhooks.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leadpush/leadpush/api"
	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/intake"
	"github.com/leadpush/leadpush/notify/webhook"
	"github.com/leadpush/leadpush/tracker"
)

func main() {
	if err := run(config.FromFlags("leadpushd")); err != nil {
		fmt.Fprintln(os.Stderr, "leadpushd:", err)
		os.Exit(1)
	}
}

// gcPercent is leadpushd's GOGC unless its environment sets one. The
// user-agent parser keeps tens of megabytes of compiled patterns alive,
// which every collection marks again, and each tracker hit allocates a
// few kilobytes: collecting at 200% growth instead of 100% cost 4-5% less
// CPU a hit (TestTrackerProfile A/B, 6 rounds) for about 35 MB more
// peak memory under load (make bench: 194 MB -> 230 MB).
const gcPercent = 200

func run(cfg *config.Config) error {
	log := cfg.Logger()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	store, err := ledger.OpenSQLite(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	wopt := tracker.LedgerWriterOptions()
	wopt.SpoolDir, wopt.Logger = cfg.Store.SpoolDir, log
	w := ledger.NewWriter(store, wopt)
	reg := prometheus.NewRegistry()
	registerWriter(reg, w)
	// Without tracking keys there is nothing to verify: leadpushd then
	// serves only /healthz and /metrics, and still follows the log and
	// posts webhooks.
	var handler http.Handler
	var tr *tracker.Server
	if k := cfg.Keyring(); k != nil {
		proxies, _ := cfg.TrustedProxies()
		tr, err = tracker.New(tracker.Options{Keyring: k, Recorder: w, Messages: store, TrustedProxies: proxies,
			AnonymizeIP: cfg.Tracker.AnonymizeIP, Logger: log, Registry: reg})
		if err != nil {
			return err
		}
		handler = tr.Handler()
	} else {
		log.Warn("no tracking.keys: the tracker serves only /healthz and /metrics")
		handler = healthOnly(reg)
	}
	notifier, err := webhook.New(store, cfg.Webhook, webhook.Options{Logger: log,
		History: time.Duration(cfg.Webhooks.History), MaxAge: time.Duration(cfg.Webhooks.MaxAge), Backoff: cfg.Webhooks.BackoffTable()})
	if err != nil {
		return err
	}
	reg.MustRegister(notifier.Collector())
	as, err := api.New(cfg.API, api.Options{Logger: log.With("component", "api")})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Background work stops after the HTTP server: hits it answered are
	// still recorded.
	bg, cancelBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	goRun := func(f func(context.Context)) { wg.Add(1); go func() { defer wg.Done(); f(bg) }() }
	if tr != nil {
		goRun(tr.Run)
	}
	if len(cfg.Webhook) > 0 {
		goRun(func(ctx context.Context) { notifier.Run(ctx) })
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		goRun(func(ctx context.Context) { // SIGHUP: verify the endpoints again
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					notifier.Verify(ctx)
				}
			}
		})
	}
	if cfg.Maillog.Path != "" {
		lc := &intake.LogConsumer{Store: store, Path: cfg.Maillog.Path, Logger: log}
		goRun(func(ctx context.Context) { lc.Run(ctx) })
	}
	hs := tracker.NewHTTPServer(cfg.Tracker.Listen, handler)
	errc := make(chan error, 2)
	go func() { errc <- hs.ListenAndServe() }()
	servers := []*http.Server{hs}
	if cfg.API.Enabled() {
		ahs := api.NewHTTPServer(cfg.API.Listen, as.Handler())
		go func() { errc <- ahs.ListenAndServe() }()
		servers = append(servers, ahs)
		log.Info("send API listening", "listen", cfg.API.Listen, "submit", cfg.API.Submit, "keys", len(cfg.API.Key))
	}
	log.Info("leadpushd listening", "tracker", cfg.Tracker.Listen, "store", cfg.Store.Path,
		"maillog", cfg.Maillog.Path, "webhooks", len(cfg.Webhook))
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	// Two phases: let requests in flight finish, then close what is left
	// (browsers keep idle pre-opened connections that Shutdown would wait on).
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hctx, hcancel := context.WithTimeout(sctx, 2*time.Second)
	for _, s := range servers {
		s.Shutdown(hctx)
	}
	hcancel()
	for _, s := range servers {
		s.Close()
	}
	cancelBG()
	wg.Wait()
	w.Close(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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

// healthOnly serves /healthz and /metrics when tracking is off.
func healthOnly(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
