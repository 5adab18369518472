// Package ledgertest is the contract suite of the ledger: the tests every
// implementation of [ledger.Store] must pass, whatever its database. Run
// them from the implementation's own tests:
//
//	func TestContract(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) func() ledger.Store { ... }, openBackup)
//	}
//
// The argument makes one new, empty database per test and returns a
// function that opens a handle on it; the suite opens several handles on
// the same database where it plays several processes (the milter,
// leadpushd, leadpushctl), and closes them at the end of the test.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// Opener makes a new database for one test and returns a function that
// opens a handle on it.
type Opener func(t *testing.T) func() ledger.Store

// BackupOpener opens what Store.Backup wrote, to read it back.
type BackupOpener func(path string) (ledger.Store, error)

var openBackup BackupOpener

// Run runs the whole suite.
func Run(t *testing.T, newDB Opener, backups BackupOpener) {
	openBackup = backups
	for _, c := range []struct {
		name string
		fn   func(*testing.T, func() ledger.Store)
	}{
		{"RecordAndRead", testRecordAndRead},
		{"Idempotent", testIdempotent},
		{"Filters", testFilters},
		{"SuppressionRule", testSuppressionRule},
		{"Suppressions", testSuppressions},
		{"Streams", testStreams},
		{"State", testState},
		{"Inbound", testInbound},
		{"WebhookEndpoints", testWebhookEndpoints},
		{"WebhookHistory", testWebhookHistory},
		{"EventNumbers", testEventNumbers},
		{"WebhookRequests", testWebhookRequests},
		{"WebhookVerification", testWebhookVerification},
		{"CursorOrderingConcurrentWriters", testCursorOrdering},
		{"Prune", testPrune},
		{"SoftBounceLimit", testSoftBounceLimit},
		{"EventAndInboundOf", testEventAndInboundOf},
		{"MessagesByID", testMessagesByID},
		{"Forget", testForget},
		{"Backup", testBackup},
	} {
		t.Run(c.name, func(t *testing.T) {
			open := newDB(t)
			handles := func() ledger.Store {
				s := open()
				t.Cleanup(func() { s.Close() })
				return s
			}
			c.fn(t, handles)
		})
	}
}

var ctx = context.Background()

func msg(id string) *ledger.Message {
	return &ledger.Message{ID: id, QueueID: "Q" + id, EnvelopeFrom: "app@example.com", Recipients: []string{"r@example.com"},
		From: "App <app@example.com>", To: "r@example.com", Subject: "Subject " + id, MessageID: "<" + id + "@example.com>",
		Tag: "tag-" + id, Tracking: ledger.TrackClicks, Headers: []ledger.Header{{Name: "Contact-ID", Value: "12345"}, {Name: "Contact-ID", Value: "6"}},
		SASLUser: "app", ClientAddr: "127.0.0.1", ReturnPath: "bounce+x@b.example.com", Links: []string{"https://example.com/a"},
		CreatedAt: time.Now().Round(0)}
}

func event(typ ledger.EventType, m *ledger.Message, rcpt string) *ledger.Event {
	return &ledger.Event{ID: ledger.NewID(), Type: typ, MessageID: m.ID, Recipient: rcpt, Time: time.Now().Round(0),
		Detail: ledger.Detail{Source: "test", Status: "5.1.1", Report: `550 5.1.1 <r@example.com> "quoted" & more`}}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testRecordAndRead(t *testing.T, open func() ledger.Store) {
	s := open()
	m := msg("m1")
	ev := event(ledger.Processed, m, "")
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{ev}))
	if ev.Seq <= 0 {
		t.Errorf("Record left Seq %d", ev.Seq)
	}
	got, err := s.Message(ctx, m.ID)
	must(t, err)
	if got.ID != m.ID || got.QueueID != m.QueueID || got.Tag != m.Tag || got.Tracking != ledger.TrackClicks ||
		got.Subject != m.Subject || got.MessageID != m.MessageID || !slices.Equal(got.Recipients, m.Recipients) ||
		!slices.Equal(got.Headers, m.Headers) || !slices.Equal(got.Links, m.Links) || got.SASLUser != "app" ||
		got.ReturnPath != m.ReturnPath || got.ClientAddr != m.ClientAddr || !got.CreatedAt.Equal(m.CreatedAt) {
		t.Errorf("read back %+v, want %+v", got, m)
	}
	if q, err := s.MessageByQueueID(ctx, m.QueueID); err != nil || q.ID != m.ID {
		t.Errorf("MessageByQueueID: %v, %v", q, err)
	}
	if q, err := s.MessageByHeaderID(ctx, m.MessageID); err != nil || q.ID != m.ID {
		t.Errorf("MessageByHeaderID: %v, %v", q, err)
	}
	for _, lookup := range []func() error{
		func() error { _, err := s.Message(ctx, "nope"); return err },
		func() error { _, err := s.MessageByQueueID(ctx, "nope"); return err },
		func() error { _, err := s.MessageByHeaderID(ctx, "nope"); return err },
	} {
		if err := lookup(); !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("missing message: %v, want ErrNotFound", err)
		}
	}
	evs, err := s.Events(ctx, ledger.Filter{MessageID: m.ID})
	must(t, err)
	if len(evs) != 1 || evs[0].ID != ev.ID || evs[0].Seq != ev.Seq || evs[0].Type != ledger.Processed ||
		evs[0].Detail != ev.Detail || !evs[0].Time.Equal(ev.Time) {
		t.Errorf("events %+v", evs)
	}
	// Opens and clicks count on their message, in the same transaction.
	must(t, s.Record(ctx, nil, []*ledger.Event{event(ledger.Open, m, "r@example.com"), event(ledger.Click, m, "r@example.com"),
		event(ledger.Click, m, "r@example.com")}))
	if got, _ := s.Message(ctx, m.ID); got.Opens != 1 || got.Clicks != 2 {
		t.Errorf("counters %d/%d, want 1/2", got.Opens, got.Clicks)
	}
	if last, err := s.LastSeq(ctx); err != nil || last < ev.Seq+3 {
		t.Errorf("LastSeq %d, %v", last, err)
	}
}

func testIdempotent(t *testing.T, open func() ledger.Store) {
	s := open()
	m := msg("m1")
	a, b := event(ledger.Delivered, m, "r@example.com"), event(ledger.Open, m, "r@example.com")
	a.DedupKey = "delivered:Q:r@example.com"
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{a, b}))
	// A replayed spool: the same message and events again, a second event
	// with the dedup key of the first, and a new one in between.
	dup := event(ledger.Delivered, m, "r@example.com")
	dup.DedupKey = a.DedupKey
	c := event(ledger.Open, m, "r@example.com")
	again := *b
	again.Seq = 0
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{a, dup, c, &again}))
	evs, err := s.Events(ctx, ledger.Filter{MessageID: m.ID})
	must(t, err)
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{a.ID, b.ID, c.ID}) {
		t.Errorf("events after replay %v, want %v", ids, []string{a.ID, b.ID, c.ID})
	}
	if c.Seq <= b.Seq {
		t.Errorf("new event's Seq %d not after %d", c.Seq, b.Seq)
	}
	if got, _ := s.Message(ctx, m.ID); got.Opens != 2 {
		t.Errorf("opens %d after a replayed open, want 2", got.Opens)
	}
}

