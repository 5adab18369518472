// Package webhook delivers the ledger's events to the operator's
// application over HTTP, in the two formats the product documents: "batch"
// (seed 002, a form POST whose one parameter holds a JSON array of events)
// and "json" (seed 001, one JSON object per event, with the message's custom
// headers). Every request is signed as Standard Webhooks prescribes
// (webhook-id, webhook-timestamp, webhook-signature).
//
// The ledger's events table is the outbox: an event is written once, in the
// transaction that records it, and each endpoint keeps a durable cursor (the
// last seq it has been sent) in the ledger ([ledger.WebhookStore]). The
// cursor moves only after a 2xx answer, in a committed transaction, so
// delivery is at least once and a kill -9 at any moment loses nothing;
// receivers deduplicate on the event id. A cursor over seq misses nothing
// because of the ledger's ordering guarantee ([ledger.EventReader]).
package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/leadpush/leadpush/ledger"
)

// ErrUnknownEndpoint is returned for an endpoint name that is not
// configured.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// DefaultBackoff is the pause before each retry of a failed request, the
// last repeating; each is jittered by ±10%.
var DefaultBackoff = []time.Duration{
	5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour,
}

// Options tune a Notifier. Zero fields take the defaults given.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Client sends the requests. Nil: a client that does not follow
	// redirects (a 3xx is a failure) and keeps connections alive.
	Client *http.Client
	Now    func() time.Time // nil: time.Now
	// History is how long finished attempts are kept in webhook_history.
	// Dead letters are kept at least 30 days. Zero: 7 days. It is also how
	// far back a newly configured endpoint starts.
	History time.Duration
	// MaxAge is how long a failing batch is retried before it is moved to
	// the dead letters and the endpoint moves on. Zero: 72 hours.
	MaxAge time.Duration
	// Backoff is the retry table. Nil: DefaultBackoff.
	Backoff []time.Duration
	// Poll is how often the ledger is checked for events recorded by other
	// processes (Wake covers this one). Zero: 500ms.
	Poll time.Duration
	// VerifyInterval is how often an unverified endpoint is verified again
	// (Verify does it at once). Zero: 1 minute.
	VerifyInterval time.Duration
	// StopGrace is how long a request in flight when Run's context ends
	// may take to finish before it is aborted (and sent first after a
	// restart). Zero: 5 seconds, so that leadpushd stops well within the
	// unit's TimeoutStopSec=20.
	StopGrace time.Duration
}

// Stats are cumulative counters of this process's deliveries, for a
// Prometheus collector.
type Stats struct {
	Delivered      int64 // events delivered (2xx)
	Requests       int64 // requests answered with a 2xx
	FailedAttempts int64 // requests that failed (status, timeout, connection)
	DeadLettered   int64 // events given up after MaxAge
	// Backlog is the number of events after the endpoints' cursors, summed
	// over endpoints, as of their last check; it ignores event filters.
	Backlog int64
}

// EndpointStatus is the delivery state of one endpoint.
type EndpointStatus struct {
	Name, URL, Format string
	Verified, Paused  bool
	Cursor            int64 // seq of the last event delivered or skipped
	Backlog           int64 // events after the cursor that the endpoint takes
	Attempts          int   // failed attempts of the batch at the head
	DeadLetters       int64 // events given up, ever
	LastStatus        int   // HTTP status of the last attempt, 0 = none or no response
	LastError         string
	LastAttempt       time.Time // zero: none
	NextAttempt       time.Time // zero: as soon as there are events
	// VerifyReason says how the last verification passed or why it failed;
	// NextVerify is when an unverified endpoint is tried again.
	VerifyReason string
	NextVerify   time.Time
	PendingID    string // webhook-id of the stored request being retried, "" = none
}

// Store is what the notifier needs of the ledger.
type Store interface {
	ledger.EventReader
	ledger.WebhookStore
}

// Notifier delivers events to the configured endpoints. Create it with
// New; Run delivers until its context ends; the other methods may be
// called at any time, also from another process sharing the SQLite file
// (the state they change is in the database).
type Notifier struct {
	store   Store
	opt     Options
	log     *slog.Logger
	client  *http.Client
	workers []*worker
	byName  map[string]*worker
	running atomic.Bool

	delivered, requests, failed, dead atomic.Int64
}

type worker struct {
	n       *Notifier
	ep      Endpoint
	key     []byte
	types   map[ledger.EventType]bool // event types sent; nil = all sendable
	wake    chan struct{}
	backlog atomic.Int64

	// For the metrics: this process's counts and the last state seen.
	delivered, failed, dead atomic.Int64
	verified                atomic.Bool

	// verifyMu serialises verifications of the endpoint, so the outcome
	// stored last is the one that started last (a SIGHUP's Verify racing
	// the worker's periodic retry must not be overwritten by the older,
	// failed attempt).
	verifyMu   sync.Mutex
	nextVerify time.Time // when to retry a failed verification; under verifyMu
}

