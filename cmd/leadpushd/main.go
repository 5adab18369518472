// Command leadpushd is Leadpush's companion daemon: it serves the tracking
// URLs the milter writes into messages, follows the mail log for delivery
// status, and posts every event to the configured webhooks. SIGHUP
// re-reads the configuration (reload.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/leadpush/leadpush/api"
	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/version"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/intake"
	"github.com/leadpush/leadpush/notify/maillog"
	"github.com/leadpush/leadpush/tracker"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	version.Flag(flag.CommandLine, "leadpushd", os.Stdout)
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
	// First thing, and always: systemctl reload must never kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d := &daemon{cfg: cfg}
	log := d.logger()
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if p := os.Getenv("LEADPUSH_CPUPROFILE"); p != "" {
		// A CPU profile of the whole run, written at exit, as
		// leadpush-milter does (bench TestTrackerScale uses it).
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
	store.SetPolicy(cfg.Policy())
	d.store = store
	wopt := tracker.LedgerWriterOptions()
	wopt.SpoolDir, wopt.Logger = cfg.Store.SpoolDir, log
	w := ledger.NewWriter(store, wopt)
	reg := newRegistry()
	registerWriter(reg, w)
	reg.MustRegister(newWebhookCollector(d))
	handler, admin, err := d.newTracker(w, reg)
	if err != nil {
		return err
	}
	as, err := api.New(cfg.API, api.Options{Logger: log.With("component", "api")})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Background work stops after the HTTP servers: hits they answered are
	// still recorded.
	bg, cancelBG := context.WithCancel(context.Background())
	if d.tr != nil {
		d.goRun(bg, "tracker recorder", func(ctx context.Context) error { d.tr.Run(ctx); return nil })
	}
	if err := d.startWebhooks(bg, cfg); err != nil {
		cancelBG()
		return err
	}
	d.goRun(bg, "sighup", func(ctx context.Context) error { d.reloadLoop(ctx, hup); return nil })
	retention := ledger.Retention{Messages: cfg.Retention.RetainMessages(), Inbound: cfg.Retention.RetainInbound()}
	if retention.Messages > 0 || retention.Inbound > 0 {
		pruned := registerRetention(reg)
		d.goRun(bg, "retention", func(ctx context.Context) error {
			ledger.RunRetention(ctx, store, retention, cfg.Retention.PruneInterval(), log, pruned)
			return nil
		})
	}
	if cfg.Maillog.Path != "" {
		trusted, _ := cfg.TrustedNetworks()
		lc := &intake.LogConsumer{Store: store, Path: cfg.Maillog.Path, Format: maillog.Format(cfg.Maillog.Format),
			Logger: log.With("component", "maillog"), MaxAge: time.Duration(cfg.Maillog.PendingMaxAge), Trusted: trusted}
		registerMaillog(reg, lc)
		d.goRun(bg, "mail-log follower", lc.Run)
	}
	errc := make(chan error, 3)
	servers := []*http.Server{tracker.NewHTTPServer(cfg.Tracker.Listen, handler)}
	if cfg.Admin.Listen != "" {
		servers = append(servers, tracker.NewHTTPServer(cfg.Admin.Listen, admin))
	}
	if cfg.API.Enabled() {
		servers = append(servers, api.NewHTTPServer(cfg.API.Listen, as.Handler()))
		log.Info("send API listening", "listen", cfg.API.Listen, "submit", cfg.API.Submit, "keys", len(cfg.API.Key))
	}
	for _, s := range servers {
		go func() { errc <- s.ListenAndServe() }()
	}
	log.Info("leadpushd listening", "tracker", cfg.Tracker.Listen, "admin", cfg.Admin.Listen, "store", cfg.Store.Path,
		"maillog", cfg.Maillog.Path, "webhooks", len(cfg.Webhook))
	select {
	case err = <-errc:
		log.Error("HTTP server failed", "err", err)
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
	d.stopWebhooks()
	d.wg.Wait()
	w.Close(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// registerRetention counts what retention pruned.
func registerRetention(reg *prometheus.Registry) func(ledger.Pruned) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "leadpush", Subsystem: "retention", Name: "pruned_total",
		Help: "Records deleted by retention, by kind (message, event, inbound)."}, []string{"kind"})
	reg.MustRegister(c)
	msgs, evs, in := c.WithLabelValues("message"), c.WithLabelValues("event"), c.WithLabelValues("inbound")
	return func(p ledger.Pruned) {
		msgs.Add(float64(p.Messages))
		evs.Add(float64(p.Events))
		in.Add(float64(p.Inbound))
	}
}
