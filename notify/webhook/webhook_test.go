package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/golden"

	"github.com/BurntSushi/toml"
	"github.com/leadpush/leadpush/ledger"
)

// The golden files are the payload contract, readable next to the seeds.
func TestGolden(t *testing.T) {
	m, evs := SampleEvents(time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC))
	var batch []BatchEvent
	var js []Payload
	for _, e := range evs {
		if be, ok := BatchEventOf(e, m); ok {
			batch = append(batch, be)
		}
		js = append(js, PayloadOf(e, m))
	}
	for name, v := range map[string]any{"batch.golden.json": batch, "json.golden.json": js} {
		got, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		golden.Check(t, filepath.Join("testdata", name), got)
	}
}

func TestDeliverBatch(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	ep := Endpoint{URL: rc.srv.URL + "/hook", Secret: testSecret, Param: "leadersend_events"}
	n, err := New(s, []Endpoint{ep}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	m, evs := recordSample(t, s)
	start(t, n)
	n.Wake()
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) >= 1 })
	if len(hs) != 1 {
		t.Fatalf("%d POSTs, want 1 batch", len(hs))
	}
	checkHMAC(t, testSecret, hs[0])
	if ua := hs[0].Header.Get("User-Agent"); ua != "leadpush-webhook/1" {
		t.Errorf("User-Agent %q", ua)
	}
	bes := batchOf(t, hs[0], "leadersend_events")
	var names []string
	for _, be := range bes {
		names = append(names, be.Event)
	}
	want := []string{"reject", "sent", "soft_bounce", "hard_bounce", "open", "click", "unsubscribe", "spam"}
	if !slices.Equal(names, want) {
		t.Fatalf("events %v, want %v (processed is not a seed 002 event)", names, want)
	}
	ts := evs[0].Time.Unix()
	for i, be := range bes {
		e := evs[i+1]
		if be.Timestamp != ts || be.EventID != e.ID {
			t.Errorf("%s: timestamp %d id %q, want %d %q", be.Event, be.Timestamp, be.EventID, ts, e.ID)
		}
		msg := be.Msg
		if msg.ID != m.ID || msg.Timestamp != m.CreatedAt.Unix() || msg.Email != "john@example.net" ||
			msg.Sender != "bounces@example.com" || msg.Subject != "Order Confirmation" {
			t.Errorf("%s: msg %+v", be.Event, msg)
		}
		// The counters as of each event: the open is the sample's fifth
		// event after processed, the click its sixth.
		wantOpens, wantClicks := min(max(i-3, 0), 1), min(max(i-4, 0), 1)
		if msg.Opens != wantOpens || msg.Clicks != wantClicks {
			t.Errorf("%s: opens %d clicks %d, want %d %d (as of the event)", be.Event, msg.Opens, msg.Clicks, wantOpens, wantClicks)
		}
		if msg.Seq != int64(i+2) { // processed is the message's first event
			t.Errorf("%s: msg.seq %d, want %d", be.Event, msg.Seq, i+2)
		}
		if !slices.Equal(msg.Tags, []string{"order-confirmation"}) {
			t.Errorf("%s: tags %v", be.Event, msg.Tags)
		}
		if msg.Headers["Contact-ID"] != "12345" || msg.Headers["Campaign-ID"] != "summer-sale-2024" || len(msg.Headers) != 2 {
			t.Errorf("%s: headers %v", be.Event, msg.Headers)
		}
		isOC := be.Event == "open" || be.Event == "click"
		if (be.IP != "") != isOC || (be.UserAgent != "") != isOC {
			t.Errorf("%s: ip %q user_agent %q", be.Event, be.IP, be.UserAgent)
		}
		if (be.URL != "") != (be.Event == "click") || (be.ClickDate == ts) != (be.Event == "click") {
			t.Errorf("%s: url %q click_date %d", be.Event, be.URL, be.ClickDate)
		}
		if (be.OpenDate == ts) != (be.Event == "open") || (be.UnsubscribeDate == ts) != (be.Event == "unsubscribe") {
			t.Errorf("%s: open_date %d unsubscribe_date %d", be.Event, be.OpenDate, be.UnsubscribeDate)
		}
		isBounce := be.Event == "soft_bounce" || be.Event == "hard_bounce"
		if (be.BounceDate == ts) != (isBounce || be.Event == "spam") || (msg.DeliveryReport != "") != isBounce {
			t.Errorf("%s: bounce_date %d delivery_report %q", be.Event, be.BounceDate, msg.DeliveryReport)
		}
	}
	// The raw JSON too: keys a seed 002 receiver reads, and no null tags.
	raw := strings.SplitN(string(hs[0].Body), "=", 2)[1]
	for _, k := range []string{"%22bounce_date%22", "%22delivery_report%22", "%22tags%22%3A%5B%22order-confirmation%22%5D"} {
		if !strings.Contains(raw, k) {
			t.Errorf("body lacks %s", k)
		}
	}
	waitStatus(t, n, func(st EndpointStatus) bool { return st.Backlog == 0 && st.Cursor == evs[len(evs)-1].Seq })
	if st := n.Stats(); st.Delivered != 8 || st.Requests != 1 {
		t.Errorf("stats %+v", st)
	}
}