// New checks the endpoints, creates the notifier's tables if needed and the
// state rows of new endpoints, and returns a Notifier that has sent
// nothing yet.
func New(store Store, endpoints []Endpoint, opt Options) (*Notifier, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.History <= 0 {
		opt.History = 7 * 24 * time.Hour
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = 72 * time.Hour
	}
	if len(opt.Backoff) == 0 {
		opt.Backoff = DefaultBackoff
	}
	if opt.Poll <= 0 {
		opt.Poll = 500 * time.Millisecond
	}
	if opt.VerifyInterval <= 0 {
		opt.VerifyInterval = time.Minute
	}
	if opt.StopGrace <= 0 {
		opt.StopGrace = 5 * time.Second
	}
	n := &Notifier{store: store, opt: opt, log: opt.Logger, client: opt.Client, byName: map[string]*worker{}}
	if n.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 4
		n.client = &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	var errs []error
	var names []string
	for _, ep := range endpoints {
		if err := ep.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		ep = ep.WithDefaults()
		if _, dup := n.byName[ep.Name]; dup {
			errs = append(errs, fmt.Errorf("webhook %q: name: used by two endpoints", ep.Name))
			continue
		}
		key, _ := secretKey(ep.Secret) // checked by Validate
		w := &worker{n: n, ep: ep, key: key, wake: make(chan struct{}, 1)}
		if len(ep.Events) > 0 {
			w.types = map[ledger.EventType]bool{}
			for _, t := range ep.Events {
				w.types[ledger.EventType(t)] = true
			}
		}
		n.workers = append(n.workers, w)
		n.byName[ep.Name] = w
		names = append(names, ep.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := store.EnsureEndpoints(ctx, names, opt.Now().Add(-opt.History)); err != nil {
		return nil, err
	}
	return n, nil
}

// takes reports whether the endpoint is sent events of type t.
func (w *worker) takes(t ledger.EventType) bool {
	return sendable(w.ep.Format, t) && (w.types == nil || w.types[t])
}

// Run verifies the endpoints, then delivers their events, one goroutine
// and at most one request in flight per endpoint, until ctx ends. Then
// each endpoint stops between requests: a request in flight gets up to
// StopGrace to finish (else it is aborted, stored and sent first after a
// restart), and what was answered is committed before Run returns. It
// returns nil after ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run called twice")
	}
	defer n.running.Store(false)
	n.Verify(ctx)
	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { n.pruneLoop(ctx) })
	wg.Wait()
	return nil
}

// Wake tells every endpoint that new events exist, so they are delivered
// now rather than at the next poll. It never blocks.
func (n *Notifier) Wake() {
	for _, w := range n.workers {
		w.poke()
	}
}

