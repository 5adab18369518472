// Package golden compares test output with golden files, the way
// go/printer's tests do: `go test ./PKG -update` rewrites the files with
// the current output, to be reviewed in the diff.
package golden

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

// Update is the -update flag of every test binary that imports golden.
var Update = flag.Bool("update", false, "rewrite the golden files with the tests' output")

// Check fails the test when got differs from the file at path. With
// -update it first writes got to path.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *Update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update and review the diff):\n%s", path, got)
	}
}

// JSON is v as golden JSON files hold it: indented two spaces, HTML
// characters not escaped, a final newline.
func JSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
