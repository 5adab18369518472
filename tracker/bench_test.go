package tracker

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/leadpush/leadpush/token"
)

func benchServer(b *testing.B) (*Server, *token.Keyring) {
	kr := mustKeyring(b, testKeys...)
	s, err := New(Options{Keyring: kr, Recorder: discard{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return s, kr
}

func benchHandler(b *testing.B, target string, want int) {
	s, _ := benchServer(b)
	h := s.Handler()
	r := httptest.NewRequest("GET", target, nil)
	r.Header.Set("User-Agent", chromeUA)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			b.Fatalf("got %d", w.Code)
		}
	}
}

// BenchmarkPixel measures the request path of an open: verify, answer,
// queue (recording runs in the background, as in production).
func BenchmarkPixel(b *testing.B) {
	kr := mustKeyring(b, testKeys...)
	benchHandler(b, "/o/"+signWith(b, kr, token.Open, token.NewMessageID(), "jane@example.com", "")+".gif", 200)
}

// BenchmarkClick measures the request path of a click redirect.
func BenchmarkClick(b *testing.B) {
	kr := mustKeyring(b, testKeys...)
	benchHandler(b, "/c/"+signWith(b, kr, token.Click, token.NewMessageID(), "jane@example.com",
		"https://shop.example.com/products/42?utm_source=newsletter&utm_medium=email"), 302)
}