func (w *worker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (n *Notifier) Stats() Stats {
	s := Stats{Delivered: n.delivered.Load(), Requests: n.requests.Load(), FailedAttempts: n.failed.Load(), DeadLettered: n.dead.Load()}
	for _, w := range n.workers {
		s.Backlog += w.backlog.Load()
	}
	return s
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		d := w.step(ctx)
		if d <= 0 {
			continue
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// step does one round of work and returns how long to wait before the
// next (0: at once).
func (w *worker) step(ctx context.Context) time.Duration {
	n := w.n
	poll := n.opt.Poll
	st, err := n.store.Endpoint(ctx, w.ep.Name)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("webhook: reading state", "endpoint", w.ep.Name, "err", err)
		}
		return poll
	}
	w.verified.Store(st.Verified || !w.ep.Verifies())
	maxSeq, err := n.store.LastSeq(ctx)
	if err == nil {
		w.backlog.Store(max(maxSeq-st.Cursor, 0))
	}
	if st.Paused {
		return poll
	}
	now := n.opt.Now()
	if !st.Verified {
		w.verifyMu.Lock()
		next := w.nextVerify
		w.verifyMu.Unlock()
		if now.Before(next) {
			return next.Sub(now)
		}
		if !w.verify(ctx) {
			return n.opt.VerifyInterval
		}
	}
	if now.Before(st.NextAttempt) {
		return st.NextAttempt.Sub(now)
	}
	// Requests outlive ctx by up to StopGrace, and their commits outlive
	// it: a shutdown stops between requests and commits what was answered.
	rctx, cancel := n.requestContext(ctx)
	defer cancel()
	bg := context.WithoutCancel(ctx)
	if st.PendingLast > 0 && st.PendingID != "" {
		req, err := n.store.PendingRequest(ctx, w.ep.Name)
		switch {
		case err == nil && req.LastSeq == st.PendingLast:
			// A retry sends the stored request verbatim: same webhook-id,
			// same bytes.
			a, res := w.send(rctx, req.WebhookID, req.ContentType, req.Body)
			a.FirstSeq, a.LastSeq, a.Events = req.FirstSeq, req.LastSeq, req.Events
			if res.err != nil {
				w.finish(bg, st, st.Cursor, nil, &failure{Attempt: a, res: res, aborted: ctx.Err() != nil})
				return 0
			}
			w.finish(bg, st, req.LastSeq, []ledger.Attempt{a}, nil)
			return 0
		case err != nil && !errors.Is(err, ledger.ErrNotFound):
			if ctx.Err() == nil {
				n.log.Warn("webhook: reading the pending request", "endpoint", w.ep.Name, "err", err)
			}
			return poll
		}
		// Not stored: forget erased events it held (erasure wins). The
		// range is cut again from the ledger, without them, and so under
		// a new webhook-id.
		if errors.Is(err, ledger.ErrNotFound) {
			n.log.Info("webhook: the pending request held erased events; sending its range again without them",
				"endpoint", w.ep.Name, "webhook_id", st.PendingID)
		}
	}
	if maxSeq <= st.Cursor {
		return poll
	}
	limit := w.ep.BatchSize
	evs, err := n.store.Events(ctx, ledger.Filter{AfterSeq: st.Cursor, Limit: limit})
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("webhook: reading events", "endpoint", w.ep.Name, "err", err)
		}
		return poll
	}
	more := len(evs) == limit
	if st.PendingLast > 0 {
		// A retry without a stored request (written before they were
		// stored) sends the range that failed, so its webhook-id holds.
		i := 0
		for i < len(evs) && evs[i].Seq <= st.PendingLast {
			i++
		}
		evs, more = evs[:i], true
	}
	if len(evs) == 0 {
		if st.PendingLast > 0 { // the batch's events are gone from the ledger
			w.finish(ctx, st, st.PendingLast, nil, nil)
			return 0
		}
		return poll
	}
	last := evs[len(evs)-1].Seq
	keep := evs[:0:0]
	for _, e := range evs {
		if w.takes(e.Type) {
			keep = append(keep, e)
		}
	}
	if len(keep) == 0 {
		w.finish(ctx, st, last, nil, nil)
		return wait(more, poll)
	}
	// The batch's messages in one lookup: a batch whose every event is
	// about another message read them one query each.
	msgIDs := make([]string, 0, len(keep))
	for _, e := range keep {
		msgIDs = append(msgIDs, e.MessageID)
	}
	msgs, err := n.store.MessagesByID(ctx, msgIDs)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("webhook: reading the batch's messages", "endpoint", w.ep.Name, "err", err)
		}
		return poll
	}
	if w.ep.Format == FormatJSON {
		return w.sendJSON(ctx, rctx, st, keep, msgs, last, more)
	}
	bes := make([]BatchEvent, 0, len(keep))
	ids := make([]string, len(keep))
	for i, e := range keep {
		be, _ := BatchEventOf(e, msgs[e.MessageID])
		bes = append(bes, be)
		ids[i] = e.ID
	}
	body := batchBody(w.ep.Param, bes)
	id := batchID(w.ep.Name, st.Cursor, last, w.ep.Param, keep, msgs)
	a, res := w.send(rctx, id, ctypeBatch, body)
	a.FirstSeq, a.LastSeq, a.Events = keep[0].Seq, last, len(keep)
	if res.err != nil {
		w.finish(bg, st, st.Cursor, nil, &failure{Attempt: a, res: res, aborted: ctx.Err() != nil,
			req: &ledger.Request{WebhookID: id, ContentType: ctypeBatch, Body: body, FirstSeq: keep[0].Seq, LastSeq: last,
				Events: len(keep), EventIDs: ids, Created: a.Time}})
		return 0
	}
	w.finish(bg, st, last, []ledger.Attempt{a}, nil)
	return wait(more, poll)
}

const (
	ctypeBatch = "application/x-www-form-urlencoded"
	ctypeJSON  = "application/json"
)

// commitEvery bounds what a json endpoint sends between two commits of its
// cursor: a kill -9 resends at most that much.
const commitEvery = time.Second

