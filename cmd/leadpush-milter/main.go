// Command leadpush-milter is the milter Postfix (smtpd_milters) or Sendmail
// calls for every message: it strips and records the X-Leadpush-* control
// headers, rewrites trusted mail for tracking and turns suppressed
// recipients away. See the README for installation.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/version"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/milter"
)

func main() {
	version.Flag(flag.CommandLine, "leadpush-milter", os.Stdout)
	if err := run(config.FromFlags("leadpush-milter")); err != nil {
		fmt.Fprintln(os.Stderr, "leadpush-milter:", err)
		os.Exit(1)
	}
}

func run(cfg *config.Config) error {
	log := cfg.Logger()
	if p := os.Getenv("LEADPUSH_CPUPROFILE"); p != "" {
		// A CPU profile of the whole run, written at exit (see README,
		// Troubleshooting).
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	store, err := ledger.OpenSQLite(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	wopt := ledger.WriterOptions{}
	wopt.SpoolDir, wopt.Logger = cfg.Store.SpoolDir, log
	w := ledger.NewWriter(store, wopt)
	trusted, _ := cfg.TrustedNetworks()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var suppressions milter.Suppressions = store
	var cache *ledger.SuppressionCache
	if r := cfg.SuppressionRefresh(); r > 0 {
		// Recipients not on the list are answered from memory (README,
		// suppression.refresh).
		// Until Run's first load, recipients are looked up in SQLite.
		cache = ledger.NewSuppressionCache(store, r, log)
		go cache.Run(ctx)
		suppressions = cache
	}
	srv, err := milter.New(milter.Config{
		TrustedNetworks: trusted, TrustLocal: true, RecordHeaders: cfg.Milter.RecordHeaders,
		Recorder: w, Suppressions: suppressions, SuppressionAction: cfg.Suppression.Action, Streams: cfg.Streams(),
		Keyring: cfg.Keyring(), BaseURL: cfg.Tracking.BaseURL, TextLinks: cfg.Tracking.TextLinks,
		SkipDKIMSigned: cfg.SkipDKIMSigned(), BounceDomain: cfg.Bounce.Domain,
		BodyMemory: int64(cfg.Milter.BodyMemory), MaxTrackSize: int64(cfg.Milter.MaxTrackSize), TempDir: cfg.Milter.TempDir,
		MaxMessageSize: int64(cfg.Milter.MaxMessageSize),
		Logger:         log,
	})
	if err != nil {
		return err
	}
	ln, err := milter.Listen(cfg.Milter.Listen)
	if err != nil {
		return err
	}
	if cfg.Milter.MetricsListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if err := srv.Metrics().Register(reg); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		if cache != nil {
			registerCache(reg, cache)
		}
		mln, err := net.Listen("tcp", cfg.Milter.MetricsListen)
		if err != nil {
			return fmt.Errorf("milter.metrics_listen: %w", err)
		}
		hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener failed; /metrics is gone", "listen", cfg.Milter.MetricsListen, "err", err)
			}
		}()
		defer hs.Close()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(retryListener{Listener: ln, log: log}) }()
	log.Info("leadpush-milter listening", "listen", cfg.Milter.Listen, "store", cfg.Store.Path, "tracking", cfg.Keyring() != nil)
	select {
	case err = <-errc:
		log.Error("milter listener failed", "err", err)
	case <-ctx.Done():
	}
	// Two phases: stop accepting and let Postfix finish its sessions, then
	// cut what is left; then write what was recorded.
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	w.Close(wctx)
	st := w.Stats()
	log.Info("leadpush-milter stopped", "records_written", st.Written, "records_spooled", st.Spooled, "records_lost", st.Lost)
	if err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
		return err
	}
	return nil
}

// registerCache exposes the suppression cache's counters.
func registerCache(reg prometheus.Registerer, c *ledger.SuppressionCache) {
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: "leadpush_milter", Name: name, Help: help}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(opts("suppression_memory_answers_total", "Recipients found unlisted in the in-memory suppression set."),
			func() float64 { return float64(c.Stats().Memory) }),
		prometheus.NewCounterFunc(opts("suppression_db_lookups_total", "Recipients looked up in the database (listed, or the set not fresh)."),
			func() float64 { return float64(c.Stats().Lookups) }),
		prometheus.NewCounterFunc(opts("suppression_reload_errors_total", "Failed reloads of the in-memory suppression set."),
			func() float64 { return float64(c.Stats().ReloadErrors) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "leadpush_milter", Name: "suppression_entries", Help: "Addresses in the in-memory suppression set."},
			func() float64 { return float64(c.Stats().Entries) }),
	)
}
