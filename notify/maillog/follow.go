package maillog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Position identifies where reading stopped, so that a restart resumes
// without loss or duplication. The zero Position starts at the beginning
// of the file.
type Position struct {
	Inode  uint64 // of the file the offset belongs to; 0 where unknown
	Offset int64  // bytes consumed: always just after a "\n"
	// Head fingerprints the file's first bytes ("N:hash" of the first N
	// <= 256 bytes) so that a file truncated and rewritten past Offset
	// between two looks is still noticed.
	Head string
}

// Defaults of Follower.
const (
	DefaultPoll     = 250 * time.Millisecond
	DefaultMaxBatch = 1000
	headLen         = 256
	readChunk       = 64 << 10
	maxLine         = 64 << 10 // a longer line is cut: Postfix lines are far shorter
	maxRetryPause   = 5 * time.Second
	rotateGrace     = 4 // quiet polls on a rotated file before switching
)

// Follower follows a mail log file by polling.
type Follower struct {
	// Path is the log file, e.g. /var/log/mail.log.
	Path string
	// Poll is the pause at end of file and before retries. Zero means
	// DefaultPoll.
	Poll time.Duration
	// Logger receives rotation notices and handler errors. Nil
	// discards them.
	Logger *slog.Logger
	// MaxBatch is the most lines per handle call. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// Now gives the time used for the year of classic timestamps. Nil
	// means time.Now.
	Now func() time.Time
	// Idle, when true, calls handle with no entries (and the current
	// position) at every quiet poll at the end of the file, so that a
	// handler can retry what it put aside without waiting for a new line.
	Idle bool
	// Format is the log's dialect (Postfix, Sendmail or Auto). Zero means
	// Postfix.
	Format Format
}

// open file being read
type reader struct {
	path    string
	file    *os.File
	ino     uint64
	off     int64  // committed offset: the start of buf
	buf     []byte // read but not yet handed over
	head    string
	headN   int
	rotated bool // Path no longer names this file: finish it, then switch
	idle    int  // quiet polls since rotated was set
}

// Run follows Path from pos. It calls handle with each batch of complete
// lines, parsed into entries by a Parser of Format (a batch may be empty
// when its lines were all noise), and the Position just after the
// batch. When handle returns an error, Run logs it and offers the same
// batch again after a pause, so a caller that stores entries and position
// in one transaction neither loses nor repeats lines.
//
// Run survives rename rotation (it reads the old file to its end, waits a
// few quiet polls for a writer that has not reopened yet, then reads the
// new one from its start), copytruncate (a file shorter than the offset, or
// whose head changed, is read again from the start), a missing file (it
// waits for it) and a partial last line (it waits for the "\n"; the
// unterminated tail of a rotated-away file counts as a line). If pos names
// a file that was rotated while nothing was following, Run finishes it
// when it still lies next to Path as Path.1, Path.0 or Path-*.
//
// Run returns ctx.Err() when ctx is done, or at once an error for an
// unknown Format.
func (f *Follower) Run(ctx context.Context, pos Position, handle func([]Entry, Position) error) error {
	poll := f.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	maxBatch := f.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := f.Now
	if now == nil {
		now = time.Now
	}
	format, err := ParseFormat(string(f.Format))
	if err != nil {
		return err
	}
	// One Parser for the whole run: Sendmail's expiry lines name no
	// recipient, and the Parser remembers the deferred ones.
	parser := &Parser{Format: format}
	var r *reader
	defer func() {
		if r != nil {
			r.file.Close()
		}
	}()
	missingLogged := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r == nil {
			var err error
			r, err = f.open(pos, log)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) || !missingLogged {
					log.Info("mail log not readable, waiting", "path", f.Path, "err", err)
					missingLogged = errors.Is(err, fs.ErrNotExist)
				}
				if !wait(ctx, poll) {
					return ctx.Err()
				}
				continue
			}
			missingLogged = false
		}
		lines, n, err := r.next(maxBatch)
		if err != nil {
			log.Warn("reading mail log", "path", r.path, "err", err)
			r.file.Close()
			r = nil
			if !wait(ctx, poll) {
				return ctx.Err()
			}
			continue
		}
		if len(lines) == 0 && r.rotated {
			// The writer may still append to the renamed file until it
			// reopens: wait a few quiet polls before leaving it.
			if r.idle < rotateGrace {
				r.idle++
				if !wait(ctx, poll) {
					return ctx.Err()
				}
				continue
			}
			if len(r.buf) > 0 {
				// The old file will not grow: its unterminated tail is a line.
				lines, n = [][]byte{r.buf}, len(r.buf)
			}
		}
		if len(lines) > 0 {
			t := now()
			entries := make([]Entry, 0, len(lines))
			for _, l := range lines {
				entries = parser.Parse(entries, l, t)
			}
			r.updateHead(r.off + int64(n))
			next := Position{Inode: r.ino, Offset: r.off + int64(n), Head: r.head}
			if !deliver(ctx, log, poll, handle, entries, next) {
				return ctx.Err()
			}
			r.off += int64(n)
			r.buf = r.buf[n:]
			r.idle = 0
			pos = next
			continue
		}
		// At the end of the file.
		if r.rotated {
			log.Info("finished rotated mail log", "path", r.path, "offset", r.off)
			r.file.Close()
			r = nil
			pos = Position{}
			continue
		}
		if f.Idle && !r.rotated {
			if !deliver(ctx, log, poll, handle, nil, pos) {
				return ctx.Err()
			}
		}
		switch state := r.check(f.Path); state {
		case "rotated":
			log.Info("mail log rotated, finishing the old file", "path", f.Path)
			r.rotated = true
			continue // read to the end once more before switching
		case "truncated":
			log.Info("mail log truncated, reading from the start", "path", f.Path, "offset", r.off)
			r.off, r.buf, r.head, r.headN = 0, nil, "", 0
			pos = Position{Inode: r.ino}
			continue
		}
		if !wait(ctx, poll) {
			return ctx.Err()
		}
	}
}

