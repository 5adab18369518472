package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/webhook"
	"github.com/leadpush/leadpush/tracker"
)

// daemon holds what a reload (SIGHUP) changes: the log level, the
// tracker's keys and proxy settings, and the webhook notifier, which is
// replaced by one built from the new endpoints.
type daemon struct {
	cfg   *config.Config // as last applied
	level slog.LevelVar
	log   *slog.Logger
	store ledger.Store
	tr    *tracker.Server // nil without tracking keys
	wg    sync.WaitGroup

	mu       sync.Mutex
	notifier *webhook.Notifier // nil without [[webhook]]
	retired  webhook.Stats     // counters of the notifiers reloads replaced
	stopN    context.CancelFunc
	doneN    chan struct{}
}

// logger builds the logger once, with a level a reload can change.
func (d *daemon) logger() *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(d.cfg.Log.Level)) // checked by Validate
	d.level.Set(lv)
	o := &slog.HandlerOptions{Level: &d.level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, o)
	if d.cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(os.Stderr, o)
	}
	d.log = slog.New(h)
	return d.log
}

// newTracker builds the tracker, or, without tracking keys, a handler of
// /healthz and /metrics only (leadpushd still follows the log and posts
// webhooks).
func (d *daemon) newTracker(w *ledger.Writer, reg *prometheus.Registry) (public, admin http.Handler, err error) {
	// The public listener serves only /o/ /c/ /u/; /healthz and /metrics
	// are on admin.listen. Without tracking keys the public listener
	// answers 404, and leadpushd still follows the log and posts webhooks.
	k := d.cfg.Keyring()
	if k == nil {
		d.log.Warn("no tracking.keys: the tracker answers 404 to everything")
		return http.NotFoundHandler(), healthOnly(reg), nil
	}
	proxies, _ := d.cfg.TrustedProxies()
	opt := tracker.Options{Keyring: k, Recorder: w, Messages: d.store, TrustedProxies: proxies,
		AnonymizeIP: d.cfg.Tracker.AnonymizeIP, Logger: d.log, Registry: reg}
	if d.cfg.Tracker.ConfirmFrom != "" && d.cfg.Tracking.BaseURL != "" {
		opt.Confirm = confirmMailer{from: d.cfg.Tracker.ConfirmFrom, submit: d.cfg.Tracker.ConfirmSubmit}
		opt.BaseURL = d.cfg.Tracking.BaseURL
	}
	tr, err := tracker.New(opt)
	if err != nil {
		return nil, nil, err
	}
	d.tr = tr
	return tr.Handler(), tr.AdminHandler(), nil
}

// goRun runs f until ctx ends. An error f returns before that is logged
// and f runs again after a pause that doubles up to a minute: a component
// that fails is never silently gone.
func (d *daemon) goRun(ctx context.Context, name string, f func(context.Context) error) {
	d.wg.Go(func() {
		pause := time.Second
		for {
			err := f(ctx)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("stopped")
			}
			d.log.Error(name+" failed; restarting it", "err", err, "in", pause)
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pause = min(pause*2, time.Minute)
		}
	})
}

// ensureStarts creates the state of new endpoints where their start key
// says (default: the current end of the event stream), before the
// notifier would create it.
func ensureStarts(ctx context.Context, store ledger.WebhookStore, hooks []config.Webhook, now time.Time) error {
	for _, h := range hooks {
		t, err := h.StartTime(now)
		if err != nil {
			return err
		}
		if err := store.EnsureEndpoints(ctx, []string{h.WithDefaults().Name}, t); err != nil {
			return err
		}
	}
	return nil
}

// newNotifier builds a notifier for cfg's endpoints; nil when there are none.
func (d *daemon) newNotifier(cfg *config.Config) (*webhook.Notifier, error) {
	if len(cfg.Webhook) == 0 {
		return nil, nil
	}
	for i := range cfg.Webhook {
		if err := cfg.Webhook[i].Validate(); err != nil {
			return nil, err
		}
	}
	if err := ensureStarts(context.Background(), d.store, cfg.Webhook, time.Now()); err != nil {
		return nil, err
	}
	return webhook.New(d.store, cfg.Webhook, webhook.Options{Logger: d.log.With("component", "webhook"),
		History: time.Duration(cfg.Webhooks.History), MaxAge: time.Duration(cfg.Webhooks.MaxAge), Backoff: cfg.Webhooks.BackoffTable()})
}

func (d *daemon) startWebhooks(ctx context.Context, cfg *config.Config) error {
	n, err := d.newNotifier(cfg)
	if err != nil {
		return err
	}
	d.swapNotifier(ctx, n)
	return nil
}

// swapNotifier stops the running notifier (its requests in flight finish
// and are committed) and starts n.
func (d *daemon) swapNotifier(ctx context.Context, n *webhook.Notifier) {
	d.stopWebhooks()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notifier = n
	if n == nil {
		return
	}
	nctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	d.stopN, d.doneN = cancel, done
	d.wg.Go(func() {
		defer close(done)
		if err := n.Run(nctx); err != nil {
			d.log.Error("webhook notifier stopped", "err", err)
		}
	})
}

