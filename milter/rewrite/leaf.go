package rewrite

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
)

// transform decodes a leaf's raw content, rewrites it and encodes it again.
// It returns the new raw content, the new Content-Transfer-Encoding when that
// had to change, and whether anything changed. It records in wk.pend and
// wk.pixel what it did; those count only when changed is true.
func (wk *walker) transform(raw []byte, ct string, params map[string]string, cte string) (out []byte, newCTE string, changed bool) {
	wk.pend, wk.pixel = wk.pend[:0], false
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, "", false
	}
	cte = strings.ToLower(strings.TrimSpace(cte))
	var (
		decoded []byte
		layout  b64Layout
		err     error
	)
	switch cte {
	case "", "7bit", "8bit", "binary":
		decoded = raw
	case "quoted-printable":
		decoded, wk.qpLines, err = decodeQPLines(raw, wk.qpLines[:0], true)
	case "base64":
		decoded, layout, err = decodeBase64(raw)
	default:
		wk.note("%s part in Content-Transfer-Encoding %q", ct, cte)
		return nil, "", false
	}
	if err != nil {
		wk.note("%s part: invalid %s: %v", ct, cte, err)
		return nil, "", false
	}
	if int64(len(decoded)) > wk.maxPart {
		wk.note("%s part larger than MaxPartSize", ct)
		return nil, "", false
	}
	cs := strings.ToLower(strings.TrimSpace(params["charset"]))
	enc, ok := lookupCharset(cs)
	if !ok {
		wk.note("%s part in unknown charset %q", ct, cs)
		return nil, "", false
	}
	text := decoded
	if enc != nil {
		text, err = enc.NewDecoder().Bytes(decoded)
		if err != nil {
			wk.note("%s part: invalid %s: %v", ct, cs, err)
			return nil, "", false
		}
		back, err := enc.NewEncoder().Bytes(text)
		if err != nil || !bytes.Equal(back, decoded) {
			wk.note("%s part: charset %s does not round-trip", ct, cs)
			return nil, "", false
		}
	}
	var newText []byte
	if ct == "text/html" {
		newText, changed = wk.rewriteHTML(text)
	} else {
		newText, changed = wk.rewriteText(text)
	}
	if !changed {
		return nil, "", false
	}
	if cte == "quoted-printable" && len(raw) < 1<<31-1 { // qpLine offsets are int32
		// Only the lines that hold a change are encoded again; the others,
		// their soft line breaks and their =0A and =0D, stay as they were.
		if edits, ok := mapEdits(wk.edits, text, newText, decoded, enc); ok {
			return spliceQP(raw, decoded, wk.qpLines, edits, eolOf(raw, wk.eol)), "", true
		}
	}
	encoded := newText
	if enc != nil {
		encoded, err = enc.NewEncoder().Bytes(newText)
		if err != nil {
			wk.note("%s part: new URL not representable in %s", ct, cs)
			return nil, "", false
		}
	}
	switch cte {
	case "quoted-printable":
		return encodeQP(encoded, eolOf(raw, wk.eol)), "", true
	case "base64":
		return encodeBase64(encoded, layout), "", true
	case "binary":
		return encoded, "", true
	}
	if hasLongLine(encoded, maxLineOctets) {
		return encodeQP(encoded, eolOf(raw, wk.eol)), "quoted-printable", true
	}
	return encoded, "", true
}

// lookupCharset returns the encoding of a MIME charset name, nil for the ones
// handled as bytes (UTF-8 and ASCII: the rewriter only ever adds ASCII), and
// false when it is unknown.
func lookupCharset(cs string) (encoding.Encoding, bool) {
	switch cs {
	case "", "us-ascii", "ascii", "utf-8", "utf8", "ansi_x3.4-1968", "iso646-us", "us":
		return nil, true
	}
	e, err := ianaindex.MIME.Encoding(cs)
	if err != nil || e == nil {
		e, err = htmlindex.Get(cs)
		if err != nil || e == nil {
			return nil, false
		}
	}
	return e, true
}

// b64Layout is how a base64 body was laid out, so that it can be laid out the
// same way again.
type b64Layout struct {
	lineLen int
	eol     string
	leader  []byte // blank lines before the first base64 line
	trailer []byte // white space after the last base64 character
}

