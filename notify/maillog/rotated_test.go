package maillog

import (
	"bytes"
	"compress/gzip"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func gzipFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write(b)
	w.Close()
	if err := os.WriteFile(path+".gz", z.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(path+".gz", fi.ModTime(), fi.ModTime()) // as gzip does
	os.Remove(path)
}

// stopAfter follows path from pos until stopAt entries came, and returns
// them with the position saved after them.
func stopAfter(t *testing.T, path string, pos Position, stopAt int) ([]string, Position) {
	t.Helper()
	c := newCollector()
	c.stopAt = stopAt
	stop := start(t, testFollower(path), pos, c)
	c.waitFor(t, stopAt)
	stop()
	return c.snapshot()
}

// TestFollowRotatedWhileStopped: postfix logrotate renames the log to
// Path.YYYYMMDD-HHMMSS and gzips it, twice, while nothing follows; the
// next run finishes the file it was in, then the newer rotated one, then
// the new log, losing and repeating nothing.
func TestFollowRotatedWhileStopped(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[compress], func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "maillog")
			all := useful(0, 60)
			appendFile(t, path, withNL(all[:20])...)
			got, pos := stopAfter(t, path, Position{}, 10)
			rotate := func(suffix string, mtime time.Time) {
				os.Chtimes(path, mtime, mtime)
				if err := os.Rename(path, path+suffix); err != nil {
					t.Fatal(err)
				}
				if compress {
					gzipFile(t, path+suffix)
				}
			}
			base := time.Now().Add(-time.Hour)
			rotate(".20261201-010000", base)
			appendFile(t, path, withNL(all[20:40])...)
			rotate(".20261201-020000", base.Add(time.Minute))
			appendFile(t, path, withNL(all[40:])...)
			c := newCollector()
			start(t, testFollower(path), pos, c)
			got = append(got, c.waitFor(t, len(all)-len(got))...)
			equal(t, got, all)
		})
	}
}

// TestFollowCopytruncateWhileStopped: logrotate's copytruncate while
// nothing follows: the lines written after the saved position are only
// in the copy, which is read before the truncated log.
func TestFollowCopytruncateWhileStopped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	all := useful(0, 50)
	appendFile(t, path, withNL(all[:30])...)
	got, pos := stopAfter(t, path, Position{}, 10)
	b, _ := os.ReadFile(path)
	os.WriteFile(path+".1", b, 0o640)
	old := time.Now().Add(-time.Minute)
	os.Chtimes(path+".1", old, old)
	os.Truncate(path, 0)
	appendFile(t, path, withNL(all[30:])...)
	c := newCollector()
	start(t, testFollower(path), pos, c)
	got = append(got, c.waitFor(t, len(all)-len(got))...)
	equal(t, got, all)
}

// TestFollowCopytruncateRunning: lines written between the follower's
// last read and the copy are read from the copy.
func TestFollowCopytruncateRunning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	all := useful(0, 40)
	appendFile(t, path, withNL(all[:10])...)
	c := newCollector()
	f := testFollower(path)
	f.Poll = 200 * time.Millisecond
	start(t, f, Position{}, c)
	c.waitFor(t, 10)
	// within one poll: more lines, copy, truncate, new lines
	appendFile(t, path, withNL(all[10:30])...)
	b, _ := os.ReadFile(path)
	os.WriteFile(path+".1", b, 0o640)
	os.Truncate(path, 0)
	appendFile(t, path, withNL(all[30:])...)
	equal(t, c.waitFor(t, len(all)), all)
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestFollowUnreadable: a log that cannot be opened is a warning, once,
// and Readable says so until it can be read again.
func TestFollowUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	// a symlink loop fails to open even for root (who ignores modes)
	if err := os.Symlink(path, path); err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	f := testFollower(path)
	f.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c := newCollector()
	start(t, f, Position{}, c)
	deadline := time.Now().Add(5 * time.Second)
	for f.Readable() || !strings.Contains(logs.String(), "level=WARN") {
		if time.Now().After(deadline) {
			t.Fatalf("Readable %v; log:\n%s", f.Readable(), logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // 20 polls
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for one unreadable state, want 1:\n%s", n, logs.String())
	}
	os.Remove(path)
	lines := useful(0, 3)
	appendFile(t, path, withNL(lines)...)
	equal(t, c.waitFor(t, 3), lines)
	if !f.Readable() || !strings.Contains(logs.String(), "readable again") {
		t.Errorf("Readable %v after recovery; log:\n%s", f.Readable(), logs.String())
	}
}

func TestParseOrigin(t *testing.T) {
	now := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		line string
		want Origin
		ok   bool
	}{
		{"Nov 22 19:45:57 mail postfix/smtpd[1]: 4Zb9Xk3Qz5z9sNq: client=unknown[203.0.113.5]", Origin{QueueID: "4Zb9Xk3Qz5z9sNq", Client: netip.MustParseAddr("203.0.113.5")}, true},
		{"Nov 22 19:45:57 mail postfix/submission/smtpd[1]: 4Zb9Xk3Qz5z9sNq: client=h[IPv6:2001:db8::1], sasl_method=PLAIN, sasl_username=app", Origin{QueueID: "4Zb9Xk3Qz5z9sNq", Client: netip.MustParseAddr("2001:db8::1"), SASL: true}, true},
		{"Nov 22 19:45:57 mail postfix/pickup[1]: 4Zb9Xk3Qz5z9sNq: uid=0 from=<root>", Origin{QueueID: "4Zb9Xk3Qz5z9sNq", Local: true}, true},
		{"Nov 22 19:45:57 mail postfix/bounce[1]: 4Zb9Xk3Qz5z9sNq: sender non-delivery notification: 4Zb9Xk3Qz5z9sNr", Origin{QueueID: "4Zb9Xk3Qz5z9sNr", Internal: true}, true},
		{"Nov 22 19:45:57 mail postfix/smtpd[1]: connect from unknown[203.0.113.5]", Origin{}, false},
		{"Nov 22 19:45:57 mail postfix/cleanup[1]: 4Zb9Xk3Qz5z9sNq: message-id=<a@b>", Origin{}, false},
	} {
		got, ok := ParseOrigin([]byte(tc.line), now)
		got.Time = time.Time{}
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s:\n got %+v %v\nwant %+v %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

// TestFollowBehind: Behind counts the bytes not yet handed over, and is 0
// once everything was.
func TestFollowBehind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	lines := useful(0, 30)
	appendFile(t, path, withNL(lines)...)
	fi, _ := os.Stat(path)
	f := testFollower(path) // 7 lines a batch
	var first int64 = -1
	c := newCollector()
	c.fail = func(call int) error {
		if call == 1 {
			first = f.Behind()
		}
		return nil
	}
	start(t, f, Position{}, c)
	c.waitFor(t, 30)
	if first <= 0 || first >= fi.Size() {
		t.Errorf("Behind at the first batch = %d, want between 0 and %d", first, fi.Size())
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Behind() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Behind = %d after everything was handed over", f.Behind())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
