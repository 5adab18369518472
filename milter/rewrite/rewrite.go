package rewrite

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// ErrUnparsable is wrapped by the error [Body] and [Message] return when the
// top-level structure cannot be parsed; the input has then been copied to the
// output unchanged.
var ErrUnparsable = errors.New("rewrite: unparsable message")

const (
	// DefaultMaxPartSize is the MaxPartSize used when Options.MaxPartSize is 0.
	DefaultMaxPartSize = 4 << 20

	maxHeaderBytes = 256 << 10 // a part header larger than this leaves the part alone
	maxTopHeader   = 1 << 20   // Message: a header larger than this is unparsable
	maxDepth       = 32        // multipart nesting deeper than this is copied verbatim
	maxNotes       = 8
	ioBufSize      = 16 << 10
	maxLineOctets  = 998 // RFC 5322 section 2.1.1
)

// Options says what to rewrite. Zero Options rewrite nothing.
type Options struct {
	// Opens inserts the open pixel into text/html leaves (needs PixelURL).
	Opens bool
	// Clicks rewrites http and https links (needs ClickURL).
	Clicks bool
	// TextLinks also rewrites bare http(s) URLs in text/plain leaves; it has
	// effect only with Clicks.
	TextLinks bool
	// ClickURL returns the tracked URL for an original absolute http(s) URL.
	// An empty result (or the URL itself) leaves that link alone. Nil disables
	// click tracking.
	ClickURL func(original string) string
	// PixelURL is the src of the 1x1 pixel <img>. Empty disables the pixel.
	PixelURL string
	// IsTracked reports URLs that are already ours (tracked links, the pixel,
	// the unsubscribe link): they are never rewritten again, and a pixel whose
	// src is tracked is not added twice. This is what makes rewriting
	// idempotent. Nil treats only PixelURL itself as tracked.
	IsTracked func(url string) bool
	// MaxPartSize bounds the decoded size of a leaf that is rewritten; a larger
	// leaf is copied verbatim. 0 means DefaultMaxPartSize.
	MaxPartSize int64
}

// Top is what the caller knows of the top-level header (the milter sees the
// header separately from the body). Empty fields take the RFC 2045 defaults:
// text/plain; charset=us-ascii and 7bit.
type Top struct {
	ContentType             string
	ContentTransferEncoding string
}

// Result says what a rewrite did.
type Result struct {
	// Changed is true when the output differs from the input.
	Changed bool
	// Links lists the original URLs that were rewritten, in order, without
	// duplicates.
	Links []string
	// Pixel is true when an open pixel was inserted.
	Pixel bool
	// Skipped is a non-empty reason when the whole body was left alone because
	// of what it is (e.g. "multipart/signed") or because it cannot be parsed.
	Skipped string
	// SetContentTransferEncoding is non-empty when a single-part body changed
	// encoding (a 7bit/8bit body whose new lines would exceed 998 octets becomes
	// quoted-printable): the caller must set the top-level
	// Content-Transfer-Encoding header to this value (adding it if absent).
	// Message has already done so in the header it writes.
	SetContentTransferEncoding string
	// Notes gives, for logging, why some parts were left alone (at most 8).
	Notes []string
}

// Body reads a raw message body (CRLF line ends as Postfix sends them; bare LF
// is tolerated) and writes the rewritten body to w. Only rewritten text leaves
// are held in memory; everything else is streamed.
//
// When the top-level structure cannot be parsed it writes the input unchanged
// and returns Result{Skipped: reason} with an error wrapping ErrUnparsable.
// Problems inside one part leave that part unchanged and are listed in
// Result.Notes. Any other error is a read or write error, after which the output
// is incomplete and must not be used.
func Body(w io.Writer, body io.Reader, top Top, opt Options) (Result, error) {
	if !opt.active() {
		_, err := io.Copy(w, body)
		return Result{}, err
	}
	wk := getWalker(w, body, &opt)
	defer putWalker(wk)
	err := wk.run(top)
	if ferr := wk.w.Flush(); err == nil {
		err = ferr
	}
	return wk.result(), err
}