func waitStatus(t *testing.T, n *Notifier, cond func(EndpointStatus) bool) EndpointStatus {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for range 1000 {
		sts, err := n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cond(sts[0]) {
			return sts[0]
		}
		<-tick.C
	}
	sts, _ := n.Status(context.Background())
	t.Fatalf("status never met the condition: %+v", sts[0])
	return EndpointStatus{}
}

func TestDeliverJSON(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret, Format: FormatJSON}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	m, evs := recordSample(t, s)
	start(t, n)
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) >= 9 })
	if len(hs) != 9 {
		t.Fatalf("%d POSTs, want 9", len(hs))
	}
	for i, h := range hs {
		checkHMAC(t, testSecret, h)
		if ct := h.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("content type %q", ct)
		}
		var p Payload
		dec := json.NewDecoder(bytes.NewReader(h.Body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		e := evs[i]
		if p.Event.Type != i || p.Event.EventID != e.ID || h.Header.Get("webhook-id") != e.ID || p.Event.MessageID != m.ID {
			t.Errorf("POST %d: event %+v, webhook-id %q; want type %d id %s", i, p.Event, h.Header.Get("webhook-id"), i, e.ID)
		}
		em := p.EmailMessage
		if em.MessageID != m.ID || em.From != (Address{Email: "support@example.com", Name: "Support Team"}) ||
			!slices.Equal(em.To, []Address{{Email: "john@example.net", Name: "John Doe"}}) || em.Subject != "Order Confirmation" {
			t.Errorf("POST %d: emailMessage %+v", i, em)
		}
		if em.Headers["Contact-ID"] != "12345" || em.Headers["Campaign-ID"] != "summer-sale-2024" || !slices.Equal(em.Tags, []string{"order-confirmation"}) {
			t.Errorf("POST %d: headers %v tags %v", i, em.Headers, em.Tags)
		}
		md := p.Event.EventMetadata
		isOC := e.Type == ledger.Open || e.Type == ledger.Click
		if isOC != (md.UserAgent != nil) || (isOC && *md.UserAgent != UserAgent{Family: "Chrome", Major: "91"}) {
			t.Errorf("POST %d: userAgent %+v", i, md.UserAgent)
		}
		if (md.URL != "") != (e.Type == ledger.Click) || md.Recipient != "john@example.net" || md.Timestamp != e.Time.Unix() {
			t.Errorf("POST %d: metadata %+v", i, md)
		}
		if e.Type == ledger.HardBounce && (md.Status != "5.1.1" || md.DeliveryReport != "550 5.1.1 User unknown" || md.Relay == "") {
			t.Errorf("bounce metadata %+v", md)
		}
	}
	// The seed's example, key for key.
	var raw map[string]map[string]any
	if err := json.Unmarshal(hs[5].Body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"eventID", "type", "messageID", "eventMetadata"} {
		if _, ok := raw["event"][k]; !ok {
			t.Errorf("event lacks %s", k)
		}
	}
	for _, k := range []string{"messageID", "from", "to", "subject", "headers"} {
		if _, ok := raw["emailMessage"][k]; !ok {
			t.Errorf("emailMessage lacks %s", k)
		}
	}
	if ua := raw["event"]["eventMetadata"].(map[string]any)["userAgent"].(map[string]any); ua["Family"] != "Chrome" || ua["Major"] != "91" {
		t.Errorf("userAgent %v", ua)
	}
}

