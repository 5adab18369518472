package postfixsetup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Debian's postfix package lays out a new main.cf from main.cf.debian and
// master.cf from master.cf.dist (smtpd and cleanup chrooted).
const (
	debianMain   = "/usr/share/postfix/main.cf.debian"
	debianMaster = "/usr/share/postfix/master.cf.dist"
)

// scratch returns a Postfix config directory holding Debian's stock files,
// or skips (fails under CI=true) without postconf.
func scratch(t *testing.T) string {
	t.Helper()
	var missing []string
	for _, p := range []string{debianMain, debianMaster, "/usr/sbin/postconf", "/usr/sbin/postmap"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("missing %v under CI=true: run scripts/deps.sh", missing)
		}
		t.Skipf("missing %v (Debian's postfix package; scripts/deps.sh)", missing)
	}
	dir := t.TempDir()
	for src, dst := range map[string]string{debianMain: "main.cf", debianMaster: "master.cf"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	backdate(t, dir)
	return dir
}

// backdate sets main.cf's and master.cf's mtime into the past: Postfix
// programs treat a file changed within the last second as being edited and
// wait for it, which made each postconf run here about 300 ms slower.
func backdate(t *testing.T, dir string) {
	t.Helper()
	old := time.Now().Add(-10 * time.Second)
	for _, f := range []string{"main.cf", "master.cf"} {
		if err := os.Chtimes(filepath.Join(dir, f), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// postconf runs the real postconf on dir.
func postconf(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("/usr/sbin/postconf", append([]string{"-c", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("postconf %v: %v: %s", args, err, out)
	}
	backdate(t, dir)
	return strings.TrimSpace(string(out))
}

func options(dir string) Options {
	return Options{
		ConfigDir:     dir,
		MilterListen:  "unix:/var/spool/postfix/leadpush/milter.sock",
		BounceDomain:  "bounce.example.com",
		IngestCommand: "/usr/bin/leadpushctl ingest --recipient ${recipient}",
	}
}

// setup plans and applies, and checks that a second plan is empty.
func setup(t *testing.T, opt Options) *Plan {
	t.Helper()
	ctx := context.Background()
	p, err := Setup(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", p)
	if err := Apply(ctx, opt, p); err != nil {
		t.Fatal(err)
	}
	backdate(t, opt.ConfigDir)
	again, err := Setup(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 0 {
		t.Errorf("second run is not idempotent:\n%s", again)
	}
	if !strings.Contains(again.String(), "nothing to do") {
		t.Errorf("second run does not say nothing to do:\n%s", again)
	}
	return p
}

func index(p *Plan, kind Kind, name string) int {
	for i, c := range p.Changes {
		if c.Kind == kind && (name == "" || c.Name == name) {
			return i
		}
	}
	return -1
}

func TestStockDebianChrooted(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	p := setup(t, options(dir))
	if !p.Chrooted || p.MilterAddr != "unix:/leadpush/milter.sock" {
		t.Errorf("Chrooted=%v MilterAddr=%q, want true unix:/leadpush/milter.sock", p.Chrooted, p.MilterAddr)
	}
	table := "hash:" + filepath.Join(dir, MapName)
	for param, want := range map[string]string{
		"smtpd_milters":         "unix:/leadpush/milter.sock",
		"non_smtpd_milters":     "unix:/leadpush/milter.sock",
		"milter_default_action": "tempfail",
		"transport_maps":        table,
		"relay_domains":         "bounce.example.com",
		"leadpush-ingest_destination_recipient_limit": "1",
	} {
		if got := postconf(t, dir, "-h", param); got != want {
			t.Errorf("%s = %q, want %q", param, got, want)
		}
	}
	if got := postconf(t, dir, "-F", "leadpush-ingest/unix/command"); got != "leadpush-ingest/unix/command = pipe flags=Rq user=leadpush argv=/usr/bin/leadpushctl ingest --recipient ${recipient}" {
		t.Errorf("pipe service: %q", got)
	}
	if out, err := exec.Command("/usr/sbin/postmap", "-c", dir, "-q", "bounce.example.com", table).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "leadpush-ingest:" {
		t.Errorf("postmap -q bounce.example.com %s = %q, %v", table, out, err)
	}
	// Never a parameter naming something that is not there yet.
	wm, pm, svc := index(p, WriteMap, ""), index(p, Postmap, ""), index(p, Master, "")
	tm, rd := index(p, Main, "transport_maps"), index(p, Main, "relay_domains")
	if wm < 0 || !(wm < pm && pm < tm && svc < tm && tm < rd) {
		t.Errorf("order: map %d, postmap %d, service %d, transport_maps %d, relay_domains %d; want map < postmap < transport_maps, service < transport_maps < relay_domains", wm, pm, svc, tm, rd)
	}
}

func TestUnchrooted(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	postconf(t, dir, "-F", "smtp/inet/chroot=n", "cleanup/unix/chroot=n")
	p := setup(t, options(dir))
	if p.Chrooted || p.MilterAddr != "unix:/var/spool/postfix/leadpush/milter.sock" {
		t.Errorf("Chrooted=%v MilterAddr=%q, want false and the full path", p.Chrooted, p.MilterAddr)
	}
	if got := postconf(t, dir, "-h", "smtpd_milters"); got != "unix:/var/spool/postfix/leadpush/milter.sock" {
		t.Errorf("smtpd_milters = %q", got)
	}
}

func TestChrootMixRefused(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	// A submission service chrooted differently from smtp/inet.
	postconf(t, dir, "-M", "submission/inet=submission inet n - n - - smtpd")
	_, err := Setup(context.Background(), options(dir))
	if !errors.Is(err, ErrChrootMix) {
		t.Fatalf("err = %v, want ErrChrootMix", err)
	}
	for _, want := range []string{"chrooted: cleanup/unix, smtp/inet", "not chrooted: submission/inet", "5th"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "main.cf"))
	if strings.Contains(string(before), "milter") {
		t.Errorf("main.cf changed after a refusal")
	}
}

func TestSocketOutsideChrootRefused(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	opt := options(dir)
	opt.MilterListen = "unix:/run/leadpush/milter.sock"
	_, err := Setup(context.Background(), opt)
	if !errors.Is(err, ErrOutsideChroot) || !strings.Contains(err.Error(), `listen = "unix:/var/spool/postfix/leadpush/milter.sock"`) {
		t.Fatalf("err = %v, want ErrOutsideChroot naming the path to use", err)
	}
	opt.MilterListen = "inet:127.0.0.1:8895"
	p, err := Setup(context.Background(), opt)
	if err != nil || p.MilterAddr != "inet:127.0.0.1:8895" {
		t.Fatalf("inet: %v, %q", err, p.MilterAddr)
	}
}

// An opendkim milter (and another milter) already there are kept, and
// leadpush-milter goes before the signer; existing maps and relay domains
// are kept too.
func TestExistingMiltersAndMaps(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	transport := filepath.Join(dir, "transport")
	if err := os.WriteFile(transport, []byte("example.net smtp:[192.0.2.1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/postmap", "-c", dir, "hash:"+transport).CombinedOutput(); err != nil {
		t.Fatalf("postmap: %v: %s", err, out)
	}
	postconf(t, dir, "-e",
		"smtpd_milters = inet:127.0.0.1:11111, unix:/opendkim/opendkim.sock",
		"non_smtpd_milters = $smtpd_milters",
		"transport_maps = hash:"+transport,
		"relay_domains = $mydestination, example.net",
		"milter_default_action = accept")
	p := setup(t, options(dir))
	table := "hash:" + filepath.Join(dir, MapName)
	for param, want := range map[string]string{
		"smtpd_milters":         "inet:127.0.0.1:11111, unix:/leadpush/milter.sock, unix:/opendkim/opendkim.sock",
		"non_smtpd_milters":     "$smtpd_milters",
		"milter_default_action": "tempfail",
		"transport_maps":        table + ", hash:" + transport,
		"relay_domains":         "$mydestination, example.net, bounce.example.com",
	} {
		if got := postconf(t, dir, "-h", param); got != want {
			t.Errorf("%s = %q, want %q", param, got, want)
		}
	}
	if index(p, Main, "non_smtpd_milters") >= 0 {
		t.Errorf("non_smtpd_milters = $smtpd_milters was changed")
	}
}

// A leadpush milter listed after the signer is moved before it; its
// { ... } settings stay.
func TestMisplacedMilterMoved(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	postconf(t, dir, "-e", "smtpd_milters = inet:localhost:8891, { unix:/leadpush/milter.sock, default_action = tempfail }")
	setup(t, options(dir))
	if got, want := postconf(t, dir, "-h", "smtpd_milters"), "{ unix:/leadpush/milter.sock, default_action = tempfail }, inet:localhost:8891"; got != want {
		t.Errorf("smtpd_milters = %q, want %q", got, want)
	}
}

// A submission service with its own -o smtpd_milters gets the milter too,
// before its signer; one that names $smtpd_milters is left alone; a
// { ... } group becomes a note.
func TestMasterOverrides(t *testing.T) {
	t.Parallel()
	dir := scratch(t)
	postconf(t, dir, "-M",
		"submission/inet=submission inet n - y - - smtpd -o smtpd_milters=inet:localhost:8891 -o syslog_name=postfix/submission",
		"smtps/inet=smtps inet n - y - - smtpd -o non_smtpd_milters=$smtpd_milters",
		"10025/inet=10025 inet n - y - - smtpd -o { smtpd_milters = { inet:localhost:8891, default_action = accept } }")
	p := setup(t, options(dir))
	if got, want := postconf(t, dir, "-P", "submission/inet/smtpd_milters"), "submission/inet/smtpd_milters = unix:/leadpush/milter.sock,inet:localhost:8891"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	if got, want := postconf(t, dir, "-P", "smtps/inet/non_smtpd_milters"), "smtps/inet/non_smtpd_milters = $smtpd_milters"; got != want {
		t.Errorf("%s, want %s", got, want)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "10025/inet") {
		t.Errorf("notes = %q, want one about 10025/inet", p.Notes)
	}
}

func TestWithMilter(t *testing.T) {
	t.Parallel()
	const us = "unix:/leadpush/milter.sock"
	for _, tc := range []struct{ in, want string }{
		{"", us},
		{us, us},
		{"inet:127.0.0.1:9999", "inet:127.0.0.1:9999, " + us},
		{"inet:localhost:8891", us + ", inet:localhost:8891"},
		{"local:/opendkim/opendkim.sock inet:127.0.0.1:9999", us + ", local:/opendkim/opendkim.sock, inet:127.0.0.1:9999"},
		{"inet:localhost:11332", us + ", inet:localhost:11332"},
		{"{ inet:localhost:8891, connect_timeout = 10s }", us + ", { inet:localhost:8891, connect_timeout = 10s }"},
		{"inet:localhost:8891, " + us, us + ", inet:localhost:8891"},
	} {
		got, _ := withMilter(tc.in, us)
		if got != tc.want {
			t.Errorf("withMilter(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRefersTo(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"$smtpd_milters": true, "${smtpd_milters}": true, "$(smtpd_milters)": true,
		"$smtpd_milters, inet:x:1": true, "$smtpd_milters_x": false, "": false, "inet:x:1": false,
	} {
		if got := refersTo(v, "smtpd_milters"); got != want {
			t.Errorf("refersTo(%q) = %v", v, got)
		}
	}
}
