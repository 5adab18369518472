package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadpush/leadpush/ledger"
)

// post is one POST as it arrived, answered or not.
type post struct {
	id     string
	body   []byte
	status int
}

// recorder is a receiver that keeps every POST; answer decides the status
// of the n'th (0-based) and may act before it is given.
type recorder struct {
	mu     sync.Mutex
	posts  []post
	answer func(n int, r *http.Request, body []byte) int
	srv    *httptest.Server
}

func newRecorder(t *testing.T, answer func(n int, r *http.Request, body []byte) int) *recorder {
	rc := &recorder{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		rc.mu.Lock()
		n := len(rc.posts)
		rc.posts = append(rc.posts, post{id: r.Header.Get(HeaderID), body: body})
		rc.mu.Unlock()
		st := 200
		if rc.answer != nil {
			st = rc.answer(n, r, body)
		}
		rc.mu.Lock()
		rc.posts[n].status = st
		rc.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *recorder) all() []post {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]post(nil), rc.posts...)
}

func (rc *recorder) wait(t *testing.T, d time.Duration, cond func([]post) bool) []post {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ps := rc.all()
		if cond(ps) {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s; %d POSTs", d, len(ps))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func answered(ps []post) (n int) {
	for _, p := range ps {
		if p.status/100 == 2 {
			n++
		}
	}
	return n
}

// A request that failed is retried byte for byte under its webhook-id,
// although opens were recorded, the message itself arrived (a spool
// replayed late) and the endpoint's configuration changed in between; the
// counts are those as of each event.
func TestRetryIsByteIdentical(t *testing.T) {
	for _, format := range []string{FormatBatch, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			s := openStore(t, "")
			m := &ledger.Message{ID: "m1", From: "App <app@example.com>", Recipients: []string{"r@example.net"}, Subject: "Hello",
				Headers: []ledger.Header{{Name: "Contact-ID", Value: "12345"}}, CreatedAt: time.Now()}
			// The events come first: their message is recorded only later.
			open1 := &ledger.Event{ID: "open1", Type: ledger.Open, MessageID: m.ID, Recipient: "r@example.net", Time: time.Now()}
			if err := s.Record(context.Background(), nil, []*ledger.Event{open1}); err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			rc := newRecorder(t, func(n int, r *http.Request, body []byte) int {
				if strings.HasPrefix(r.Header.Get(HeaderID), "test_") {
					return 200
				}
				st := 200
				once.Do(func() {
					// Between the first attempt and its retry: the message
					// arrives and is opened and clicked twice more.
					more := []*ledger.Event{
						{ID: "open2", Type: ledger.Open, MessageID: m.ID, Recipient: "r@example.net", Time: time.Now()},
						{ID: "click1", Type: ledger.Click, MessageID: m.ID, Recipient: "r@example.net", Time: time.Now()},
						{ID: "open3", Type: ledger.Open, MessageID: m.ID, Recipient: "r@example.net", Time: time.Now()},
					}
					if err := s.Record(context.Background(), []*ledger.Message{m}, more); err != nil {
						t.Error(err)
					}
					st = http.StatusServiceUnavailable
				})
				return st
			})
			opt := testOptions(t)
			opt.Backoff = []time.Duration{time.Hour} // the retry is the restarted notifier's
			ep := Endpoint{Name: "app", URL: rc.srv.URL, Secret: testSecret, Format: format}
			n, err := New(s, []Endpoint{ep}, opt)
			if err != nil {
				t.Fatal(err)
			}
			stop := start(t, n)
			rc.wait(t, 10*time.Second, func(ps []post) bool {
				for _, p := range ps {
					if p.status == http.StatusServiceUnavailable {
						return true
					}
				}
				return false
			})
			waitStatus(t, n, func(st EndpointStatus) bool { return st.PendingID != "" })
			stop()
			// Restarted with another configuration, the retry goes first
			// and as it was; the new configuration applies after it.
			ep.Events = []string{"open"}
			if format == FormatBatch {
				ep.Param, ep.BatchSize = "leadersend_events", 1
			}
			opt.Backoff = []time.Duration{10 * time.Millisecond}
			n, err = New(s, []Endpoint{ep}, opt)
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Resume(context.Background(), "app"); err != nil { // no waiting for the backoff
				t.Fatal(err)
			}
			start(t, n)
			ps := rc.wait(t, 10*time.Second, func(ps []post) bool { return answered(ps) >= 3 })
			var first, retry *post
			var after []post
			for i := range ps {
				p := &ps[i]
				switch {
				case strings.HasPrefix(p.id, "test_"):
				case first == nil:
					first = p
				case retry == nil:
					retry = p
				default:
					after = append(after, *p)
				}
			}
			if first.status != http.StatusServiceUnavailable || retry.status != 200 {
				t.Fatalf("statuses %d then %d", first.status, retry.status)
			}
			if retry.id != first.id || !bytes.Equal(retry.body, first.body) {
				t.Fatalf("the retry differs from the first attempt:\n%s %s\n%s %s", first.id, first.body, retry.id, retry.body)
			}
			// The body says what was true at the event: one open, no click,
			// the message not yet known.
			var opens, clicks int
			var seq int64
			if format == FormatBatch {
				v, _ := url.ParseQuery(string(first.body))
				var bes []BatchEvent
				if err := json.Unmarshal([]byte(v.Get(DefaultParam)), &bes); err != nil || len(bes) != 1 {
					t.Fatalf("first batch %s: %v", first.body, err)
				}
				opens, clicks, seq = bes[0].Msg.Opens, bes[0].Msg.Clicks, bes[0].Msg.Seq
			} else {
				if first.id != "open1" {
					t.Errorf("json webhook-id %q, want the event id", first.id)
				}
				var p Payload
				if err := json.Unmarshal(first.body, &p); err != nil {
					t.Fatal(err)
				}
				seq = p.Event.Sequence
				opens, clicks = -1, -1 // the json format carries no counters
				if p.EmailMessage.Subject != "" {
					t.Errorf("subject %q in the first attempt: the message was not recorded yet", p.EmailMessage.Subject)
				}
			}
			if format == FormatBatch && (opens != 1 || clicks != 0) {
				t.Errorf("opens/clicks %d/%d, want 1/0 as of the event", opens, clicks)
			}
			if seq != 1 {
				t.Errorf("sequence %d, want 1", seq)
			}
			// After the retry, the new configuration: only opens, and for
			// batch one event a request under the new parameter.
			ps = rc.wait(t, 10*time.Second, func(ps []post) bool { return len(idsAfter(t, format, ps, retry.id)) >= 2 })
			if got := idsAfter(t, format, ps, retry.id); strings.Join(got, " ") != "open2 open3" {
				t.Errorf("after the retry: %v, want open2 open3 (opens only)", got)
			}
		})
	}
}

