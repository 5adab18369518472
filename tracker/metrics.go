package tracker

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadpush/leadpush/ledger"
)

type hitKey struct {
	ep   string
	code int
}

type eventKey struct {
	typ     ledger.EventType
	machine bool
}

type metrics struct {
	hits     *prometheus.CounterVec
	hitPre   map[hitKey]prometheus.Counter // the usual label pairs, resolved once
	events   *prometheus.CounterVec
	eventPre map[eventKey]prometheus.Counter
	record   prometheus.Histogram
	uaParse  prometheus.Histogram
	dropped  prometheus.Counter
	confirms *prometheus.CounterVec
}

// confirm counts an unsubscribe confirmation by what became of it.
func (m *metrics) confirm(result string) { m.confirms.WithLabelValues(result).Inc() }

func newMetrics(reg *prometheus.Registry, depth func() int) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadpush_tracker_hits_total",
			Help: "HTTP requests answered, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadpush_tracker_events_total",
			Help: "Events handed to the recorder, by type and whether they were flagged as machine hits.",
		}, []string{"type", "machine"}),
		record: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leadpush_tracker_record_seconds",
			Help:    "Time the recording goroutine spent analysing one hit (message lookup, user agent, machine rules).",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		uaParse: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leadpush_tracker_ua_parse_seconds",
			Help:    "Time spent parsing one user agent (cache hits included).",
			Buckets: prometheus.ExponentialBuckets(1e-7, 4, 12),
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leadpush_tracker_dropped_hits_total",
			Help: "Hits not recorded because the recording queue was full.",
		}),
		confirms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadpush_tracker_unsubscribe_confirmations_total",
			Help: "Unsubscribe confirmation links asked for on the page of a message with several recipients, by result (sent, failed, not_recipient, too_soon, busy).",
		}, []string{"result"}),
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "leadpush_tracker_queue_depth",
		Help: "Hits waiting for the recording goroutines.",
	}, func() float64 { return float64(depth()) })
	for _, c := range []prometheus.Collector{m.hits, m.events, m.record, m.uaParse, m.dropped, m.confirms, queue} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("tracker: register metrics: %w", err)
		}
	}
	m.hitPre = map[hitKey]prometheus.Counter{}
	for _, ep := range []string{epOpen, epClick, epUnsub, epHealth, epMetrics, epOther} {
		for _, code := range []int{http.StatusOK, http.StatusFound, http.StatusBadRequest, http.StatusNotFound,
			http.StatusMethodNotAllowed, http.StatusServiceUnavailable} {
			m.hitPre[hitKey{ep, code}] = m.hits.WithLabelValues(ep, strconv.Itoa(code))
		}
	}
	m.eventPre = map[eventKey]prometheus.Counter{}
	for _, typ := range []ledger.EventType{ledger.Open, ledger.Click, ledger.Unsubscribe} {
		for _, machine := range []bool{false, true} {
			m.eventPre[eventKey{typ, machine}] = m.events.WithLabelValues(string(typ), strconv.FormatBool(machine))
		}
	}
	return m, nil
}

// event counts an event handed to the recorder.
func (m *metrics) event(typ ledger.EventType, machine bool) {
	if c, ok := m.eventPre[eventKey{typ, machine}]; ok {
		c.Inc()
		return
	}
	m.events.WithLabelValues(string(typ), strconv.FormatBool(machine)).Inc()
}

func (m *metrics) count(ep string, code int) {
	if c, ok := m.hitPre[hitKey{ep, code}]; ok {
		c.Inc()
		return
	}
	m.hits.WithLabelValues(ep, strconv.Itoa(code)).Inc()
}