// Message does what [Body] does for a whole RFC 5322 message (header and
// body). The header is copied verbatim, except that a changed top-level
// Content-Transfer-Encoding is spliced into it.
func Message(w io.Writer, msg io.Reader, opt Options) (Result, error) {
	if !opt.active() {
		_, err := io.Copy(w, msg)
		return Result{}, err
	}
	wk := getWalker(w, msg, &opt)
	defer putWalker(wk)
	err := wk.message()
	if ferr := wk.w.Flush(); err == nil {
		err = ferr
	}
	return wk.result(), err
}

func (o *Options) active() bool {
	return (o.Opens && o.PixelURL != "") || (o.Clicks && o.ClickURL != nil)
}

var walkerPool = sync.Pool{New: func() any {
	return &walker{
		lr: lineReader{br: bufio.NewReaderSize(nil, ioBufSize)},
		w:  bufio.NewWriterSize(nil, ioBufSize),
	}
}}

func getWalker(w io.Writer, r io.Reader, opt *Options) *walker {
	wk := walkerPool.Get().(*walker)
	wk.lr.br.Reset(r)
	wk.w.Reset(w)
	wk.opt = opt
	wk.maxPart = opt.MaxPartSize
	if wk.maxPart <= 0 {
		wk.maxPart = DefaultMaxPartSize
	}
	return wk
}

// putWalker returns a walker to the pool as a zero walker that keeps only
// its buffers: no state of one message (line ends seen, pixel placed,
// links) may reach the next.
func putWalker(wk *walker) {
	if cap(wk.buf) > 1<<20 || cap(wk.htmlOut) > 1<<20 || cap(wk.qpLines) > 1<<14 {
		return // do not keep large leaf buffers alive
	}
	wk.lr.br.Reset(nil)
	wk.w.Reset(nil)
	*wk = walker{
		lr:      lineReader{br: wk.lr.br, pending: wk.lr.pending[:0]},
		w:       wk.w,
		pend:    wk.pend[:0],
		bounds:  wk.bounds[:0],
		buf:     wk.buf[:0],
		htmlOut: wk.htmlOut[:0],
		hdr:     wk.hdr[:0],
		edits:   wk.edits[:0],
		qpLines: wk.qpLines[:0],
	}
	walkerPool.Put(wk)
}

// walker walks the MIME tree of one message.
type walker struct {
	lr      lineReader
	w       *bufio.Writer
	werr    error
	opt     *Options
	maxPart int64
	res     Result
	seen    map[string]struct{} // Links already in res.Links
	pend    []string            // links of the leaf being rewritten
	pixel   bool                // the leaf being rewritten got a pixel
	bounds  [][]byte            // boundaries of the open multiparts, outermost first
	buf     []byte              // leaf being captured
	htmlOut []byte              // rewritten HTML of the leaf being written
	edits   []edit              // what the last rewriteHTML or rewriteText changed
	qpLines []qpLine            // the lines of the quoted-printable leaf being rewritten
	hdr     []byte              // part header being read
	eol     string              // first line end seen ("\r\n" by default)

	head        []byte // Message: top-level header not written yet
	headPending bool
}

func (wk *walker) result() Result {
	r := wk.res
	r.Links = append([]string(nil), r.Links...)
	if len(r.Links) == 0 {
		r.Links = nil
	}
	r.Notes = append([]string(nil), r.Notes...)
	if len(r.Notes) == 0 {
		r.Notes = nil
	}
	return r
}

func (wk *walker) out(b []byte) {
	if wk.werr != nil || len(b) == 0 {
		return
	}
	_, wk.werr = wk.w.Write(b)
}

func (wk *walker) note(format string, args ...any) {
	if len(wk.res.Notes) < maxNotes {
		wk.res.Notes = append(wk.res.Notes, fmt.Sprintf(format, args...))
	}
}