func testFilters(t *testing.T, open func() ledger.Store) {
	s := open()
	m1, m2 := msg("m1"), msg("m2")
	m2.CreatedAt = m1.CreatedAt.Add(time.Second)
	m2.Tag = m1.Tag
	old := event(ledger.Open, m1, "r@example.com")
	old.Time = time.Now().Add(-time.Hour).Round(0)
	must(t, s.Record(ctx, []*ledger.Message{m1, m2}, []*ledger.Event{old, event(ledger.Click, m1, "r@example.com"),
		event(ledger.Open, m2, "r@example.com"), event(ledger.Delivered, m2, "r@example.com")}))
	ms, err := s.Messages(ctx, ledger.Filter{Tag: m1.Tag})
	must(t, err)
	if len(ms) != 2 || ms[0].ID != "m2" {
		t.Errorf("Messages by tag, newest first: %v", ms)
	}
	if ms, _ := s.Messages(ctx, ledger.Filter{Tag: m1.Tag, Limit: 1}); len(ms) != 1 || ms[0].ID != "m2" {
		t.Errorf("Messages with limit: %v", ms)
	}
	if ms, _ := s.Messages(ctx, ledger.Filter{QueueID: "Qm1"}); len(ms) != 1 || ms[0].ID != "m1" {
		t.Errorf("Messages by queue id: %v", ms)
	}
	if evs, _ := s.Events(ctx, ledger.Filter{Type: ledger.Open}); len(evs) != 2 {
		t.Errorf("Events by type: %d, want 2", len(evs))
	}
	if evs, _ := s.Events(ctx, ledger.Filter{Since: time.Now().Add(-time.Minute)}); len(evs) != 3 {
		t.Errorf("Events since a minute ago: %d, want 3", len(evs))
	}
	all, _ := s.Events(ctx, ledger.Filter{})
	if evs, _ := s.Events(ctx, ledger.Filter{AfterSeq: all[1].Seq}); len(evs) != 2 || evs[0].Seq != all[2].Seq {
		t.Errorf("Events after seq: %v", evs)
	}
	if evs, _ := s.Events(ctx, ledger.Filter{Limit: 2, Newest: true}); len(evs) != 2 || evs[0].Seq != all[3].Seq || evs[1].Seq != all[2].Seq {
		t.Errorf("Events newest first under a limit: %v", evs)
	}
	if evs, _ := s.Events(ctx, ledger.Filter{Limit: 2}); len(evs) != 2 || evs[0].Seq != all[0].Seq {
		t.Errorf("Events under a limit, in seq order: %v", evs)
	}
	if n, err := s.CountEvents(ctx, all[0].Seq, -1, []ledger.EventType{ledger.Open, ledger.Delivered}); err != nil || n != 2 {
		t.Errorf("CountEvents(after first, open+delivered) = %d, %v; want 2", n, err)
	}
	if n, _ := s.CountEvents(ctx, 0, all[1].Seq, []ledger.EventType{ledger.Open, ledger.Click}); n != 2 {
		t.Errorf("CountEvents(upto second) = %d, want 2", n)
	}
	if n, _ := s.CountEvents(ctx, 0, -1, nil); n != 0 {
		t.Errorf("CountEvents(no types) = %d, want 0", n)
	}
}

// testSuppressionRule: the rule of what suppresses what is the store's,
// applied in the transaction that records the event.
func testSuppressionRule(t *testing.T, open func() ledger.Store) {
	s := open()
	m := msg("m1")
	must(t, s.Record(ctx, []*ledger.Message{m}, nil))
	for _, typ := range ledger.EventTypes {
		rcpt := string(typ) + "@Example.COM"
		must(t, s.Record(ctx, nil, []*ledger.Event{event(typ, m, rcpt)}))
		sp, err := s.Suppressed(ctx, rcpt, time.Now())
		reason, suppresses := ledger.Suppresses(typ)
		switch {
		case suppresses && (err != nil || sp.Reason != reason):
			t.Errorf("%s: suppressed %+v, %v; want reason %s", typ, sp, err, reason)
		case !suppresses && !errors.Is(err, ledger.ErrNotFound):
			t.Errorf("%s suppressed its recipient: %+v, %v", typ, sp, err)
		}
	}
	// A later event refreshes the entry: its reason wins, the first
	// creation time stays.
	first, _ := s.Suppressed(ctx, "unsubscribe@example.com", time.Now())
	must(t, s.Record(ctx, nil, []*ledger.Event{event(ledger.HardBounce, m, "UNSUBSCRIBE@example.com")}))
	sp, err := s.Suppressed(ctx, "unsubscribe@example.com", time.Now())
	if err != nil || sp.Reason != ledger.ReasonHardBounce || !sp.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("refreshed entry %+v, %v (first %+v)", sp, err, first)
	}
	// An event with no recipient suppresses nobody.
	must(t, s.Record(ctx, nil, []*ledger.Event{event(ledger.Spam, m, "")}))
	if list, _ := s.Suppressions(ctx); len(list) != 3 {
		t.Errorf("%d entries, want 3 (hard_bounce, unsubscribe, spam)", len(list))
	}
}

