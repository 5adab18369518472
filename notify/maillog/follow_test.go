package maillog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector runs a Follower and records what it hands over.
type collector struct {
	mu      sync.Mutex
	raws    []string
	pos     Position
	calls   int
	changed chan struct{}
	fail    func(call int) error // optional: make handle fail
	stopAt  int                  // cancel after this many stored entries (0: never)
	cancel  context.CancelFunc
}

func newCollector() *collector { return &collector{changed: make(chan struct{}, 1)} }

func (c *collector) handle(entries []Entry, pos Position) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail != nil {
		if err := c.fail(c.calls); err != nil {
			return err
		}
	}
	for _, e := range entries {
		c.raws = append(c.raws, e.Raw)
	}
	c.pos = pos
	if c.stopAt > 0 && len(c.raws) >= c.stopAt && c.cancel != nil {
		c.cancel()
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() ([]string, Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.raws...), c.pos
}

// waitFor blocks until at least n entries arrived or the deadline passes.
func (c *collector) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		raws, _ := c.snapshot()
		if len(raws) >= n {
			return raws
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			t.Fatalf("timed out: %d of %d entries: %q", len(raws), n, raws)
		}
	}
}

// start runs f in the background; the returned func stops it and returns
// Run's error.
func start(t *testing.T, f *Follower, pos Position, c *collector) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, pos, c.handle) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

func testFollower(path string) *Follower {
	return &Follower{Path: path, Poll: 5 * time.Millisecond, MaxBatch: 7, Now: func() time.Time { return nov23 }}
}

func appendFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
	}
}

// useful returns n distinct lines that ParseLine accepts.
func useful(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("Nov 22 19:45:57 mail postfix/cleanup[1]: 4Zb9Xk3Qz5z9sNq: message-id=<n%d@example.com>", from+i)
	}
	return out
}

func withNL(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l + "\n"
	}
	return out
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %d lines, want %d\ngot  %q\nwant %q", len(got), len(want), got, want)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if e, ok := ParseLine(sc.Bytes(), nov23); ok {
			out = append(out, e.Raw)
		}
	}
	return out
}

func TestFollowMissingFileThenNoise(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	c := newCollector()
	stop := start(t, testFollower(path), Position{}, c)
	lines := useful(0, 3)
	appendFile(t, path, "Nov 22 19:45:57 mail postfix/smtpd[1]: connect from x[1.2.3.4]\n")
	appendFile(t, path, withNL(lines)...)
	equal(t, c.waitFor(t, 3), lines)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	_, pos := c.snapshot()
	fi, _ := os.Stat(path)
	if pos.Offset != fi.Size() {
		t.Errorf("Offset = %d, want the file size %d (noise lines count)", pos.Offset, fi.Size())
	}
}

func TestFollowRenameRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	old, err := os.ReadFile("testdata/rotation/mail.log.1")
	if err != nil {
		t.Fatal(err)
	}
	next, err := os.ReadFile("testdata/rotation/mail.log")
	if err != nil {
		t.Fatal(err)
	}
	want := append(readLines(t, "testdata/rotation/mail.log.1"), readLines(t, "testdata/rotation/mail.log")...)
	// The old file's last useful line arrives unterminated and is
	// finished after the rename: nothing may be lost.
	oldLines := strings.SplitAfter(strings.TrimSuffix(string(old), "\n"), "\n")
	appendFile(t, path, oldLines[:len(oldLines)-1]...)
	c := newCollector()
	start(t, testFollower(path), Position{}, c)
	c.waitFor(t, 1)
	half := oldLines[len(oldLines)-1]
	appendFile(t, path, half[:40])
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path+".1", half[40:]+"\n") // the writer still had the old file open
	appendFile(t, path, string(next))
	equal(t, c.waitFor(t, len(want)), want)
}

func TestFollowCopytruncate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	first := useful(0, 20)
	appendFile(t, path, withNL(first)...)
	c := newCollector()
	start(t, testFollower(path), Position{}, c)
	c.waitFor(t, 20)
	// copytruncate, then the writer continues with fewer bytes than before.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	second := useful(100, 3)
	appendFile(t, path, withNL(second)...)
	equal(t, c.waitFor(t, 23), append(first, second...))
}