func decodeBase64(raw []byte) ([]byte, b64Layout, error) {
	var l b64Layout
	l.eol = "\r\n"
	body := bytes.TrimRight(raw, " \t\r\n")
	l.trailer = raw[len(body):]
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	l.leader = raw[:len(body)-len(trimmed)]
	// The line length is that of the first full line, one followed by
	// another: not of a blank line before it, nor of a last, shorter one.
	if i := bytes.IndexByte(trimmed, '\n'); i >= 0 {
		if i == 0 || trimmed[i-1] != '\r' {
			l.eol = "\n"
		}
		l.lineLen = len(bytes.TrimRight(trimmed[:i], " \t\r"))
	} else if n := len(trimmed); n > 76 {
		l.lineLen = n // one long line: keep lines that long
	}
	compact := make([]byte, 0, len(trimmed))
	for _, c := range trimmed {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			compact = append(compact, c)
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
	n, err := base64.StdEncoding.Decode(out, compact)
	if err != nil {
		return nil, l, err
	}
	return out[:n], l, nil
}

func encodeBase64(data []byte, l b64Layout) []byte {
	line := l.lineLen
	if line <= 0 || line > maxLineOctets {
		line = 76
	}
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(data)))
	base64.StdEncoding.Encode(enc, data)
	out := make([]byte, 0, len(l.leader)+len(enc)+len(enc)/line*len(l.eol)+len(l.trailer))
	out = append(out, l.leader...)
	for len(enc) > line {
		out = append(out, enc[:line]...)
		out = append(out, l.eol...)
		enc = enc[line:]
	}
	out = append(out, enc...)
	return append(out, l.trailer...)
}

// eolOf returns the first line end of b, or def when b has none.
func eolOf(b []byte, def string) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		if i > 0 && b[i-1] == '\r' {
			return "\r\n"
		}
		return "\n"
	}
	if def == "" {
		return "\r\n"
	}
	return def
}

// hasLongLine reports whether b has a line longer than max octets, line end
// excluded.
func hasLongLine(b []byte, max int) bool {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return len(b) > max
		}
		n := i
		if n > 0 && b[n-1] == '\r' {
			n--
		}
		if n > max {
			return true
		}
		b = b[i+1:]
	}
	return false
}

// decodeQP decodes quoted-printable (RFC 2045 section 6.7) as leniently as
// mime/quotedprintable.Reader, in one pass: trailing white space is dropped,
// "=" at the end of a line joins it to the next, an "=" not followed by two
// hex digits stays as it is, and bytes of 0x80 and above are accepted.
func decodeQP(raw []byte) ([]byte, error) {
	out, _, err := decodeQPLines(raw, nil, false)
	return out, err
}

// decodeQPLines is decodeQP that also appends to lines, with track,
// where each raw line starts in raw and in the decoded bytes and how it
// ends, then a final entry at the end of both.
func decodeQPLines(raw []byte, lines []qpLine, track bool) ([]byte, []qpLine, error) {
	out := make([]byte, 0, len(raw))
	all := raw
	for len(raw) > 0 {
		var line, eol []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i+1], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		whole := line
		l := qpLine{raw0: int32(len(all) - len(raw) - len(whole)), dec0: int32(len(out))}
		line = bytes.TrimRight(line, " \t\r\n")
		soft := len(line) > 0 && line[len(line)-1] == '='
		if soft {
			line = line[:len(line)-1]
			rest := bytes.TrimLeft(whole[len(line)+1:], " \t")
			if !bytes.HasPrefix(rest, []byte("\n")) && !bytes.HasPrefix(rest, []byte("\r\n")) &&
				!(len(rest) == 0 && len(line) > 0 && len(raw) == 0) {
				return nil, lines, fmt.Errorf("quotedprintable: invalid bytes after =: %q", rest)
			}
			l.soft = true
		} else if n := len(whole); n > 0 && whole[n-1] == '\n' {
			eol = whole[n-1:]
			if n > 1 && whole[n-2] == '\r' {
				eol = whole[n-2:]
			}
		}
		for i := 0; i < len(line); i++ {
			c := line[i]
			switch {
			case c == '=':
				if h, ok := unhex2(line[i+1:]); ok {
					out = append(out, h)
					i += 2
					continue
				}
				if i+1 >= len(line) {
					return nil, lines, errors.New("quotedprintable: truncated escape")
				}
				out = append(out, '=') // not an escape: kept, as mime/quotedprintable does
			case c == '\t' || c == '\r' || c >= ' ' && c <= '~' || c >= 0x80:
				out = append(out, c)
			default:
				return nil, lines, fmt.Errorf("quotedprintable: invalid unescaped byte 0x%02x", c)
			}
		}
		out = append(out, eol...)
		if track {
			l.eol = uint8(len(eol))
			lines = append(lines, l)
		}
	}
	if track {
		lines = append(lines, qpLine{raw0: int32(len(all)), dec0: int32(len(out))})
	}
	return out, lines, nil
}

func unhex2(b []byte) (byte, bool) {
	if len(b) < 2 {
		return 0, false
	}
	hi, ok1 := unhex(b[0])
	lo, ok2 := unhex(b[1])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