func TestEventFilter(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: "raw secret", Events: []string{string(ledger.Click), string(ledger.HardBounce)}}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	_, evs := recordSample(t, s)
	start(t, n)
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) >= 1 })
	bes := allBatch(t, hs, DefaultParam)
	if len(bes) != 2 || bes[0].Event != "hard_bounce" || bes[1].Event != "click" {
		t.Fatalf("got %+v", bes)
	}
	if err := VerifySignature("raw secret", hs[0].Header, hs[0].Body, time.Now(), 0); err != nil {
		t.Error(err)
	}
	st := waitStatus(t, n, func(st EndpointStatus) bool { return st.Cursor == evs[len(evs)-1].Seq })
	if st.Backlog != 0 {
		t.Errorf("backlog %d", st.Backlog)
	}
	// Filtered-out events move the cursor without a request.
	recordN(t, s, "x", 4)
	n.Wake()
	waitStatus(t, n, func(st EndpointStatus) bool { return st.Cursor == evs[len(evs)-1].Seq+4 })
	if got := len(rc.accepted()); got != 1 {
		t.Errorf("%d POSTs, want 1", got)
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		head, post   int
		verified     bool
		wantTest     bool
	}{
		{"head ok", FormatBatch, 200, 500, true, false},
		{"head 204 is not 200", FormatBatch, 204, 200, true, true},
		{"post fallback batch", FormatBatch, 405, 200, true, true},
		{"post fallback json", FormatJSON, 404, 202, true, true},
		{"both fail", FormatBatch, 404, 404, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, "")
			post := tc.post
			rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int { return post })
			rc.head = tc.head
			n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret, Format: tc.format}}, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			n.Verify(context.Background())
			sts, err := n.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sts[0].Verified != tc.verified {
				t.Fatalf("verified %v, want %v", sts[0].Verified, tc.verified)
			}
			if !tc.verified && (sts[0].VerifyReason != "HEAD answered 404; test request answered 404" || sts[0].NextVerify.IsZero()) {
				t.Errorf("reason %q, next %v", sts[0].VerifyReason, sts[0].NextVerify)
			}
			rc.mu.Lock()
			hs, posts := rc.hits, rc.posts
			rc.mu.Unlock()
			if !tc.verified {
				if posts != 1 {
					t.Errorf("%d POSTs, want the one test request", posts)
				}
				return
			}
			if !tc.wantTest {
				if len(hs) != 0 {
					t.Fatalf("unexpected POST %s", hs[0].Body)
				}
				return
			}
			if len(hs) != 1 {
				t.Fatalf("POSTs %v", hs)
			}
			checkHMAC(t, testSecret, hs[0])
			checkTestRequest(t, tc.format, hs[0])
		})
	}
}

// Events of an unverified endpoint wait, and go once it verifies.
func TestUnverifiedWaits(t *testing.T) {
	s := openStore(t, "")
	var up = make(chan struct{})
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		select {
		case <-up:
			return 200
		default:
			return 503
		}
	})
	rc.head = 404
	opt := testOptions(t)
	opt.VerifyInterval = time.Hour // only an explicit Verify may verify it
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "e", 3)
	start(t, n)
	st := waitStatus(t, n, func(st EndpointStatus) bool { return st.Backlog == 3 })
	if st.Verified || len(rc.accepted()) != 0 {
		t.Fatalf("status %+v, %d POSTs", st, len(rc.accepted()))
	}
	close(up)
	n.Verify(context.Background()) // as on SIGHUP
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool {
		real := 0
		for _, be := range allBatch(t, h, DefaultParam) {
			if !strings.HasPrefix(be.EventID, "test_") {
				real++
			}
		}
		return real == 3
	})
	checkTestRequest(t, FormatBatch, hs[0])
}