// deliver calls handle until it succeeds or ctx is done.
func deliver(ctx context.Context, log *slog.Logger, poll time.Duration, handle func([]Entry, Position) error, entries []Entry, pos Position) bool {
	pause := poll
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		err := handle(entries, pos)
		if err == nil {
			return true
		}
		log.Warn("mail log handler failed, retrying the batch", "err", err, "attempt", attempt, "entries", len(entries))
		if !wait(ctx, pause) {
			return false
		}
		pause = min(pause*2, maxRetryPause)
	}
}

func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// open opens Path (or the rotated file pos belongs to) at pos.
func (f *Follower) open(pos Position, log *slog.Logger) (*reader, error) {
	path := f.Path
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("maillog: stat %s: %w", path, err)
	}
	r := &reader{path: path, file: file, ino: inode(fi)}
	if pos.Inode != 0 && r.ino != 0 && pos.Inode != r.ino {
		if old := findRotated(path, pos.Inode); old != "" {
			of, err := os.Open(old)
			if err == nil {
				file.Close()
				ofi, err := of.Stat()
				if err != nil {
					of.Close()
					return nil, fmt.Errorf("maillog: stat %s: %w", old, err)
				}
				r = &reader{path: old, file: of, ino: inode(ofi), rotated: true}
				fi = ofi
				log.Info("resuming in rotated mail log", "path", old)
			}
		} else {
			log.Warn("mail log was replaced while stopped and the old file is gone; reading the new one from the start", "path", path)
			return r, nil
		}
	}
	if pos.Offset > 0 {
		if pos.Offset <= fi.Size() && r.headMatches(pos.Head) {
			r.off = pos.Offset
			r.head, r.headN = pos.Head, headN(pos.Head)
		} else {
			log.Warn("mail log is shorter than the saved position or was rewritten; reading from the start", "path", r.path, "offset", pos.Offset, "size", fi.Size())
		}
	}
	return r, nil
}

// findRotated looks next to path for the file with inode ino.
func findRotated(path string, ino uint64) string {
	cands := []string{path + ".1", path + ".0"}
	if m, err := filepath.Glob(path + "-*"); err == nil {
		cands = append(cands, m...)
	}
	for _, c := range cands {
		if strings.HasSuffix(c, ".gz") || strings.HasSuffix(c, ".xz") || strings.HasSuffix(c, ".bz2") {
			continue
		}
		if fi, err := os.Stat(c); err == nil && inode(fi) == ino {
			return c
		}
	}
	return ""
}

// next returns up to max complete lines (without "\n") from the buffer,
// reading more as needed, and the number of bytes they take.
func (r *reader) next(max int) ([][]byte, int, error) {
	for bytes.Count(r.buf, []byte{'\n'}) < max {
		if len(r.buf) >= maxLine && bytes.IndexByte(r.buf, '\n') < 0 {
			// An endless line: cut it rather than grow without bound.
			return [][]byte{r.buf[:maxLine]}, maxLine, nil
		}
		if len(r.buf) >= max*512+maxLine {
			break
		}
		chunk := make([]byte, readChunk)
		k, err := r.file.ReadAt(chunk, r.off+int64(len(r.buf)))
		r.buf = append(r.buf, chunk[:k]...)
		if errors.Is(err, io.EOF) || k == 0 {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("maillog: read %s: %w", r.path, err)
		}
	}
	var lines [][]byte
	n := 0
	for len(lines) < max {
		i := bytes.IndexByte(r.buf[n:], '\n')
		if i < 0 {
			break
		}
		lines = append(lines, r.buf[n:n+i])
		n += i + 1
	}
	return lines, n, nil
}

// check looks at the file at end of data: "rotated" when path names
// another file or none, "truncated" when the open file shrank below what
// was read or its head changed, "" otherwise.
func (r *reader) check(path string) string {
	fi, err := r.file.Stat()
	if err == nil && fi.Size() < r.off+int64(len(r.buf)) {
		return "truncated"
	}
	if !r.headMatches(r.head) {
		return "truncated"
	}
	pfi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "rotated"
		}
		return ""
	}
	if fi != nil && !os.SameFile(fi, pfi) {
		return "rotated"
	}
	return ""
}

// updateHead extends the head fingerprint while it covers fewer than
// headLen bytes and at least upTo bytes are known to exist.
func (r *reader) updateHead(upTo int64) {
	if r.headN >= headLen || upTo <= int64(r.headN) {
		return
	}
	n := int(min(upTo, headLen))
	b := make([]byte, n)
	k, _ := r.file.ReadAt(b, 0)
	r.head, r.headN = fingerprint(b[:k]), k
}

func (r *reader) headMatches(head string) bool {
	n := headN(head)
	if n <= 0 {
		return true
	}
	b := make([]byte, n)
	k, _ := r.file.ReadAt(b, 0)
	return k == n && fingerprint(b) == head
}

func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return strconv.Itoa(len(b)) + ":" + hex.EncodeToString(sum[:12])
}

func headN(head string) int {
	s, _, ok := strings.Cut(head, ":")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > headLen {
		return 0
	}
	return n
}
