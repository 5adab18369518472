package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/webhook"
)

// webhookCollector exports the webhook endpoints' state, read from the
// ledger at each scrape, and the notifier's counters, which carry over
// the notifiers a reload replaced (leadpush_webhook_*).
type webhookCollector struct {
	d *daemon

	backlog, attempts, verified, paused, lastStatus, lastAttempt, lastSuccess, dead *prometheus.Desc
	delivered, requests, failed, deadLettered                                       *prometheus.Desc
}

func newWebhookCollector(d *daemon) *webhookCollector {
	ep := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("leadpush_webhook_"+name, help, []string{"endpoint"}, nil)
	}
	all := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("leadpush_webhook_"+name, help, nil, nil)
	}
	return &webhookCollector{d: d,
		backlog:      ep("backlog_events", "Events after the endpoint's cursor that it takes."),
		attempts:     ep("failed_attempts", "Failed attempts of the batch at the endpoint's head (0 when it is not failing)."),
		verified:     ep("verified", "1 when the endpoint answered its verification."),
		paused:       ep("paused", "1 when deliveries to the endpoint are paused."),
		lastStatus:   ep("last_status", "HTTP status of the last attempt (0: none or no response)."),
		lastAttempt:  ep("last_attempt_timestamp_seconds", "Time of the last attempt (0: none)."),
		lastSuccess:  ep("last_success_timestamp_seconds", "Time of the last delivered batch among the recent attempts (0: none)."),
		dead:         ep("dead_letter_events_total", "Events given up after webhooks.max_age, ever."),
		delivered:    all("delivered_events_total", "Events delivered (2xx) by this process."),
		requests:     all("requests_total", "Requests answered with a 2xx by this process."),
		failed:       all("failed_requests_total", "Requests that failed (status, timeout, connection) in this process."),
		deadLettered: all("gave_up_events_total", "Events this process gave up after webhooks.max_age."),
	}
}

func (c *webhookCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *webhookCollector) Collect(ch chan<- prometheus.Metric) {
	n, base := c.d.currentNotifier()
	st := base
	if n != nil {
		st = addStats(st, n.Stats())
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(c.delivered, st.Delivered)
	counter(c.requests, st.Requests)
	counter(c.failed, st.FailedAttempts)
	counter(c.deadLettered, st.DeadLettered)
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	eps, err := n.Status(ctx)
	if err != nil {
		c.d.log.Warn("webhook metrics: reading endpoint state failed", "err", err)
		return
	}
	for _, e := range eps {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, e.Name)
		}
		gauge(c.backlog, float64(e.Backlog))
		gauge(c.attempts, float64(e.Attempts))
		gauge(c.verified, b2f(e.Verified))
		gauge(c.paused, b2f(e.Paused))
		gauge(c.lastStatus, float64(e.LastStatus))
		gauge(c.lastAttempt, unix(e.LastAttempt))
		var success time.Time
		if hist, err := c.d.store.History(ctx, e.Name, 100); err == nil {
			for _, a := range hist {
				if a.Result == ledger.AttemptDelivered {
					success = a.Time
					break
				}
			}
		}
		gauge(c.lastSuccess, unix(success))
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.CounterValue, float64(e.DeadLetters), e.Name)
	}
}

func addStats(a, b webhook.Stats) webhook.Stats {
	return webhook.Stats{Delivered: a.Delivered + b.Delivered, Requests: a.Requests + b.Requests,
		FailedAttempts: a.FailedAttempts + b.FailedAttempts, DeadLettered: a.DeadLettered + b.DeadLettered}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
