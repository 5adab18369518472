package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPostfixSetup runs "leadpushctl postfix setup" against a scratch copy
// of Debian's stock Postfix configuration with the real postconf: the plan
// alone changes nothing, --apply makes it, a second run has nothing to do.
func TestPostfixSetup(t *testing.T) {
	const mainCF, masterCF = "/usr/share/postfix/main.cf.debian", "/usr/share/postfix/master.cf.dist"
	for _, p := range []string{mainCF, masterCF, "/usr/sbin/postconf"} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%v under CI=true: run scripts/deps.sh", err)
			}
			t.Skip(err)
		}
	}
	dir := t.TempDir()
	pf := filepath.Join(dir, "postfix")
	if err := os.Mkdir(pf, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{mainCF: "main.cf", masterCF: "master.cf"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pf, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	backdate := func() {
		old := time.Now().Add(-10 * time.Second)
		for _, f := range []string{"main.cf", "master.cf"} {
			os.Chtimes(filepath.Join(pf, f), old, old)
		}
	}
	backdate()
	cfg := filepath.Join(dir, "leadpush.toml")
	if err := os.WriteFile(cfg, []byte(`
[milter]
listen = "unix:/var/spool/postfix/leadpush/milter.sock"
[tracking]
keys = ["k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
[bounce]
domain = "bounce.example.com"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(append([]string{"-config", cfg, "postfix", "setup", "-c", pf, "--leadpushctl", "/usr/bin/leadpushctl"}, args...), nil, &out, &errb)
		if code != 0 {
			t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
		}
		backdate()
		return out.String()
	}
	before, _ := os.ReadFile(filepath.Join(pf, "main.cf"))
	plan := run()
	for _, want := range []string{
		"chrooted in /var/spool/postfix",
		"postconf -e 'smtpd_milters = unix:/leadpush/milter.sock'",
		"argv=/usr/bin/leadpushctl -config " + cfg + " ingest --recipient ${recipient}",
		"--apply",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(pf, "main.cf")); !bytes.Equal(before, after) {
		t.Errorf("main.cf changed without --apply")
	}
	if out := run("--apply"); !strings.Contains(out, "done") {
		t.Errorf("--apply:\n%s", out)
	}
	got, err := exec.Command("/usr/sbin/postconf", "-c", pf, "-h", "smtpd_milters").Output()
	if err != nil || strings.TrimSpace(string(got)) != "unix:/leadpush/milter.sock" {
		t.Errorf("smtpd_milters after --apply = %q, %v", got, err)
	}
	if out := run("--apply"); !strings.Contains(out, "nothing to do") {
		t.Errorf("second run:\n%s", out)
	}
}
