package milter

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the milter did. All fields are safe for concurrent use.
type Metrics struct {
	Connections   atomic.Int64 // milter connections (one per SMTP session)
	Recorded      atomic.Int64 // trusted messages recorded
	Untrusted     atomic.Int64 // messages only stripped
	Stripped      atomic.Int64 // X-Leadpush-* header occurrences removed
	Rewritten     atomic.Int64 // bodies replaced for tracking
	Skipped       atomic.Int64 // bodies left alone on purpose (signed, DKIM, ...)
	TooLarge      atomic.Int64 // bodies over max_track_size, passed untracked
	RewriteErrors atomic.Int64 // bodies the rewriter could not handle, passed unchanged
	TooBigRewrite atomic.Int64 // bodies left untracked: the rewrite would pass max_message_size
	ControlFlood  atomic.Int64 // messages refused for more than MaxControlHeaders control headers
	BudgetWaits   atomic.Int64 // bodies left untracked: the memory budget stayed busy for BudgetWait
	Rejected      atomic.Int64 // suppressed recipients turned away or dropped
	LookupErrors  atomic.Int64 // suppression lookups that failed (recipient accepted)
	Panics        atomic.Int64 // recovered panics
	// UnknownStream counts X-Leadpush-Stream headers naming no configured
	// stream (the message went to the default stream).
	UnknownStream atomic.Int64
	// StreamIgnored counts X-Leadpush-Stream headers ignored because the
	// envelope had placed the message in another stream, or because they
	// named a stream that splits recipients.
	StreamIgnored atomic.Int64
	// Split counts recipients answered 452 4.5.3 by split_recipients.
	Split    atomic.Int64
	eomNanos atomic.Int64
	eomCount atomic.Int64
}

func (m *Metrics) observeEOM(d time.Duration) {
	m.eomNanos.Add(int64(d))
	m.eomCount.Add(1)
}

// Register exposes the counters on a Prometheus registry.
func (m *Metrics) Register(r prometheus.Registerer) error {
	for name, c := range map[string]struct {
		help string
		v    *atomic.Int64
	}{
		"connections_total":               {"Milter connections accepted.", &m.Connections},
		"messages_recorded_total":         {"Messages from trusted senders recorded.", &m.Recorded},
		"messages_untrusted_total":        {"Messages from untrusted senders, only stripped.", &m.Untrusted},
		"control_headers_removed_total":   {"X-Leadpush-* header occurrences removed.", &m.Stripped},
		"bodies_rewritten_total":          {"Bodies rewritten for tracking.", &m.Rewritten},
		"bodies_skipped_total":            {"Bodies left alone on purpose.", &m.Skipped},
		"bodies_too_large_total":          {"Bodies over max_track_size, passed untracked.", &m.TooLarge},
		"rewrite_errors_total":            {"Bodies the rewriter could not handle, passed unchanged.", &m.RewriteErrors},
		"rewrites_too_big_total":          {"Bodies left untracked: rewritten, the message would pass max_message_size.", &m.TooBigRewrite},
		"control_floods_total":            {"Messages refused for more X-Leadpush-* headers than MaxControlHeaders.", &m.ControlFlood},
		"budget_timeouts_total":           {"Bodies left untracked: no share of the memory budget within budget_wait.", &m.BudgetWaits},
		"recipients_rejected_total":       {"Suppressed recipients rejected or dropped.", &m.Rejected},
		"suppression_lookup_errors_total": {"Failed suppression lookups (recipient accepted).", &m.LookupErrors},
		"panics_total":                    {"Recovered panics.", &m.Panics},
		"stream_header_unknown_total":     {"X-Leadpush-Stream headers naming no configured stream (default stream used).", &m.UnknownStream},
		"stream_header_ignored_total":     {"X-Leadpush-Stream headers ignored: the envelope placed the message, or the stream splits recipients.", &m.StreamIgnored},
		"recipients_split_total":          {"Recipients answered 452 4.5.3 by split_recipients.", &m.Split},
		"eom_seconds_total":               {"Time spent at end of message.", nil},
	} {
		v := c.v
		f := func() float64 { return float64(v.Load()) }
		if v == nil {
			f = func() float64 { return time.Duration(m.eomNanos.Load()).Seconds() }
		}
		if err := r.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "leadpush_milter", Name: name, Help: c.help}, f)); err != nil {
			return err
		}
	}
	return nil
}
