package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// TestStreamsInListings: messages show and filter by stream; a stream
// removed from the configuration is shown as unknown; suppressions take
// --stream in add, list, export, import and remove.
func TestStreamsInListings(t *testing.T) {
	cfg, store, _, _ := fixture(t)
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(b, "[[stream]]\nname = \"news\"\nkind = \"broadcast\"\n"...), 0o600)
	ctx := context.Background()
	news := &ledger.Message{ID: ledger.NewID(), Stream: "news", Subject: "N", Recipients: []string{"a@example.com"}, Tracking: "all", CreatedAt: time.Now()}
	gone := &ledger.Message{ID: ledger.NewID(), Stream: "oldstream", Subject: "G", Recipients: []string{"a@example.com"}, Tracking: "all", CreatedAt: time.Now()}
	if err := store.Record(ctx, []*ledger.Message{news, gone}, nil); err != nil {
		t.Fatal(err)
	}
	code, out, errs := ctl(cfg, "messages", "--stream", "news", "--json")
	if code != 0 || !strings.Contains(out, `"stream":"news"`) || strings.Contains(out, gone.ID) || len(jsonIDs(t, out)) != 1 {
		t.Fatalf("messages --stream news: %d %s %s", code, out, errs)
	}
	if _, out, _ = ctl(cfg, "messages"); !strings.Contains(out, "oldstream (unknown)") || !strings.Contains(out, "STREAM") {
		t.Errorf("messages: a removed stream not shown as unknown:\n%s", out)
	}
	if _, out, _ = ctl(cfg, "message", gone.ID); !strings.Contains(out, "oldstream (unknown)") {
		t.Errorf("message: %s", out)
	}

	for _, args := range [][]string{
		{"suppressions", "add", "--stream", "news", "--reason", "unsubscribe", "a@example.com"},
		{"suppressions", "add", "a@example.com"},
		{"suppressions", "add", "--stream", "@broadcast", "b@example.com"},
	} {
		if code, _, errs := ctl(cfg, args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
	}
	if code, _, errs := ctl(cfg, "suppressions", "add", "--stream", "nosuch", "c@example.com"); code == 0 || !strings.Contains(errs, "no such [[stream]]") {
		t.Errorf("add to an unknown stream: %d %s", code, errs)
	}
	// an entry of a stream since removed from the configuration
	store.Suppress(ctx, ledger.Suppression{Address: "d@example.com", Stream: "oldstream", Reason: ledger.ReasonUnsubscribe})
	_, out, _ = ctl(cfg, "suppressions", "list")
	for _, want := range []string{"SCOPE", "stream news", "all streams", "broadcast streams", "stream oldstream (unknown)"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if _, out, _ = ctl(cfg, "suppressions", "list", "--stream", "news", "--json"); strings.Count(out, "\n") != 1 || !strings.Contains(out, `"stream":"news"`) {
		t.Errorf("list --stream news: %s", out)
	}
	_, exp, _ := ctl(cfg, "suppressions", "export")
	if !strings.Contains(exp, "address,reason,created_at,expires_at,stream") || !strings.Contains(exp, ",news\n") || !strings.Contains(exp, ",*\n") {
		t.Errorf("export: %s", exp)
	}
	// remove one scope, then the rest
	if code, _, errs := ctl(cfg, "suppressions", "remove", "--stream", "news", "a@example.com"); code != 0 {
		t.Fatalf("remove --stream: %d %s", code, errs)
	}
	if list, _ := store.SuppressionsOf(ctx, "a@example.com", time.Now()); len(list) != 1 || list[0].Stream != ledger.ScopeAll {
		t.Errorf("after remove --stream news: %+v", list)
	}
	if code, _, _ := ctl(cfg, "suppressions", "remove", "--stream", "news", "a@example.com"); code == 0 {
		t.Errorf("removing an absent scope succeeded")
	}
	// import what export wrote, into an empty ledger's scopes; --stream for lines without one
	for _, a := range []string{"a@example.com", "b@example.com", "d@example.com"} {
		store.Unsuppress(ctx, a)
	}
	var o, e bytes.Buffer
	in := exp + "e@example.com,unsubscribe\n"
	if code := Main([]string{"-config", cfg, "suppressions", "import", "--stream", "news"}, strings.NewReader(in), &o, &e); code != 0 {
		t.Fatalf("import: %d %s", code, e.String())
	}
	got := map[string]string{}
	all, _ := store.Suppressions(ctx)
	for _, sp := range all {
		got[sp.Address+"/"+sp.Stream] = string(sp.Reason)
	}
	for _, k := range []string{"a@example.com/news", "a@example.com/", "b@example.com/@broadcast", "d@example.com/oldstream", "e@example.com/news"} {
		if _, ok := got[k]; !ok {
			t.Errorf("import: %s missing from %v", k, got)
		}
	}
}
