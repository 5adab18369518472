// Command leadpushd is Leadpush's companion daemon: it serves the tracking
// URLs the milter writes into messages, and records what recipients do.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/notify/ledger"
)

func main() {
	cfgPath := flag.String("config", config.DefaultPath, "configuration file")
	check := flag.Bool("check-config", false, "validate the configuration and exit")
	flag.Parse()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leadpushd:", err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("configuration ok")
		return
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "leadpushd:", err)
		os.Exit(1)
	}
}

func run(cfg *config.Config) error {
	log := cfg.Logger()
	store, err := ledger.OpenSQLite(cfg.Store.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	w := ledger.NewWriter(store, ledger.WriterOptions{SpoolDir: cfg.Store.SpoolDir, Logger: log})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(rw, "ok")
	})
	hs := &http.Server{Addr: cfg.Tracker.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	log.Info("leadpushd listening", "tracker", cfg.Tracker.Listen, "store", cfg.Store.Path)
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	w.Close(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
