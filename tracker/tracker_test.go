package tracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
	"github.com/prometheus/client_golang/prometheus"
)

func TestPixel(t *testing.T) {
	e := newEnv(t, nil)
	id := e.addMessage("jane@example.com")
	tok := e.sign(token.Open, id, "jane@example.com", "")
	for _, suffix := range []string{"", ".gif", ".png", ".gif/extra"} {
		w := e.do(req{target: "/o/" + tok + suffix, ua: chromeUA, remote: "198.51.100.7:5555"})
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), pixel) {
			t.Fatalf("%q: got %d %q", suffix, w.Code, w.Body.Bytes())
		}
		h := w.Header()
		if h.Get("Content-Type") != "image/gif" || h.Get("Cache-Control") != "no-store, no-cache, must-revalidate, private" || h.Get("Content-Length") != "43" {
			t.Errorf("%q: headers %v", suffix, h)
		}
	}
	if len(pixel) != 43 {
		t.Errorf("pixel has %d bytes", len(pixel))
	}
	events := e.stop()
	if len(events) != 4 {
		t.Fatalf("got %d events, want 4", len(events))
	}
	ev := events[0]
	want := ledger.Detail{IP: "198.51.100.7", UserAgent: chromeUA, UAFamily: "Chrome", UAMajor: "120", Source: "tracker"}
	if ev.Type != ledger.Open || ev.MessageID != id || ev.Recipient != "jane@example.com" || ev.Detail != want || ev.ID == "" || ev.Time.IsZero() {
		t.Errorf("event %+v", ev)
	}
}

func TestClick(t *testing.T) {
	e := newEnv(t, nil)
	id := e.addMessage("jane@example.com")
	target := "https://shop.example/p?a=1&b=%20x#frag"
	tok := e.sign(token.Click, id, "jane@example.com", target)
	w := e.do(req{target: "/c/" + tok, ua: chromeUA})
	if w.Code != http.StatusFound || w.Header().Get("Location") != target || w.Header().Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("got %d %v", w.Code, w.Header())
	}
	events := e.stop()
	if got := types(events); !slices.Equal(got, []ledger.EventType{ledger.Open, ledger.Click}) {
		t.Fatalf("events %v", got)
	}
	if events[1].Detail.URL != target || events[0].Detail.URL != "" {
		t.Errorf("URLs: open %q click %q", events[0].Detail.URL, events[1].Detail.URL)
	}
}