func (d *daemon) stopWebhooks() {
	d.mu.Lock()
	cancel, done, n := d.stopN, d.doneN, d.notifier
	d.stopN, d.doneN = nil, nil
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	d.mu.Lock()
	if n != nil && d.notifier == n {
		d.retired = addStats(d.retired, n.Stats())
		d.notifier = nil
	}
	d.mu.Unlock()
}

// currentNotifier returns the running notifier (nil: none) and the
// counters of those it replaced.
func (d *daemon) currentNotifier() (*webhook.Notifier, webhook.Stats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notifier, d.retired
}

// reloadLoop applies the configuration file again at every SIGHUP.
func (d *daemon) reloadLoop(ctx context.Context, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload(ctx)
		}
	}
}

// reload re-reads the configuration. An invalid file changes nothing.
// What can change live is applied (log.level, tracking.keys,
// tracker.trusted_proxies and anonymize_ip, [[webhook]] and [webhooks],
// the suppression policy of [suppression] and [[stream]]);
// other changes are named as needing a restart.
func (d *daemon) reload(ctx context.Context) {
	old := d.cfg
	nc, err := config.Load(old.File)
	if err != nil {
		d.log.Error("reload: configuration invalid; keeping the running one", "err", err)
		return
	}
	var changed, restart []string
	diff := func(key string, a, b any, live bool) {
		if reflect.DeepEqual(a, b) {
			return
		}
		if live {
			changed = append(changed, key)
		} else {
			restart = append(restart, key)
		}
	}
	hooksChanged := !reflect.DeepEqual(old.Webhook, nc.Webhook) || !reflect.DeepEqual(old.Webhooks, nc.Webhooks)
	var n *webhook.Notifier
	if hooksChanged {
		if n, err = d.newNotifier(nc); err != nil {
			d.log.Error("reload: webhooks invalid; keeping the running configuration", "err", err)
			return
		}
	}
	diff("log.level", old.Log.Level, nc.Log.Level, true)
	diff("log.format", old.Log.Format, nc.Log.Format, false)
	diff("tracking.keys", old.Tracking.Keys, nc.Tracking.Keys, d.tr != nil && len(nc.Tracking.Keys) > 0)
	diff("tracker.trusted_proxies", old.Tracker.TrustedProxies, nc.Tracker.TrustedProxies, d.tr != nil)
	diff("tracker.anonymize_ip", old.Tracker.AnonymizeIP, nc.Tracker.AnonymizeIP, d.tr != nil)
	diff("tracker.listen", old.Tracker.Listen, nc.Tracker.Listen, false)
	diff("tracker.confirm_from", old.Tracker.ConfirmFrom, nc.Tracker.ConfirmFrom, false)
	diff("tracker.confirm_submit", old.Tracker.ConfirmSubmit, nc.Tracker.ConfirmSubmit, false)
	diff("store", old.Store, nc.Store, false)
	diff("maillog", old.Maillog, nc.Maillog, false)
	diff("milter.trusted_networks", old.Milter.TrustedNetworks, nc.Milter.TrustedNetworks, false)
	diff("api", old.API, nc.API, false)
	diff("[[webhook]]", old.Webhook, nc.Webhook, true)
	diff("webhooks", old.Webhooks, nc.Webhooks, true)
	// the scope an unsubscribe writes, and the soft-bounce limit, are the
	// store's policy: applied at once (leadpush-milter reads [[stream]]
	// at its start)
	diff("[[stream]]", old.Stream, nc.Stream, true)
	diff("suppression", old.Suppression, nc.Suppression, true)
	d.store.SetPolicy(nc.Policy())

	var lv slog.Level
	lv.UnmarshalText([]byte(nc.Log.Level))
	d.level.Set(lv)
	if d.tr != nil {
		proxies, _ := nc.TrustedProxies()
		d.tr.Reconfigure(tracker.Live{Keyring: nc.Keyring(), TrustedProxies: proxies, AnonymizeIP: nc.Tracker.AnonymizeIP})
	}
	if hooksChanged {
		added, removed := endpointNames(nc.Webhook, old.Webhook), endpointNames(old.Webhook, nc.Webhook)
		d.swapNotifier(ctx, n)
		d.log.Info("reload: webhooks replaced", "endpoints", len(nc.Webhook), "added", added, "removed", removed)
	} else {
		if cur, _ := d.currentNotifier(); cur != nil {
			cur.Verify(ctx) // SIGHUP also checks the endpoints again
		}
	}
	d.cfg = nc
	if len(restart) > 0 {
		d.log.Warn("reload: these changes take effect at the next restart", "keys", restart)
	}
	d.log.Info("configuration reloaded", "file", nc.File, "changed", changed)
}

// endpointNames are the names in a missing from b.
func endpointNames(a, b []config.Webhook) []string {
	var out []string
	for _, h := range a {
		name := h.WithDefaults().Name
		if !slices.ContainsFunc(b, func(o config.Webhook) bool { return o.WithDefaults().Name == name }) {
			out = append(out, name)
		}
	}
	return out
}