// testStreams: a message keeps its stream and is found by it; an address
// has one entry per scope; an unsubscribe suppresses in the scope that the
// policy gives its message's stream, a hard bounce and a complaint in
// every stream; Unsuppress removes one scope or all.
func testStreams(t *testing.T, open func() ledger.Store) {
	s := open()
	s.SetPolicy(ledger.Policy{UnsubscribeScopes: map[string]string{"news": "news", "promo": ledger.ScopeBroadcast, "tx": ledger.ScopeAll}})
	news, promo, tx, gone, none := msg("news1"), msg("promo1"), msg("tx1"), msg("gone1"), msg("none1")
	news.Stream, promo.Stream, tx.Stream, gone.Stream = "news", "promo", "tx", "removed-stream"
	must(t, s.Record(ctx, []*ledger.Message{news, promo, tx, gone, none}, nil))
	if m, err := s.Message(ctx, "news1"); err != nil || m.Stream != "news" {
		t.Fatalf("Message: %+v, %v; want stream news", m, err)
	}
	if list, err := s.Messages(ctx, ledger.Filter{Stream: "promo"}); err != nil || len(list) != 1 || list[0].ID != "promo1" {
		t.Errorf("Messages(stream promo): %v, %v", list, err)
	}
	must(t, s.Record(ctx, nil, []*ledger.Event{
		event(ledger.Unsubscribe, news, "a@example.com"),
		event(ledger.Unsubscribe, promo, "b@example.com"),
		event(ledger.Unsubscribe, tx, "c@example.com"),
		event(ledger.Unsubscribe, gone, "d@example.com"),
		event(ledger.Unsubscribe, none, "e@example.com"),
		event(ledger.HardBounce, news, "f@example.com"),
		event(ledger.Spam, promo, "g@example.com"),
		event(ledger.Unsubscribe, news, "f@example.com"),
	}))
	for addr, want := range map[string][]string{
		"a@example.com": {"news"},
		"b@example.com": {ledger.ScopeBroadcast},
		"c@example.com": {ledger.ScopeAll},
		"d@example.com": {"removed-stream"}, // a stream no longer configured: itself
		"e@example.com": {ledger.ScopeAll},  // a message without a stream: every stream
		"f@example.com": {ledger.ScopeAll, "news"},
		"g@example.com": {ledger.ScopeAll},
	} {
		list, err := s.SuppressionsOf(ctx, addr, time.Now())
		var got []string
		for _, sp := range list {
			got = append(got, sp.Stream)
		}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: scopes %q, %v; want %q", addr, got, err, want)
		}
	}
	if list, err := s.SuppressionsOf(ctx, "nobody@example.com", time.Now()); err != nil || len(list) != 0 {
		t.Errorf("SuppressionsOf(unlisted) = %v, %v", list, err)
	}
	// Applies: what each scope turns away.
	sp := func(scope string) *ledger.Suppression { return &ledger.Suppression{Stream: scope} }
	for _, c := range []struct {
		scope, stream string
		broadcast     bool
		want          bool
	}{
		{ledger.ScopeAll, "tx", false, true}, {ledger.ScopeAll, "", false, true},
		{"news", "news", true, true}, {"news", "tx", false, false}, {"news", "", false, false},
		{ledger.ScopeBroadcast, "promo", true, true}, {ledger.ScopeBroadcast, "tx", false, false},
		{ledger.ScopeBroadcast, "", false, false},
	} {
		if got := sp(c.scope).Applies(c.stream, c.broadcast); got != c.want {
			t.Errorf("scope %q applies to %q (broadcast %v) = %v", c.scope, c.stream, c.broadcast, got)
		}
	}
	// A manual entry in another scope sits beside the others; removing one
	// scope leaves the rest.
	must(t, s.Suppress(ctx, ledger.Suppression{Address: "F@example.com", Stream: "promo", Reason: ledger.ReasonManual}))
	if ok, err := s.Unsuppress(ctx, "f@example.com", "news"); !ok || err != nil {
		t.Errorf("Unsuppress(news) = %v, %v", ok, err)
	}
	if ok, _ := s.Unsuppress(ctx, "f@example.com", "news"); ok {
		t.Errorf("Unsuppress(news) twice reported an entry")
	}
	list, _ := s.SuppressionsOf(ctx, "f@example.com", time.Now())
	if len(list) != 2 || list[0].Stream != ledger.ScopeAll || list[1].Stream != "promo" {
		t.Errorf("after removing news: %+v", list)
	}
	if ok, err := s.Unsuppress(ctx, "f@example.com"); !ok || err != nil {
		t.Errorf("Unsuppress(all scopes) = %v, %v", ok, err)
	}
	if _, err := s.Suppressed(ctx, "f@example.com", time.Now()); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("f@example.com still listed: %v", err)
	}
	all, _ := s.Suppressions(ctx)
	var keys []string
	for _, sp := range all {
		keys = append(keys, sp.Address+"/"+sp.Stream)
	}
	if want := []string{"a@example.com/news", "b@example.com/@broadcast", "c@example.com/", "d@example.com/removed-stream",
		"e@example.com/", "g@example.com/"}; !slices.Equal(keys, want) {
		t.Errorf("Suppressions: %q, want %q", keys, want)
	}
}

func testSuppressions(t *testing.T, open func() ledger.Store) {
	s, other := open(), open()
	past := time.Now().Add(-time.Minute)
	future := time.Now().Add(time.Hour)
	must(t, s.Suppress(ctx, ledger.Suppression{Address: " <A@Example.com> ", Reason: ledger.ReasonManual}))
	must(t, s.Suppress(ctx, ledger.Suppression{Address: "old@example.com", Reason: ledger.ReasonManual, ExpiresAt: &past}))
	must(t, s.Suppress(ctx, ledger.Suppression{Address: "later@example.com", Reason: ledger.ReasonSpam, ExpiresAt: &future}))
	if sp, err := other.Suppressed(ctx, "a@example.com", time.Now()); err != nil || sp.Address != "a@example.com" || sp.Reason != ledger.ReasonManual {
		t.Errorf("normalised entry seen by another handle: %+v, %v", sp, err)
	}
	if _, err := other.Suppressed(ctx, "old@example.com", time.Now()); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("expired entry: %v, want ErrNotFound", err)
	}
	if sp, err := other.Suppressed(ctx, "later@example.com", time.Now()); err != nil || sp.ExpiresAt == nil || !sp.ExpiresAt.Equal(future) {
		t.Errorf("entry with expiry: %+v, %v", sp, err)
	}
	list, err := other.Suppressions(ctx)
	must(t, err)
	var addrs []string
	for _, sp := range list {
		addrs = append(addrs, sp.Address)
	}
	if !slices.Equal(addrs, []string{"a@example.com", "later@example.com", "old@example.com"}) {
		t.Errorf("Suppressions %v", addrs)
	}
	// WrittenSuppressions: everything live, then what was written since.
	live := map[string]time.Time{}
	must(t, other.WrittenSuppressions(ctx, time.Time{}, time.Now(), func(a string, w time.Time) { live[a] = w }))
	if len(live) != 2 || live["a@example.com"].IsZero() || live["later@example.com"].IsZero() {
		t.Errorf("live entries %v", live)
	}
	mark := time.Now()
	time.Sleep(2 * time.Millisecond)
	must(t, s.Suppress(ctx, ledger.Suppression{Address: "new@example.com", Reason: ledger.ReasonUnsubscribe}))
	var since []string
	must(t, other.WrittenSuppressions(ctx, mark, time.Now(), func(a string, w time.Time) {
		if w.Before(mark) {
			t.Errorf("%s written %v, before %v", a, w, mark)
		}
		since = append(since, a)
	}))
	if !slices.Equal(since, []string{"new@example.com"}) {
		t.Errorf("written since: %v", since)
	}
	if ok, err := s.Unsuppress(ctx, "A@EXAMPLE.COM"); !ok || err != nil {
		t.Errorf("Unsuppress: %v, %v", ok, err)
	}
	if ok, _ := s.Unsuppress(ctx, "a@example.com"); ok {
		t.Error("Unsuppress of an address not listed reported true")
	}
	if _, err := other.Suppressed(ctx, "a@example.com", time.Now()); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("after Unsuppress: %v", err)
	}
}

func testState(t *testing.T, open func() ledger.Store) {
	s := open()
	if _, err := s.State(ctx, "maillog:/var/log/mail.log"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("missing state: %v", err)
	}
	m := msg("m1")
	must(t, s.Record(ctx, []*ledger.Message{m}, nil))
	ev := event(ledger.Delivered, m, "r@example.com")
	must(t, s.RecordState(ctx, []*ledger.Event{ev}, "maillog:/var/log/mail.log", "1:200"))
	must(t, s.RecordState(ctx, nil, "maillog:/var/log/mail.log", "1:400"))
	if v, err := open().State(ctx, "maillog:/var/log/mail.log"); err != nil || v != "1:400" {
		t.Errorf("state %q, %v", v, err)
	}
	if evs, _ := s.Events(ctx, ledger.Filter{MessageID: m.ID}); len(evs) != 1 || ev.Seq == 0 {
		t.Errorf("RecordState's event: %v", evs)
	}
}