// checkTestRequest checks that a verification's test request is one
// well-formed event in the endpoint's format, as a receiver written from
// the seeds parses it.
func checkTestRequest(t *testing.T, format string, h hit) {
	t.Helper()
	id := h.Header.Get(HeaderID)
	if format == FormatBatch {
		bes := batchOf(t, h, DefaultParam)
		if len(bes) != 1 || bes[0].Event != "sent" || !strings.HasPrefix(bes[0].EventID, "test_") || bes[0].Msg.ID != "test_message" ||
			bes[0].Msg.Email == "" || bes[0].Timestamp == 0 || !strings.HasPrefix(id, "test_") {
			t.Errorf("batch test request %s (id %s)", h.Body, id)
		}
		return
	}
	if ct := h.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(h.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("test request %s: %v", h.Body, err)
	}
	if p.Event.Type != TypeDelivered || p.Event.EventID != id || !strings.HasPrefix(id, "test_") || p.Event.MessageID != "test_message" ||
		p.EmailMessage.MessageID != "test_message" || len(p.EmailMessage.To) != 1 || p.EmailMessage.From.Email == "" ||
		p.Event.EventMetadata.Source != "test" {
		t.Errorf("json test request %s", h.Body)
	}
}

// Retries after 500s and timeouts keep the batch, its webhook-id and the
// order of events.
func TestRetryOrder(t *testing.T) {
	s := openStore(t, "")
	var ids []string
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		ids = append(ids, r.Header.Get("webhook-id")) // one request at a time
		switch n {
		case 0, 1:
			return 500
		case 2:
			<-r.Context().Done() // the notifier's timeout ends it
			return 504
		}
		return 200
	})
	ep := Endpoint{URL: rc.srv.URL, Secret: testSecret, BatchSize: 4, Timeout: config.Duration(200 * time.Millisecond)}
	n, err := New(s, []Endpoint{ep}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := recordN(t, s, "e", 10)
	start(t, n)
	hs := rc.waitFor(t, 20*time.Second, func(h []hit) bool { return len(allBatch(t, h, DefaultParam)) >= 10 })
	var got []string
	for _, be := range allBatch(t, hs, DefaultParam) {
		got = append(got, be.EventID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if len(ids) < 4 || ids[0] != ids[1] || ids[1] != ids[2] || ids[2] != ids[3] || ids[3] != hs[0].Header.Get("webhook-id") {
		t.Errorf("webhook-ids of the retries: %v", ids)
	}
	waitStatus(t, n, func(st EndpointStatus) bool { return st.Backlog == 0 })
	var failed, delivered int
	for _, a := range history(t, n, s) {
		switch a.Result {
		case ledger.AttemptFailed:
			failed++
		case ledger.AttemptDelivered:
			delivered++
		}
	}
	if failed != 3 || delivered != 3 {
		t.Errorf("history: %d failed, %d delivered; want 3, 3", failed, delivered)
	}
	var resp string
	for _, a := range history(t, n, s) {
		if a.Status == 500 {
			resp = a.Response
		}
	}
	if resp != "status 500" {
		t.Errorf("kept response %q", resp)
	}
	if st := n.Stats(); st.FailedAttempts != 3 || st.Delivered != 10 {
		t.Errorf("stats %+v", st)
	}
}

func TestBackoffGrows(t *testing.T) {
	s := openStore(t, "")
	var at []time.Time
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		at = append(at, time.Now())
		if n < 4 {
			return 500
		}
		return 200
	})
	opt := testOptions(t)
	opt.Backoff = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "e", 1)
	start(t, n)
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 1 })
	for i, min := range []time.Duration{45, 180, 360, 360} {
		if gap := at[i+1].Sub(at[i]); gap < min*time.Millisecond {
			t.Errorf("gap %d is %s, want >= %dms", i, gap, min)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	s := openStore(t, "")
	var at []time.Time
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		at = append(at, time.Now())
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			return 503
		}
		return 200
	})
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "e", 1)
	start(t, n)
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 1 })
	if gap := at[1].Sub(at[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %s despite Retry-After: 1", gap)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"120", 2 * time.Minute}, {" 7 ", 7 * time.Second},
		{"99999999999", 24 * time.Hour}, {"soon", 0},
		{"Sat, 01 Jun 2024 12:01:30 GMT", 90 * time.Second},
		{"Sat, 01 Jun 2024 11:00:00 GMT", 0},
		{"Mon, 01 Jul 2024 12:00:00 GMT", 24 * time.Hour},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "Sat, 01 Jun 2024 12:01:30 GMT", "-1", "9223372036854775807", "Monday, 02-Jan-06 15:04:05 MST"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > 24*time.Hour {
			t.Fatalf("%q -> %s", s, d)
		}
	})
}

