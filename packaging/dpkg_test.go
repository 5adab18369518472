package packaging

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDpkgInstall installs the package for real (dpkg -i, its maintainer
// scripts, sysusers.d, tmpfiles.d) on this host's Debian seen through a
// throwaway overlay, in private mount, network and pid namespaces, and
// follows the README with Debian's stock Postfix: main.cf.debian, Debian's
// chrooted master.cf, configure-instance.sh and postfix start as the postfix
// service runs them, leadpush-milter as user leadpush, the seed's example on
// port 25 (testdata/dpkg-install.sh). Nothing of the host changes: the
// overlay's upper layer is a tmpfs, and every process dies with the pid
// namespace.
func TestDpkgInstall(t *testing.T) {
	deb, _ := built(t)
	unshare := need(t, "unshare")
	need(t, "swaks")
	need(t, "smtp-sink")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI=true")
		}
		t.Skip("needs root (dpkg -i in an overlay)")
	}
	cmd := exec.Command(unshare, "--mount", "--net", "--pid", "--fork", "--mount-proc",
		"sh", "testdata/dpkg-install.sh", deb, t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == 3 {
		t.Skipf("cannot mount an overlay over / here: %s", stderr.String())
	}
	if err != nil {
		t.Fatalf("dpkg-install.sh: %v\n%s\n%s", err, out, stderr.String())
	}
	got := map[string]string{}
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "CHECK "); ok {
			k, v, _ := strings.Cut(rest, " ")
			got[k] = strings.TrimSpace(v)
		}
	}
	t.Logf("%s", out)
	for k, want := range map[string]string{
		"fresh":            "yes yes", // no /etc/leadpush, no /etc/postfix/main.cf before
		"user":             "leadpush:/var/lib/leadpush:/usr/sbin/nologin",
		"config":           "root:leadpush 640",
		"socketdir":        "leadpush:leadpush 755",
		"chroot":           "smtp/inet/chroot = y cleanup/unix/chroot = y",
		"milter-check":     "configuration ok",
		"setup":            "idempotent",
		"smtpd_milters":    "unix:/leadpush/milter.sock",
		"sent":             "1",
		"control-headers":  "0",
		"list-unsubscribe": "1",
		"recorded":         "1",
		"ledger-owner":     "leadpush",
	} {
		if got[k] != want {
			t.Errorf("%s: got %q, want %q", k, got[k], want)
		}
	}
}