// flushHead writes the pending top-level header of Message, with its
// Content-Transfer-Encoding set to cte when cte is not empty.
func (wk *walker) flushHead(cte string) {
	if !wk.headPending {
		return
	}
	wk.headPending = false
	if cte != "" {
		wk.head = setHeaderField(wk.head, "Content-Transfer-Encoding", cte)
	}
	wk.out(wk.head)
}

// copyRest copies everything that is left, verbatim.
func (wk *walker) copyRest() error {
	wk.flushHead("")
	if wk.lr.havePending {
		wk.lr.havePending = false
		wk.out(wk.lr.pending)
	}
	if wk.werr != nil {
		return wk.werr
	}
	_, err := wk.lr.br.WriteTo(wk.w)
	return err
}

// skipAll copies the rest unchanged and records why.
func (wk *walker) skipAll(reason string, unparsable bool) error {
	wk.res.Skipped = reason
	if err := wk.copyRest(); err != nil {
		return err
	}
	if unparsable {
		return fmt.Errorf("%w: %s", ErrUnparsable, reason)
	}
	return nil
}

func (wk *walker) message() error {
	hdr := wk.hdr[:0]
	for {
		line, bol, err := wk.lr.next()
		if err == io.EOF {
			// A header without a body: nothing to rewrite.
			wk.out(hdr)
			wk.hdr = hdr[:0]
			return wk.werr
		}
		if err != nil {
			return err
		}
		wk.setEOL(line)
		hdr = append(hdr, line...)
		if bol && isBlank(line) {
			break
		}
		if len(hdr) > maxTopHeader {
			wk.out(hdr)
			wk.hdr = hdr[:0]
			return wk.skipAll("header too large", true)
		}
	}
	wk.hdr = hdr[:0]
	h := parseHeader(hdr)
	wk.head = append([]byte(nil), hdr...)
	wk.headPending = true
	return wk.run(Top{ContentType: h.contentType, ContentTransferEncoding: h.cte})
}

// run processes the body whose top-level header is top.
func (wk *walker) run(top Top) error {
	ct, params, err := parseContentType(top.ContentType, "text/plain")
	if err != nil {
		return wk.skipAll("unparsable Content-Type: "+err.Error(), true)
	}
	switch {
	case isSealed(ct):
		return wk.skipAll(ct, false)
	case strings.HasPrefix(ct, "multipart/"):
		b := params["boundary"]
		if !validBoundary(b) {
			return wk.skipAll("multipart without a valid boundary", true)
		}
		wk.flushHead("")
		if err := wk.multipart(b, ct == "multipart/digest"); err != nil {
			return err
		}
		if err := wk.copyRest(); err != nil { // unreachable delimiters, if any
			return err
		}
	case wk.wantLeaf(ct, params, ""):
		if err := wk.leaf(nil, ct, params, top.ContentTransferEncoding, true); err != nil {
			return err
		}
	default:
		if err := wk.copyRest(); err != nil {
			return err
		}
	}
	return wk.werr
}

// isSealed reports types whose content must not change (RFC 1847, RFC 8551).
func isSealed(ct string) bool {
	switch ct {
	case "multipart/signed", "multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime":
		return true
	}
	return false
}

func validBoundary(b string) bool {
	// RFC 2046 allows 1 to 70 characters; be lenient but bounded.
	if len(b) == 0 || len(b) > 200 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i] < ' ' || b[i] > '~' {
			return false
		}
	}
	return true
}

// multipart walks the body of a multipart entity: preamble, parts, epilogue.
// It returns at end of input or before a delimiter line of an enclosing
// multipart, which it leaves unread.
func (wk *walker) multipart(boundary string, digest bool) error {
	if len(wk.bounds) >= maxDepth {
		wk.note("multipart nested too deep")
		return wk.copyUntilDelim()
	}
	me := len(wk.bounds)
	wk.bounds = append(wk.bounds, []byte(boundary))
	defer func() { wk.bounds = wk.bounds[:me] }()
	for {
		line, bol, err := wk.lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		lvl, closing := wk.delim(line, bol)
		if lvl < 0 {
			wk.out(line) // preamble
			continue
		}
		if lvl < me {
			wk.lr.unread(line) // an enclosing multipart goes on: this one was not closed
			return nil
		}
		wk.setEOL(line)
		wk.out(line)
		if closing {
			wk.bounds = wk.bounds[:me]
			return wk.copyUntilDelim() // epilogue
		}
		if err := wk.part(digest); err != nil {
			return err
		}
	}
}

