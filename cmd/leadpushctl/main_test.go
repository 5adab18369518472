package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/leadpush/leadpush/ledger"
)

// TestHelperMain runs Main in a child process (for what changes the
// process itself, such as dropping root), with the arguments after "--".
func TestHelperMain(t *testing.T) {
	if os.Getenv("LEADPUSHCTL_HELPER") == "" {
		t.Skip("child process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(args, os.Stdin, os.Stdout, os.Stderr))
}

func runChild(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperMain$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "LEADPUSHCTL_HELPER=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

const dsn = "From: MAILER-DAEMON@example.net\r\nTo: bounce+x@b.example.com\r\nSubject: Undelivered Mail\r\n\r\nsorry\r\n"

// TestIngestNeverBouncesTheBounce: whatever goes wrong that is not the
// message's fault, ingest exits 75 (EX_TEMPFAIL), so Postfix keeps the
// returned mail and retries it; any other status bounces it, and a
// bounced bounce is lost.
func TestIngestNeverBouncesTheBounce(t *testing.T) {
	dir := t.TempDir()
	good := writeConfig(t, filepath.Join(dir, "l.db"))
	typo := filepath.Join(dir, "typo.toml")
	os.WriteFile(typo, []byte("[store]\npaht = \"/x\"\n"), 0o600)
	blocked := filepath.Join(dir, "file")
	os.WriteFile(blocked, nil, 0o600)
	noDir := writeConfig(t, filepath.Join(blocked, "sub", "l.db")) // a file where the directory should be
	for _, c := range []struct {
		name string
		args []string
	}{
		{"config typo", []string{"-config", typo, "ingest"}},
		{"config missing", []string{"-config", filepath.Join(dir, "none.toml"), "ingest"}},
		{"ledger cannot be created", []string{"-config", noDir, "ingest"}},
		{"unknown flag", []string{"-config", good, "ingest", "--bogus"}},
		{"unknown global flag", []string{"-bogus", "ingest"}},
	} {
		var out, errb bytes.Buffer
		if code := Main(c.args, strings.NewReader(dsn), &out, &errb); code != exTempFail {
			t.Errorf("%s: exit %d, want %d (EX_TEMPFAIL): %s", c.name, code, exTempFail, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"-config", good, "ingest"}, strings.NewReader(dsn), &out, &errb); code != 0 {
		t.Errorf("a readable message: exit %d: %s", code, errb.String())
	}
	if code := Main([]string{"-config", good, "ingest"}, strings.NewReader("\x00\xff binary junk"), &out, &errb); code != 0 {
		t.Errorf("junk is kept as unknown, exit 0; got %d: %s", code, errb.String())
	}
	// Other commands keep their codes.
	if code := Main([]string{"-config", typo, "messages"}, strings.NewReader(""), &out, &errb); code != exConfig {
		t.Errorf("messages with a config typo: exit %d, want %d", code, exConfig)
	}
}

// TestReadCommandsOpenReadOnly: listing never creates or migrates a
// ledger.
func TestReadCommandsOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "l.db")
	cfg := writeConfig(t, db)
	var out, errb bytes.Buffer
	for _, args := range [][]string{{"messages"}, {"events"}, {"inbound"}, {"suppressions", "list"}, {"message", "x"}} {
		if code := Main(append([]string{"-config", cfg}, args...), strings.NewReader(""), &out, &errb); code == 0 {
			t.Errorf("%v on no ledger succeeded", args)
		}
		if _, err := os.Stat(db); err == nil {
			t.Fatalf("%v created the ledger", args)
		}
	}
	// A ledger lacking a migration: read commands say so and apply nothing.
	s, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	release := dropMigration(t, db)
	defer release()
	errb.Reset()
	if code := Main([]string{"-config", cfg, "messages"}, strings.NewReader(""), &out, &errb); code == 0 || !strings.Contains(errb.String(), "lacks migrations") {
		t.Errorf("messages on an old ledger: exit %d, %s", code, errb.String())
	}
	if !migrationMissing(t, db) {
		t.Error("a read command migrated the ledger")
	}
	run(t, "-config", cfg, "suppressions", "add", "a@example.com") // a writing command migrates
	if migrationMissing(t, db) {
		t.Error("a writing command did not migrate")
	}
	if got := run(t, "-config", cfg, "suppressions", "list"); !strings.Contains(got, "a@example.com") {
		t.Errorf("list: %q", got)
	}
}

// TestRootActsAsLedgerOwner: leadpushctl run as root on a ledger whose
// directory belongs to the service user creates nothing root owns; with
// no directory at all it refuses instead of creating a root-owned one.
func TestRootActsAsLedgerOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base, err := os.MkdirTemp("", "leadpushctl-root-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "lib")
	os.Mkdir(dir, 0o750)
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(base, "leadpush.toml")
	os.WriteFile(cfg, []byte("[store]\npath = \""+filepath.Join(dir, "l.db")+"\"\n"), 0o644)
	if code, out := runChild(t, "", "-config", cfg, "suppressions", "add", "a@example.com"); code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) == 0 {
		t.Fatal("no ledger written")
	}
	for _, e := range entries {
		fi, _ := os.Stat(filepath.Join(dir, e.Name()))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
			t.Errorf("%s belongs to uid %d, not the ledger directory's owner", e.Name(), st.Uid)
		}
	}
	cfg2 := filepath.Join(base, "missing.toml")
	os.WriteFile(cfg2, []byte("[store]\npath = \""+filepath.Join(base, "nodir", "l.db")+"\"\n"), 0o644)
	code, out := runChild(t, "", "-config", cfg2, "suppressions", "add", "a@example.com")
	if code == 0 || !strings.Contains(out, "does not exist") {
		t.Errorf("root with no ledger directory: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(base, "nodir")); err == nil {
		t.Error("root created the ledger directory")
	}
}

func dropMigration(t *testing.T, db string) func() error {
	t.Helper()
	s, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := ledger.ForgetMigrationForTest(context.Background(), s, "20261202-inbound-received-at"); err != nil {
		t.Fatal(err)
	}
	return func() error { return nil }
}

func migrationMissing(t *testing.T, db string) bool {
	t.Helper()
	s, err := ledger.OpenSQLiteReadOnly(db)
	if err != nil {
		return true
	}
	s.Close()
	return false
}