// idsAfter returns the event ids of the POSTs answered 2xx after the one
// with webhook-id from, checking that batches hold one event under
// leadersend_events.
func idsAfter(t *testing.T, format string, ps []post, from string) []string {
	t.Helper()
	var out []string
	seen := false
	for _, p := range ps {
		if !seen || p.id == from || p.status != 200 || strings.HasPrefix(p.id, "test_") {
			seen = seen || p.id == from
			continue
		}
		if format == FormatJSON {
			var pl Payload
			if err := json.Unmarshal(p.body, &pl); err != nil {
				t.Fatal(err)
			}
			out = append(out, pl.Event.EventID)
			continue
		}
		v, _ := url.ParseQuery(string(p.body))
		var bes []BatchEvent
		if err := json.Unmarshal([]byte(v.Get("leadersend_events")), &bes); err != nil || len(bes) != 1 {
			t.Fatalf("batch after the change %s: %v", p.body, err)
		}
		out = append(out, bes[0].EventID)
	}
	return out
}

// validating answers like a receiver written from the seeds that checks
// its input: HEAD is 405 (recorder), and a POST that is not at least one
// well-formed event is 400, as are test events when rejectTest is set.
func validating(format string, rejectTest bool) func(int, *http.Request, []byte) int {
	return func(_ int, r *http.Request, body []byte) int {
		var ids []string
		if format == FormatJSON {
			var p Payload
			if json.Unmarshal(body, &p) != nil || p.Event.EventID == "" || p.EmailMessage.MessageID == "" || p.Event.EventMetadata.Timestamp == 0 {
				return 400
			}
			ids = append(ids, p.Event.EventID)
		} else {
			v, err := url.ParseQuery(string(body))
			var bes []BatchEvent
			if err != nil || json.Unmarshal([]byte(v.Get(DefaultParam)), &bes) != nil || len(bes) == 0 {
				return 400
			}
			for _, be := range bes {
				if be.Event == "" || be.Msg.ID == "" || be.Timestamp == 0 {
					return 400
				}
				ids = append(ids, be.EventID)
			}
		}
		for _, id := range ids {
			if rejectTest && strings.HasPrefix(id, "test_") {
				return 400
			}
		}
		return 200
	}
}

