package maillog

import (
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Rotated files: logrotate's Path.1, Path.2.gz (and Path-YYYYMMDD with
// dateext), postfix logrotate's Path.YYYYMMDD-HHMMSS(.gz) (Postfix 3.7's
// maillog_file_rotate_suffix and maillog_file_compressor defaults). Only
// gzip is read; other compressors are passed over.

// rotatedFile is a candidate next to Path.
type rotatedFile struct {
	path string
	fi   os.FileInfo
}

// rotatedFiles lists the files rotated from path, oldest first (by
// modification time, which gzip keeps).
func rotatedFiles(path string) []rotatedFile {
	var names []string
	for _, pat := range []string{path + ".*", path + "-*"} {
		if m, err := filepath.Glob(pat); err == nil {
			names = append(names, m...)
		}
	}
	var out []rotatedFile
	for _, n := range names {
		if n == path || compressed(n) && !strings.HasSuffix(n, ".gz") {
			continue
		}
		if fi, err := os.Stat(n); err == nil && fi.Mode().IsRegular() {
			out = append(out, rotatedFile{n, fi})
		}
	}
	slices.SortStableFunc(out, func(a, b rotatedFile) int {
		if c := a.fi.ModTime().Compare(b.fi.ModTime()); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	return out
}

func compressed(name string) bool {
	for _, s := range []string{".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// open opens Path at pos, or, when pos belongs to a file rotated away
// while nothing followed it, that file at pos and the list of files
// rotated after it.
func (f *Follower) open(pos Position, log *slog.Logger) (*reader, []string, error) {
	path := f.Path
	cur, curErr := os.Stat(path)
	if pos.Inode == 0 && pos.Offset == 0 {
		r, err := openPlain(path)
		return r, nil, err
	}
	if curErr == nil && (pos.Inode == 0 || inode(cur) == pos.Inode) {
		r, err := openPlain(path)
		if err != nil {
			return nil, nil, err
		}
		if pos.Offset <= r.size() && r.headMatches(pos.Head) {
			r.off, r.head, r.headN = pos.Offset, pos.Head, headN(pos.Head)
			return r, nil, nil
		}
		r.close()
	}
	// The file pos was in is gone from Path: rotated (maybe compressed),
	// or copied and truncated.
	cands := rotatedFiles(path)
	for i, c := range cands {
		if !matches(c, pos) {
			continue
		}
		r, err := openRotated(c.path, pos.Offset, pos.Head)
		if err != nil {
			log.Warn("rotated mail log unreadable; its lines are skipped", "path", c.path, "err", err)
			break
		}
		var queue []string
		for _, n := range cands[i+1:] {
			queue = append(queue, n.path)
		}
		log.Info("resuming in rotated mail log", "path", c.path, "offset", pos.Offset, "then", queue)
		return r, queue, nil
	}
	if curErr != nil {
		return nil, nil, curErr
	}
	log.Warn("mail log was replaced or rewritten while stopped and the file of the saved position is gone; reading it from the start",
		"path", path, "offset", pos.Offset)
	r, err := openPlain(path)
	return r, nil, err
}

// matches reports whether c is the file pos belongs to: the same inode
// (a renamed file), or the same first bytes (a compressed or copied one).
func matches(c rotatedFile, pos Position) bool {
	gz := strings.HasSuffix(c.path, ".gz")
	if !gz && pos.Inode != 0 && inode(c.fi) == pos.Inode {
		return pos.Offset <= c.fi.Size()
	}
	if headN(pos.Head) <= 0 {
		return false
	}
	if gz {
		return fingerprint(gzipHead(c.path, headN(pos.Head))) == pos.Head
	}
	if pos.Offset > c.fi.Size() {
		return false
	}
	r, err := openPlain(c.path)
	if err != nil {
		return false
	}
	defer r.close()
	return r.headMatches(pos.Head)
}

// findCopy returns the rotated file that is a copy of the file with head
// head and holds more than off bytes (logrotate's copytruncate), or "".
func findCopy(path, head string, off int64) string {
	if headN(head) <= 0 {
		return ""
	}
	for _, c := range slices.Backward(rotatedFiles(path)) {
		gz := strings.HasSuffix(c.path, ".gz")
		if !gz && c.fi.Size() <= off {
			continue
		}
		if matches(c, Position{Offset: min(off, c.fi.Size()), Head: head}) {
			return c.path
		}
	}
	return ""
}

func openPlain(path string) (*reader, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("maillog: stat %s: %w", path, err)
	}
	return &reader{path: path, file: file, ino: inode(fi)}, nil
}

func (r *reader) size() int64 {
	fi, err := r.file.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// openRotated opens a rotated file (gzip or plain) at off.
func openRotated(path string, off int64, head string) (*reader, error) {
	r, err := openPlain(path)
	if err != nil {
		return nil, err
	}
	r.rotated = true
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(r.file)
		if err != nil {
			r.close()
			return nil, fmt.Errorf("maillog: %s: %w", path, err)
		}
		if _, err := io.CopyN(io.Discard, z, off); err != nil {
			r.close()
			return nil, fmt.Errorf("maillog: %s shorter than the saved position: %w", path, err)
		}
		r.gz = z
	} else if off > r.size() {
		r.close()
		return nil, fmt.Errorf("maillog: %s shorter than the saved position", path)
	}
	r.off = off
	if off > 0 {
		r.head, r.headN = head, headN(head)
	}
	return r, nil
}
