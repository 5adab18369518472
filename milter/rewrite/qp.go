package rewrite

import (
	"bytes"
	"sort"

	"golang.org/x/text/encoding"
)

// qpLine is one raw line of a quoted-printable leaf: where it starts in the
// raw bytes and in the decoded ones, whether it ends with a soft line break,
// and the length of its hard line end ("\r\n" or "\n", copied into the
// decoded bytes; 0 for a soft break or a last line without one).
type qpLine struct {
	raw0, dec0 int32
	eol        uint8
	soft       bool
}

// byteEdit is an edit in the bytes under the transfer encoding (the
// charset-encoded text): dec[d0:d1] becomes repl.
type byteEdit struct {
	d0, d1 int
	repl   []byte
}

// mapEdits turns edits of the decoded text into edits of the bytes it was
// decoded from (enc nil: they are the same), each trimmed to the bytes that
// really change. It reports false when the charset does not encode the
// text piece by piece into the same bytes (a stateful charset).
func mapEdits(edits []edit, text, newText, dec []byte, enc encoding.Encoding) ([]byteEdit, bool) {
	out := make([]byteEdit, 0, len(edits))
	var e *encoding.Encoder
	if enc != nil {
		e = enc.NewEncoder()
	}
	conv := func(b []byte) ([]byte, bool) {
		if e == nil {
			return b, true
		}
		r, err := e.Bytes(b)
		return r, err == nil
	}
	prev, d := 0, 0 // text[:prev] is dec[:d]
	for _, ed := range edits {
		if ed.docStart < prev {
			return nil, false
		}
		same, ok := conv(text[prev:ed.docStart])
		if !ok || !bytes.HasPrefix(dec[d:], same) {
			return nil, false
		}
		d += len(same)
		old, ok1 := conv(text[ed.docStart:ed.docEnd])
		repl, ok2 := conv(newText[ed.outStart:ed.outEnd])
		if !ok1 || !ok2 || !bytes.HasPrefix(dec[d:], old) {
			return nil, false
		}
		// Only what differs: the rest of a changed tag stays as it was.
		p := 0
		for p < len(old) && p < len(repl) && old[p] == repl[p] {
			p++
		}
		s := 0
		for s < len(old)-p && s < len(repl)-p && old[len(old)-1-s] == repl[len(repl)-1-s] {
			s++
		}
		if p < len(old)-s || p < len(repl)-s {
			out = append(out, byteEdit{d0: d + p, d1: d + len(old) - s, repl: repl[p : len(repl)-s]})
		}
		d += len(old)
		prev = ed.docEnd
	}
	rest, ok := conv(text[prev:])
	return out, ok && bytes.Equal(dec[d:], rest)
}

// spliceQP writes a quoted-printable leaf with the edits applied: the raw
// lines that hold no edit are copied as they are; the lines that do are
// encoded again (with soft breaks at 76 columns), their hard line ends kept
// and, when the last of them ended with a soft break, ended by one. eol
// ends soft breaks on a line that has no line end of its own.
func spliceQP(raw, dec []byte, lines []qpLine, edits []byteEdit, eol string) []byte {
	n := len(lines) - 1 // the last entry marks the end
	lineOf := func(p int) int {
		i := sort.Search(n, func(i int) bool { return int(lines[i+1].dec0) > p })
		return min(i, n-1)
	}
	lastOf := func(e byteEdit) int { return lineOf(max(e.d1-1, e.d0)) }
	out := make([]byte, 0, len(raw)+len(raw)/8)
	copied := 0 // raw[:copied] is done
	for k := 0; k < len(edits); {
		l1, l2 := lineOf(edits[k].d0), lastOf(edits[k])
		j := k + 1
		for j < len(edits) && lineOf(edits[j].d0) <= l2 {
			l2 = max(l2, lastOf(edits[j]))
			j++
		}
		out = append(out, raw[copied:lines[l1].raw0]...)
		q := qpEncoder{out: out, eol: rawEOL(raw[lines[l1].raw0:lines[l1+1].raw0], eol)}
		p, l := int(lines[l1].dec0), l1
		for _, e := range edits[k:j] {
			l = q.decoded(dec, lines, p, e.d0, l)
			q.text(e.repl)
			p = e.d1
		}
		q.decoded(dec, lines, p, int(lines[l2+1].dec0), l)
		if last := lines[l2]; last.soft {
			q.out = append(q.out, '=')
			q.out = append(q.out, rawEOL(raw[last.raw0:lines[l2+1].raw0], eol)...)
		} else {
			q.endLine()
		}
		out = q.out
		copied = int(lines[l2+1].raw0)
		k = j
	}
	return append(out, raw[copied:]...)
}

