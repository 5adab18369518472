package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeadpushdWithoutTracking: with no tracking keys leadpushd still runs
// (log follower, webhooks): its public listener answers 404 to everything,
// /healthz and /metrics included, which only the admin listener serves.
func TestLeadpushdWithoutTracking(t *testing.T) {
	dir := t.TempDir()
	e := &env{dir: dir, cfg: filepath.Join(dir, "leadpush.toml")}
	addr, admin := freeAddr(t), freeAddr(t)
	os.WriteFile(e.cfg, []byte(fmt.Sprintf("[store]\npath = %q\n[tracker]\nlisten = %q\n[admin]\nlisten = %q\n", filepath.Join(dir, "l.db"), addr, admin)), 0o600)
	e.startDaemon(t, "leadpushd")
	waitHTTP(t, "http://"+admin+"/healthz")
	for url, want := range map[string]int{"http://" + admin + "/metrics": 200, "http://" + addr + "/metrics": 404, "http://" + addr + "/healthz": 404,
		"http://" + addr + "/o/anything.gif": 404, "http://" + addr + "/c/x": 404} {
		r, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", url, r.StatusCode, want)
		}
	}
}

// TestCheckConfig: each program validates the shared file and exits: 0
// when it is good, non-zero with the bad key's name when it is not.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(good, []byte("[store]\npath = \"/tmp/x.db\"\n"), 0o600)
	os.WriteFile(bad, []byte("[milter]\nlisten = \"unix:/x\"\nlisen = \"typo\"\n"), 0o600)
	for _, prog := range []string{"leadpush-milter", "leadpushd", "leadpushctl"} {
		out, err := exec.Command(filepath.Join(bin, prog), "-config", good, "-check-config").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "configuration ok") {
			t.Errorf("%s -check-config on a good file: %v %s", prog, err, out)
		}
		out, err = exec.Command(filepath.Join(bin, prog), "-config", bad, "-check-config").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "unknown key milter.lisen") {
			t.Errorf("%s -check-config on a bad file: %v %s", prog, err, out)
		}
	}
}
