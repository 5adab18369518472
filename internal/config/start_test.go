package config

import (
	"strings"
	"testing"
	"time"
)

func TestWebhookStart(t *testing.T) {
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		start string
		want  time.Time
		err   bool
	}{
		{"", now, false},
		{"end", now, false},
		{"beginning", time.Unix(0, 0), false},
		{"2026-11-01T00:00:00Z", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
	} {
		w := Webhook{URL: "https://example.com/h", Secret: "s", Start: tc.start}
		got, err := w.StartTime(now)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("start %q: %v, %v", tc.start, got, err)
		}
		if verr := w.Validate(); (verr != nil) != tc.err || tc.err && !strings.Contains(verr.Error(), "start") {
			t.Errorf("start %q: Validate %v", tc.start, verr)
		}
	}
	if _, err := Parse("[maillog]\npending_max_age = \"10ms\"\n"); err == nil || !strings.Contains(err.Error(), "maillog.pending_max_age") {
		t.Errorf("pending_max_age 10ms: %v", err)
	}
}
