package packaging

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// TestInstallChrooted follows the README's install on a Postfix that runs
// smtpd and cleanup chrooted, as Debian ships it, with the files of the
// package (extracted, run from their packaged paths under a scratch root):
// the packaged leadpush.toml with a key filled in, `leadpushctl postfix
// setup --apply` against the lab's config directory, leadpush-milter on its
// packaged socket path inside the chroot, then the seed's swaks example on
// port 25: delivered without its control headers, tracked, recorded.
//
// The lab's queue directory stands for /var/spool/postfix and a scratch
// directory for /var/lib/leadpush: those two paths of the packaged config
// are rewritten, nothing else.
func TestInstallChrooted(t *testing.T) {
	_, root := built(t)
	lab := postfixlab.Start(t, postfixlab.Options{Chroot: true})
	ctl := filepath.Join(root, "usr/bin/leadpushctl")

	conf, err := os.ReadFile(filepath.Join(root, "etc/leadpush/leadpush.toml"))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	key := strings.TrimSpace(run(t, ctl, "keygen", "2026a"))
	text := strings.NewReplacer(
		"2026a:REPLACE-WITH-OUTPUT-OF-leadpushctl-keygen", key,
		"whsec_REPLACE", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
		`"unix:/var/spool/postfix/`, `"unix:`+lab.QueueDir+"/",
		`"/var/lib/leadpush/`, `"`+state+"/",
		`path = "/var/log/mail.log"`, `path = "`+lab.MailLog+`"`,
	).Replace(string(conf))
	if !strings.Contains(text, `listen = "unix:`+lab.QueueDir+`/leadpush/milter.sock"`) {
		t.Fatalf("the packaged config's milter.listen is not under /var/spool/postfix:\n%s", conf)
	}
	cfg := filepath.Join(t.TempDir(), "leadpush.toml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	// leadpushctl postfix setup: the plan, then --apply, then nothing to do.
	setup := func(args ...string) string {
		t.Helper()
		return run(t, ctl, append([]string{"-config", cfg, "postfix", "setup", "-c", lab.ConfigDir}, args...)...)
	}
	plan := setup()
	if !strings.Contains(plan, "chrooted in "+lab.QueueDir) || !strings.Contains(plan, "smtpd_milters = unix:/leadpush/milter.sock") {
		t.Fatalf("plan:\n%s", plan)
	}
	t.Logf("leadpushctl postfix setup:\n%s", plan)
	setup("--apply")
	if again := setup(); !strings.Contains(again, "nothing to do") {
		t.Errorf("second run:\n%s", again)
	}
	for param, want := range map[string]string{
		"smtpd_milters": "unix:/leadpush/milter.sock", "non_smtpd_milters": "unix:/leadpush/milter.sock",
		"relay_domains": "bounce.example.com",
	} {
		if got := lab.Postconf(t, "-xh", param); got != want {
			t.Errorf("%s = %q, want %q", param, got, want)
		}
	}

	// tmpfiles.d makes the socket's directory; the unit starts the milter.
	if err := os.Mkdir(filepath.Join(lab.QueueDir, "leadpush"), 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(state, "milter.log"))
	if err != nil {
		t.Fatal(err)
	}
	milter := exec.Command(filepath.Join(root, "usr/bin/leadpush-milter"), "-config", cfg)
	milter.Stdout, milter.Stderr = logf, logf
	if err := milter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		milter.Process.Signal(os.Interrupt)
		milter.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("leadpush-milter log:\n%s", b)
		}
	})
	sock := filepath.Join(lab.QueueDir, "leadpush", "milter.sock")
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i == 200 {
			t.Fatalf("leadpush-milter does not listen on %s", sock)
		}
		time.Sleep(25 * time.Millisecond)
	}
	lab.Reload(t)

	// The seed's example, on port 25 from a trusted network.
	out, qid, err := lab.Swaks(t, "--from", "app@example.com", "--to", "customer@example.com",
		"--header", "Subject: Your password reset link",
		"--header", `X-Leadpush-Tag: "password reset"`,
		"--header", "X-Leadpush-Tracking: clicks",
		"--body", "Use this link to reset your password: https://example.com/reset")
	if err != nil || qid == "" {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	lab.WaitDelivered(t, qid, 30*time.Second)
	got := lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return bytes.Contains(r.Data, []byte(" id "+qid)) }, 30*time.Second)
	head, _, _ := bytes.Cut(got.Data, []byte("\r\n\r\n"))
	if bytes.Contains(bytes.ToLower(got.Data), []byte("x-leadpush")) {
		t.Errorf("a control header reached the recipient:\n%s", got.Data)
	}
	if !bytes.Contains(head, []byte("List-Unsubscribe:")) || !bytes.Contains(got.Data, []byte("https://t.example.com/c/")) {
		t.Errorf("not tracked (no List-Unsubscribe or rewritten link):\n%s", got.Data)
	}
	if !strings.HasPrefix(got.From, "bounce+") || !strings.HasSuffix(got.From, "@bounce.example.com") {
		t.Errorf("envelope sender %q, want the VERP bounce+TOKEN@bounce.example.com", got.From)
	}

	// Recorded: leadpushctl messages --json (the milter commits within 20 ms).
	var rec struct{ QueueID, Tag, Tracking string }
	for i := 0; ; i++ {
		line, _, _ := strings.Cut(run(t, ctl, "-config", cfg, "messages", "--json"), "\n")
		var m struct {
			QueueID  string `json:"queue_id"`
			Tag      string `json:"tag"`
			Tracking string `json:"tracking"`
		}
		if line != "" {
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("messages --json: %v: %s", err, line)
			}
		}
		rec.QueueID, rec.Tag, rec.Tracking = m.QueueID, m.Tag, m.Tracking
		if rec.QueueID == qid || i == 100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if rec.QueueID != qid || rec.Tag != "password reset" || rec.Tracking != "clicks" {
		t.Errorf("recorded %+v, want queue id %s, tag \"password reset\", tracking clicks", rec, qid)
	}
}