func testInbound(t *testing.T, open func() ledger.Store) {
	s := open()
	m := msg("m1")
	must(t, s.Record(ctx, []*ledger.Message{m}, nil))
	a := &ledger.Inbound{ReceivedAt: time.Now().Round(0), Kind: "bounce", Reason: "dsn", EnvelopeTo: "bounce+x@b.example.com",
		MessageID: m.ID, Events: 1, Raw: []byte("Subject: x\r\n\r\n\x00binary\xff")}
	must(t, s.RecordInbound(ctx, a, []*ledger.Event{event(ledger.HardBounce, m, "r@example.com")}))
	b := &ledger.Inbound{ReceivedAt: time.Now().Round(0), Kind: "unknown", Raw: []byte("junk")}
	must(t, s.RecordInbound(ctx, b, nil))
	if a.ID == 0 || b.ID == a.ID {
		t.Errorf("ids %d, %d", a.ID, b.ID)
	}
	list, err := s.InboundList(ctx, "", 0)
	must(t, err)
	if len(list) != 2 || list[0].ID != b.ID || string(list[1].Raw) != string(a.Raw) || list[1].MessageID != m.ID ||
		list[1].Events != 1 || !list[1].ReceivedAt.Equal(a.ReceivedAt) {
		t.Errorf("InboundList %+v", list)
	}
	if list, _ := s.InboundList(ctx, "bounce", 10); len(list) != 1 || list[0].ID != a.ID {
		t.Errorf("InboundList(bounce) %+v", list)
	}
	if _, err := s.Suppressed(ctx, "r@example.com", time.Now()); err != nil {
		t.Errorf("the inbound's hard bounce did not suppress: %v", err)
	}
}

