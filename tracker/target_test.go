package tracker

import (
	"net/http"
	"testing"

	"github.com/leadpush/leadpush/linkurl"
	"github.com/leadpush/leadpush/token"
)

// TestRewrittenLinksRedirect: every href the rewriter tracks (it asks
// linkurl.Target) is redirected, not refused with 404, and to the URL a
// browser would have followed. The first two are hrefs that once were
// tracked and then refused.
func TestRewrittenLinksRedirect(t *testing.T) {
	e := newEnv(t, nil)
	id := token.NewMessageID()
	for _, tc := range []struct{ href, location string }{
		{"https://www.example.com/offer?id=1#EmailAddr\r\n#", "https://www.example.com/offer?id=1#EmailAddr#"},
		{"http://www.codeweavers.com/ target=", "http://www.codeweavers.com/%20target="},
		{"\r\n  https://www.example.com/a?b=1\t&c=2 \r\n", "https://www.example.com/a?b=1&c=2"},
		{"https://www.example.com/long/\r\npath", "https://www.example.com/long/path"},
	} {
		u, ok := linkurl.Target(tc.href)
		if !ok {
			t.Errorf("%q: not tracked", tc.href)
			continue
		}
		w := e.do(req{target: "/c/" + e.sign(token.Click, id, "", u)})
		if w.Code != http.StatusFound || w.Header().Get("Location") != tc.location {
			t.Errorf("%q: got %d to %q, want 302 to %q", tc.href, w.Code, w.Header().Get("Location"), tc.location)
		}
	}
	e.stop()
}