func TestGonePauses(t *testing.T) {
	s := openStore(t, "")
	var gone atomic.Bool
	gone.Store(true)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if gone.Load() {
			return 410
		}
		return 200
	})
	n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := recordN(t, s, "e", 3)
	start(t, n)
	st := waitStatus(t, n, func(st EndpointStatus) bool { return st.Paused })
	if st.LastStatus != 410 || st.Backlog != 3 || !strings.Contains(st.LastError, "410") {
		t.Errorf("status %+v", st)
	}
	gone.Store(false)
	if err := n.Resume(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 1 })
	if got := allBatch(t, hs, DefaultParam); len(got) != 3 || got[0].EventID != want[0] {
		t.Errorf("after resume: %+v", got)
	}
	if err := n.Pause(context.Background(), "nope"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Pause(nope) = %v", err)
	}
}

func TestPauseResumeReplay(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret, Format: FormatJSON}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Pause(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "a", 2)
	start(t, n)
	waitStatus(t, n, func(st EndpointStatus) bool { return st.Paused && st.Backlog == 2 && st.Verified })
	if len(rc.accepted()) != 0 {
		t.Fatal("paused endpoint was sent events")
	}
	if err := n.Resume(context.Background(), "app"); err != nil {
		t.Fatal(err)
	}
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 2 })
	mid := time.Now()
	recordN(t, s, "b", 3)
	n.Wake()
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 5 })
	waitStatus(t, n, func(st EndpointStatus) bool { return st.Backlog == 0 })
	c, err := n.Replay(context.Background(), "app", mid)
	if err != nil || c != 3 {
		t.Fatalf("Replay = %d, %v; want 3", c, err)
	}
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 8 })
	var ids []string
	for _, h := range hs[5:] {
		ids = append(ids, h.Header.Get("webhook-id"))
	}
	if !slices.Equal(ids, []string{"b0", "b1", "b2"}) {
		t.Errorf("replayed %v", ids)
	}
	if c, err := n.Replay(context.Background(), "app", time.Now().Add(time.Hour)); err != nil || c != 0 {
		t.Errorf("Replay(future) = %d, %v", c, err)
	}
}

func TestBatchSize(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret, BatchSize: 3}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := recordN(t, s, "e", 10)
	start(t, n)
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(allBatch(t, h, DefaultParam)) == 10 })
	var sizes []int
	var got []string
	for _, h := range hs {
		bes := batchOf(t, h, DefaultParam)
		sizes = append(sizes, len(bes))
		for _, be := range bes {
			got = append(got, be.EventID)
		}
	}
	if !slices.Equal(sizes, []int{3, 3, 3, 1}) || !slices.Equal(got, want) {
		t.Errorf("batches %v, events %v", sizes, got)
	}
}

func TestCursorSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	rc := newReceiver(t, nil)
	eps := []Endpoint{{URL: rc.srv.URL, Secret: testSecret}}
	s1, err := ledger.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	n1, err := New(s1, eps, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	first := recordN(t, s1, "a", 5)
	stop := start(t, n1)
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(allBatch(t, h, DefaultParam)) == 5 })
	stop()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, path)
	second := recordN(t, s2, "b", 5)
	n2, err := New(s2, eps, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	start(t, n2)
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(allBatch(t, h, DefaultParam)) >= 10 })
	var got []string
	for _, be := range allBatch(t, hs, DefaultParam) {
		got = append(got, be.EventID)
	}
	if !slices.Equal(got, append(first, second...)) {
		t.Errorf("got %v", got)
	}
}