func testWebhookEndpoints(t *testing.T, open func() ledger.Store) {
	s, ctl := open(), open()
	if _, err := s.Endpoint(ctx, "app"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("unknown endpoint: %v", err)
	}
	m := msg("m1")
	old := event(ledger.Open, m, "r@example.com")
	old.Time = time.Now().Add(-48 * time.Hour)
	recent := event(ledger.Click, m, "r@example.com")
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{old, recent}))
	// A new endpoint starts before the first event at or after since, or
	// after the last event when there is none.
	must(t, s.EnsureEndpoints(ctx, []string{"app", "fresh"}, time.Now().Add(-time.Hour)))
	must(t, s.EnsureEndpoints(ctx, []string{"late"}, time.Now().Add(time.Hour)))
	for name, want := range map[string]int64{"app": recent.Seq - 1, "fresh": recent.Seq - 1, "late": recent.Seq} {
		st, err := ctl.Endpoint(ctx, name)
		if err != nil || st.Cursor != want || st.Gen != 0 || st.Paused || st.Verified {
			t.Errorf("%s: %+v, %v; want cursor %d", name, st, err, want)
		}
	}
	// An existing endpoint keeps its state.
	commitOK(t, s, "app", recent.Seq)
	must(t, s.EnsureEndpoints(ctx, []string{"app"}, time.Now().Add(-72*time.Hour)))
	if st, _ := s.Endpoint(ctx, "app"); st.Cursor != recent.Seq {
		t.Errorf("EnsureEndpoints moved an existing cursor to %d", st.Cursor)
	}
	// A failure is stored with its retry state.
	now := time.Now().Round(0)
	d := ledger.Delivery{Cursor: recent.Seq, PendingLast: recent.Seq + 5, Attempts: 2, FirstFailure: now.Add(-time.Minute),
		NextAttempt: now.Add(time.Minute), LastAt: now, LastStatus: 503, LastError: "HTTP status 503", AddDead: 3}
	if ok, err := s.CommitDelivery(ctx, "app", 0, d); !ok || err != nil {
		t.Fatalf("CommitDelivery: %v, %v", ok, err)
	}
	st, _ := ctl.Endpoint(ctx, "app")
	if st.Cursor != d.Cursor || st.PendingLast != d.PendingLast || st.Attempts != 2 || !st.FirstFailure.Equal(d.FirstFailure) ||
		!st.NextAttempt.Equal(d.NextAttempt) || !st.LastAttempt.Equal(now) || st.LastStatus != 503 || st.LastError != d.LastError ||
		st.Dead != 3 || st.Paused {
		t.Errorf("after a failure: %+v", st)
	}
	// Another process pauses and verifies meanwhile; a commit keeps both.
	must(t, ctl.SetEndpointPaused(ctx, "app", true))
	must(t, ctl.SetEndpointVerification(ctx, "app", ledger.Verification{Verified: true}))
	if ok, err := s.CommitDelivery(ctx, "app", 0, ledger.Delivery{Cursor: recent.Seq, AddDead: 1}); !ok || err != nil {
		t.Fatalf("CommitDelivery: %v, %v", ok, err)
	}
	st, _ = s.Endpoint(ctx, "app")
	if !st.Paused || !st.Verified || st.Dead != 4 || st.PendingLast != 0 || !st.NextAttempt.IsZero() {
		t.Errorf("after a success while paused: %+v", st)
	}
	// Resuming cancels the wait for a retry.
	commitOK(t, s, "app", recent.Seq)
	if _, err := s.CommitDelivery(ctx, "app", 0, ledger.Delivery{Cursor: recent.Seq, NextAttempt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	must(t, ctl.SetEndpointPaused(ctx, "app", false))
	if st, _ := s.Endpoint(ctx, "app"); st.Paused || !st.NextAttempt.IsZero() {
		t.Errorf("after resume: %+v", st)
	}
	// 410 Gone pauses.
	if ok, _ := s.CommitDelivery(ctx, "app", 0, ledger.Delivery{Cursor: recent.Seq, Pause: true}); !ok {
		t.Error("Gone commit not applied")
	}
	if st, _ := s.Endpoint(ctx, "app"); !st.Paused {
		t.Errorf("Pause not stored: %+v", st)
	}
	// A replay moves the cursor back and voids commits of the older
	// generation.
	must(t, ctl.ReplayEndpoint(ctx, "app", 0))
	st, _ = s.Endpoint(ctx, "app")
	if st.Cursor != 0 || st.Gen != 1 || st.PendingLast != 0 || st.Attempts != 0 {
		t.Errorf("after replay: %+v", st)
	}
	if ok, err := s.CommitDelivery(ctx, "app", 0, ledger.Delivery{Cursor: recent.Seq}); ok || err != nil {
		t.Errorf("a commit of the old generation: applied %v, %v", ok, err)
	}
	if st, _ := s.Endpoint(ctx, "app"); st.Cursor != 0 {
		t.Errorf("voided commit moved the cursor to %d", st.Cursor)
	}
	for _, err := range []error{
		s.SetEndpointPaused(ctx, "nope", true), s.SetEndpointVerification(ctx, "nope", ledger.Verification{}), s.ReplayEndpoint(ctx, "nope", 0),
		func() error { _, err := s.PendingRequest(ctx, "nope"); return err }(),
		func() error { _, err := s.CommitDelivery(ctx, "nope", 0, ledger.Delivery{}); return err }(),
	} {
		if !errors.Is(err, ledger.ErrNotFound) {
			t.Errorf("unknown endpoint: %v, want ErrNotFound", err)
		}
	}
}

func testWebhookHistory(t *testing.T, open func() ledger.Store) {
	s := open()
	must(t, s.EnsureEndpoints(ctx, []string{"a", "b"}, time.Now()))
	now := time.Now().Round(0)
	old := now.Add(-10 * 24 * time.Hour)
	ancient := now.Add(-40 * 24 * time.Hour)
	var hist []ledger.Attempt
	for i, c := range []struct {
		at  time.Time
		res ledger.AttemptResult
	}{{ancient, ledger.AttemptDead}, {old, ledger.AttemptDead}, {old, ledger.AttemptDelivered}, {old, ledger.AttemptFailed},
		{now, ledger.AttemptGone}, {now, ledger.AttemptDelivered}} {
		hist = append(hist, ledger.Attempt{WebhookID: fmt.Sprint("w", i), FirstSeq: int64(i), LastSeq: int64(i + 1), Events: 2,
			Time: c.at, Result: c.res, Status: 200, Response: "ok", Error: ""})
	}
	// More than one statement's worth of rows in one commit.
	for i := range 120 {
		hist = append(hist, ledger.Attempt{WebhookID: fmt.Sprint("bulk", i), Time: now, Result: ledger.AttemptDelivered, Status: 204})
	}
	if ok, err := s.CommitDelivery(ctx, "a", 0, ledger.Delivery{Cursor: 7, History: hist}); !ok || err != nil {
		t.Fatalf("CommitDelivery: %v, %v", ok, err)
	}
	got, err := s.History(ctx, "a", 1000)
	must(t, err)
	if len(got) != len(hist) || got[0].WebhookID != "bulk119" || got[len(got)-1] != hist[0] {
		t.Errorf("History: %d rows, first %+v, last %+v", len(got), got[0], got[len(got)-1])
	}
	if b, _ := s.History(ctx, "b", 10); len(b) != 0 {
		t.Errorf("another endpoint's history: %v", b)
	}
	// Pruning keeps recent attempts and dead letters younger than
	// deadBefore.
	n, err := s.PruneHistory(ctx, now.Add(-7*24*time.Hour), now.Add(-30*24*time.Hour))
	if err != nil || n != 3 {
		t.Errorf("PruneHistory removed %d, %v; want 3", n, err)
	}
	got, _ = s.History(ctx, "a", 1000)
	var ids []string
	for _, a := range got[120:] {
		ids = append(ids, a.WebhookID)
	}
	if !slices.Equal(ids, []string{"w5", "w4", "w1"}) {
		t.Errorf("kept %v, want w5 w4 w1", ids)
	}
}

// commitOK commits a plain success that moves the cursor.
func commitOK(t *testing.T, s ledger.Store, name string, cursor int64) {
	t.Helper()
	st, err := s.Endpoint(ctx, name)
	must(t, err)
	if ok, err := s.CommitDelivery(ctx, name, st.Gen, ledger.Delivery{Cursor: cursor}); !ok || err != nil {
		t.Fatalf("CommitDelivery: %v, %v", ok, err)
	}
}

// testCursorOrdering is the ordering guarantee under concurrent writers,
// each its own handle as separate processes would be.
func testCursorOrdering(t *testing.T, open func() ledger.Store) {
	reader := open()
	var writers []ledger.Recorder
	for range 4 {
		writers = append(writers, open())
	}
	r, err := CursorOrdering(writers, reader, 150)
	if err != nil {
		t.Fatal(err)
	}
	if r.Missed > 0 || r.Twice > 0 || r.Seen != r.Written {
		t.Errorf("a cursor over Seq missed %d of %d events and saw %d twice (%d seen)", r.Missed, r.Written, r.Twice, r.Seen)
	}
}

// OrderingResult is what CursorOrdering saw.
type OrderingResult struct {
	Written, Seen int // events recorded, distinct events the cursor read
	Missed, Twice int // recorded events the cursor never read, or read more than once
}

// CursorOrdering records events through the writers concurrently, in
// batches of 1 to 7 events, while reading them through reader the way a
// webhook cursor does (the events after the last Seq seen), then reads
// once more after the last commit, and reports what the cursor missed. It
// is exported so that a test can show it catches a store that breaks the
// guarantee.
func CursorOrdering(writers []ledger.Recorder, reader ledger.EventReader, batches int) (OrderingResult, error) {
	var r OrderingResult
	m := msg("order")
	if err := writers[0].Record(ctx, []*ledger.Message{m}, nil); err != nil {
		return r, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := map[string]bool{}
	errc := make(chan error, len(writers))
	for w, rec := range writers {
		wg.Go(func() {
			for b := range batches {
				var evs []*ledger.Event
				for range 1 + (b+w)%7 {
					evs = append(evs, event(ledger.Open, m, fmt.Sprint("w", w, "@example.com")))
				}
				if err := rec.Record(ctx, nil, evs); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				for _, e := range evs {
					written[e.ID] = true
				}
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]int{}
	var cursor int64
	read := func() error {
		for {
			evs, err := reader.Events(ctx, ledger.Filter{AfterSeq: cursor, Limit: 50})
			if err != nil {
				return err
			}
			for _, e := range evs {
				if e.Seq <= cursor {
					return fmt.Errorf("Events(AfterSeq %d) returned seq %d", cursor, e.Seq)
				}
				seen[e.ID]++
				cursor = e.Seq
			}
			if len(evs) < 50 {
				return nil
			}
		}
	}
	deadline := time.After(2 * time.Minute)
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case err := <-errc:
			<-done
			return r, err
		case <-deadline:
			return r, errors.New("writers did not finish within 2 minutes")
		default:
		}
		if err := read(); err != nil {
			<-done
			return r, err
		}
	}
	select {
	case err := <-errc:
		return r, err
	default:
	}
	if err := read(); err != nil { // after the last commit
		return r, err
	}
	r.Written, r.Seen = len(written), len(seen)
	for id := range written {
		switch seen[id] {
		case 0:
			r.Missed++
		case 1:
		default:
			r.Twice++
		}
	}
	return r, nil
}

// testPrune: retention with a clock. Messages older than the horizon go
// with every event about them (even a recent open); events of no recorded
// message by their own time; returned mail by its arrival; suppressions
// never.
func testPrune(t *testing.T, open func() ledger.Store) {
	s := open()
	now := time.Now().Round(0)
	day := 24 * time.Hour
	old, fresh := msg("old"), msg("fresh")
	old.CreatedAt, fresh.CreatedAt = now.Add(-100*day), now.Add(-day)
	lateOpen := event(ledger.Open, old, "r@example.com")
	bounce := event(ledger.HardBounce, old, "dead@example.com")
	bounce.Time = now.Add(-99 * day)
	orphanOld := event(ledger.Open, &ledger.Message{ID: "never-recorded"}, "")
	orphanOld.Time = now.Add(-95 * day)
	orphanNew := event(ledger.Open, &ledger.Message{ID: "never-recorded"}, "")
	keep := event(ledger.Click, fresh, "r@example.com")
	must(t, s.Record(ctx, []*ledger.Message{old, fresh}, []*ledger.Event{lateOpen, bounce, orphanOld, orphanNew, keep}))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: now.Add(-40 * day), Kind: "bounce", Raw: []byte("old")}, nil))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: now.Add(-time.Hour), Kind: "bounce", Raw: []byte("new")}, nil))
	r := ledger.Retention{Messages: 90 * day, Inbound: 30 * day}
	p, err := s.Prune(ctx, r, now)
	must(t, err)
	if p.Messages != 1 || p.Events != 3 || p.Inbound != 1 {
		t.Errorf("pruned %+v, want 1 message, 3 events, 1 inbound", p)
	}
	if _, err := s.Message(ctx, "old"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("old message kept: %v", err)
	}
	evs, _ := s.Events(ctx, ledger.Filter{})
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{orphanNew.ID, keep.ID}) {
		t.Errorf("events kept %v, want the recent orphan and the fresh message's", ids)
	}
	if in, _ := s.InboundList(ctx, "", 0); len(in) != 1 || string(in[0].Raw) != "new" {
		t.Errorf("inbound kept %v", in)
	}
	if _, err := s.Suppressed(ctx, "dead@example.com", now); err != nil {
		t.Errorf("retention removed a suppression: %v", err)
	}
	if p, _ := s.Prune(ctx, r, now); p != (ledger.Pruned{}) {
		t.Errorf("second pass pruned %+v", p)
	}
	// Zero keeps forever.
	if p, _ := s.Prune(ctx, ledger.Retention{}, now.Add(1000*day)); p != (ledger.Pruned{}) {
		t.Errorf("zero retention pruned %+v", p)
	}
	// Many at once: each call is one bounded transaction.
	var many []*ledger.Message
	for i := range 1200 {
		m := msg(fmt.Sprint("bulk", i))
		m.CreatedAt = now.Add(-200 * day)
		many = append(many, m)
	}
	must(t, s.Record(ctx, many, nil))
	var total, calls int64
	for calls = 1; calls < 100; calls++ {
		p, err := s.Prune(ctx, r, now)
		must(t, err)
		if p.Messages == 0 {
			break
		}
		total += p.Messages
	}
	if total != 1200 || calls < 3 {
		t.Errorf("pruned %d of 1200 messages in %d calls; want all, in bounded transactions", total, calls-1)
	}
}

