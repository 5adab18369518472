package main

import (
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/notify/webhook"
)

// An unverified endpoint gets a line with the reason and the next attempt.
func TestWriteWebhooksUnverified(t *testing.T) {
	next := time.Date(2026, 12, 2, 7, 0, 0, 0, time.Local)
	var b strings.Builder
	err := writeWebhooks(&b, []webhook.EndpointStatus{
		{Name: "ok", Format: "batch", Verified: true, VerifyReason: "HEAD 200", URL: "http://a.example/"},
		{Name: "app", Format: "json", Backlog: 12, VerifyReason: "HEAD answered 405; test request answered 400", NextVerify: next,
			URL: "http://b.example/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "app: unverified, 12 events wait: HEAD answered 405; test request answered 400; next attempt 2026-12-02 07:00:00\n"
	if !strings.HasSuffix(b.String(), want) || strings.Contains(b.String(), "ok: unverified") {
		t.Errorf("output:\n%s\nwant it to end with\n%s", b.String(), want)
	}
}
