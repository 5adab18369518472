package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// doctorSite is an install that doctor finds all OK: a scratch Postfix
// configuration (Debian's stock main.cf and chrooted master.cf, its
// queue_directory a temp dir) set up by postfix setup, a listening milter
// socket inside that chroot, a ledger owned by the service user (nobody),
// a readable mail log and a tracker answering /healthz.
type doctorSite struct {
	dir, pf, queue, cfg, db, maillog, sock string
	tracker                                *httptest.Server
	ln                                     net.Listener
}

func newDoctorSite(t *testing.T) *doctorSite {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (files owned by the service user)")
	}
	for _, p := range []string{"/usr/share/postfix/main.cf.debian", "/usr/share/postfix/master.cf.dist", "/usr/sbin/postconf"} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("missing %s under CI=true: run scripts/deps.sh", p)
			}
			t.Skipf("missing %s (Debian's postfix package)", p)
		}
	}
	base, err := os.MkdirTemp("", "leadpush-doctor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	s := &doctorSite{dir: base, pf: filepath.Join(base, "postfix"), queue: filepath.Join(base, "spool")}
	for _, d := range []string{s.pf, filepath.Join(s.queue, "leadpush"), filepath.Join(base, "lib")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range map[string]string{"/usr/share/postfix/main.cf.debian": "main.cf", "/usr/share/postfix/master.cf.dist": "master.cf"} {
		b, _ := os.ReadFile(src)
		os.WriteFile(filepath.Join(s.pf, dst), b, 0o644)
	}
	if out, err := exec.Command("/usr/sbin/postconf", "-c", s.pf, "-e", "queue_directory="+s.queue).CombinedOutput(); err != nil {
		t.Fatalf("postconf: %v %s", err, out)
	}
	old := time.Now().Add(-10 * time.Second)
	for _, f := range []string{"main.cf", "master.cf"} {
		os.Chtimes(filepath.Join(s.pf, f), old, old)
	}
	s.sock = filepath.Join(s.queue, "leadpush", "milter.sock")
	if s.ln, err = net.Listen("unix", s.sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close() })
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	s.tracker = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// leadpushd's answer to a pixel with a bad token
		if strings.HasPrefix(r.URL.Path, "/o/") {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, "not found\n")
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(s.tracker.Close)
	lib := filepath.Join(base, "lib")
	s.db = filepath.Join(lib, "leadpush.db")
	st, err := ledger.OpenSQLite(s.db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	filepath.Walk(lib, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, 65534, 65534) })
	s.maillog = filepath.Join(base, "mail.log")
	os.WriteFile(s.maillog, []byte("log\n"), 0o644)
	s.writeConfig(t, "")
	run(t, "-config", s.cfg, "postfix", "setup", "-c", s.pf, "--leadpushctl", "/usr/bin/leadpushctl", "--apply")
	return s
}

func (s *doctorSite) writeConfig(t *testing.T, extra string) {
	t.Helper()
	s.cfg = filepath.Join(s.dir, "leadpush.toml")
	conf := fmt.Sprintf(`[store]
path = %q
[milter]
listen = "unix:%s"
[tracking]
base_url = %q
keys = ["k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
[bounce]
domain = "bounce.example.com"
[maillog]
path = %q
`, s.db, s.sock, s.tracker.URL, s.maillog) + extra
	if err := os.WriteFile(s.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *doctorSite) doctor(t *testing.T) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main([]string{"-config", s.cfg, "doctor", "-c", s.pf, "--user", "nobody", "--leadpushctl", "/usr/bin/leadpushctl"},
		strings.NewReader(""), &out, &errb)
	return code, out.String()
}

