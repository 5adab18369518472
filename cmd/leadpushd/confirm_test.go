package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// TestConfirmMailer: the confirmation mail reaches the MTA with the link,
// untracked (X-Leadpush-Tracking: none) and marked auto-generated.
func TestConfirmMailer(t *testing.T) {
	sink := postfixlab.NewSink(t)
	m := confirmMailer{from: "unsubscribe@example.com", submit: sink.Addr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	link := "https://t.example.com/u/TOKEN"
	if err := m.SendConfirmation(ctx, "bob@example.com", link); err != nil {
		t.Fatal(err)
	}
	got := sink.WaitFor(t, func(r postfixlab.Received) bool { return true }, 5*time.Second)
	data := string(got.Data)
	if got.From != "unsubscribe@example.com" || len(got.To) != 1 || got.To[0] != "bob@example.com" {
		t.Errorf("envelope %q -> %v", got.From, got.To)
	}
	for _, want := range []string{link, "X-Leadpush-Tracking: none", "Auto-Submitted: auto-generated", "To: bob@example.com", "List-Unsubscribe: <" + link + ">"} {
		if !strings.Contains(data, want) {
			t.Errorf("mail lacks %q:\n%s", want, data)
		}
	}
	if err := m.SendConfirmation(ctx, "bob@example.com\r\nBcc: x@example.com", link); err == nil {
		t.Errorf("an address with a line break was sent")
	}
}
