package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// Formats of a webhook endpoint.
const (
	FormatBatch = "batch" // seed 002: form POST, one parameter holding a JSON array
	FormatJSON  = "json"  // seed 001: one application/json POST per event
)

// Defaults of a Webhook's zero fields.
const (
	DefaultParam     = "leadpush_events"
	DefaultBatchSize = 1000
	DefaultTimeout   = 10 * time.Second
	maxBatchSize     = 10000
	maxTimeout       = 5 * time.Minute
)

// Webhook is one webhook receiver, as configured in a [[webhook]] table
// (notify/webhook calls it an Endpoint). Zero fields take the defaults
// documented on each (WithDefaults).
type Webhook struct {
	// Name identifies the endpoint in logs, the CLI and its stored delivery
	// state (cursor); renaming an endpoint starts it afresh. Empty: the
	// URL's host and path.
	Name string `toml:"name"`
	// URL receives the POSTs: http or https.
	URL string `toml:"url"`
	// Events lists the ledger event names sent (processed, reject,
	// delivered, soft_bounce, hard_bounce, open, click, unsubscribe, spam).
	// Empty: all.
	Events []string `toml:"events"`
	// Format is "batch" (seed 002, the default) or "json" (seed 001).
	Format string `toml:"format"`
	// Secret signs every request (Standard Webhooks): "whsec_" followed by
	// base64 is the decoded key, any other string is used as raw bytes.
	// Required.
	Secret string `toml:"secret"`
	// Param is the form parameter of a batch POST. Empty: "leadpush_events";
	// set "leadersend_events" for receivers written for seed 002.
	Param string `toml:"param"`
	// BatchSize is the most events per batch POST (for "json", per read of
	// the ledger). Zero: 1000.
	BatchSize int `toml:"batch_size"`
	// Timeout bounds one request, connection included. Zero: 10s.
	Timeout Duration `toml:"timeout"`
	// Verify: when false, the endpoint is taken as verified without a
	// request, for receivers that can answer neither HEAD with 200 nor the
	// signed test request with 2xx. Unset: true.
	Verify *bool `toml:"verify"`
	// Start is where a new endpoint (a name the ledger has no state for)
	// starts in the event stream: "end" (empty, the default: only events
	// recorded from now on), "beginning" (every event the ledger holds) or
	// an RFC 3339 time (the events from then on). An existing endpoint
	// keeps its cursor.
	Start string `toml:"start"`
}

// StartTime is the time Start names, for ledger.WebhookStore's
// EnsureEndpoints: now for "end", the Unix epoch for "beginning".
func (e Webhook) StartTime(now time.Time) (time.Time, error) {
	switch e.Start {
	case "", "end":
		return now, nil
	case "beginning":
		return time.Unix(0, 0), nil
	}
	t, err := time.Parse(time.RFC3339, e.Start)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want \"end\", \"beginning\" or an RFC 3339 time such as 2026-12-01T00:00:00Z", e.Start)
	}
	return t, nil
}

// Verifies reports whether the endpoint is verified before its events
// are sent (verify is not false).
func (e Webhook) Verifies() bool { return e.Verify == nil || *e.Verify }

// WithDefaults returns e with its zero fields set.
func (e Webhook) WithDefaults() Webhook {
	if e.Name == "" {
		if u, err := url.Parse(e.URL); err == nil {
			e.Name = u.Host + u.Path
		}
	}
	if e.Format == "" {
		e.Format = FormatBatch
	}
	if e.Param == "" {
		e.Param = DefaultParam
	}
	if e.BatchSize == 0 {
		e.BatchSize = DefaultBatchSize
	}
	if e.Timeout == 0 {
		e.Timeout = Duration(DefaultTimeout)
	}
	return e
}

// Validate reports every problem of the endpoint's configuration, each
// naming its field. Zero fields that have defaults are valid.
func (e *Webhook) Validate() error {
	var errs []error
	name := e.WithDefaults().Name
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("webhook %q: %s: %s", name, field, fmt.Sprintf(format, args...)))
	}
	if e.URL == "" {
		bad("url", "required")
	} else if u, err := url.Parse(e.URL); err != nil {
		bad("url", "%v", err)
	} else if u.Scheme != "http" && u.Scheme != "https" {
		bad("url", "scheme must be http or https, not %q", u.Scheme)
	} else if u.Host == "" {
		bad("url", "no host in %q", e.URL)
	} else if u.User != nil {
		bad("url", "credentials in the URL are not supported; use the secret")
	}
	for _, ev := range e.Events {
		if !ledger.ValidEventType(ev) {
			bad("events", "unknown event %q (one of %s)", ev, eventNames())
		}
	}
	switch e.Format {
	case "", FormatBatch:
	case FormatJSON:
		if e.Param != "" {
			bad("param", "only for format %q", FormatBatch)
		}
	default:
		bad("format", "%q is neither %q nor %q", e.Format, FormatBatch, FormatJSON)
	}
	if e.Secret == "" {
		bad("secret", "required (every request is signed)")
	} else if _, err := WebhookKey(e.Secret); err != nil {
		bad("secret", "%v", err)
	}
	if strings.ContainsAny(e.Param, "&= \t\r\n") {
		bad("param", "%q is not a plain form parameter name", e.Param)
	}
	if e.BatchSize < 0 || e.BatchSize > maxBatchSize {
		bad("batch_size", "%d is outside 1..%d", e.BatchSize, maxBatchSize)
	}
	if t := time.Duration(e.Timeout); t < 0 || t > maxTimeout {
		bad("timeout", "%s is outside 0..%s", t, maxTimeout)
	}
	if _, err := e.StartTime(time.Now()); err != nil {
		bad("start", "%v", err)
	}
	return errors.Join(errs...)
}

// WebhookKey returns the HMAC key of a configured webhook secret.
func WebhookKey(secret string) ([]byte, error) {
	if s, ok := strings.CutPrefix(secret, "whsec_"); ok {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("whsec_ secret is not base64: %w", err)
		}
		if len(k) == 0 {
			return nil, errors.New("whsec_ secret is empty")
		}
		return k, nil
	}
	return []byte(secret), nil
}

func eventNames() string {
	names := make([]string, len(ledger.EventTypes))
	for i, t := range ledger.EventTypes {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}