// sendJSON posts keep one event a request, in order. It stops between
// requests when ctx ends, and commits what was answered.
func (w *worker) sendJSON(ctx, rctx context.Context, st ledger.EndpointState, keep []*ledger.Event,
	msgs map[string]*ledger.Message, last int64, more bool) time.Duration {
	n := w.n
	bg := context.WithoutCancel(ctx)
	var done []ledger.Attempt
	committed := time.Now()
	for i, e := range keep {
		if ctx.Err() != nil || time.Since(committed) >= commitEvery {
			// Commit what was answered; on shutdown, stop here.
			if len(done) > 0 {
				if !w.finish(bg, st, keep[i-1].Seq, done, nil) {
					return n.opt.Poll
				}
				done = nil
				if st, _ = n.store.Endpoint(bg, w.ep.Name); st.Cursor != keep[i-1].Seq {
					return 0 // changed meanwhile (a replay): start again from the stored state
				}
			}
			if ctx.Err() != nil {
				return 0
			}
			committed = time.Now()
		}
		body, err := json.Marshal(PayloadOf(e, msgs[e.MessageID]))
		if err != nil {
			panic(err) // plain structs only
		}
		a, res := w.send(rctx, e.ID, ctypeJSON, body)
		a.FirstSeq, a.LastSeq, a.Events = e.Seq, e.Seq, 1
		if res.err != nil {
			w.finish(bg, st, e.Seq-1, done, &failure{Attempt: a, res: res, aborted: ctx.Err() != nil,
				req: &ledger.Request{WebhookID: e.ID, ContentType: ctypeJSON, Body: body, FirstSeq: e.Seq, LastSeq: e.Seq,
					Events: 1, EventIDs: []string{e.ID}, Created: a.Time}})
			return 0
		}
		done = append(done, a)
	}
	w.finish(bg, st, last, done, nil)
	return wait(more, n.opt.Poll)
}

// requestContext is ctx for requests, except that its end leaves a request
// in flight StopGrace to finish before it is aborted.
func (n *Notifier) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(n.opt.StopGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-rctx.Done():
		}
	})
	return rctx, func() { stop(); cancel() }
}

func wait(more bool, poll time.Duration) time.Duration {
	if more {
		return 0
	}
	return poll
}

func batchBody(param string, bes []BatchEvent) []byte {
	b, err := json.Marshal(bes)
	if err != nil {
		panic(err) // plain structs only
	}
	return []byte(url.Values{param: {string(b)}}.Encode())
}