// rawEOL returns the line end of a raw line, def when it has none.
func rawEOL(line []byte, def string) string {
	if bytes.HasSuffix(line, []byte("\r\n")) {
		return "\r\n"
	}
	if bytes.HasSuffix(line, []byte("\n")) {
		return "\n"
	}
	return def
}

// qpEncoder encodes quoted-printable (RFC 2045 section 6.7) whose hard line
// breaks are said, not guessed: a CR or LF byte of the data is encoded
// (=0D, =0A), so it decodes to the same byte and not to a line end.
type qpEncoder struct {
	out []byte
	col int
	eol string // of soft line breaks
}

const hexDigits = "0123456789ABCDEF"

// room starts a new line with a soft break when w more columns would pass
// 75 (76 with the "=").
func (q *qpEncoder) room(w int) {
	if q.col+w > 75 {
		q.out = append(q.out, '=')
		q.out = append(q.out, q.eol...)
		q.col = 0
	}
}

func (q *qpEncoder) data(c byte) {
	if c >= '!' && c <= '~' && c != '=' || c == ' ' || c == '\t' {
		q.room(1)
		q.out = append(q.out, c)
		q.col++
		return
	}
	q.room(3)
	q.out = append(q.out, '=', hexDigits[c>>4], hexDigits[c&15])
	q.col += 3
}

// endLine encodes white space that would end the line: a decoder drops it.
func (q *qpEncoder) endLine() {
	if n := len(q.out); q.col > 0 && (q.out[n-1] == ' ' || q.out[n-1] == '\t') {
		c := q.out[n-1]
		q.out = q.out[:n-1]
		q.col--
		q.room(3)
		q.out = append(q.out, '=', hexDigits[c>>4], hexDigits[c&15])
		q.col += 3
	}
}

func (q *qpEncoder) hard(eol []byte) {
	q.endLine()
	q.out = append(q.out, eol...)
	q.col = 0
}

// text encodes new text: its line ends ("\r\n", "\n") are hard line breaks.
func (q *qpEncoder) text(b []byte) {
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '\n':
			q.hard(b[i : i+1])
		case b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n':
			q.hard(b[i : i+2])
			i++
		default:
			q.data(b[i])
		}
	}
}

// decoded encodes dec[from:to], unchanged bytes of the lines from line l
// on: a hard line end of a raw line is written as it was, every other byte
// as data. It returns the line it stopped in, where the next call starts
// (a region may hold many edits: no scan from its first line each time).
func (q *qpEncoder) decoded(dec []byte, lines []qpLine, from, to, l int) int {
	for from < to {
		for int(lines[l+1].dec0) <= from {
			l++
		}
		end := int(lines[l+1].dec0)
		eolAt := end - int(lines[l].eol)
		if from == eolAt && to >= end && lines[l].eol > 0 {
			q.hard(dec[eolAt:end])
			from = end
			continue
		}
		stop := min(to, end)
		if from < eolAt {
			stop = min(stop, eolAt)
		}
		for _, c := range dec[from:stop] {
			q.data(c)
		}
		from = stop
	}
	return l
}

// encodeQP encodes data whole, its line ends ("\r\n", "\n") as hard line
// breaks, with soft breaks ending in eol.
func encodeQP(data []byte, eol string) []byte {
	q := qpEncoder{out: make([]byte, 0, len(data)+len(data)/8), eol: eol}
	q.text(data)
	q.endLine()
	return q.out
}