func TestClickTargets(t *testing.T) {
	e := newEnv(t, nil)
	id := token.NewMessageID()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://example.com/", true},
		{"HTTPS://example.com/x", true},
		{"javascript:alert(1)", false},
		{"ftp://example.com/file", false},
		{"//evil.example/", false},
		{"http:///nohost", false},
		{"mailto:a@example.com", false},
		{"data:text/html,<script>", false},
		{"https://example.com/\r\nSet-Cookie: a=b", false},
		{"https://example.com/a b", false},
		{"", false},
	} {
		tok := e.sign(token.Click, id, "", tc.url)
		w := e.do(req{target: "/c/" + tok})
		if tc.ok != (w.Code == http.StatusFound) {
			t.Errorf("%q: got %d", tc.url, w.Code)
		}
		if !tc.ok && (w.Header().Get("Location") != "" || w.Body.String() != notFoundBody) {
			t.Errorf("%q: answered %v %q", tc.url, w.Header(), w.Body)
		}
	}
	// first good click: open + click; second: click only
	if got := types(e.stop()); !slices.Equal(got, []ledger.EventType{ledger.Open, ledger.Click, ledger.Click}) {
		t.Errorf("events %v", got)
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, nil)
	id := token.NewMessageID()
	open := e.sign(token.Open, id, "jane@example.com", "")
	click := e.sign(token.Click, id, "jane@example.com", "https://example.com/")
	unsub := e.sign(token.Unsubscribe, id, "jane@example.com", "")
	stranger := signWith(t, mustKeyring(t, token.NewKey("new")), token.Open, id, "jane@example.com", "")
	tampered := []byte(open)
	tampered[len(tampered)/2] ^= 1
	if tampered[len(tampered)/2] == '.' || tampered[len(tampered)/2] == '/' {
		tampered[len(tampered)/2] = 'A'
	}
	for _, tc := range []struct {
		name, method, target string
		code                 int
	}{
		{"root", "GET", "/", 404},
		{"unknown", "GET", "/x/" + open, 404},
		{"empty open", "GET", "/o/", 404},
		{"empty click", "GET", "/c/", 404},
		{"empty unsub", "GET", "/u/", 404},
		{"no slash", "GET", "/o", 404},
		{"short", "GET", "/o/AAAA", 404},
		{"bad base64", "GET", "/o/!!!!$$$$", 404},
		{"padding", "GET", "/o/" + open + "==", 404},
		{"oversized", "GET", "/o/" + strings.Repeat("A", 20000), 404},
		{"oversized token", "GET", "/c/" + strings.Repeat("A", token.MaxLen+1), 404},
		{"traversal", "GET", "/o/../../etc/passwd", 404},
		{"encoded traversal", "GET", "/o/%2e%2e/%2e%2e/etc/passwd", 404},
		{"encoded slash", "GET", "/c/..%2f..%2fetc%2fpasswd", 404},
		{"crlf", "GET", "/o/" + open[:10] + "%0d%0aSet-Cookie:%20a=b", 404},
		{"crlf click", "GET", "/c/" + click + "%0d%0aLocation:%20https://evil.example/", 404},
		{"nul", "GET", "/c/" + click + "%00", 404},
		{"click with suffix", "GET", "/c/" + click + ".gif", 404},
		{"click with slash", "GET", "/c/" + click + "/", 404},
		{"open token on click", "GET", "/c/" + open, 404},
		{"click token on open", "GET", "/o/" + click, 404},
		{"unsub token on open", "GET", "/o/" + unsub, 404},
		{"open token on unsub", "POST", "/u/" + open, 404},
		{"click token on unsub", "GET", "/u/" + click, 404},
		{"unknown key", "GET", "/o/" + stranger, 404},
		{"tampered", "GET", "/o/" + string(tampered), 404},
		{"truncated", "GET", "/o/" + open[:len(open)-2], 404},
		{"put pixel", "PUT", "/o/" + open, 405},
		{"post click", "POST", "/c/" + click, 405},
		{"delete unsub", "DELETE", "/u/" + unsub, 405},
		{"healthz is not public", "GET", "/healthz", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do(req{method: tc.method, target: tc.target, body: "List-Unsubscribe=One-Click"})
			if w.Code != tc.code {
				t.Fatalf("got %d, want %d", w.Code, tc.code)
			}
			h := w.Header()
			if h.Get("Location") != "" || h.Get("Set-Cookie") != "" || h.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Errorf("headers %v", h)
			}
			if tc.code == 404 && w.Body.String() != notFoundBody {
				t.Errorf("body %q", w.Body)
			}
		})
	}
	if events := e.stop(); len(events) != 0 {
		t.Errorf("recorded %v", types(events))
	}
}

func TestKeyRotation(t *testing.T) {
	oldOnly := mustKeyring(t, testKeys[1])
	id := token.NewMessageID()
	tok := signWith(t, oldOnly, token.Open, id, "a@example.com", "")
	// the ring still holds the retired key: honoured
	e := newEnv(t, nil)
	if w := e.do(req{target: "/o/" + tok}); w.Code != 200 {
		t.Errorf("retired key in ring: got %d", w.Code)
	}
	// the key has left the ring: refused
	e2 := newEnv(t, func(o *Options) { o.Keyring = mustKeyring(t, testKeys[0]) })
	if w := e2.do(req{target: "/o/" + tok}); w.Code != 404 {
		t.Errorf("dropped key: got %d", w.Code)
	}
	if n, n2 := len(e.stop()), len(e2.stop()); n != 1 || n2 != 0 {
		t.Errorf("recorded %d and %d events, want 1 and 0", n, n2)
	}
}