// copyUntilDelim copies lines verbatim up to a delimiter line of an open
// multipart (left unread) or the end of input.
func (wk *walker) copyUntilDelim() error {
	if len(wk.bounds) == 0 {
		return wk.copyRest()
	}
	for {
		line, bol, err := wk.lr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if lvl, _ := wk.delim(line, bol); lvl >= 0 {
			wk.lr.unread(line)
			return nil
		}
		wk.out(line)
	}
}

// part processes one body part, from its header to the next delimiter line.
func (wk *walker) part(digest bool) error {
	hdr := wk.hdr[:0]
	defer func() { wk.hdr = hdr[:0] }()
	for {
		line, bol, err := wk.lr.next()
		if err == io.EOF {
			wk.out(hdr)
			return nil
		}
		if err != nil {
			return err
		}
		if lvl, _ := wk.delim(line, bol); lvl >= 0 {
			wk.out(hdr)
			wk.lr.unread(line)
			return nil
		}
		if len(hdr)+len(line) > maxHeaderBytes {
			wk.out(hdr)
			wk.out(line)
			wk.note("part header too large")
			return wk.copyUntilDelim()
		}
		hdr = append(hdr, line...)
		if bol && isBlank(line) {
			break
		}
	}
	h := parseHeader(hdr)
	def := "text/plain"
	if digest {
		def = "message/rfc822" // RFC 2046 section 5.1.5
	}
	ct, params, err := parseContentType(h.contentType, def)
	switch {
	case err != nil:
		wk.note("part with unparsable Content-Type %q", h.contentType)
	case isSealed(ct):
	case strings.HasPrefix(ct, "multipart/"):
		b := params["boundary"]
		if !validBoundary(b) {
			wk.note("%s part without a valid boundary", ct)
			break
		}
		wk.out(hdr)
		return wk.multipart(b, ct == "multipart/digest")
	case wk.wantLeaf(ct, params, h.disposition):
		return wk.leaf(hdr, ct, params, h.cte, false)
	}
	wk.out(hdr)
	return wk.copyUntilDelim()
}

// wantLeaf reports whether a leaf of this type is rewritten.
func (wk *walker) wantLeaf(ct string, params map[string]string, disposition string) bool {
	switch ct {
	case "text/html":
	case "text/plain":
		if !wk.opt.Clicks || !wk.opt.TextLinks || wk.opt.ClickURL == nil {
			return false
		}
	default:
		return false
	}
	if params["name"] != "" {
		return false // a named text part is a file, not the message text
	}
	if disposition != "" {
		d, dp, err := parseContentType(disposition, "")
		if err != nil || d == "attachment" || dp["filename"] != "" {
			return false
		}
	}
	return true
}

