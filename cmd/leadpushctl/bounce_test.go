package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

func TestBounceClassify(t *testing.T) {
	f := "../../notify/bounce/testdata/postfix-5.1.1.eml"
	var out, errb bytes.Buffer
	raw, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	// No config, no ledger: classify touches neither.
	if code := Main([]string{"-config", "/nonexistent.toml", "bounce", "classify", f, "-"}, bytes.NewReader(raw), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), out.String())
	}
	for i, l := range lines {
		var got struct {
			File       string `json:"file"`
			Kind       string `json:"kind"`
			Recipients []struct {
				Address, Status, Class string
				BounceReason           string `json:"bounce_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatal(err)
		}
		if want := []string{f, "-"}[i]; got.File != want || got.Kind != "bounce" || len(got.Recipients) != 1 ||
			got.Recipients[0].Class != "hard" || got.Recipients[0].BounceReason != "userunknown" || got.Recipients[0].Status != "5.1.1" {
			t.Errorf("line %d: %s", i, l)
		}
	}
	if code := Main([]string{"bounce", "classify", "/nonexistent.eml"}, strings.NewReader(""), &out, &errb); code == 0 {
		t.Error("an unreadable file gave exit 0")
	}
}

// TestSuppressionsWhyAndBounces: after a DSN through ingest, "why" names
// the entry, the event, the message and the returned mail; "bounces"
// counts by domain and reason.
func TestSuppressionsWhyAndBounces(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "l.db")
	cfg := writeConfig(t, db)
	s, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	m := &ledger.Message{ID: "msg-1", QueueID: "4ABC", Recipients: []string{"nobody@example.net"}, MessageID: "<order-1234@app.example.com>",
		Tag: "welcome", Subject: "Hello", CreatedAt: time.Now()}
	if err := s.Record(context.Background(), []*ledger.Message{m}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile("../../notify/bounce/testdata/postfix-5.1.1.eml")
	if err != nil {
		t.Fatal(err)
	}
	// The sample's returned headers name the message's Message-ID.
	var out, errb bytes.Buffer
	if code := Main([]string{"-config", cfg, "ingest", "--recipient", "bounce@bounce.example.com"}, bytes.NewReader(raw), &out, &errb); code != 0 {
		t.Fatalf("ingest: exit %d: %s", code, errb.String())
	}
	s, _ = ledger.OpenSQLite(db)
	sp, err := s.Suppressed(context.Background(), "nobody@example.net", time.Now())
	s.Close()
	if err != nil {
		t.Fatalf("the DSN did not suppress its recipient (%s): %v", out.String(), err)
	}
	got := run(t, "-config", cfg, "suppressions", "why", "nobody@example.net")
	for _, want := range []string{"reason:", "hard_bounce", "userunknown", "event:", sp.EventID, "message:", "msg-1", "returned mail:"} {
		if !strings.Contains(got, want) {
			t.Errorf("why lacks %q:\n%s", want, got)
		}
	}
	var w whyJSON
	if err := json.Unmarshal([]byte(run(t, "-config", cfg, "suppressions", "why", "--json", "nobody@example.net")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Event == nil || w.Message == nil || len(w.Inbound) != 1 || w.Suppression.BounceReason != "userunknown" {
		t.Errorf("why --json: %+v", w)
	}
	if got := run(t, "-config", cfg, "bounces", "--since", "1d"); !strings.Contains(got, "example.net") || !strings.Contains(got, "userunknown") {
		t.Errorf("bounces:\n%s", got)
	}
	if code := Main([]string{"-config", cfg, "suppressions", "why", "other@example.net"}, strings.NewReader(""), &out, &errb); code == 0 {
		t.Error("why of an address not listed gave exit 0")
	}
}
