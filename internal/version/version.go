// Package version is the version of the Leadpush programs, set at build
// time: go build -ldflags "-X github.com/leadpush/leadpush/internal/version.Version=1.2.3".
// Without it, the module version or VCS revision the Go toolchain stamped
// into the binary is used (go install, go build in a git checkout).
package version

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// Version is set with -ldflags -X; empty means "ask the build info".
var Version string

// String returns the version: Version, else the main module's version,
// else the VCS revision (with "+dirty" for a modified tree), else "devel".
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "devel-" + rev + dirty
	}
	return "devel"
}

// Line is what -version prints: "PROG VERSION (GOVERSION)".
func Line(prog string) string {
	return fmt.Sprintf("%s %s (%s)", prog, String(), runtime.Version())
}

// Flag adds -version (also accepted as --version) to fs: it prints Line
// on w and exits 0 as soon as it is parsed, before any configuration is
// read.
func Flag(fs *flag.FlagSet, prog string, w io.Writer) {
	fs.BoolFunc("version", "print the version and exit", func(string) error {
		fmt.Fprintln(w, Line(prog))
		os.Exit(0)
		return nil
	})
}