// logBuffer keeps log lines for inspection.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func verifiedMetric(t *testing.T, n *Notifier) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "leadpush_webhook_endpoint_verified" {
			m := mf.GetMetric()[0]
			if m.GetLabel()[0].GetValue() != "app" {
				t.Errorf("label %v", m.GetLabel())
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatal("no leadpush_webhook_endpoint_verified")
	return 0
}

// An endpoint that answers HEAD 405 and rejects a body that is not an
// event gets its events after the test request verifies it; one that also
// rejects the test event gets them with verify = false, and without it is
// unverified: in the metric, at WARN on every retry, and in Status with
// the reason and the next attempt.
func TestVerifyValidatingReceiver(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name, format string
		rejectTest   bool
		verify       *bool
		delivered    bool
	}{
		{"json test request", FormatJSON, false, nil, true},
		{"batch test request", FormatBatch, false, nil, true},
		{"json verify false", FormatJSON, true, &no, true},
		{"batch verify false", FormatBatch, true, &no, true},
		{"json unverified", FormatJSON, true, nil, false},
		{"batch unverified", FormatBatch, true, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, "")
			rc := newRecorder(t, validating(tc.format, tc.rejectTest))
			var logs logBuffer
			opt := testOptions(t)
			opt.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret, Format: tc.format, Verify: tc.verify}}, opt)
			if err != nil {
				t.Fatal(err)
			}
			recordN(t, s, "e", 3)
			start(t, n)
			if tc.delivered {
				st := waitStatus(t, n, func(st EndpointStatus) bool { return st.Backlog == 0 })
				if !st.Verified || verifiedMetric(t, n) != 1 {
					t.Errorf("status %+v, metric %v", st, verifiedMetric(t, n))
				}
				if tc.verify != nil && len(rc.all()) != answered(rc.all()) {
					t.Errorf("verify = false sent a test request: %d POSTs, %d answered", len(rc.all()), answered(rc.all()))
				}
				return
			}
			// Unverified: at least two failed verifications, each a WARN.
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(logs.String(), "level=WARN msg=\"webhook: endpoint unverified; its events wait\"") < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no WARN at every retry:\n%s", logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), `reason="HEAD answered 405; test request answered 400"`) {
				t.Errorf("the WARN lacks the reason:\n%s", logs.String())
			}
			sts, err := n.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			st := sts[0]
			if st.Verified || st.Backlog != 3 || st.VerifyReason != "HEAD answered 405; test request answered 400" || st.NextVerify.IsZero() {
				t.Errorf("status %+v", st)
			}
			if v := verifiedMetric(t, n); v != 0 {
				t.Errorf("verified metric %v, want 0", v)
			}
			if answered(rc.all()) != 0 {
				t.Errorf("an unverified endpoint was sent events")
			}
		})
	}
}

