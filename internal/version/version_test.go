package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestStringPrefersLinkerValue(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "9.8.7"
	if got := String(); got != "9.8.7" {
		t.Fatalf("String() = %q, want 9.8.7", got)
	}
	if got, want := Line("leadpushd"), "leadpushd 9.8.7 ("+runtime.Version()+")"; got != want {
		t.Fatalf("Line = %q, want %q", got, want)
	}
	Version = ""
	if got := String(); got == "" {
		t.Fatal("String() is empty without a linker value")
	}
}

// TestProgramsPrintVersion builds each program with the version stamped the
// way the Makefile does and runs PROG --version and PROG -version: both
// print the stamped version and exit 0, without reading a config file.
func TestProgramsPrintVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the programs")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir := t.TempDir()
	// The flags of scripts/deb.sh, so the two builds share the compile cache.
	cmd := exec.Command(gobin, "build", "-trimpath", "-buildvcs=false", "-o", dir+"/",
		"-ldflags", "-s -w -X github.com/leadpush/leadpush/internal/version.Version=1.2.3-test",
		"github.com/leadpush/leadpush/cmd/...")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, prog := range []string{"leadpush-milter", "leadpushd", "leadpushctl"} {
		for _, flag := range []string{"--version", "-version"} {
			c := exec.Command(filepath.Join(dir, prog), "-config", "/nonexistent/leadpush.toml", flag)
			c.Env = append(os.Environ(), "LEADPUSH_CPUPROFILE=")
			out, err := c.CombinedOutput()
			if err != nil {
				t.Errorf("%s %s: %v\n%s", prog, flag, err, out)
				continue
			}
			if want := prog + " 1.2.3-test ("; !strings.HasPrefix(string(out), want) {
				t.Errorf("%s %s printed %q, want prefix %q", prog, flag, out, want)
			}
		}
	}
}