func testForget(t *testing.T, open func() ledger.Store) {
	s := open()
	alone, shared, other := msg("alone"), msg("shared"), msg("other")
	alone.Recipients, alone.To = []string{"Gone@Example.com"}, "Gone <gone@example.com>"
	shared.Recipients, shared.To = []string{"stay@example.com", "gone@example.com"}, "stay@example.com, gone@example.com"
	other.Recipients, other.To = []string{"stay@example.com"}, "stay@example.com"
	click := event(ledger.Click, alone, "gone@example.com")
	click.Detail.IP, click.Detail.UserAgent = "198.51.100.7", "Mozilla/5.0"
	sharedOpen := event(ledger.Open, shared, "gone@example.com")
	stayOpen := event(ledger.Open, shared, "stay@example.com")
	otherOpen := event(ledger.Open, other, "stay@example.com")
	unsub := event(ledger.Unsubscribe, shared, "gone@example.com")
	full := event(ledger.SoftBounce, other, "gone@example.com")
	full.Escalates, full.Detail.BounceReason = true, "mailboxfull"
	must(t, s.Record(ctx, []*ledger.Message{alone, shared, other}, []*ledger.Event{event(ledger.Processed, alone, ""),
		click, sharedOpen, stayOpen, otherOpen, unsub, full}))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: time.Now(), Kind: "bounce",
		Raw: []byte("Final-Recipient: rfc822; GONE@example.com\r\n")}, nil))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: time.Now(), Kind: "bounce", Raw: []byte("Final-Recipient: rfc822; stay@example.com")}, nil))
	// Two endpoints' pending requests: one holds the person's click, the
	// other only another recipient's open.
	must(t, s.EnsureEndpoints(ctx, []string{"a", "b"}, time.Now().Add(-time.Hour)))
	for name, ev := range map[string]*ledger.Event{"a": click, "b": otherOpen} {
		req := &ledger.Request{WebhookID: "w-" + name, ContentType: "application/json", Body: []byte("{}"), FirstSeq: ev.Seq,
			LastSeq: ev.Seq, Events: 1, EventIDs: []string{ev.ID}, Created: time.Now()}
		if ok, err := s.CommitDelivery(ctx, name, 0, ledger.Delivery{Cursor: ev.Seq - 1, PendingLast: ev.Seq, Attempts: 1, Request: req}); !ok || err != nil {
			t.Fatalf("CommitDelivery %s: %v, %v", name, ok, err)
		}
	}
	rep, err := s.Forget(ctx, " <Gone@example.com>")
	must(t, err)
	want := ledger.ForgetReport{Address: "gone@example.com", MessagesDeleted: 1, MessagesEdited: 1, Events: 5, Inbound: 1, Suppressed: true,
		WebhookRequests: 1}
	if rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	if _, err := s.Message(ctx, "alone"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("the person's own message kept: %v", err)
	}
	m, err := s.Message(ctx, "shared")
	must(t, err)
	if !slices.Equal(m.Recipients, []string{"stay@example.com"}) || m.To != "" {
		t.Errorf("shared message after forget: recipients %v, To %q", m.Recipients, m.To)
	}
	evs, _ := s.Events(ctx, ledger.Filter{})
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{stayOpen.ID, otherOpen.ID}) {
		t.Errorf("events kept %v, want only the other recipient's", ids)
	}
	if in, _ := s.InboundList(ctx, "", 0); len(in) != 1 || !strings.Contains(string(in[0].Raw), "stay@") {
		t.Errorf("inbound kept %v", in)
	}
	if _, err := s.Suppressed(ctx, "gone@example.com", time.Now()); err != nil {
		t.Errorf("the suppression went with the person: %v", err)
	}
	if c, _ := s.SoftBounces(ctx, "gone@example.com", time.Now()); len(c) != 0 {
		t.Errorf("the soft bounces counted for the person stay: %+v", c)
	}
	if _, err := s.PendingRequest(ctx, "a"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("the pending request holding the person's click stays: %v", err)
	}
	if r, err := s.PendingRequest(ctx, "b"); err != nil || r.WebhookID != "w-b" {
		t.Errorf("another recipient's pending request: %+v, %v", r, err)
	}
	if _, err := s.Forget(ctx, "not an address"); err == nil {
		t.Error("Forget of a non-address succeeded")
	}
}