// leaf reads a text leaf into memory, rewrites it and writes it out with its
// header hdr (nil for the top-level body).
func (wk *walker) leaf(hdr []byte, ct string, params map[string]string, cte string, top bool) error {
	limit := int(wk.maxPart*4/3) + 4096 // raw size of a maxPart leaf in base64, with slack
	buf := wk.buf[:0]
	defer func() { wk.buf = buf[:0] }()
	delimited := false
	for {
		line, bol, err := wk.lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if lvl, _ := wk.delim(line, bol); lvl >= 0 {
			wk.lr.unread(line)
			delimited = true
			break
		}
		wk.setEOL(line)
		if len(buf)+len(line) > limit {
			wk.note("%s part larger than MaxPartSize", ct)
			wk.flushHead("")
			wk.out(hdr)
			wk.out(buf)
			wk.out(line)
			return wk.copyUntilDelim()
		}
		buf = append(buf, line...)
	}
	content, eol := buf, []byte(nil)
	if delimited {
		// The line end before a delimiter belongs to the delimiter (RFC 2046 section 5.1.1).
		content, eol = splitFinalEOL(buf)
	}
	newContent, newCTE, changed := wk.transform(content, ct, params, cte)
	if !changed {
		wk.flushHead("")
		wk.out(hdr)
		wk.out(buf)
		return wk.werr
	}
	wk.res.Changed = true
	if wk.pixel {
		wk.res.Pixel = true
	}
	for _, l := range wk.pend {
		if _, dup := wk.seen[l]; dup {
			continue
		}
		if wk.seen == nil {
			wk.seen = make(map[string]struct{})
		}
		wk.seen[l] = struct{}{}
		wk.res.Links = append(wk.res.Links, l)
	}
	if top {
		wk.res.SetContentTransferEncoding = newCTE
		wk.flushHead(newCTE)
	} else if newCTE != "" {
		hdr = setHeaderField(hdr, "Content-Transfer-Encoding", newCTE)
	}
	wk.out(hdr)
	wk.out(newContent)
	wk.out(eol)
	return wk.werr
}

func (wk *walker) setEOL(line []byte) {
	if wk.eol != "" {
		return
	}
	if n := len(line); n > 0 && line[n-1] == '\n' {
		if n > 1 && line[n-2] == '\r' {
			wk.eol = "\r\n"
		} else {
			wk.eol = "\n"
		}
	}
}

// delim reports whether line is a delimiter line of an open multipart: the
// index of that multipart in wk.bounds (or -1) and whether it closes it.
func (wk *walker) delim(line []byte, bol bool) (level int, closing bool) {
	if !bol || len(wk.bounds) == 0 || len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return -1, false
	}
	for i := len(wk.bounds) - 1; i >= 0; i-- {
		b := wk.bounds[i]
		if len(line) < 2+len(b) || string(line[2:2+len(b)]) != string(b) {
			continue
		}
		rest := line[2+len(b):]
		cl := false
		if len(rest) >= 2 && rest[0] == '-' && rest[1] == '-' {
			cl, rest = true, rest[2:]
		}
		if onlyPadding(rest) {
			return i, cl
		}
	}
	return -1, false
}

// onlyPadding reports whether b is transport padding and a line end.
func onlyPadding(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func isBlank(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

func splitFinalEOL(b []byte) (content, eol []byte) {
	n := len(b)
	switch {
	case n >= 2 && b[n-2] == '\r' && b[n-1] == '\n':
		return b[:n-2], b[n-2:]
	case n >= 1 && b[n-1] == '\n':
		return b[:n-1], b[n-1:]
	}
	return b, nil
}

// lineReader returns the input a line at a time, a line longer than its
// buffer in several chunks.
type lineReader struct {
	br          *bufio.Reader
	pending     []byte // a line given back with unread
	havePending bool
	midLine     bool // the last chunk did not end its line
}

// next returns the next chunk, valid until the next call, and whether it
// starts a line. It returns io.EOF, and no data, at the end of the input.
func (lr *lineReader) next() (chunk []byte, bol bool, err error) {
	if lr.havePending {
		lr.havePending = false
		return lr.pending, true, nil
	}
	bol = !lr.midLine
	chunk, err = lr.br.ReadSlice('\n')
	switch err {
	case nil:
		lr.midLine = false
	case bufio.ErrBufferFull:
		lr.midLine = true
		err = nil
	case io.EOF:
		lr.midLine = false
		if len(chunk) > 0 {
			err = nil
		}
	default:
		return nil, bol, err
	}
	return chunk, bol, err
}

// unread gives back a line that starts a line (a delimiter line).
func (lr *lineReader) unread(line []byte) {
	lr.pending = append(lr.pending[:0], line...)
	lr.havePending = true
}