func TestDeadLetter(t *testing.T) {
	s := openStore(t, "")
	var fail atomic.Bool
	fail.Store(true)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		if fail.Load() {
			return 500
		}
		return 200
	})
	opt := testOptions(t)
	opt.MaxAge = 150 * time.Millisecond
	n, err := New(s, []Endpoint{{Name: "app", URL: rc.srv.URL, Secret: testSecret}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "a", 2)
	start(t, n)
	st := waitStatus(t, n, func(st EndpointStatus) bool { return st.DeadLetters == 2 })
	if st.Backlog != 0 || n.Stats().DeadLettered != 2 {
		t.Errorf("status %+v stats %+v", st, n.Stats())
	}
	fail.Store(false)
	want := recordN(t, s, "b", 1)
	n.Wake()
	hs := rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 1 })
	if got := allBatch(t, hs, DefaultParam); len(got) != 1 || got[0].EventID != want[0] {
		t.Errorf("after dead letter: %+v", got)
	}
	var dead int
	for _, a := range history(t, n, s) {
		if a.Result == ledger.AttemptDead {
			dead++
		}
	}
	if dead != 1 {
		t.Errorf("dead rows %d", dead)
	}
}

func TestHistoryPruned(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	opt := testOptions(t)
	opt.History = 100 * time.Millisecond
	n, err := New(s, []Endpoint{{URL: rc.srv.URL, Secret: testSecret}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	recordN(t, s, "a", 1)
	start(t, n)
	rc.waitFor(t, 10*time.Second, func(h []hit) bool { return len(h) == 1 })
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		c := len(history(t, n, s))
		if c == 0 {
			break
		}
		if i > 250 {
			t.Fatalf("%d history rows never pruned", c)
		}
		<-tick.C
	}
}

func TestTestSends(t *testing.T) {
	s := openStore(t, "")
	rc := newReceiver(t, nil)
	n, err := New(s, []Endpoint{{Name: "b", URL: rc.srv.URL, Secret: testSecret}, {Name: "j", URL: rc.srv.URL + "/j", Secret: testSecret, Format: FormatJSON}}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Test(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := n.Test(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	hs := rc.accepted()
	if len(hs) != 10 || len(batchOf(t, hs[0], DefaultParam)) != 8 {
		t.Fatalf("%d POSTs", len(hs))
	}
	for _, h := range hs {
		checkHMAC(t, testSecret, h)
	}
	if err := n.Test(context.Background(), "x"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Test(x) = %v", err)
	}
}

func TestSign(t *testing.T) {
	// The Standard Webhooks reference vector.
	ts := time.Unix(1614265330, 0)
	body := []byte(`{"test": 2432232314}`)
	got := Sign(testSecret, "msg_p5jXN8AQM9LWM0D4loKWxJek", ts, body)
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	h := http.Header{}
	h.Set(HeaderID, "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set(HeaderTimestamp, "1614265330")
	h.Set(HeaderSignature, "v1,bm9wZQ== "+got)
	for _, tc := range []struct {
		name   string
		secret string
		body   []byte
		now    time.Time
		mod    func(http.Header)
		want   error
	}{
		{"ok", testSecret, body, ts, nil, nil},
		{"within tolerance", testSecret, body, ts.Add(4 * time.Minute), nil, nil},
		{"stale", testSecret, body, ts.Add(6 * time.Minute), nil, ErrTimestamp},
		{"body changed", testSecret, []byte(`{"test": 1}`), ts, nil, ErrBadSignature},
		{"other secret", "whsec_bm9wZQ==", body, ts, nil, ErrBadSignature},
		{"no id", testSecret, body, ts, func(h http.Header) { h.Del(HeaderID) }, ErrNoSignature},
		{"bad timestamp", testSecret, body, ts, func(h http.Header) { h.Set(HeaderTimestamp, "x") }, ErrTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hh := h.Clone()
			if tc.mod != nil {
				tc.mod(hh)
			}
			if err := VerifySignature(tc.secret, hh, tc.body, tc.now, 0); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzVerifySignature(f *testing.F) {
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", int64(1614265330), []byte("{}"), "v1,abc")
	f.Add("raw", "", int64(-1), []byte(nil), "")
	f.Fuzz(func(t *testing.T, secret, id string, ts int64, body []byte, sig string) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, sig) // garbage timestamp: must not panic
		h.Set(HeaderSignature, sig)
		_ = VerifySignature(secret, h, body, time.Unix(ts, 0), 0)
		if id == "" || strings.ContainsAny(id, "\r\n") || strings.TrimSpace(id) != id {
			return
		}
		// Round trip: what Sign makes, VerifySignature accepts.
		now := time.Unix(ts%(1<<40), 0)
		h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		h.Set(HeaderSignature, Sign(secret, id, now, body))
		if err := VerifySignature(secret, h, body, now, 0); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestValidate(t *testing.T) {
	ok := Endpoint{URL: "https://app.example.com/hooks/leadpush", Secret: "s"}
	for _, tc := range []struct {
		name  string
		mod   func(*Endpoint)
		field string // "" = valid
	}{
		{"minimal", func(*Endpoint) {}, ""},
		{"json", func(e *Endpoint) { e.Format = FormatJSON }, ""},
		{"all set", func(e *Endpoint) {
			e.Events, e.Param, e.BatchSize, e.Timeout = []string{"open", "click"}, "leadersend_events", 50, config.Duration(time.Second)
		}, ""},
		{"no url", func(e *Endpoint) { e.URL = "" }, "url: required"},
		{"ftp", func(e *Endpoint) { e.URL = "ftp://x/y" }, "url: scheme"},
		{"no host", func(e *Endpoint) { e.URL = "http:///x" }, "url: no host"},
		{"userinfo", func(e *Endpoint) { e.URL = "https://u:p@x/" }, "url: credentials"},
		{"bad event", func(e *Endpoint) { e.Events = []string{"bounce"} }, `events: unknown event "bounce"`},
		{"bad format", func(e *Endpoint) { e.Format = "xml" }, "format:"},
		{"param with json", func(e *Endpoint) { e.Format, e.Param = FormatJSON, "x" }, "param: only"},
		{"bad param", func(e *Endpoint) { e.Param = "a=b" }, "param:"},
		{"no secret", func(e *Endpoint) { e.Secret = "" }, "secret: required"},
		{"bad whsec", func(e *Endpoint) { e.Secret = "whsec_!!" }, "secret: whsec_"},
		{"batch size", func(e *Endpoint) { e.BatchSize = -1 }, "batch_size:"},
		{"timeout", func(e *Endpoint) { e.Timeout = config.Duration(time.Hour) }, "timeout:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.mod(&e)
			err := e.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) ||
				!strings.HasPrefix(tc.field, "url") && !strings.Contains(err.Error(), `"app.example.com/hooks/leadpush"`) {
				t.Fatalf("got %v, want an error naming %q and the endpoint", err, tc.field)
			}
		})
	}
}

func TestConfigTOML(t *testing.T) {
	var cfg struct {
		Webhook []Endpoint `toml:"webhook"`
	}
	_, err := toml.Decode(`
[[webhook]]
url = "https://app.example.com/lp"
format = "json"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["open", "click"]
timeout = "3s"
batch_size = 10

[[webhook]]
url = "https://other.example.com/"
secret = "s"
verify = false
`, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Webhook[0].Verifies() || cfg.Webhook[1].Verifies() {
		t.Errorf("verify: unset %v, false %v", cfg.Webhook[0].Verifies(), cfg.Webhook[1].Verifies())
	}
	e := cfg.Webhook[0]
	if time.Duration(e.Timeout) != 3*time.Second || e.Format != FormatJSON || len(e.Events) != 2 || e.BatchSize != 10 {
		t.Fatalf("%+v", e)
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := e.WithDefaults(); d.Name != "app.example.com/lp" || d.Param != DefaultParam {
		t.Errorf("defaults %+v", d)
	}
	if _, err := toml.Decode(`timeout = "soon"`, &struct {
		Timeout config.Duration `toml:"timeout"`
	}{}); err == nil {
		t.Error("bad duration accepted")
	}
}

func TestNewRejects(t *testing.T) {
	s := openStore(t, "")
	ep := Endpoint{URL: "http://127.0.0.1:1/x", Secret: "s"}
	if _, err := New(s, []Endpoint{ep, ep}, testOptions(t)); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("duplicate names: %v", err)
	}
	if _, err := New(s, []Endpoint{{URL: "x"}}, testOptions(t)); err == nil {
		t.Error("invalid endpoint accepted")
	}
}

// history returns the finished attempts of the notifier's first endpoint.
func history(t *testing.T, n *Notifier, s ledger.WebhookStore) []ledger.Attempt {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil || len(st) == 0 {
		t.Fatalf("status: %v, %v", st, err)
	}
	as, err := s.History(context.Background(), st[0].Name, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return as
}
