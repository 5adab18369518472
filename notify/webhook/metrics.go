package webhook

import "github.com/prometheus/client_golang/prometheus"

// Collector returns the notifier's Prometheus metrics, per endpoint (label
// "endpoint"); leadpushd registers it on its /metrics:
//
//	leadpush_webhook_endpoint_verified     1 when the endpoint is verified (or verify = false), else 0: its events wait
//	leadpush_webhook_backlog               events after the endpoint's cursor, as of its last check
//	leadpush_webhook_delivered_total       events delivered (2xx) by this process
//	leadpush_webhook_failed_attempts_total requests that failed (status, timeout, connection)
//	leadpush_webhook_dead_lettered_total   events given up after max age
//
// The counters count this process's work since it started; the gauges are
// read from the state each endpoint's worker last saw.
func (n *Notifier) Collector() prometheus.Collector { return collector{n} }

type collector struct{ n *Notifier }

var metricDescs = struct {
	verified, backlog, delivered, failed, dead *prometheus.Desc
}{
	verified: prometheus.NewDesc("leadpush_webhook_endpoint_verified",
		"1 when the webhook endpoint is verified (or verify = false); 0: its events wait.", []string{"endpoint"}, nil),
	backlog: prometheus.NewDesc("leadpush_webhook_backlog",
		"Events after the endpoint's cursor, as of its last check.", []string{"endpoint"}, nil),
	delivered: prometheus.NewDesc("leadpush_webhook_delivered_total",
		"Events delivered with a 2xx answer.", []string{"endpoint"}, nil),
	failed: prometheus.NewDesc("leadpush_webhook_failed_attempts_total",
		"Requests that failed (status, timeout, connection).", []string{"endpoint"}, nil),
	dead: prometheus.NewDesc("leadpush_webhook_dead_lettered_total",
		"Events given up after webhooks.max_age.", []string{"endpoint"}, nil),
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	d := metricDescs
	for _, x := range []*prometheus.Desc{d.verified, d.backlog, d.delivered, d.failed, d.dead} {
		ch <- x
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := metricDescs
	for _, w := range c.n.workers {
		v := 0.0
		if w.verified.Load() {
			v = 1
		}
		name := w.ep.Name
		ch <- prometheus.MustNewConstMetric(d.verified, prometheus.GaugeValue, v, name)
		ch <- prometheus.MustNewConstMetric(d.backlog, prometheus.GaugeValue, float64(w.backlog.Load()), name)
		ch <- prometheus.MustNewConstMetric(d.delivered, prometheus.CounterValue, float64(w.delivered.Load()), name)
		ch <- prometheus.MustNewConstMetric(d.failed, prometheus.CounterValue, float64(w.failed.Load()), name)
		ch <- prometheus.MustNewConstMetric(d.dead, prometheus.CounterValue, float64(w.dead.Load()), name)
	}
}