func TestHeadRecordsNothing(t *testing.T) {
	e := newEnv(t, nil)
	id := token.NewMessageID()
	for _, target := range []string{
		"/o/" + e.sign(token.Open, id, "a@example.com", "") + ".gif",
		"/c/" + e.sign(token.Click, id, "a@example.com", "https://example.com/"),
		"/u/" + e.sign(token.Unsubscribe, id, "a@example.com", ""),
		"/u/" + e.sign(token.Unsubscribe, id, "", ""),
		"/o/bad", "/healthz",
	} {
		get := e.do(req{target: target})
		head := e.do(req{method: "HEAD", target: target})
		if get.Code != head.Code {
			t.Errorf("%s: GET %d HEAD %d", target, get.Code, head.Code)
		}
		for _, k := range []string{"Content-Type", "Content-Length", "Cache-Control", "Location", "Content-Security-Policy"} {
			if get.Header().Get(k) != head.Header().Get(k) {
				t.Errorf("%s: %s: GET %q HEAD %q", target, k, get.Header().Get(k), head.Header().Get(k))
			}
		}
	}
	// only the three GETs of pixel and link recorded (open; click implies nothing more as opened)
	if got := types(e.stop()); !slices.Equal(got, []ledger.EventType{ledger.Open, ledger.Click}) {
		t.Errorf("recorded %v, want the GETs' open and click only", got)
	}
}

func TestUnsubscribe(t *testing.T) {
	e := newEnv(t, nil)
	id := e.addMessage("jane@example.com", "bob@example.com")
	tok := e.sign(token.Unsubscribe, id, "jane@example.com", "")
	multi := e.sign(token.Unsubscribe, id, "", "")

	// GET: a page, never an unsubscribe
	w := e.do(req{target: "/u/" + tok, ua: chromeUA})
	body := w.Body.String()
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET: %d %v", w.Code, w.Header())
	}
	for _, want := range []string{`<html lang="en">`, "<title>Unsubscribe</title>", `<form method="post">`, `<button type="submit">`, "jane@example.com"} {
		if !strings.Contains(body, want) {
			t.Errorf("GET page lacks %q:\n%s", want, body)
		}
	}
	checkSecurityHeaders(t, w.Header())
	// a message to several recipients: the page says honestly that it
	// cannot unsubscribe, and offers no form
	w = e.do(req{target: "/u/" + multi})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "sent to several people") || strings.Contains(w.Body.String(), "<form") {
		t.Errorf("GET page without recipient: %d\n%s", w.Code, w.Body)
	}

	for _, tc := range []struct {
		name, tok, body, ctype string
		code                   int
		contains               string
	}{
		{"form", tok, "confirm=1", "", 200, "jane@example.com has been unsubscribed"},
		{"empty form", tok, "", "", 200, "has been unsubscribed"},
		{"one-click", tok, "List-Unsubscribe=One-Click", "", 200, "unsubscribed\n"},
		{"one-click multipart", tok, "--XX\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XX--\r\n",
			"multipart/form-data; boundary=XX", 200, "unsubscribed\n"},
		// never success without doing it (RFC 8058 clients take non-2xx as failure)
		{"multi, no address", multi, "email=", "", 400, "unsubscribes nobody"},
		{"multi, recipient", multi, "email=Bob%40Example.com", "", 400, "unsubscribes nobody"},
		{"multi, stranger", multi, "email=eve%40example.com", "", 400, "unsubscribes nobody"},
		{"multi, one-click", multi, "List-Unsubscribe=One-Click", "", 400, "not unsubscribed"},
		{"oversized body", tok, "email=" + strings.Repeat("a", 10000), "", 400, "bad request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := e.do(req{method: "POST", target: "/u/" + tc.tok, body: tc.body, ctype: tc.ctype, ua: chromeUA})
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.contains) || w.Header().Get("Location") != "" {
				t.Fatalf("got %d %v %q", w.Code, w.Header(), w.Body)
			}
			if strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
				checkSecurityHeaders(t, w.Header())
			}
		})
	}
	events := e.stop()
	var got []string
	for _, ev := range events {
		if ev.Type != ledger.Unsubscribe || ev.MessageID != id || ev.DedupKey == "" || ev.Detail.Source != "tracker" {
			t.Errorf("event %+v", ev)
		}
		got = append(got, ev.Recipient+" "+ev.Detail.Reason)
	}
	want := []string{"jane@example.com page", "jane@example.com page", "jane@example.com one-click",
		"jane@example.com one-click"}
	if !slices.Equal(got, want) {
		t.Errorf("recorded %q, want %q", got, want)
	}
}

func checkSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k, v := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	} {
		if h.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, h.Get(k), v)
		}
	}
}

func TestUnsubscribeWithoutMessages(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Messages = nil })
	id := token.NewMessageID()
	w := e.do(req{method: "POST", target: "/u/" + e.sign(token.Unsubscribe, id, "", ""), body: "email=a%40example.com"})
	if w.Code != 400 {
		t.Fatalf("got %d", w.Code)
	}
	if events := e.stop(); len(events) != 0 {
		t.Errorf("recorded %v without a way to check the address", types(events))
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		anon    bool
		remote  string
		xff     []string
		want    string
	}{
		{"peer", nil, false, "203.0.113.9:4000", nil, "203.0.113.9"},
		{"untrusted peer ignores xff", trusted, false, "203.0.113.9:4000", []string{"198.51.100.1"}, "203.0.113.9"},
		{"no trust ignores xff", nil, false, "10.0.0.1:4000", []string{"198.51.100.1"}, "10.0.0.1"},
		{"trusted peer", trusted, false, "10.0.0.1:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"rightmost untrusted", trusted, false, "10.0.0.1:4000", []string{"1.1.1.1, 198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"several headers", trusted, false, "10.0.0.1:4000", []string{"1.1.1.1", "198.51.100.1", "10.0.0.2,10.0.0.3"}, "198.51.100.1"},
		{"all trusted", trusted, false, "10.0.0.1:4000", []string{"10.0.0.5, 10.0.0.2"}, "10.0.0.5"},
		{"garbage stops", trusted, false, "10.0.0.1:4000", []string{"198.51.100.1, <script>, 10.0.0.2"}, "10.0.0.2"},
		{"empty xff", trusted, false, "10.0.0.1:4000", []string{""}, "10.0.0.1"},
		{"xff with port", trusted, false, "10.0.0.1:4000", []string{"198.51.100.1:999"}, "198.51.100.1"},
		{"ipv6 peer", trusted, false, "[2001:db8::1]:4000", nil, "2001:db8::1"},
		{"ipv6 behind proxy", trusted, false, "[fd00::1]:4000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"mapped", nil, false, "[::ffff:198.51.100.4]:4000", nil, "198.51.100.4"},
		{"anon v4", nil, true, "203.0.113.9:4000", nil, "203.0.113.0"},
		{"anon v6", nil, true, "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:4000", nil, "2001:db8:aaaa::"},
		{"anon xff", trusted, true, "10.0.0.1:4000", []string{"198.51.100.77"}, "198.51.100.0"},
		{"bad remote", nil, false, "pipe", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.TrustedProxies, o.AnonymizeIP = tc.trusted, tc.anon })
			e.do(req{target: "/o/" + e.sign(token.Open, token.NewMessageID(), "", ""), remote: tc.remote, xff: tc.xff, ua: chromeUA})
			events := e.stop()
			if len(events) != 1 || events[0].Detail.IP != tc.want {
				t.Fatalf("got %+v, want IP %q", events, tc.want)
			}
		})
	}
}

func TestMachineFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    token.Kind
		ua      string
		remote  string
		created time.Duration // message created this long before the hit; 0: unknown message
		head    bool          // a HEAD from the same IP first
		want    string
	}{
		{"person open", token.Open, chromeUA, "", time.Hour, false, ""},
		{"person click", token.Click, chromeUA, "", time.Hour, false, ""},
		{"apple bare UA", token.Open, "Mozilla/5.0", "", 0, false, "apple mail privacy protection"},
		{"apple network", token.Open, chromeUA, "17.58.1.2:443", 0, false, "apple mail privacy protection"},
		{"apple network click is a person", token.Click, chromeUA, "17.58.1.2:443", 0, false, ""},
		{"bare UA click", token.Click, "Mozilla/5.0", "", 0, false, "security scanner"},
		{"gmail", token.Open, "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", "", 0, false, "gmail image proxy"},
		{"yahoo", token.Open, "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", "", 0, false, "yahoo mail proxy"},
		{"googlebot", token.Click, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", 0, false, "security scanner"},
		{"cubot phone is a person", token.Click, "Mozilla/5.0 (Linux; Android 10; CUBOT_X19) AppleWebKit/537.36 Chrome/99.0 Mobile Safari/537.36", "", 0, false, ""},
		{"mimecast", token.Click, "Mimecast-URL-Protect/1.0", "", 0, false, "security scanner"},
		{"proofpoint", token.Click, "Mozilla/5.0 proofpoint urldefense", "", 0, false, "security scanner"},
		{"barracuda", token.Click, "Barracuda Sentinel (EE)", "", 0, false, "security scanner"},
		{"headless", token.Click, "Mozilla/5.0 HeadlessChrome/120.0.0.0", "", 0, false, "security scanner"},
		{"preview", token.Click, "Mozilla/5.0 (compatible; LinkPreview)", "", 0, false, "security scanner"},
		{"curl", token.Open, "curl/8.0", "", 0, false, "security scanner"},
		{"empty", token.Open, "", "", 0, false, "empty user agent"},
		{"outlook open is a person", token.Open, "Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "", 0, false, ""},
		{"office link check", token.Click, "Microsoft Office Existence Discovery", "", 0, false, "microsoft office link check"},
		{"ms-office click", token.Click, "Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "", 0, false, "microsoft office link check"},
		{"head then get", token.Click, chromeUA, "", 0, true, "head before get"},
		{"head then get open", token.Open, chromeUA, "", 0, true, "head before get"},
		{"too soon", token.Open, chromeUA, "", 2 * time.Second, false, "too soon after sending"},
		{"not too soon", token.Open, chromeUA, "", 6 * time.Second, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
			e := newEnv(t, func(o *Options) { o.Now = func() time.Time { return now } })
			id := token.NewMessageID()
			if tc.created != 0 {
				e.msgs.m[id] = &ledger.Message{ID: id, Opens: 1, CreatedAt: now.Add(-tc.created)}
			}
			url := ""
			path := "/o/"
			if tc.kind == token.Click {
				url, path = "https://example.com/", "/c/"
			}
			target := path + e.sign(tc.kind, id, "a@example.com", url)
			remote := tc.remote
			if remote == "" {
				remote = "192.0.2.10:1000"
			}
			if tc.head {
				e.do(req{method: "HEAD", target: target, ua: tc.ua, remote: remote})
			}
			e.do(req{target: target, ua: tc.ua, remote: remote})
			events := e.stop()
			if len(events) == 0 {
				t.Fatal("nothing recorded")
			}
			ev := events[len(events)-1]
			if ev.Detail.MachineReason != tc.want || ev.Detail.Machine != (tc.want != "") {
				t.Errorf("got machine=%v %q, want %q", ev.Detail.Machine, ev.Detail.MachineReason, tc.want)
			}
		})
	}
}

func TestHeadFromOtherIPIsNotFlagged(t *testing.T) {
	e := newEnv(t, nil)
	target := "/c/" + e.sign(token.Click, e.addMessage("a@example.com"), "a@example.com", "https://example.com/")
	e.do(req{method: "HEAD", target: target, ua: chromeUA, remote: "192.0.2.1:1"})
	e.do(req{target: target, ua: chromeUA, remote: "192.0.2.2:1"})
	for _, ev := range e.stop() {
		if ev.Detail.Machine {
			t.Errorf("%s flagged %q", ev.Type, ev.Detail.MachineReason)
		}
	}
}

func TestFirstClickOpens(t *testing.T) {
	e := newEnv(t, nil)
	opened := e.addMessage("a@example.com")
	e.msgs.m[opened].Opens = 2
	fresh := e.addMessage("a@example.com")
	unknown := token.NewMessageID()
	pixelFirst := e.addMessage("a@example.com")
	modes := map[ledger.TrackingMode]string{}
	for _, m := range ledger.TrackingModes {
		modes[m] = e.addMessage("a@example.com")
		e.msgs.m[modes[m]].Tracking = m
	}
	click := func(id string) {
		if w := e.do(req{target: "/c/" + e.sign(token.Click, id, "a@example.com", "https://example.com/"), ua: chromeUA}); w.Code != 302 {
			t.Fatalf("click: %d", w.Code)
		}
	}
	click(fresh)
	click(fresh)
	click(opened)
	click(unknown)
	click(unknown)
	e.do(req{target: "/o/" + e.sign(token.Open, pixelFirst, "a@example.com", ""), ua: chromeUA})
	click(pixelFirst)
	for _, id := range modes {
		click(id)
	}
	events := e.stop()
	got := map[string][]ledger.EventType{}
	for _, ev := range events {
		got[ev.MessageID] = append(got[ev.MessageID], ev.Type)
	}
	for id, want := range map[string][]ledger.EventType{
		fresh:      {ledger.Open, ledger.Click, ledger.Click},
		opened:     {ledger.Click},
		unknown:    {ledger.Open, ledger.Click, ledger.Click},
		pixelFirst: {ledger.Open, ledger.Click},
		// seed 002: opens only when open tracking is on
		modes[ledger.TrackAll]:    {ledger.Open, ledger.Click},
		modes[ledger.TrackOpens]:  {ledger.Open, ledger.Click},
		modes[ledger.TrackClicks]: {ledger.Click},
		modes[ledger.TrackNone]:   {ledger.Click},
	} {
		if !slices.Equal(got[id], want) {
			t.Errorf("message %s: %v, want %v", id, got[id], want)
		}
	}
	if e.msgs.calls != 8 {
		t.Errorf("%d message lookups, want 8 (one per message)", e.msgs.calls)
	}
}

func TestQueueFull(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := &fakeRecorder{}
	s, err := New(Options{Keyring: mustKeyring(t, testKeys...), Recorder: rec, QueueSize: 1, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, s: s, h: s.Handler(), kr: mustKeyring(t, testKeys...)}
	// no Run: the queue never drains
	id := token.NewMessageID()
	for i := range 5 {
		w := e.do(req{target: "/o/" + e.sign(token.Open, id, "", "") + ".gif"})
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), pixel) {
			t.Fatalf("hit %d: %d", i, w.Code)
		}
	}
	w := e.do(req{method: "POST", target: "/u/" + e.sign(token.Unsubscribe, id, "a@example.com", ""), body: "List-Unsubscribe=One-Click"})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("unsubscribe with a full queue: %d %v", w.Code, w.Header())
	}
	if got := counterValue(t, reg, "leadpush_tracker_dropped_hits_total"); got != 5 {
		t.Errorf("dropped %v, want 5", got)
	}
	if got := counterValue(t, reg, "leadpush_tracker_queue_depth"); got != 1 {
		t.Errorf("queue depth %v, want 1", got)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t, nil)
	id := e.addMessage("a@example.com")
	e.do(req{target: "/o/" + e.sign(token.Open, id, "a@example.com", ""), ua: chromeUA})
	e.do(req{target: "/o/nope"})
	e.stop()

	for _, p := range []string{"/healthz", "/metrics"} {
		if w := e.do(req{target: p}); w.Code != http.StatusNotFound {
			t.Errorf("the public listener answered %s with %d", p, w.Code)
		}
	}
	if w := e.do(req{target: "/o/x.gif", admin: true}); w.Code != http.StatusNotFound {
		t.Errorf("the admin listener answered a pixel with %d", w.Code)
	}
	w := e.do(req{target: "/healthz", admin: true})
	var health struct {
		Status     string `json:"status"`
		QueueDepth *int   `json:"queue_depth"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &health); err != nil || w.Code != 200 || health.Status != "ok" || health.QueueDepth == nil {
		t.Errorf("healthz: %d %q %v", w.Code, w.Body, err)
	}
	w = e.do(req{target: "/metrics", admin: true})
	for _, want := range []string{
		`leadpush_tracker_hits_total{code="200",endpoint="open"} 1`,
		`leadpush_tracker_hits_total{code="404",endpoint="open"} 1`,
		`leadpush_tracker_events_total{machine="false",type="open"} 1`,
		`leadpush_tracker_dropped_hits_total 0`,
		`leadpush_tracker_queue_depth 0`,
		`leadpush_tracker_record_seconds_count 1`,
		`leadpush_tracker_ua_parse_seconds_count 1`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	kr := mustKeyring(t, testKeys...)
	reg := prometheus.NewRegistry()
	for _, tc := range []struct {
		name string
		opt  Options
	}{
		{"no keyring", Options{Recorder: &fakeRecorder{}}},
		{"no recorder", Options{Keyring: kr}},
	} {
		if _, err := New(tc.opt); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := New(Options{Keyring: kr, Recorder: &fakeRecorder{}, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Keyring: kr, Recorder: &fakeRecorder{}, Registry: reg}); err == nil {
		t.Error("second Server on one registry: no error")
	}
}

func TestNewHTTPServer(t *testing.T) {
	s := NewHTTPServer("127.0.0.1:0", http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes < token.MaxLen+1024 {
		t.Errorf("limits not set: %+v", s)
	}
}

func TestGenMapBounded(t *testing.T) {
	g := newGenMap[int](3)
	for i := range 100 {
		g.put(string(rune('a'+i%26))+string(rune('0'+i/26)), i)
		if len(g.cur) > 3 || len(g.old) > 3 {
			t.Fatalf("grew to %d+%d", len(g.cur), len(g.old))
		}
	}
	g.put("keep", 1)
	for i := range 5 {
		g.put(string(rune('A'+i)), i)
		if _, ok := g.get("keep"); !ok {
			t.Fatalf("lost a key in use after %d puts", i)
		}
	}
}

type failingMessages struct{ calls int }

func (f *failingMessages) Message(context.Context, string) (*ledger.Message, error) {
	f.calls++
	return nil, errors.New("database is locked")
}

func TestLookupFailure(t *testing.T) {
	fm := &failingMessages{}
	e := newEnv(t, func(o *Options) { o.Messages = fm })
	id := token.NewMessageID()
	for range 2 {
		e.do(req{target: "/c/" + e.sign(token.Click, id, "a@example.com", "https://example.com/"), ua: chromeUA})
	}
	e.do(req{method: "POST", target: "/u/" + e.sign(token.Unsubscribe, id, "", ""), body: "email=a%40example.com"})
	// clicks are recorded regardless; the first still implies an open; the
	// unverifiable unsubscribe is not
	if got := types(e.stop()); !slices.Equal(got, []ledger.EventType{ledger.Open, ledger.Click, ledger.Click}) {
		t.Errorf("recorded %v", got)
	}
	if fm.calls != 2 {
		t.Errorf("%d lookups, want 2 (failed lookups are retried)", fm.calls)
	}
}

func TestRunFlushesAtShutdown(t *testing.T) {
	rec := &fakeRecorder{}
	kr := mustKeyring(t, testKeys...)
	s, err := New(Options{Keyring: kr, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, s: s, h: s.Handler(), kr: kr}
	const hits = 2000 // several batches a worker
	for range hits {
		e.do(req{target: "/o/" + e.sign(token.Open, token.NewMessageID(), "", ""), ua: chromeUA})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx) // already cancelled: records what is queued and returns
	if n := len(rec.all()); n != hits {
		t.Errorf("flushed %d events, want %d", n, hits)
	}
	if rec.largest > maxHitBatch {
		t.Errorf("an Add held %d events, more than a batch (%d)", rec.largest, maxHitBatch)
	}
	if s.queueDepth() != 0 {
		t.Errorf("queue depth %d after Run", s.queueDepth())
	}
}

// A worker parses and classifies each user agent once and caches it: the
// second hit with the same user agent, of either kind, must come out as the
// first did had it been alone.
func TestUserAgentCacheKeepsRules(t *testing.T) {
	e := newEnv(t, nil)
	office := "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
	hits := []struct {
		kind token.Kind
		ua   string
		want string
	}{
		{token.Open, chromeUA, ""},
		{token.Open, office, ""}, // Outlook opening the mail is a person
		{token.Click, office, "microsoft office link check"},
		{token.Click, chromeUA, ""},
		{token.Click, "Mimecast-URL-Protect/1.0", "security scanner"},
		{token.Click, "Mimecast-URL-Protect/1.0", "security scanner"},
		{token.Open, office, ""},
		{token.Open, chromeUA, ""},
	}
	id := token.NewMessageID()
	for _, h := range hits {
		url, path := "", "/o/"
		if h.kind == token.Click {
			url, path = "https://example.com/", "/c/"
		}
		e.do(req{target: path + e.sign(h.kind, id, "a@example.com", url), ua: h.ua, remote: "192.0.2.10:1000"})
	}
	// the first hit is an open, so no click adds an open of its own
	evs := e.stop()
	if len(evs) != len(hits) {
		t.Fatalf("%d events, want %d: %v", len(evs), len(hits), types(evs))
	}
	for i, h := range hits {
		ev := evs[i]
		if ev.Detail.MachineReason != h.want {
			t.Errorf("hit %d (%s): machine reason %q, want %q", i, h.ua, ev.Detail.MachineReason, h.want)
		}
		if ev.Detail.UserAgent != h.ua {
			t.Errorf("hit %d: user agent %q, want %q", i, ev.Detail.UserAgent, h.ua)
		}
	}
	if evs[0].Detail.UAFamily != "Chrome" || evs[0].Detail.UAMajor == "" || evs[7].Detail.UAFamily != evs[0].Detail.UAFamily ||
		evs[7].Detail.UAMajor != evs[0].Detail.UAMajor {
		t.Errorf("Chrome parsed as %q %q, then %q %q", evs[0].Detail.UAFamily, evs[0].Detail.UAMajor,
			evs[7].Detail.UAFamily, evs[7].Detail.UAMajor)
	}
}

// A queue full of first clicks (each an open and a click: two events, so a
// batch holds 128 hits) is flushed whole at shutdown.
func TestRunFlushesFullQueueOfClicks(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := &fakeRecorder{}
	kr := mustKeyring(t, testKeys...)
	const queue = 1200
	s, err := New(Options{Keyring: kr, Recorder: rec, QueueSize: queue, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, s: s, h: s.Handler(), kr: kr}
	for range queue {
		e.do(req{target: "/c/" + e.sign(token.Click, token.NewMessageID(), "", "https://example.com/"), ua: chromeUA})
	}
	queued := s.queueDepth()
	if queued < queue/2 {
		t.Fatalf("only %d hits queued", queued)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx)
	if n := len(rec.all()); n != 2*queued {
		t.Errorf("flushed %d events, want %d (an open and a click for each of %d hits)", n, 2*queued, queued)
	}
}