// On shutdown a json endpoint stops between requests, within 5 s, and
// commits what was answered: a restart resends at most the one request in
// flight. With a receiver that hangs, the request in flight is aborted
// after StopGrace and sent first, unchanged, after the restart.
func TestShutdownBetweenRequests(t *testing.T) {
	for _, hang := range []bool{false, true} {
		t.Run(map[bool]string{false: "slow receiver", true: "hanging receiver"}[hang], func(t *testing.T) {
			s := openStore(t, "")
			recordN(t, s, "e", 1000)
			var slow atomic.Bool
			slow.Store(true)
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			rc := newRecorder(t, func(n int, r *http.Request, body []byte) int {
				if !slow.Load() || strings.HasPrefix(r.Header.Get(HeaderID), "test_") {
					return 200
				}
				if hang && n == 101 {
					select { // hangs until the sender gives up
					case <-r.Context().Done():
					case <-release:
					}
					return 503
				}
				time.Sleep(20 * time.Millisecond)
				return 200
			})
			opt := testOptions(t)
			opt.StopGrace = 500 * time.Millisecond
			ep := Endpoint{Name: "app", URL: rc.srv.URL, Secret: testSecret, Format: FormatJSON}
			n, err := New(s, []Endpoint{ep}, opt)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { n.Run(ctx); close(done) }()
			rc.wait(t, 30*time.Second, func(ps []post) bool { return len(ps) >= 102 })
			t0 := time.Now()
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of cancel")
			}
			stopped := time.Since(t0)
			before := rc.all()
			if len(before) > 110 {
				t.Errorf("%d POSTs: it kept posting after cancel", len(before))
			}
			// Restart against a fast receiver: everything arrives, and at
			// most one request answered before is sent again.
			slow.Store(false)
			n, err = New(s, []Endpoint{ep}, opt)
			if err != nil {
				t.Fatal(err)
			}
			start(t, n)
			ps := rc.wait(t, 30*time.Second, func(ps []post) bool {
				got := map[string]bool{}
				for _, p := range ps {
					if p.status == 200 && !strings.HasPrefix(p.id, "test_") {
						got[p.id] = true
					}
				}
				return len(got) == 1000
			})
			ok := map[string]int{}
			for _, p := range ps {
				if p.status == 200 && !strings.HasPrefix(p.id, "test_") {
					ok[p.id]++
				}
			}
			dups := 0
			for _, c := range ok {
				dups += c - 1
			}
			t.Logf("stopped in %s after %d POSTs; %d resent after restart", stopped, len(before), dups)
			if dups > 1 {
				t.Errorf("%d requests answered before the shutdown were sent again, want at most 1", dups)
			}
			if hang {
				// The aborted request goes first after the restart, as it was.
				var aborted, first *post
				for i := range ps {
					if i < len(before) && ps[i].status == 503 {
						aborted = &ps[i]
					}
					if i >= len(before) && first == nil && !strings.HasPrefix(ps[i].id, "test_") {
						first = &ps[i]
					}
				}
				if aborted == nil || first == nil || first.id != aborted.id || !bytes.Equal(first.body, aborted.body) {
					t.Errorf("after the restart the first request was %v, want the aborted %v", first, aborted)
				}
			}
		})
	}
}

