package tracker

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/leadpush/leadpush/internal/browsertest"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// TestBrowser has a real browser load a tracked message: the pixel loads,
// the link lands on the original URL, the unsubscribe page's button works.
func TestBrowser(t *testing.T) {
	ctx := browsertest.New(t, 60*time.Second)
	e := newEnv(t, nil)
	tracker := httptest.NewServer(e.h)
	defer tracker.Close()
	landing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>Landing</title><p id="landed">landed</p></html>`)
	}))
	defer landing.Close()
	target := landing.URL + "/product?id=42"

	id := e.addMessage("jane@example.com")
	pixelURL := tracker.URL + "/o/" + e.sign(token.Open, id, "jane@example.com", "") + ".gif"
	clickURL := tracker.URL + "/c/" + e.sign(token.Click, id, "jane@example.com", target)
	unsubURL := tracker.URL + "/u/" + e.sign(token.Unsubscribe, id, "jane@example.com", "")
	mail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html lang="en"><title>Newsletter</title>
<p>Hello Jane, <a id="link" href="%s">see our offer</a>.</p>
<img id="px" src="%s" width="1" height="1" alt="">
</html>`, clickURL, pixelURL)
	}))
	defer mail.Close()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(mail.URL),
		chromedp.Poll[chromedp.Void](`document.getElementById("px").complete && document.getElementById("px").naturalWidth === 1`,
			chromedp.WithPollingTimeout(10*time.Second)),
	); err != nil {
		t.Fatalf("pixel did not load: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("link")),
		chromedp.WaitVisible(chromedp.ID("landed")),
	); err != nil {
		t.Fatalf("click: %v", err)
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || loc != target {
		t.Fatalf("landed on %q (%v), want %q", loc, err, target)
	}
	// CSS selectors: a plain string is a DOM search, which also matches
	// the word "button" in the page's <style>
	if err := chromedp.Do(ctx,
		chromedp.Navigate(unsubURL),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[role="status"]`)),
	); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`[role="status"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "jane@example.com has been unsubscribed") {
		t.Errorf("unsubscribe page says %q", status)
	}

	got := byType(e.stop())
	if len(got[ledger.Open]) != 1 || len(got[ledger.Click]) != 1 || len(got[ledger.Unsubscribe]) != 1 {
		t.Fatalf("recorded opens %d clicks %d unsubscribes %d, want 1 each",
			len(got[ledger.Open]), len(got[ledger.Click]), len(got[ledger.Unsubscribe]))
	}
	for _, ev := range []*ledger.Event{got[ledger.Open][0], got[ledger.Click][0]} {
		d := ev.Detail
		if d.UAFamily != "HeadlessChrome" && d.UAFamily != "Chrome" {
			t.Errorf("%s: UA family %q (%q)", ev.Type, d.UAFamily, d.UserAgent)
		}
		if _, err := strconv.Atoi(d.UAMajor); err != nil {
			t.Errorf("%s: UA major %q", ev.Type, d.UAMajor)
		}
		if d.IP != "127.0.0.1" {
			t.Errorf("%s: IP %q", ev.Type, d.IP)
		}
	}
	if u := got[ledger.Click][0].Detail.URL; u != target {
		t.Errorf("click URL %q", u)
	}
	if r := got[ledger.Unsubscribe][0].Recipient; r != "jane@example.com" {
		t.Errorf("unsubscribe recipient %q", r)
	}
}
