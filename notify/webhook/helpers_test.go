package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func openStore(t testing.TB, path string) *ledger.SQLite {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "ledger.db")
	}
	s, err := ledger.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type hit struct {
	Method string
	Header http.Header
	Body   []byte
	At     time.Time
}

// receiver is a real HTTP server on 127.0.0.1 that keeps what arrives.
// respond decides the status of the n'th POST (0-based); nil answers 200.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	hits    []hit
	posts   int
	changed chan struct{}
	respond func(n int, w http.ResponseWriter, r *http.Request) int
	head    int // status of HEAD requests; 0 = 200
}

func newReceiver(t testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request) int) *receiver {
	rc := &receiver{changed: make(chan struct{}, 1), respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil { // the sender died mid-request
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	if r.Method == http.MethodHead {
		st := rc.head
		rc.mu.Unlock()
		if st == 0 {
			st = 200
		}
		w.WriteHeader(st)
		return
	}
	n := rc.posts
	rc.posts++
	respond := rc.respond
	rc.mu.Unlock()
	status := 200
	if respond != nil {
		status = respond(n, w, r)
	}
	if status >= 200 && status < 300 {
		rc.mu.Lock()
		rc.hits = append(rc.hits, hit{Method: r.Method, Header: r.Header.Clone(), Body: body, At: time.Now()})
		rc.mu.Unlock()
		select {
		case rc.changed <- struct{}{}:
		default:
		}
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "status %d", status)
}

// accepted returns the POSTs answered with a 2xx.
func (rc *receiver) accepted() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// waitFor waits until cond holds for the accepted POSTs, or fails.
func (rc *receiver) waitFor(t testing.TB, d time.Duration, cond func([]hit) bool) []hit {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond) // also catches conditions on other state
	defer tick.Stop()
	for {
		if h := rc.accepted(); cond(h) {
			return h
		}
		select {
		case <-rc.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("condition not met within %s; %d POSTs accepted", d, len(rc.accepted()))
		}
	}
}

func batchOf(t testing.TB, h hit, param string) []BatchEvent {
	t.Helper()
	if ct := h.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Fatalf("content type %q", ct)
	}
	v, err := url.ParseQuery(string(h.Body))
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || !v.Has(param) {
		t.Fatalf("form has %v, want the one parameter %s", v, param)
	}
	var bes []BatchEvent
	if err := json.Unmarshal([]byte(v.Get(param)), &bes); err != nil {
		t.Fatal(err)
	}
	return bes
}

func allBatch(t testing.TB, hs []hit, param string) []BatchEvent {
	var out []BatchEvent
	for _, h := range hs {
		out = append(out, batchOf(t, h, param)...)
	}
	return out
}

// checkHMAC verifies the signature independently of Sign.
func checkHMAC(t testing.TB, secret string, h hit) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	if err != nil {
		t.Fatal(err)
	}
	id, ts := h.Header.Get("webhook-id"), h.Header.Get("webhook-timestamp")
	if id == "" || ts == "" {
		t.Fatalf("missing id or timestamp: %v", h.Header)
	}
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Fatalf("webhook-timestamp %q is not a current unix time", ts)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(h.Body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if got := h.Header.Get("webhook-signature"); got != want {
		t.Fatalf("signature %q, want %q", got, want)
	}
}

func testOptions(t testing.TB) Options {
	return Options{
		Logger:         slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Backoff:        []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond},
		Poll:           20 * time.Millisecond,
		VerifyInterval: 50 * time.Millisecond,
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b[:len(b)-1]))
	return len(b), nil
}

// start runs n until the test ends, and returns a stop function that waits
// for Run to return.
func start(t testing.TB, n *Notifier) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// recordSample records SampleEvents and returns them.
func recordSample(t testing.TB, s *ledger.SQLite) (*ledger.Message, []*ledger.Event) {
	t.Helper()
	m, evs := SampleEvents(time.Now())
	if err := s.Record(context.Background(), []*ledger.Message{m}, evs); err != nil {
		t.Fatal(err)
	}
	return m, evs
}

// recordN records one message and n delivered/open events about it, ids
// prefix-0 ... in seq order.
func recordN(t testing.TB, s *ledger.SQLite, prefix string, n int) []string {
	t.Helper()
	m := &ledger.Message{ID: prefix + "msg", From: "a@example.com", Recipients: []string{"b@example.net"}, Tag: "t",
		Headers: []ledger.Header{{Name: "X-Id", Value: prefix}}, CreatedAt: time.Now()}
	var ids []string
	for chunk := 0; chunk < n; chunk += 1000 {
		var evs []*ledger.Event
		for i := chunk; i < min(n, chunk+1000); i++ {
			typ := ledger.Delivered
			if i%2 == 1 {
				typ = ledger.Open
			}
			id := fmt.Sprintf("%s%d", prefix, i)
			ids = append(ids, id)
			evs = append(evs, &ledger.Event{ID: id, Type: typ, MessageID: m.ID, Recipient: "b@example.net", Time: time.Now()})
		}
		var msgs []*ledger.Message
		if chunk == 0 {
			msgs = []*ledger.Message{m}
		}
		if err := s.Record(context.Background(), msgs, evs); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}