// TestDoctor: a good install is all OK; each misconfiguration a sysadmin
// met on a stock Debian host is one FAIL line with its fix, and a non-zero
// exit.
func TestDoctor(t *testing.T) {
	s := newDoctorSite(t)
	if code, out := s.doctor(t); code != 0 || !strings.Contains(out, "all OK") {
		t.Fatalf("a good install: exit %d\n%s", code, out)
	}
	for _, c := range []struct {
		name   string
		break_ func(t *testing.T, s *doctorSite)
		want   string
	}{
		{"config typo", func(t *testing.T, s *doctorSite) { os.WriteFile(s.cfg, []byte("[milter]\nlisen = \"x\"\n"), 0o644) }, "config"},
		{"root-owned ledger", func(t *testing.T, s *doctorSite) { os.Chown(s.db, 0, 0); os.Chmod(s.db, 0o644) }, "not writable by nobody"},
		{"ledger missing", func(t *testing.T, s *doctorSite) { os.Rename(s.db, s.db+".x") }, "no ledger"},
		{"milter down", func(t *testing.T, s *doctorSite) { s.ln.Close() }, "milter socket"},
		{"socket outside the chroot", func(t *testing.T, s *doctorSite) {
			s.writeConfig(t, "")
			os.WriteFile(s.cfg, bytes.Replace(must(os.ReadFile(s.cfg)), []byte("unix:"+s.sock), []byte("unix:/run/leadpush/milter.sock"), 1), 0o644)
		}, "chroot"},
		{"no transport for the bounce domain", func(t *testing.T, s *doctorSite) { postconf(t, s.pf, "-X", "transport_maps") }, "postfix:"},
		{"milter dropped from smtpd_milters", func(t *testing.T, s *doctorSite) { postconf(t, s.pf, "-e", "smtpd_milters=inet:127.0.0.1:8891") }, "postfix:"},
		{"relay_domains lacks the bounce domain", func(t *testing.T, s *doctorSite) { postconf(t, s.pf, "-e", "relay_domains=") }, "postfix:"},
		{"pipe service missing", func(t *testing.T, s *doctorSite) { postconf(t, s.pf, "-MX", "leadpush-ingest/unix") }, "postfix:"},
		{"message_size_limit below max_message_size", func(t *testing.T, s *doctorSite) { postconf(t, s.pf, "-e", "message_size_limit=5000000") }, "message_size_limit"},
		{"mail log unreadable", func(t *testing.T, s *doctorSite) { os.Chmod(s.maillog, 0o600) }, "not readable by nobody"},
		{"tracker down", func(t *testing.T, s *doctorSite) {
			s.writeConfig(t, "")
			os.WriteFile(s.cfg, bytes.Replace(must(os.ReadFile(s.cfg)), []byte(s.tracker.URL), []byte("http://127.0.0.1:1"), 1), 0o644)
		}, "tracker"},
		{"webhook unverified", func(t *testing.T, s *doctorSite) {
			s.writeConfig(t, "[[webhook]]\nname = \"app\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"x\"\n")
		}, "webhook app"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newDoctorSite(t)
			c.break_(t, s)
			code, out := s.doctor(t)
			t.Log(out)
			if code == 0 || !strings.Contains(out, "FAIL") || !strings.Contains(out, c.want) || !strings.Contains(out, "fix:") {
				t.Errorf("exit %d, want a FAIL naming %q with its fix:\n%s", code, c.want, out)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func postconf(t *testing.T, dir string, args ...string) {
	t.Helper()
	if out, err := exec.Command("/usr/sbin/postconf", append([]string{"-c", dir}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("postconf %v: %v %s", args, err, out)
	}
	old := time.Now().Add(-10 * time.Second)
	for _, f := range []string{"main.cf", "master.cf"} {
		os.Chtimes(filepath.Join(dir, f), old, old)
	}
}

// TestDoctorSendmail: the Sendmail checks read sendmail.cf and the
// mailertable as make -C /etc/mail leaves them (the e2e test runs them on
// a real Sendmail's); each wrong line is a FAIL with its fix.
func TestDoctorSendmail(t *testing.T) {
	dir := t.TempDir()
	good := "O InputMailFilters=leadpush\nXleadpush, S=local:/run/leadpush/milter.sock, F=T, T=C:30s;S:5m;R:5m;E:5m\nMleadpush,\tP=/usr/bin/leadpushctl\n"
	mt := "bounce.example.com\tleadpush:bounce.example.com\n"
	cfg := filepath.Join(dir, "leadpush.toml")
	os.WriteFile(cfg, []byte("[store]\npath = \""+filepath.Join(dir, "l.db")+"\"\n[milter]\nlisten = \"unix:/run/leadpush/milter.sock\"\n"+
		"[tracking]\nbase_url = \"http://127.0.0.1:1\"\nkeys = [\"k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"]\n"+
		"[bounce]\ndomain = \"bounce.example.com\"\n[maillog]\nformat = \"sendmail\"\n"), 0o644)
	for _, c := range []struct{ name, cf, mt, want string }{
		{"good", good, mt, "ok    sendmail: bounce.example.com goes to the leadpush mailer"},
		{"no milter", "O InputMailFilters=other\n", mt, "no leadpush milter"},
		{"other socket", strings.Replace(good, "/run/leadpush/", "/var/run/", 1), mt, "not on milter.listen"},
		{"no F=T", strings.Replace(good, "F=T, ", "", 1), mt, "no F=T"},
		{"not listed", strings.Replace(good, "O InputMailFilters=leadpush", "O InputMailFilters=other", 1), mt, "not in InputMailFilters"},
		{"no route", good, "other.example.com\tesmtp:[x]\n", "not routed to the leadpush mailer"},
	} {
		os.WriteFile(filepath.Join(dir, "sendmail.cf"), []byte(c.cf), 0o644)
		os.WriteFile(filepath.Join(dir, "mailertable"), []byte(c.mt), 0o644)
		var out, errb bytes.Buffer
		Main([]string{"-config", cfg, "doctor", "--sendmail-cf", filepath.Join(dir, "sendmail.cf"), "--mailertable", filepath.Join(dir, "mailertable")},
			strings.NewReader(""), &out, &errb)
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: doctor lacks %q:\n%s", c.name, c.want, out.String())
		}
	}
}
