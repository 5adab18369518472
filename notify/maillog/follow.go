package maillog

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
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
	// Origin, when set, receives the origin lines of queue ids
	// (smtpd's client=, pickup's uid=, bounce's notifications) that
	// the parser passes over, before the batch they are in is handled.
	Origin func(Origin)

	readable atomic.Bool
	behind   atomic.Int64
}

// Readable reports whether the log could be opened at the last try.
func (f *Follower) Readable() bool { return f.readable.Load() }

// Behind is how many bytes of the log (and of rotated files still to be
// read) lie past the last batch handed over, as of the last look.
func (f *Follower) Behind() int64 { return f.behind.Load() }

// open file being read
type reader struct {
	path    string
	file    *os.File
	gz      io.Reader // set for a compressed rotated file, read in sequence
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
// whose head changed, is read again from the start, after the tail of its
// copy when the copy lies next to it), a missing or unreadable file (it
// waits for it, logging a warning once per change of state) and a partial
// last line (it waits for the "\n"; the unterminated tail of a
// rotated-away file counts as a line).
//
// If pos names a file that was rotated while nothing was following, Run
// finds it next to Path (Path.1, Path.0, Path-*, Path.YYYYMMDD-HHMMSS as
// postfix logrotate names it, each possibly gzip-compressed; by inode, or
// by the fingerprint of its first bytes when compression made a new file),
// finishes it, reads every file rotated after it, oldest first, and then
// Path from its start.
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
	var queue []string // rotated files to read after r, oldest first
	defer func() {
		if r != nil {
			r.close()
		}
	}()
	f.readable.Store(true)
	openErr := "" // the last open failure logged, so each is logged once
	// truncated handles a copytruncate: what was written between the last
	// read and the copy is only in the copy.
	truncated := func() {
		if c := findCopy(f.Path, r.head, r.off+int64(len(r.buf))); c != "" {
			cr, err := openRotated(c, r.off, r.head)
			if err == nil {
				log.Info("mail log truncated, finishing its copy first", "path", f.Path, "copy", c, "offset", r.off)
				r.close()
				r = cr
				queue = nil
				pos = Position{Inode: r.ino, Offset: r.off, Head: r.head}
				return
			}
		}
		log.Info("mail log truncated, reading from the start", "path", f.Path, "offset", r.off)
		r.off, r.buf, r.head, r.headN = 0, nil, "", 0
		pos = Position{Inode: r.ino}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r == nil {
			var err error
			if len(queue) > 0 {
				name := queue[0]
				queue = queue[1:]
				r, err = openRotated(name, 0, "")
				if err != nil {
					log.Warn("rotated mail log unreadable; its lines are skipped", "path", name, "err", err)
					continue
				}
				log.Info("reading rotated mail log", "path", r.path)
			} else {
				r, queue, err = f.open(pos, log)
			}
			if err != nil {
				f.readable.Store(false)
				if msg := err.Error(); msg != openErr {
					openErr = msg
					if errors.Is(err, fs.ErrNotExist) {
						log.Warn("mail log missing, waiting for it; no delivery status is recorded meanwhile", "path", f.Path, "err", err)
					} else {
						log.Warn("mail log not readable, waiting; no delivery status is recorded meanwhile: give leadpushd read access to it", "path", f.Path, "err", err)
					}
				}
				if !wait(ctx, poll) {
					return ctx.Err()
				}
				continue
			}
			if openErr != "" {
				log.Info("mail log readable again", "path", f.Path)
				openErr = ""
			}
			f.readable.Store(true)
		}
		lines, n, err := r.next(maxBatch)
		if err != nil {
			log.Warn("reading mail log", "path", r.path, "err", err)
			r.close()
			r = nil
			if !wait(ctx, poll) {
				return ctx.Err()
			}
			continue
		}
		if len(lines) > 0 && !r.rotated && r.gz == nil && !r.headMatches(r.head) {
			// Truncated and written again between the last check and
			// this read (copytruncate while lines keep coming): what was
			// just read may be the new file's bytes at the old offset.
			// Drop it and take the truncation from the offset before it.
			r.buf = nil
			truncated()
			continue
		}
		if len(lines) == 0 && r.rotated {
			// The writer may still append to the renamed file until it
			// reopens: wait a few quiet polls before leaving it.
			if r.idle < rotateGrace && r.gz == nil {
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
				n := len(entries)
				entries = parser.Parse(entries, l, t)
				if len(entries) == n && f.Origin != nil {
					if o, ok := ParseOrigin(l, t); ok {
						f.Origin(o)
					}
				}
			}
			r.updateHead(r.off + int64(n))
			next := Position{Inode: r.ino, Offset: r.off + int64(n), Head: r.head}
			f.behind.Store(f.lag(r, n, queue))
			if !deliver(ctx, log, poll, handle, entries, next) {
				return ctx.Err()
			}
			r.off += int64(n)
			r.buf = r.buf[n:]
			r.idle = 0
			pos = next
			continue
		}
		f.behind.Store(f.lag(r, 0, queue))
		// At the end of the file.
		if r.rotated {
			log.Info("finished rotated mail log", "path", r.path, "offset", r.off)
			r.close()
			r = nil
			pos = Position{}
			continue
		}
		if f.Idle {
			if !deliver(ctx, log, poll, handle, nil, pos) {
				return ctx.Err()
			}
		}
		// Look for rotation after the pause, right before reading on: a
		// file truncated and written again during the pause must not be
		// read at the old offset.
		if !wait(ctx, poll) {
			return ctx.Err()
		}
		switch state := r.check(f.Path); state {
		case "rotated":
			log.Info("mail log rotated, finishing the old file", "path", f.Path)
			r.rotated = true
			continue // read to the end once more before switching
		case "truncated":
			truncated()
			continue
		}
	}
}

// lag estimates the bytes not yet handed over: the rest of r past the n
// bytes about to be, the queued rotated files, and Path when r is a
// rotated file.
func (f *Follower) lag(r *reader, n int, queue []string) int64 {
	var total int64
	if fi, err := r.file.Stat(); err == nil && r.gz == nil {
		total += max(fi.Size()-r.off-int64(n), 0)
	}
	if r.rotated {
		for _, q := range queue {
			if fi, err := os.Stat(q); err == nil {
				total += fi.Size()
			}
		}
		if fi, err := os.Stat(f.Path); err == nil {
			total += fi.Size()
		}
	}
	return total
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
		var k int
		var err error
		if r.gz != nil {
			k, err = io.ReadFull(r.gz, chunk)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
		} else {
			k, err = r.file.ReadAt(chunk, r.off+int64(len(r.buf)))
		}
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
	b := r.readHead(int(min(upTo, headLen)))
	r.head, r.headN = fingerprint(b), len(b)
}

func (r *reader) headMatches(head string) bool {
	n := headN(head)
	if n <= 0 {
		return true
	}
	b := r.readHead(n)
	return len(b) == n && fingerprint(b) == head
}

// readHead returns the first n bytes of the file (decompressed), or fewer
// when it is shorter.
func (r *reader) readHead(n int) []byte {
	if r.gz != nil {
		return gzipHead(r.path, n)
	}
	b := make([]byte, n)
	k, _ := r.file.ReadAt(b, 0)
	return b[:k]
}

func (r *reader) close() { r.file.Close() }

// gzipHead returns the first n decompressed bytes of a gzip file.
func gzipHead(path string, n int) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil
	}
	b := make([]byte, n)
	k, _ := io.ReadFull(z, b)
	return b[:k]
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