func TestFollowTruncateAndRewriteLonger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	first := useful(0, 2)
	appendFile(t, path, withNL(first)...)
	fi, _ := os.Stat(path)
	// Rewritten past the saved offset while nobody watched: only the
	// head fingerprint can tell.
	c := newCollector()
	stop := start(t, testFollower(path), Position{}, c)
	c.waitFor(t, 2)
	stop()
	_, pos := c.snapshot()
	if pos.Offset != fi.Size() || pos.Head == "" {
		t.Fatalf("pos = %+v", pos)
	}
	second := useful(500, 5) // longer than first
	if err := os.WriteFile(path, []byte(strings.Join(withNL(second), "")), 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := newCollector()
	start(t, testFollower(path), pos, c2)
	equal(t, c2.waitFor(t, 5), second)
}

func TestFollowRestartNoLossNoDuplicate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	all := useful(0, 500)
	appendFile(t, path, withNL(all[:300])...)
	var got []string
	pos := Position{}
	// Stop three times mid-file, writing more in between.
	for round, stopAt := range []int{50, 120, 130} {
		c := newCollector()
		c.stopAt = stopAt
		stop := start(t, testFollower(path), pos, c)
		c.waitFor(t, stopAt)
		stop()
		raws, p := c.snapshot()
		got = append(got, raws...)
		pos = p
		if round == 1 {
			appendFile(t, path, withNL(all[300:])...)
		}
	}
	c := newCollector()
	start(t, testFollower(path), pos, c)
	need := len(all) - len(got)
	got = append(got, c.waitFor(t, need)...)
	equal(t, got, all)
}

func TestFollowPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	lines := useful(0, 2)
	appendFile(t, path, lines[0]+"\n", lines[1][:30])
	c := newCollector()
	start(t, testFollower(path), Position{}, c)
	c.waitFor(t, 1)
	// Several polls pass; the half line must not be handed over.
	for i := 0; i < 5; i++ {
		select {
		case <-c.changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
	if raws, pos := c.snapshot(); len(raws) != 1 || pos.Offset != int64(len(lines[0])+1) {
		t.Fatalf("partial line handed over: %q at %+v", raws, pos)
	}
	appendFile(t, path, lines[1][30:]+"\n")
	equal(t, c.waitFor(t, 2), lines)
}

func TestFollowHandlerErrorRetriesSameBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	lines := useful(0, 30)
	appendFile(t, path, withNL(lines)...)
	c := newCollector()
	c.fail = func(call int) error {
		if call == 2 || call == 3 {
			return errors.New("database is locked")
		}
		return nil
	}
	start(t, testFollower(path), Position{}, c)
	equal(t, c.waitFor(t, 30), lines)
}

func TestFollowResumeInRotatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	all := useful(0, 40)
	appendFile(t, path, withNL(all[:20])...)
	c := newCollector()
	c.stopAt = 10
	stop := start(t, testFollower(path), Position{}, c)
	c.waitFor(t, 10)
	stop()
	got, pos := c.snapshot()
	// Rotated while stopped.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, withNL(all[20:])...)
	c2 := newCollector()
	start(t, testFollower(path), pos, c2)
	got = append(got, c2.waitFor(t, len(all)-len(got))...)
	equal(t, got, all)
}

func TestFollowEndlessLineIsCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	lines := useful(0, 1)
	appendFile(t, path, strings.Repeat("x", 3*maxLine), "\n", lines[0]+"\n")
	c := newCollector()
	start(t, testFollower(path), Position{}, c)
	equal(t, c.waitFor(t, 1), lines)
}

// BenchmarkFollow follows a generated 1,000,000-line log from the start
// and reports lines per second (reading, splitting, parsing, batching).
func BenchmarkFollow(b *testing.B) {
	const total = 1_000_000
	path := filepath.Join(b.TempDir(), "mail.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < total; i++ {
		w.WriteString(genLine(i))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(path)
	b.ResetTimer()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		entries := 0
		fl := &Follower{Path: path, Poll: time.Millisecond, Now: func() time.Time { return nov23 }}
		fl.Run(ctx, Position{}, func(es []Entry, pos Position) error {
			entries += len(es)
			if pos.Offset == fi.Size() {
				cancel()
			}
			return nil
		})
		cancel()
		if entries != total/5*3 {
			b.Fatalf("entries = %d", entries)
		}
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "lines/s")
	b.SetBytes(fi.Size())
}
