// Package packaging holds the Debian package's files (nfpm.yaml, man pages,
// maintainer scripts) and this test, which builds the package with
// scripts/deb.sh and checks it with the real dpkg-deb, lintian, man and
// systemd-analyze.
package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const version = "1.2.3~test"

// The package is built once for all tests of this binary.
var build struct {
	once      sync.Once
	dir       string // removed by TestMain
	deb, root string // the .deb and where it is extracted
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// built builds leadpush_1.2.3~test_amd64.deb with scripts/deb.sh and
// extracts it (dpkg-deb -x); it returns both paths.
func built(t *testing.T) (deb, root string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the package")
	}
	dpkgDeb := need(t, "dpkg-deb")
	build.once.Do(func() {
		if build.dir, build.err = os.MkdirTemp("", "leadpush-deb-test-"); build.err != nil {
			return
		}
		os.Chmod(build.dir, 0o755) // the extracted programs run as other users too
		cmd := exec.Command("../scripts/deb.sh")
		cmd.Env = append(os.Environ(), "VERSION="+version, "OUT="+build.dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			build.err = fmt.Errorf("scripts/deb.sh: %v\n%s", err, stderr.String())
			return
		}
		build.deb = strings.TrimSpace(string(out))
		build.root = filepath.Join(build.dir, "root")
		if out, err := exec.Command(dpkgDeb, "-x", build.deb, build.root).CombinedOutput(); err != nil {
			build.err = fmt.Errorf("dpkg-deb -x: %v: %s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.deb, build.root
}

// need returns the path of a tool, skipping the test without it (a failure
// under CI=true: scripts/deps.sh installs them).
func need(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, name)); serr == nil {
				return filepath.Join(d, name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: run scripts/deps.sh", name)
		}
		t.Skipf("%s not installed (scripts/deps.sh)", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	c := exec.Command(name, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// TestDeb builds leadpush_1.2.3~test_amd64.deb and checks what a sysadmin
// gets: the files, the conffile, the programs' versions, a packaged config
// that validates once its placeholders are filled, man pages without
// warnings, units scoring OK in systemd-analyze security, and lintian
// without errors or unexplained warnings.
func TestDeb(t *testing.T) {
	dpkgDeb, lintian, sa, man := need(t, "dpkg-deb"), need(t, "lintian"), need(t, "systemd-analyze"), need(t, "man")
	deb, root := built(t)
	if want := "leadpush_" + version + "_amd64.deb"; filepath.Base(deb) != want {
		t.Fatalf("deb.sh printed %q, want a file named %q", deb, want)
	}

	// dpkg -c: programs, units, man pages, conffile, sysusers, tmpfiles.
	var files []string
	for line := range strings.SplitSeq(run(t, dpkgDeb, "-c", deb), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && !strings.HasSuffix(f[5], "/") {
			files = append(files, strings.TrimPrefix(f[5], "."))
			if f[1] != "root/root" {
				t.Errorf("%s owned by %s", f[5], f[1])
			}
		}
	}
	for _, want := range []string{
		"/usr/bin/leadpush-milter", "/usr/bin/leadpushd", "/usr/bin/leadpushctl",
		"/lib/systemd/system/leadpush-milter.service", "/lib/systemd/system/leadpushd.service",
		"/usr/lib/sysusers.d/leadpush.conf", "/usr/lib/tmpfiles.d/leadpush.conf",
		"/usr/share/man/man8/leadpush-milter.8.gz", "/usr/share/man/man8/leadpushd.8.gz",
		"/usr/share/man/man8/leadpushctl.8.gz", "/usr/share/man/man5/leadpush.toml.5.gz",
		"/etc/leadpush/leadpush.toml", "/usr/share/doc/leadpush/copyright", "/usr/share/doc/leadpush/changelog.gz",
	} {
		if !slices.Contains(files, want) {
			t.Errorf("dpkg -c lacks %s", want)
		}
	}
	if got := run(t, dpkgDeb, "-f", deb, "Package", "Version", "Architecture"); got != "Package: leadpush\nVersion: "+version+"\nArchitecture: amd64\n" {
		t.Errorf("control fields:\n%s", got)
	}
	ctl := t.TempDir()
	run(t, dpkgDeb, "-e", deb, ctl)
	if b, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/leadpush/leadpush.toml" {
		t.Errorf("conffiles = %q", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, _ := os.ReadFile(filepath.Join(ctl, s))
		if bytes.Contains(b, []byte("postconf")) || bytes.Contains(b, []byte("/etc/postfix")) {
			t.Errorf("%s touches Postfix's configuration", s)
		}
	}

	for _, p := range []string{"leadpush-milter", "leadpushd", "leadpushctl"} {
		got := run(t, filepath.Join(root, "usr/bin", p), "--version")
		if !strings.HasPrefix(got, p+" "+version+" ") {
			t.Errorf("%s --version = %q", p, got)
		}
	}

	// The packaged config: socket in Postfix's chroot, and valid once a key
	// and a webhook secret are filled in.
	conf, err := os.ReadFile(filepath.Join(root, "etc/leadpush/leadpush.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(conf, []byte("\nlisten = \"unix:/var/spool/postfix/leadpush/milter.sock\"\n")) {
		t.Errorf("packaged leadpush.toml does not put the milter socket in Postfix's chroot")
	}
	key := strings.TrimSpace(run(t, filepath.Join(root, "usr/bin/leadpushctl"), "keygen", "2026a"))
	filled := strings.NewReplacer("2026a:REPLACE-WITH-OUTPUT-OF-leadpushctl-keygen", key,
		"whsec_REPLACE", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=").Replace(string(conf))
	cfg := filepath.Join(t.TempDir(), "leadpush.toml")
	if err := os.WriteFile(cfg, []byte(filled), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, filepath.Join(root, "usr/bin/leadpush-milter"), "-config", cfg, "-check-config")

	// man pages render without warnings.
	for _, f := range files {
		if !strings.HasPrefix(f, "/usr/share/man/") {
			continue
		}
		c := exec.Command(man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", filepath.Join(root, f))
		c.Env = append(os.Environ(), "MANROFFSEQ=", "MANWIDTH=80", "LC_ALL=C.UTF-8")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if err := c.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man %s: %v %s", f, err, stderr.String())
		}
	}

	// systemd-analyze security: both daemons at most 3.0, "OK".
	score := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
	for _, u := range []string{"leadpush-milter.service", "leadpushd.service"} {
		c := exec.Command(sa, "security", "--offline=true", filepath.Join(root, "lib/systemd/system", u))
		b, _ := c.CombinedOutput() // non-zero above the default threshold; the score says
		m := score.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("systemd-analyze security %s:\n%s", u, b)
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		t.Logf("systemd-analyze security --offline=true %s: %s %s", u, m[2], m[3])
		if v > 3.0 || m[3] != "OK" {
			t.Errorf("%s exposure %s %s, want <= 3.0 OK", u, m[2], m[3])
		}
	}

	// systemd-analyze verify: no unknown directive or bad value; the
	// programs are not installed on this host, which is the one complaint
	// allowed.
	units := []string{filepath.Join(root, "lib/systemd/system/leadpush-milter.service"), filepath.Join(root, "lib/systemd/system/leadpushd.service")}
	vb, _ := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	notInstalled := regexp.MustCompile(`^leadpush(-milter|d)\.service: Command /usr/bin/leadpush(-milter|d) is not executable: No such file or directory$`)
	for line := range strings.SplitSeq(strings.TrimSpace(string(vb)), "\n") {
		if line != "" && !notInstalled.MatchString(line) {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}

	// lintian: no error, no warning that is not overridden (with a reason).
	c := exec.Command(lintian, "--fail-on", "none", deb)
	b, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("lintian: %v\n%s", err, b)
	}
	t.Logf("lintian:\n%s", b)
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}