// testBackup: a consistent copy while another handle writes.
func testBackup(t *testing.T, open func() ledger.Store) {
	s, w := open(), open()
	m := msg("m1")
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{event(ledger.Processed, m, "")}))
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		defer func() { done <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if w.Record(ctx, nil, []*ledger.Event{event(ledger.Open, m, "r@example.com")}) == nil {
				n++
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	path := filepath.Join(t.TempDir(), "backup.db")
	must(t, s.Backup(ctx, path))
	close(stop)
	written := <-done
	if err := s.Backup(ctx, path); err == nil {
		t.Error("Backup overwrote an existing file")
	}
	b, err := openBackup(path)
	must(t, err)
	defer b.Close()
	got, err := b.Message(ctx, "m1")
	if err != nil || got.Tag != m.Tag {
		t.Fatalf("backup's message: %v, %v", got, err)
	}
	evs, _ := b.Events(ctx, ledger.Filter{Limit: 100000})
	if len(evs) < 1 || len(evs) > written+1 {
		t.Errorf("backup holds %d events; %d were written while it ran", len(evs), written)
	}
	for i, e := range evs {
		if i > 0 && e.Seq <= evs[i-1].Seq {
			t.Fatal("backup's events out of order")
		}
	}
	if got.Opens != len(evs)-1 {
		t.Errorf("backup inconsistent: the message counts %d opens, %d open events", got.Opens, len(evs)-1)
	}
}

// testSoftBounceLimit: soft bounces marked Escalates from Limit different
// messages within Window suppress the address (soft_bounce_limit), never
// replacing a stronger entry; deferrals (not marked), one message twice
// and bounces older than the window do not count.
func testSoftBounceLimit(t *testing.T, open func() ledger.Store) {
	s := open()
	s.SetPolicy(ledger.Policy{SoftBounceLimit: 3, SoftBounceWindow: 14 * 24 * time.Hour})
	now := time.Now().Round(0)
	soft := func(m *ledger.Message, rcpt string, at time.Time, escalates bool) *ledger.Event {
		e := event(ledger.SoftBounce, m, rcpt)
		e.Time, e.Escalates, e.Detail.BounceReason = at, escalates, "mailboxfull"
		return e
	}
	var msgs []*ledger.Message
	for i := range 6 {
		msgs = append(msgs, msg(fmt.Sprint("sb", i)))
	}
	must(t, s.Record(ctx, msgs, nil))
	// Old, deferrals, and the same message twice: none reach the limit.
	must(t, s.Record(ctx, nil, []*ledger.Event{
		soft(msgs[0], "full@example.com", now.Add(-20*24*time.Hour), true),
		soft(msgs[1], "full@example.com", now.Add(-time.Hour), false),
		soft(msgs[2], "full@example.com", now.Add(-time.Hour), true),
		soft(msgs[2], "FULL@example.com", now.Add(-time.Minute), true),
		soft(msgs[3], "full@example.com", now, true),
	}))
	if sp, err := s.Suppressed(ctx, "full@example.com", now); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("suppressed below the limit: %+v, %v", sp, err)
	}
	if c, _ := s.SoftBounces(ctx, "full@example.com", now); len(c) != 2 || c[0].MessageID != "sb3" || c[0].BounceReason != "mailboxfull" {
		t.Errorf("counted %+v, want sb3 and sb2", c)
	}
	third := soft(msgs[4], "full@example.com", now, true)
	must(t, s.Record(ctx, nil, []*ledger.Event{third}))
	sp, err := s.Suppressed(ctx, "full@example.com", now)
	if err != nil || sp.Reason != ledger.ReasonSoftBounceLimit || sp.EventID != third.ID || sp.BounceReason != "mailboxfull" {
		t.Fatalf("at the limit: %+v, %v", sp, err)
	}
	// An unsubscribed address stays unsubscribed.
	must(t, s.Record(ctx, nil, []*ledger.Event{event(ledger.Unsubscribe, msgs[0], "left@example.com")}))
	for i := range 4 {
		must(t, s.Record(ctx, nil, []*ledger.Event{soft(msgs[i], "left@example.com", now, true)}))
	}
	if sp, _ := s.Suppressed(ctx, "left@example.com", now); sp == nil || sp.Reason != ledger.ReasonUnsubscribe {
		t.Errorf("the limit replaced an unsubscribe: %+v", sp)
	}
	// A hard bounce's entry carries its bounce reason.
	hb := event(ledger.HardBounce, msgs[5], "dead@example.com")
	hb.Detail.BounceReason = "userunknown"
	must(t, s.Record(ctx, nil, []*ledger.Event{hb}))
	if sp, _ := s.Suppressed(ctx, "dead@example.com", now); sp == nil || sp.BounceReason != "userunknown" || sp.Reason != ledger.ReasonHardBounce {
		t.Errorf("hard bounce entry %+v", sp)
	}
	// Different dead-looking reasons do not add up.
	for i, r := range []string{"mailboxfull", "expired", "suspend"} {
		e := soft(msgs[i], "mixed@example.com", now, true)
		e.Detail.BounceReason = r
		must(t, s.Record(ctx, nil, []*ledger.Event{e}))
	}
	if sp, err := s.Suppressed(ctx, "mixed@example.com", now); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("three different reasons reached a limit of 3: %+v", sp)
	}
	// A zero limit turns escalation off.
	s.SetPolicy(ledger.Policy{})
	for i := range 6 {
		must(t, s.Record(ctx, nil, []*ledger.Event{soft(msgs[i], "off@example.com", now, true)}))
	}
	if sp, err := s.Suppressed(ctx, "off@example.com", now); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("limit 0 suppressed: %+v", sp)
	}
}

func testEventAndInboundOf(t *testing.T, open func() ledger.Store) {
	s := open()
	m := msg("m1")
	e := event(ledger.HardBounce, m, "r@example.com")
	e.Detail.BounceReason = "userunknown"
	must(t, s.Record(ctx, []*ledger.Message{m}, nil))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: time.Now(), Kind: "bounce", MessageID: m.ID, Raw: []byte("dsn")}, []*ledger.Event{e}))
	must(t, s.RecordInbound(ctx, &ledger.Inbound{ReceivedAt: time.Now(), Kind: "unknown", Raw: []byte("junk")}, nil))
	got, err := s.Event(ctx, e.ID)
	if err != nil || got.Seq != e.Seq || got.Detail.BounceReason != "userunknown" || got.Type != ledger.HardBounce {
		t.Errorf("Event: %+v, %v", got, err)
	}
	if _, err := s.Event(ctx, "nope"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("missing event: %v", err)
	}
	if in, err := s.InboundOf(ctx, m.ID); err != nil || len(in) != 1 || string(in[0].Raw) != "dsn" {
		t.Errorf("InboundOf: %v, %v", in, err)
	}
}

// testEventNumbers: the store numbers each message's events and keeps its
// counters as of each event, across calls, handles, replays and messages
// recorded after their events.
func testEventNumbers(t *testing.T, open func() ledger.Store) {
	s, other := open(), open()
	m := msg("m1")
	proc, open1, click1, click2 := event(ledger.Processed, m, ""), event(ledger.Open, m, "r@example.com"),
		event(ledger.Click, m, "r@example.com"), event(ledger.Click, m, "r@example.com")
	must(t, s.Record(ctx, []*ledger.Message{m}, []*ledger.Event{proc, open1, click1}))
	// Another handle (process) continues the numbering; a replayed event
	// in the batch takes no number.
	deliv := event(ledger.Delivered, m, "r@example.com")
	replayed := *click1
	must(t, other.Record(ctx, nil, []*ledger.Event{&replayed, click2, deliv}))
	if replayed.MsgSeq != 0 {
		t.Errorf("a replayed event was numbered %d", replayed.MsgSeq)
	}
	// Events of a message not recorded yet (a spool replayed late) are
	// numbered too, and the message's later record changes nothing.
	late := msg("late")
	lopen := event(ledger.Open, late, "r@example.com")
	nomsg := event(ledger.Spam, &ledger.Message{}, "r@example.com")
	must(t, s.Record(ctx, nil, []*ledger.Event{lopen, nomsg}))
	must(t, s.Record(ctx, []*ledger.Message{late}, []*ledger.Event{event(ledger.Processed, late, "")}))
	type nums struct {
		seq           int64
		opens, clicks int
	}
	want := map[string]nums{proc.ID: {1, 0, 0}, open1.ID: {2, 1, 0}, click1.ID: {3, 1, 1}, click2.ID: {4, 1, 2},
		deliv.ID: {5, 1, 2}, lopen.ID: {1, 1, 0}, nomsg.ID: {0, 0, 0}}
	for _, e := range []*ledger.Event{proc, open1, click1, click2, deliv, lopen, nomsg} {
		if got := (nums{e.MsgSeq, e.Opens, e.Clicks}); got != want[e.ID] {
			t.Errorf("Record set %s %s to %+v, want %+v", e.Type, e.ID, got, want[e.ID])
		}
	}
	evs, err := s.Events(ctx, ledger.Filter{})
	must(t, err)
	seen := 0
	for _, e := range evs {
		w, ok := want[e.ID]
		if !ok {
			continue
		}
		seen++
		if got := (nums{e.MsgSeq, e.Opens, e.Clicks}); got != w {
			t.Errorf("read back %s %s as %+v, want %+v", e.Type, e.ID, got, w)
		}
	}
	if seen != len(want) {
		t.Errorf("read back %d of %d events", seen, len(want))
	}
	evs, _ = s.Events(ctx, ledger.Filter{MessageID: late.ID})
	if len(evs) != 2 || evs[1].MsgSeq != 2 || evs[1].Opens != 1 {
		t.Errorf("the late message's processed event: %+v", evs[len(evs)-1])
	}
}

