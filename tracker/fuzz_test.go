package tracker

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

type discard struct{}

func (discard) Add(*ledger.Message, ...*ledger.Event) {}

// FuzzHandler drives random paths through the handler: never a panic,
// never a 5xx, a 404 reflects nothing, and a redirect only ever goes to a
// URL that was signed.
func FuzzHandler(f *testing.F) {
	kr := mustKeyring(f, testKeys...)
	id := token.NewMessageID()
	signed := map[string]bool{}
	for _, u := range []string{"https://example.com/a?b=c", "http://x.example/"} {
		tok := signWith(f, kr, token.Click, id, "a@example.com", u)
		signed[u] = true
		f.Add("GET", "/c/"+tok)
		f.Add("HEAD", "/c/"+tok)
		f.Add("GET", "/c/"+tok+"%0d%0aLocation: https://evil.example/")
	}
	for _, k := range []token.Kind{token.Open, token.Unsubscribe} {
		for _, rcpt := range []string{"", "a@example.com"} {
			tok := signWith(f, kr, k, id, rcpt, "")
			f.Add("GET", "/"+string(k)+"/"+tok)
			f.Add("POST", "/"+string(k)+"/"+tok)
			f.Add("GET", "/"+string(k)+"/"+tok+".gif")
		}
	}
	for _, p := range []string{"/", "/o/../../etc/passwd", "/o/%2e%2e/x", "/c/", "/u/\r\n", "/healthz", "/metrics", "/c//evil.example", "/c/..%2f"} {
		f.Add("GET", p)
	}
	s, err := New(Options{Keyring: kr, Recorder: discard{}, QueueSize: 64})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	// no Run: the queue fills and hits are dropped, which must not matter
	f.Fuzz(func(t *testing.T, method, path string) {
		switch method {
		case "GET", "HEAD", "POST", "PUT", "OPTIONS":
		default:
			method = "GET"
		}
		u := &url.URL{Path: path}
		r := &http.Request{Method: method, URL: u, RequestURI: u.RequestURI(), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, Host: "tracker.example",
			RemoteAddr: "192.0.2.1:1234", Body: http.NoBody}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		code := w.Code
		if code >= 500 && code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q: %d", method, path, code)
		}
		if code == http.StatusServiceUnavailable && !(method == "POST" && strings.HasPrefix(path, "/u/")) {
			t.Fatalf("%s %q: 503 outside unsubscribe", method, path)
		}
		if loc := w.Header().Get("Location"); loc != "" || (code >= 300 && code < 400) {
			if !signed[loc] {
				t.Fatalf("%s %q: redirect to unsigned %q", method, path, loc)
			}
		}
		if code == http.StatusNotFound && w.Body.String() != notFoundBody {
			t.Fatalf("%s %q: 404 body %q", method, path, w.Body)
		}
	})
}
