package milter

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
)

// spool holds a message body: in memory up to memLimit bytes, then in an
// unlinked temporary file, so 20 concurrent 25 MB messages do not cost 500 MB
// of heap. The bytes it holds in memory are also taken from mem, shared by
// every spool of the process: when that is spent, bodies go to disk at once,
// whatever their size. Writes past maxSize are counted but dropped (Overflow
// reports it): such a message passes untracked.
type spool struct {
	dir      string
	memLimit int64
	maxSize  int64
	mem      *budget // nil: no process-wide bound
	held     int64   // taken from mem
	buf      bytes.Buffer
	file     *os.File
	size     int64
	overflow bool
}

func newSpool(dir string, memLimit, maxSize int64, mem *budget) *spool {
	s := &spool{dir: dir, memLimit: memLimit, maxSize: maxSize, mem: mem}
	if b, ok := spoolBufs.Get().(*[]byte); ok {
		s.buf = *bytes.NewBuffer((*b)[:0])
	}
	return s
}

// spoolBufs keeps the memory of closed spools for the next messages, up to
// maxPooledSpool bytes each: most bodies are a few tens of kilobytes, and
// growing a fresh buffer for each was a visible share of the milter's
// garbage.
var spoolBufs sync.Pool

const maxPooledSpool = 256 << 10

// Write never fails for want of space in the limit; an I/O error of the
// temporary file is returned.
func (s *spool) Write(p []byte) (int, error) {
	n := len(p)
	if s.overflow || s.size+int64(n) > s.maxSize {
		s.overflow = true
		s.size += int64(n)
		return n, nil
	}
	s.size += int64(n)
	if s.file == nil && int64(s.buf.Len()+n) <= s.memLimit && s.reserve(int64(s.buf.Len()+n)) {
		return s.buf.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "leadpush-body-*")
		if err != nil {
			return 0, err
		}
		os.Remove(f.Name()) // unlinked: gone when closed, even after a crash
		s.file = f
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			return 0, err
		}
		s.buf = bytes.Buffer{}
		s.unreserve()
	}
	return s.file.Write(p)
}

// reserve makes sure total bytes of memory are taken from mem, in steps of
// at least 64 KiB (a lock per body chunk would be a lock per message). It
// reports false when mem is spent.
func (s *spool) reserve(total int64) bool {
	if s.mem == nil || total <= s.held {
		return true
	}
	step := min(max(total-s.held, 64<<10), max(s.memLimit-s.held, total-s.held))
	got, ok := s.mem.tryAcquire(step)
	if ok && got < step {
		s.mem.release(got)
		ok = false
	}
	if !ok {
		return false
	}
	s.held += got
	return true
}

func (s *spool) unreserve() {
	if s.mem != nil && s.held > 0 {
		s.mem.release(s.held)
	}
	s.held = 0
}

// grow makes room for n more bytes in memory, when mem allows.
func (s *spool) grow(n int) {
	if s.file == nil && int64(s.buf.Len()+n) <= s.memLimit && s.reserve(int64(s.buf.Len()+n)) {
		s.buf.Grow(n)
	}
}

// Overflow reports whether the body passed maxSize.
func (s *spool) Overflow() bool { return s.overflow }

// Size is the number of bytes written, kept or not.
func (s *spool) Size() int64 { return s.size }

// InMemory reports whether the body never went to disk.
func (s *spool) InMemory() bool { return s.file == nil }

// Reader returns the kept bytes from the start.
func (s *spool) Reader() (io.Reader, error) {
	if s.overflow {
		return nil, errors.New("milter: body over the size limit")
	}
	if s.file == nil {
		return bytes.NewReader(s.buf.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.file, nil
}

// Close releases the memory and the file.
func (s *spool) Close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	if b := s.buf.Bytes(); cap(b) > 0 && cap(b) <= maxPooledSpool {
		b = b[:0]
		spoolBufs.Put(&b)
	}
	s.buf = bytes.Buffer{}
	s.unreserve()
}