// Custom headers reach the receiver as sent: RFC 2047 words decoded
// (leading white space inside them kept), other bytes as they are, and a
// repeated name once per occurrence in header_list (joined in headers).
func TestHeadersAsSent(t *testing.T) {
	m := &ledger.Message{ID: "m", Headers: []ledger.Header{
		{Name: "Campaign-ID", Value: "=?utf-8?q?=C3=89t=C3=A9_2024?="},
		{Name: "Contact-ID", Value: "=?utf-8?q?__12345?="},
		{Name: "Tag-ID", Value: "a"},
		{Name: "Tag-ID", Value: "b,  c"},
		{Name: "Raw", Value: "=?bogus"},
		{Name: "Long", Value: "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= =?utf-8?q?_K=C3=B6ln?="},
	}}
	e := &ledger.Event{ID: "e", Type: ledger.Open, MessageID: "m"}
	want := []HeaderField{{"Campaign-ID", "Été 2024"}, {"Contact-ID", "  12345"}, {"Tag-ID", "a"}, {"Tag-ID", "b,  c"},
		{"Raw", "=?bogus"}, {"Long", "Grüße aus Köln"}}
	be, _ := BatchEventOf(e, m)
	p := PayloadOf(e, m)
	for _, got := range [][]HeaderField{be.Msg.HeaderList, p.EmailMessage.HeaderList} {
		if len(got) != len(want) {
			t.Fatalf("header_list %v", got)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("header_list[%d] = %q, want %q", i, got[i], want[i])
			}
		}
	}
	// Without a repeated name, headers says everything: no header_list.
	single := &ledger.Message{ID: "m", Headers: m.Headers[:3]}
	if be, _ := BatchEventOf(e, single); be.Msg.HeaderList != nil || PayloadOf(e, single).EmailMessage.HeaderList != nil {
		t.Errorf("header_list without a repeated name: %v", be.Msg.HeaderList)
	}
	for _, hm := range []map[string]string{be.Msg.Headers, p.EmailMessage.Headers} {
		if hm["Tag-ID"] != "a, b,  c" || hm["Contact-ID"] != "  12345" || hm["Campaign-ID"] != "Été 2024" {
			t.Errorf("headers %q", hm)
		}
	}
}

// A batch cut again gets a new webhook-id when its body could differ: the
// message recorded meanwhile, another parameter, other events.
func TestBatchIDNamesOneBody(t *testing.T) {
	e1 := &ledger.Event{ID: "e1", MessageID: "m", MsgSeq: 1}
	e2 := &ledger.Event{ID: "e2", MessageID: "m", MsgSeq: 2}
	known := map[string]*ledger.Message{"m": {ID: "m"}}
	id := batchID("app", 0, 2, DefaultParam, []*ledger.Event{e1, e2}, nil)
	if again := batchID("app", 0, 2, DefaultParam, []*ledger.Event{e1, e2}, map[string]*ledger.Message{}); again != id {
		t.Errorf("the same batch got %s and %s", id, again)
	}
	legacy := &ledger.Event{ID: "e1", MessageID: "m"}
	for name, other := range map[string]string{
		"message known":   batchID("app", 0, 2, DefaultParam, []*ledger.Event{e1, e2}, known),
		"param":           batchID("app", 0, 2, "leadersend_events", []*ledger.Event{e1, e2}, nil),
		"events":          batchID("app", 0, 2, DefaultParam, []*ledger.Event{e2}, nil),
		"endpoint":        batchID("other", 0, 2, DefaultParam, []*ledger.Event{e1, e2}, nil),
		"legacy counters": batchID("app", 0, 2, DefaultParam, []*ledger.Event{legacy}, map[string]*ledger.Message{"m": {ID: "m", Opens: 3}}),
	} {
		if other == id {
			t.Errorf("%s: same id %s", name, id)
		}
	}
	if a, b := batchID("app", 0, 2, DefaultParam, []*ledger.Event{legacy}, map[string]*ledger.Message{"m": {ID: "m", Opens: 3}}),
		batchID("app", 0, 2, DefaultParam, []*ledger.Event{legacy}, map[string]*ledger.Message{"m": {ID: "m", Opens: 4}}); a == b {
		t.Error("an event without stored counters: the message's counters do not change the id")
	}
}