// testWebhookRequests: a pending request is stored with a commit, read
// back byte for byte, kept while its batch is pending and dropped when it
// finishes or the endpoint is replayed.
func testWebhookRequests(t *testing.T, open func() ledger.Store) {
	s, ctl := open(), open()
	must(t, s.EnsureEndpoints(ctx, []string{"a", "b"}, time.Now()))
	if _, err := s.PendingRequest(ctx, "a"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("no pending request: %v, want ErrNotFound", err)
	}
	body := []byte("leadpush_events=%5B%7B%22event%22%3A%22open%22%7D%5D\x00\xff")
	req := &ledger.Request{WebhookID: "batch_1", ContentType: "application/x-www-form-urlencoded", Body: body,
		FirstSeq: 3, LastSeq: 9, Events: 2, EventIDs: []string{"e3", "e9"}, Created: time.Now().Round(0)}
	commit := func(d ledger.Delivery) {
		t.Helper()
		if ok, err := s.CommitDelivery(ctx, "a", 0, d); !ok || err != nil {
			t.Fatalf("CommitDelivery: %v, %v", ok, err)
		}
	}
	commit(ledger.Delivery{Cursor: 2, PendingLast: 9, Attempts: 1, Request: req})
	check := func(want *ledger.Request) {
		t.Helper()
		got, err := ctl.PendingRequest(ctx, "a")
		if want == nil {
			if !errors.Is(err, ledger.ErrNotFound) {
				t.Errorf("PendingRequest: %+v, %v; want ErrNotFound", got, err)
			}
			if st, _ := ctl.Endpoint(ctx, "a"); st.PendingID != "" {
				t.Errorf("PendingID %q, want none", st.PendingID)
			}
			return
		}
		if err != nil || got.WebhookID != want.WebhookID || got.ContentType != want.ContentType || string(got.Body) != string(want.Body) ||
			got.FirstSeq != want.FirstSeq || got.LastSeq != want.LastSeq || got.Events != want.Events ||
			!slices.Equal(got.EventIDs, want.EventIDs) || !got.Created.Equal(want.Created) {
			t.Errorf("PendingRequest: %+v, %v; want %+v", got, err, want)
		}
		if st, _ := ctl.Endpoint(ctx, "a"); st.PendingID != want.WebhookID {
			t.Errorf("PendingID %q, want %q", st.PendingID, want.WebhookID)
		}
	}
	check(req)
	if _, err := s.PendingRequest(ctx, "b"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("another endpoint's pending request: %v", err)
	}
	// A further failure of the same batch keeps it.
	commit(ledger.Delivery{Cursor: 2, PendingLast: 9, Attempts: 2})
	check(req)
	// Another request replaces it.
	req2 := &ledger.Request{WebhookID: "e10", ContentType: "application/json", Body: []byte(`{"event":{}}`), FirstSeq: 10,
		LastSeq: 10, Events: 1, Created: time.Now().Round(0)}
	commit(ledger.Delivery{Cursor: 9, PendingLast: 10, Attempts: 1, Request: req2})
	check(req2)
	// Success drops it.
	commit(ledger.Delivery{Cursor: 10})
	check(nil)
	// A replay drops it too.
	commit(ledger.Delivery{Cursor: 2, PendingLast: 9, Attempts: 1, Request: req})
	check(req)
	must(t, ctl.ReplayEndpoint(ctx, "a", 0))
	check(nil)
}

// testWebhookVerification: the outcome of a verification is kept with its
// reason and next attempt.
func testWebhookVerification(t *testing.T, open func() ledger.Store) {
	s, ctl := open(), open()
	must(t, s.EnsureEndpoints(ctx, []string{"a"}, time.Now()))
	now := time.Now().Round(0)
	v := ledger.Verification{Reason: "HEAD 405; test request 400", At: now, Next: now.Add(time.Minute)}
	must(t, ctl.SetEndpointVerification(ctx, "a", v))
	st, err := s.Endpoint(ctx, "a")
	must(t, err)
	if st.Verified || st.VerifyReason != v.Reason || !st.VerifiedAt.Equal(now) || !st.NextVerify.Equal(v.Next) {
		t.Errorf("after a failed verification: %+v", st)
	}
	must(t, ctl.SetEndpointVerification(ctx, "a", ledger.Verification{Verified: true, Reason: "HEAD 200", At: now}))
	st, _ = s.Endpoint(ctx, "a")
	if !st.Verified || st.VerifyReason != "HEAD 200" || !st.NextVerify.IsZero() {
		t.Errorf("after a pass: %+v", st)
	}
}

func testMessagesByID(t *testing.T, open func() ledger.Store) {
	s := open()
	var msgs []*ledger.Message
	var ids []string
	for i := range 1203 { // more than one query's worth in SQLite
		m := msg(fmt.Sprint("batch", i))
		m.Recipients, m.Subject = []string{fmt.Sprintf("r%d@example.com", i)}, fmt.Sprint("subject ", i)
		msgs, ids = append(msgs, m), append(ids, m.ID)
	}
	must(t, s.Record(ctx, msgs, nil))
	got, err := s.MessagesByID(ctx, append(append([]string{"", "never-recorded"}, ids...), ids[0], ids[1202]))
	must(t, err)
	if len(got) != len(ids) {
		t.Fatalf("%d messages, want %d", len(got), len(ids))
	}
	for i, id := range ids {
		m := got[id]
		if m == nil || m.Subject != fmt.Sprint("subject ", i) || len(m.Recipients) != 1 || m.Recipients[0] != fmt.Sprintf("r%d@example.com", i) {
			t.Fatalf("message %s: %+v", id, m)
		}
	}
	if _, ok := got["never-recorded"]; ok {
		t.Error("an id not recorded is in the map")
	}
	if got, err := s.MessagesByID(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("no ids: %v, %v", got, err)
	}
}