// batchID is the webhook-id of a batch: a digest of the endpoint, the
// range of events it covers and what its body is made of (the form
// parameter, the payload Version, each event's id and whether its message
// was known). Events
// and recorded messages never change, so two bodies under one id would
// need one of those to differ: a retry resends the stored body and keeps
// its id; a batch cut again (after a crash in flight, a change of
// configuration, an erasure, a message recorded after its events) gets a
// new id if its body can differ. (Hashing those, not the body, costs a
// twentieth.)
func batchID(endpoint string, after, last int64, param string, keep []*ledger.Event, msgs map[string]*ledger.Message) string {
	h := sha256.New()
	b := make([]byte, 0, 64)
	b = append(append(b, endpoint...), 0)
	b = strconv.AppendInt(b, after, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, last, 10)
	b = append(append(append(b, 0), param...), 0)
	b = strconv.AppendInt(b, Version, 10)
	h.Write(b)
	for _, e := range keep {
		b = append(b[:0], e.ID...)
		m := msgs[e.MessageID]
		switch {
		case m == nil:
			b = append(b, 0)
		case e.MsgSeq == 0: // recorded before events kept counts: the message's, which change
			b = strconv.AppendInt(append(b, 2), int64(m.Opens), 10)
			b = strconv.AppendInt(append(b, ','), int64(m.Clicks), 10)
		default:
			b = append(b, 1)
		}
		h.Write(b)
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// result is the outcome of one request.
type result struct {
	status     int
	err        error         // nil: 2xx
	retryAfter time.Duration // from a failure's Retry-After, 0 = none
}

type failure struct {
	ledger.Attempt
	res result
	// req is a new request's body, stored at its first failure so its
	// retries resend it verbatim; nil for a retry (already stored).
	req *ledger.Request
	// aborted: the request was cut short by a shutdown. It is resent
	// first after a restart, without counting as a failed attempt.
	aborted bool
}

// send POSTs a signed body and returns the attempt's record.
func (w *worker) send(ctx context.Context, id, ctype string, body []byte) (ledger.Attempt, result) {
	now := w.n.opt.Now()
	a := ledger.Attempt{WebhookID: id, Time: now}
	status, resp, hdr, err := w.do(ctx, http.MethodPost, id, ctype, body)
	a.Status, a.Response = status, resp
	res := result{status: status, err: err}
	if err == nil && (status < 200 || status > 299) {
		res.err = fmt.Errorf("HTTP status %d", status)
		res.retryAfter = parseRetryAfter(hdr.Get("Retry-After"), now)
	}
	if res.err != nil {
		a.Error = res.err.Error()
	}
	return a, res
}

// do makes one request within the endpoint's timeout and returns the
// status, the first 512 bytes of the response body (valid UTF-8) and the
// response headers. A POST is signed; a HEAD is not.
func (w *worker) do(ctx context.Context, method, id, ctype string, body []byte) (int, string, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(w.ep.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, w.ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("User-Agent", "leadpush-webhook/"+strconv.Itoa(Version))
	if method == http.MethodPost {
		ts := w.n.opt.Now().Unix()
		req.Header.Set("Content-Type", ctype)
		req.Header.Set(HeaderID, id)
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, sign(w.key, id, ts, body))
	}
	resp, err := w.n.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	// Drain a little more so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return resp.StatusCode, s, resp.Header, nil
}

// parseRetryAfter reads a Retry-After header (RFC 9110 section 10.2.3):
// delay-seconds or an HTTP date. It returns 0 for none or nonsense, and at
// most a day.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, 86400)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), 24*time.Hour)
}

// backoff is the pause after the attempts'th failure, jittered ±10%.
func (n *Notifier) backoff(attempts int) time.Duration {
	t := n.opt.Backoff
	d := t[min(max(attempts-1, 0), len(t)-1)]
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// finish commits a step: the cursor moves to cursor (nothing delivered
// after it is lost, since the commit comes after the 2xx), the delivered
// attempts go to history, and a failure is recorded and scheduled, or
// dead-lettered after MaxAge, or pauses the endpoint on 410 Gone. A Replay
// in between (another generation) voids the commit. It reports whether the
// commit was stored.
func (w *worker) finish(ctx context.Context, st ledger.EndpointState, cursor int64, done []ledger.Attempt, f *failure) bool {
	n := w.n
	ctx, cancel := context.WithTimeout(ctx, 2*ledger.BusyTimeout)
	defer cancel()
	now := n.opt.Now()
	var events, deadEvents int
	for i := range done {
		done[i].Result = ledger.AttemptDelivered
		events += done[i].Events
	}
	// What stays as it was unless this step changes it.
	d := ledger.Delivery{
		Cursor: cursor, PendingLast: st.PendingLast, Attempts: st.Attempts, FirstFailure: st.FirstFailure,
		NextAttempt: st.NextAttempt, LastAt: st.LastAttempt, LastStatus: st.LastStatus, LastError: st.LastError,
		History: done,
	}
	if len(done) > 0 {
		a := done[len(done)-1]
		d.LastAt, d.LastStatus, d.LastError = a.Time, a.Status, ""
	}
	if f != nil {
		d.Request = f.req
	}
	switch {
	case f == nil:
		d.PendingLast, d.Attempts, d.FirstFailure, d.NextAttempt = 0, 0, time.Time{}, time.Time{}
	case f.aborted:
		// Cut short by a shutdown: not the receiver's failure. Kept
		// pending (and stored) so a restart sends it first, at once.
		f.Result = ledger.AttemptFailed
		f.Error = "aborted: shutting down (" + f.Error + ")"
		d.History = append(d.History, f.Attempt)
		if st.PendingLast != f.LastSeq {
			d.Attempts, d.FirstFailure = 0, time.Time{}
		}
		d.PendingLast, d.NextAttempt = f.LastSeq, time.Time{}
	case f.res.status == http.StatusGone:
		f.Result = ledger.AttemptGone
		d.History = append(d.History, f.Attempt)
		d.PendingLast, d.Pause = f.LastSeq, true
		d.LastAt, d.LastStatus, d.LastError = f.Time, f.Status, "410 Gone: endpoint paused"
	default:
		attempts, first := st.Attempts+1, st.FirstFailure
		if st.PendingLast != f.LastSeq || st.Attempts == 0 || first.IsZero() {
			attempts, first = 1, now
		}
		d.LastAt, d.LastStatus, d.LastError = f.Time, f.Status, f.Error
		if now.Sub(first) >= n.opt.MaxAge {
			f.Result, deadEvents = ledger.AttemptDead, f.Events
			d.History = append(d.History, f.Attempt)
			d.Cursor, d.PendingLast, d.Attempts, d.FirstFailure, d.NextAttempt = f.LastSeq, 0, 0, time.Time{}, time.Time{}
			d.AddDead = int64(f.Events)
			d.Request = nil
			break
		}
		f.Result = ledger.AttemptFailed
		d.History = append(d.History, f.Attempt)
		delay := f.res.retryAfter
		if delay <= 0 {
			delay = n.backoff(attempts)
		}
		d.PendingLast, d.Attempts, d.FirstFailure, d.NextAttempt = f.LastSeq, attempts, first, now.Add(delay)
	}
	applied, err := n.store.CommitDelivery(ctx, w.ep.Name, st.Gen, d)
	if err == nil && !applied {
		n.log.Debug("webhook: endpoint replayed meanwhile; outcome dropped", "endpoint", w.ep.Name)
		return false
	}
	if err != nil {
		// Nothing moved: the same events are sent again (at least once).
		n.log.Warn("webhook: saving delivery state", "endpoint", w.ep.Name, "err", err)
		return false
	}
	if len(done) > 0 {
		n.delivered.Add(int64(events))
		w.delivered.Add(int64(events))
		n.requests.Add(int64(len(done)))
	}
	if f == nil {
		return true
	}
	if f.aborted {
		n.log.Info("webhook: request cut short by shutdown; it is sent first after restart", "endpoint", w.ep.Name,
			"webhook_id", f.WebhookID)
		return true
	}
	n.failed.Add(1)
	w.failed.Add(1)
	switch f.Result {
	case ledger.AttemptGone:
		n.log.Warn("webhook: endpoint answered 410 Gone; paused", "endpoint", w.ep.Name)
	case ledger.AttemptDead:
		n.dead.Add(int64(deadEvents))
		w.dead.Add(int64(deadEvents))
		n.log.Error("webhook: giving up on events after max age; dead-lettered", "endpoint", w.ep.Name,
			"first_seq", f.FirstSeq, "last_seq", f.LastSeq, "events", f.Events, "err", f.Error)
	default:
		n.log.Info("webhook: delivery failed; will retry", "endpoint", w.ep.Name, "status", f.Status, "err", f.Error)
	}
	return true
}

func (n *Notifier) pruneLoop(ctx context.Context) {
	every := min(n.opt.History/10, 10*time.Minute)
	for {
		before := n.opt.Now().Add(-n.opt.History)
		deadBefore := n.opt.Now().Add(-max(n.opt.History, 30*24*time.Hour))
		if _, err := n.store.PruneHistory(ctx, before, deadBefore); err != nil && ctx.Err() == nil {
			n.log.Warn("webhook: pruning history", "err", err)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Verify checks every endpoint, concurrently: a HEAD request must answer
// 200; failing that (logged), a signed test request must answer 2xx: one
// well-formed event in the endpoint's format (TestEvent), which a receiver
// that validates its input can parse. An endpoint that fails both is
// unverified: its events wait, it is verified again every VerifyInterval,
// each failure is logged at WARN with the reason, and the reason and the
// next attempt are stored (leadpushctl webhooks, the metrics). An endpoint
// with verify = false is never checked.
func (n *Notifier) Verify(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range n.workers {
		wg.Go(func() { w.verify(ctx) })
	}
	wg.Wait()
}

func (w *worker) verify(ctx context.Context) bool {
	w.verifyMu.Lock()
	defer w.verifyMu.Unlock()
	n := w.n
	now := n.opt.Now()
	v := ledger.Verification{At: now}
	if !w.ep.Verifies() {
		v.Verified, v.Reason = true, "verify = false"
	} else {
		status, _, _, err := w.do(ctx, http.MethodHead, "", "", nil)
		if err == nil && status == http.StatusOK {
			v.Verified, v.Reason = true, "HEAD 200"
		} else {
			head := "HEAD " + outcome(status, err)
			n.log.Info("webhook: HEAD verification failed; sending a test request", "endpoint", w.ep.Name, "status", status, "err", err)
			id, ctype, body := w.testRequest(now)
			_, res := w.send(ctx, id, ctype, body)
			v.Verified = res.err == nil
			v.Reason = head + "; test request " + outcome(res.status, res.err)
		}
	}
	if !v.Verified {
		v.Next = now.Add(n.opt.VerifyInterval)
		n.log.Warn("webhook: endpoint unverified; its events wait", "endpoint", w.ep.Name, "reason", v.Reason,
			"next_attempt", v.Next.Format(time.DateTime))
	}
	if err := n.store.SetEndpointVerification(context.WithoutCancel(ctx), w.ep.Name, v); err != nil {
		n.log.Warn("webhook: saving verification", "endpoint", w.ep.Name, "err", err)
	}
	w.verified.Store(v.Verified)
	if v.Verified {
		w.nextVerify = time.Time{}
		w.poke()
	} else {
		w.nextVerify = v.Next
	}
	return v.Verified
}

// outcome says how a request ended, for a verification's reason.
func outcome(status int, err error) string {
	switch {
	case status != 0:
		return "answered " + strconv.Itoa(status)
	case err != nil:
		return "failed: " + err.Error()
	}
	return "answered 2xx"
}

// testRequest is the verification request of the endpoint: TestEvent in
// its format, with its webhook-id.
func (w *worker) testRequest(now time.Time) (id, ctype string, body []byte) {
	m, e := TestEvent(now)
	if w.ep.Format == FormatJSON {
		body, _ = json.Marshal(PayloadOf(e, m))
		return e.ID, ctypeJSON, body
	}
	be, _ := BatchEventOf(e, m)
	return "test_" + ledger.NewID(), ctypeBatch, batchBody(w.ep.Param, []BatchEvent{be})
}

// TestEvent is the event a verification sends when HEAD is not answered
// 200: a "delivered" event (seed 001 type 2, seed 002 "sent") of the sample
// message "test_message", whose event id starts with "test_" and whose
// source is "test". Receivers should answer it 2xx and may ignore it.
func TestEvent(now time.Time) (*ledger.Message, *ledger.Event) {
	m, evs := SampleEvents(now)
	for _, e := range evs {
		if e.Type == ledger.Delivered {
			e.ID = "test_" + ledger.NewID()
			e.Detail.Source = "test"
			return m, e
		}
	}
	panic("webhook: no delivered sample")
}

// Status returns the state of every configured endpoint, in configuration
// order.
func (n *Notifier) Status(ctx context.Context) ([]EndpointStatus, error) {
	out := make([]EndpointStatus, 0, len(n.workers))
	for _, w := range n.workers {
		st, err := n.store.Endpoint(ctx, w.ep.Name)
		if err != nil {
			return nil, err
		}
		es := EndpointStatus{
			Name: w.ep.Name, URL: w.ep.URL, Format: w.ep.Format,
			Verified: st.Verified, VerifyReason: st.VerifyReason, NextVerify: st.NextVerify, PendingID: st.PendingID,
			Paused: st.Paused, Cursor: st.Cursor,
			Attempts: st.Attempts, DeadLetters: st.Dead, LastStatus: st.LastStatus, LastError: st.LastError,
			LastAttempt: st.LastAttempt, NextAttempt: st.NextAttempt,
		}
		es.Backlog, err = w.count(ctx, st.Cursor, -1)
		if err != nil {
			return nil, err
		}
		out = append(out, es)
	}
	return out, nil
}

// count returns the number of events in (after, upto] the endpoint takes;
// upto < 0 means no upper bound.
func (w *worker) count(ctx context.Context, after, upto int64) (int64, error) {
	var types []ledger.EventType
	for _, t := range ledger.EventTypes {
		if w.takes(t) {
			types = append(types, t)
		}
	}
	c, err := w.n.store.CountEvents(ctx, after, upto, types)
	if err != nil {
		return 0, fmt.Errorf("webhook: backlog of %s: %w", w.ep.Name, err)
	}
	return c, nil
}

func (n *Notifier) worker(name string) (*worker, error) {
	w, ok := n.byName[name]
	if !ok {
		return nil, fmt.Errorf("webhook: %w: %q", ErrUnknownEndpoint, name)
	}
	return w, nil
}

// Pause stops deliveries to an endpoint (a request in flight finishes);
// its events wait. The state is stored, so it survives restarts.
func (n *Notifier) Pause(ctx context.Context, name string) error {
	if _, err := n.worker(name); err != nil {
		return err
	}
	if err := n.store.SetEndpointPaused(ctx, name, true); err != nil {
		return fmt.Errorf("webhook: pause %s: %w", name, err)
	}
	return nil
}

// Resume undoes Pause (or a 410's pause) and sends at once, cancelling a
// pending retry's wait.
func (n *Notifier) Resume(ctx context.Context, name string) error {
	w, err := n.worker(name)
	if err != nil {
		return err
	}
	if err := n.store.SetEndpointPaused(ctx, name, false); err != nil {
		return fmt.Errorf("webhook: resume %s: %w", name, err)
	}
	w.poke()
	return nil
}

// Replay sends again the endpoint's events recorded since the given time:
// it moves the endpoint's cursor back to before the first event (in seq
// order) whose time is at or after since, and drops any pending retry. It
// returns how many events the endpoint takes are queued again; a cursor
// already before that event does not move (0). Receivers see the replayed
// json events under their original webhook-id; batches are re-cut.
func (n *Notifier) Replay(ctx context.Context, name string, since time.Time) (int, error) {
	w, err := n.worker(name)
	if err != nil {
		return 0, err
	}
	evs, err := n.store.Events(ctx, ledger.Filter{Since: since, Limit: 1})
	if err != nil {
		return 0, fmt.Errorf("webhook: replay %s: %w", name, err)
	}
	if len(evs) == 0 {
		return 0, nil
	}
	to := evs[0].Seq - 1
	st, err := n.store.Endpoint(ctx, name)
	if err != nil {
		return 0, err
	}
	if to >= st.Cursor {
		return 0, nil
	}
	c, err := w.count(ctx, to, st.Cursor)
	if err != nil {
		return 0, err
	}
	if err := n.store.ReplayEndpoint(ctx, name, to); err != nil {
		return 0, fmt.Errorf("webhook: replay %s: %w", name, err)
	}
	n.log.Info("webhook: replaying", "endpoint", name, "since", since, "events", c)
	w.poke()
	return int(c), nil
}

// Test sends the endpoint one sample event of every type it could take,
// ignoring its event filter and its state (nothing is recorded): one batch
// for "batch", one request per event for "json". Event and message ids
// start with "test_". It returns the failures.
func (n *Notifier) Test(ctx context.Context, name string) error {
	w, err := n.worker(name)
	if err != nil {
		return err
	}
	m, evs := SampleEvents(n.opt.Now())
	if w.ep.Format == FormatBatch {
		var bes []BatchEvent
		for _, e := range evs {
			if be, ok := BatchEventOf(e, m); ok {
				bes = append(bes, be)
			}
		}
		_, res := w.send(ctx, "test_"+ledger.NewID(), "application/x-www-form-urlencoded", batchBody(w.ep.Param, bes))
		if res.err != nil {
			return fmt.Errorf("webhook: test %s: %w", name, res.err)
		}
		return nil
	}
	var errs []error
	for _, e := range evs {
		body, _ := json.Marshal(PayloadOf(e, m))
		if _, res := w.send(ctx, e.ID, "application/json", body); res.err != nil {
			errs = append(errs, fmt.Errorf("webhook: test %s, %s: %w", name, e.Type, res.err))
		}
	}
	return errors.Join(errs...)
}

// SampleEvents returns a sample message and one event of each ledger type
// about it, as Test sends them.
func SampleEvents(now time.Time) (*ledger.Message, []*ledger.Event) {
	now = now.Truncate(time.Second)
	m := &ledger.Message{
		ID: "test_message", QueueID: "4Xy1Z2abcD", EnvelopeFrom: "bounces@example.com",
		Recipients: []string{"john@example.net"}, From: `"Support Team" <support@example.com>`,
		To: `"John Doe" <john@example.net>`, Subject: "Order Confirmation", MessageID: "<test@example.com>",
		Tag: "order-confirmation", Stream: "transactional", Tracking: ledger.TrackAll,
		Headers: []ledger.Header{{Name: "Contact-ID", Value: "12345"}, {Name: "Campaign-ID", Value: "summer-sale-2024"}},
		Opens:   1, Clicks: 1, CreatedAt: now.Add(-time.Minute),
	}
	var evs []*ledger.Event
	for i, t := range ledger.EventTypes {
		e := &ledger.Event{Seq: int64(i + 1), ID: "test_" + string(t), Type: t, MessageID: m.ID, Recipient: "john@example.net", Time: now,
			MsgSeq: int64(i + 1), Opens: 1, Clicks: 1}
		switch t {
		case ledger.Reject:
			e.Detail = ledger.Detail{Source: "milter", Reason: "suppressed"}
		case ledger.Delivered:
			e.Detail = ledger.Detail{Source: "maillog", Status: "2.0.0", Relay: "mx.example.net[192.0.2.25]:25", Report: "250 2.0.0 Ok: queued"}
		case ledger.SoftBounce:
			e.Detail = ledger.Detail{Source: "maillog", Status: "4.2.2", Relay: "mx.example.net[192.0.2.25]:25", Report: "452 4.2.2 Mailbox full", Reason: "deferred", BounceReason: "mailboxfull"}
		case ledger.HardBounce:
			e.Detail = ledger.Detail{Source: "dsn", Status: "5.1.1", Relay: "mx.example.net[192.0.2.25]:25", Report: "550 5.1.1 User unknown", BounceReason: "userunknown"}
		case ledger.Open:
			e.Detail = ledger.Detail{Source: "tracker", IP: "198.51.100.7", UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36", UAFamily: "Chrome", UAMajor: "91"}
		case ledger.Click:
			e.Detail = ledger.Detail{Source: "tracker", IP: "198.51.100.7", UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36", UAFamily: "Chrome", UAMajor: "91", URL: "https://example.com/order/12345"}
		case ledger.Unsubscribe:
			e.Detail = ledger.Detail{Source: "tracker", Reason: "one-click"}
		case ledger.Spam:
			e.Detail = ledger.Detail{Source: "arf", Report: "abuse report from feedback@example.net"}
		}
		evs = append(evs, e)
	}
	return m, evs
}
