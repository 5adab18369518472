// Package browsertest starts Debian's headless Chromium for tests, driven
// by chromedp.
package browsertest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Chromium is where Debian's chromium package puts the browser.
const Chromium = "/usr/bin/chromium"

// Require skips the test when path is missing, except under CI=true,
// where that is a failure (scripts/deps.sh installs it).
func Require(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (scripts/deps.sh installs it): %v", path, err)
		}
		t.Skipf("no %s; skipping", path)
	}
}

// New starts headless Chromium with a fresh profile and returns a tab
// context that ends with the test, or after timeout. The flags keep
// Chromium from reaching out to the network on its own: only loopback is
// reachable here, and its background connections would be refused.
func New(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	Require(t, Chromium)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(Chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		// its singleton socket directory (org.chromium.Chromium.*) goes
		// to TMPDIR and stays there when the browser is killed
		chromedp.Env("TMPDIR="+t.TempDir()),
	)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	return bctx
}
