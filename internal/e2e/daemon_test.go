package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestLeadpushdWithoutTracking: with no tracking keys leadpushd still runs
// (log follower, webhooks) and serves only /healthz and /metrics.
func TestLeadpushdWithoutTracking(t *testing.T) {
	dir := t.TempDir()
	e := &env{dir: dir, cfg: filepath.Join(dir, "leadpush.toml")}
	addr := freeAddr(t)
	os.WriteFile(e.cfg, []byte(fmt.Sprintf("[store]\npath = %q\n[tracker]\nlisten = %q\n", filepath.Join(dir, "l.db"), addr)), 0o600)
	e.startDaemon(t, "leadpushd")
	waitHTTP(t, "http://"+addr+"/healthz")
	for path, want := range map[string]int{"/metrics": 200, "/o/anything.gif": 404, "/c/x": 404} {
		r, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, r.StatusCode, want)
		}
	}
}
