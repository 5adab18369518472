package rewrite

import (
	"bytes"
	"mime"
	"strings"
)

// partHeader holds the fields of a header that decide how a part is handled.
type partHeader struct {
	contentType, cte, disposition string
}

// parseHeader extracts the MIME fields from a raw header (RFC 5322 section
// 2.2: fields, folded lines, a final blank line). Lines that are not fields are
// ignored; the first occurrence of a field wins.
func parseHeader(raw []byte) partHeader {
	var h partHeader
	var haveCT, haveCTE, haveCD bool
	forEachField(raw, func(name, value []byte, _, _ int) bool {
		switch {
		case !haveCT && asciiEqualFold(name, "Content-Type"):
			h.contentType, haveCT = unfold(value), true
		case !haveCTE && asciiEqualFold(name, "Content-Transfer-Encoding"):
			h.cte, haveCTE = unfold(value), true
		case !haveCD && asciiEqualFold(name, "Content-Disposition"):
			h.disposition, haveCD = unfold(value), true
		}
		return true
	})
	return h
}

// forEachField calls fn for every field of raw with its name, its raw value
// (continuation lines included) and the field's byte range, until fn returns
// false.
func forEachField(raw []byte, fn func(name, value []byte, start, end int) bool) {
	i := 0
	for i < len(raw) {
		start := i
		end := nextLine(raw, i)
		line := raw[i:end]
		i = end
		if isBlank(line) {
			return
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			continue // not a field (or a stray continuation line)
		}
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t') {
			i = nextLine(raw, i)
		}
		name := bytes.TrimRight(line[:colon], " \t")
		if !fn(name, raw[start+colon+1:i], start, i) {
			return
		}
	}
}

func nextLine(b []byte, i int) int {
	if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(b)
}

func unfold(v []byte) string {
	s := string(v)
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(s)
	}
	return strings.TrimSpace(s)
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// parseContentType parses a Content-Type or Content-Disposition value
// (RFC 2045, RFC 2183, RFC 2231 parameters) and returns the lower-case type;
// an empty value gives def.
func parseContentType(v, def string) (string, map[string]string, error) {
	if strings.TrimSpace(v) == "" {
		return def, nil, nil
	}
	t, params, err := mime.ParseMediaType(v)
	if err != nil {
		return "", nil, err
	}
	return t, params, nil
}

// setHeaderField replaces the first field called name in the raw header hdr
// by "name: value", or adds that field before the blank line that ends hdr.
func setHeaderField(hdr []byte, name, value string) []byte {
	eol := "\r\n"
	if i := bytes.IndexByte(hdr, '\n'); i == 0 || i > 0 && hdr[i-1] != '\r' {
		eol = "\n"
	}
	field := name + ": " + value + eol
	at, end := -1, -1
	forEachField(hdr, func(n, _ []byte, s, e int) bool {
		if asciiEqualFold(n, name) {
			at, end = s, e
			return false
		}
		return true
	})
	if at < 0 {
		// Before the final blank line, or at the end when there is none.
		at = len(hdr)
		if n := len(hdr); n >= 2 && hdr[n-2] == '\r' && hdr[n-1] == '\n' && (n == 2 || hdr[n-3] == '\n') {
			at = n - 2
		} else if n >= 1 && hdr[n-1] == '\n' && (n == 1 || hdr[n-2] == '\n') {
			at = n - 1
		}
		end = at
	}
	out := make([]byte, 0, len(hdr)+len(field))
	out = append(out, hdr[:at]...)
	out = append(out, field...)
	return append(out, hdr[end:]...)
}
