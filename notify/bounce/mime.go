package bounce

import (
	"bytes"
	"encoding/base64"
	"html"
	"io"
	"mime"
	"mime/quotedprintable"
	"regexp"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
)

// The MIME reader below is deliberately lenient: returned mail is often
// truncated, re-wrapped or produced by software that never read RFC 2045.
// It never fails; whatever it cannot make sense of stays text.

const (
	maxDepth = 8   // nesting of multiparts and message/rfc822
	maxParts = 200 // parts in one message, all levels
)

// field is one header field, name as written.
type field struct{ name, value string }

// header is an ordered list of fields; lookups ignore case.
type header []field

func (h header) get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			return f.value
		}
	}
	return ""
}

func (h header) all(name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			out = append(out, f.value)
		}
	}
	return out
}

func (h header) has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			return true
		}
	}
	return false
}

// parseFields reads header fields from b until the first empty line or the
// first line that is neither a field nor a continuation. It returns the
// fields and the remaining bytes (after the empty line, if there was one).
// Folded values are unfolded with a single space (RFC 5322 section 2.2.3).
func parseFields(b []byte) (header, []byte) {
	var h header
	rest := b
	first := true
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		var line []byte
		next := rest[len(rest):]
		if i < 0 {
			line = rest
		} else {
			line, next = rest[:i], rest[i+1:]
		}
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			return h, next
		}
		if first && bytes.HasPrefix(line, []byte("From ")) {
			// mbox separator line before the header.
			first = false
			rest = next
			continue
		}
		first = false
		if line[0] == ' ' || line[0] == '\t' {
			if len(h) > 0 {
				v := strings.TrimSpace(string(line))
				if h[len(h)-1].value == "" {
					h[len(h)-1].value = v
				} else {
					h[len(h)-1].value += " " + v
				}
			}
			rest = next
			continue
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return h, rest
		}
		name := strings.TrimRight(string(line[:c]), " \t")
		if name == "" || strings.ContainsAny(name, " \t") {
			return h, rest
		}
		h = append(h, field{name: name, value: strings.TrimSpace(string(line[c+1:]))})
		rest = next
	}
	return h, rest
}

// part is one node of the MIME tree.
type part struct {
	header    header
	mediaType string            // lower case, "text/plain" when absent
	params    map[string]string // Content-Type parameters, lower-case names
	body      []byte            // leaf body after Content-Transfer-Encoding decoding
	parts     []*part           // children of a multipart
	msg       *part             // the enclosed message of message/rfc822 (and message/global)
}

// walk calls fn for p and every descendant, depth first. It does not
// descend into enclosed messages unless intoMessages is set.
func (p *part) walk(intoMessages bool, fn func(*part)) {
	fn(p)
	for _, c := range p.parts {
		c.walk(intoMessages, fn)
	}
	if intoMessages && p.msg != nil {
		p.msg.walk(intoMessages, fn)
	}
}

type parser struct{ parts int }

func (ps *parser) parse(b []byte, depth int) *part {
	h, body := parseFields(b)
	return ps.build(h, body, depth, "text/plain")
}

func (ps *parser) build(h header, body []byte, depth int, defType string) *part {
	ps.parts++
	p := &part{header: h}
	p.mediaType, p.params = contentType(h.get("Content-Type"), defType)
	switch {
	case strings.HasPrefix(p.mediaType, "multipart/") && depth < maxDepth && ps.parts < maxParts:
		boundary := p.params["boundary"]
		if boundary == "" {
			boundary = guessBoundary(body)
		}
		if boundary == "" {
			p.mediaType = "text/plain"
			p.body = body
			return p
		}
		sub := "text/plain"
		if p.mediaType == "multipart/digest" {
			sub = "message/rfc822"
		}
		for _, raw := range splitMultipart(body, boundary) {
			if ps.parts >= maxParts {
				break
			}
			ch, cb := parseFields(raw)
			p.parts = append(p.parts, ps.build(ch, cb, depth+1, sub))
		}
	case (p.mediaType == "message/rfc822" || p.mediaType == "message/global") && depth < maxDepth && ps.parts < maxParts:
		p.body = decodeCTE(h.get("Content-Transfer-Encoding"), body)
		p.msg = ps.parse(p.body, depth+1)
	default:
		p.body = decodeCTE(h.get("Content-Transfer-Encoding"), body)
	}
	return p
}

// contentType parses a Content-Type value, falling back to a plain split
// when mime.ParseMediaType refuses it (duplicate or malformed parameters).
func contentType(v, def string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return def, map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err == nil {
		return mt, params
	}
	params = map[string]string{}
	segs := strings.Split(v, ";")
	mt = strings.ToLower(strings.TrimSpace(segs[0]))
	for _, s := range segs[1:] {
		k, val, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := params[k]; dup || k == "" {
			continue
		}
		params[k] = strings.Trim(strings.TrimSpace(val), `"`)
	}
	if !strings.Contains(mt, "/") {
		mt = def
	}
	return mt, params
}

// guessBoundary finds a boundary for a multipart whose Content-Type lost
// it: the first "--token" line that occurs at least twice.
func guessBoundary(body []byte) string {
	lines := 0
	for rest := body; len(rest) > 0 && lines < 200; lines++ {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		line = bytes.TrimRight(line, "\r \t")
		if len(line) < 3 || len(line) > 74 || !bytes.HasPrefix(line, []byte("--")) || bytes.ContainsAny(line, " \t") {
			continue
		}
		b := strings.TrimSuffix(string(line[2:]), "--")
		if b != "" && bytes.Count(body, []byte("\n--"+b)) >= 1 && bytes.Count(body, []byte("--"+b)) >= 2 {
			return b
		}
	}
	return ""
}

// splitMultipart returns the raw bodies between boundary delimiters
// (RFC 2046 section 5.1.1). A missing close delimiter ends the last part at
// the end of the input.
func splitMultipart(body []byte, boundary string) [][]byte {
	delim := []byte("--" + boundary)
	var out [][]byte
	start := -1 // start of the current part's content
	pos := 0
	for pos <= len(body) {
		// find the next delimiter at the start of a line
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		at := pos + i
		if at > 0 && body[at-1] != '\n' {
			pos = at + len(delim)
			continue
		}
		if start >= 0 {
			end := at
			if end > start && body[end-1] == '\n' {
				end--
			}
			if end > start && body[end-1] == '\r' {
				end--
			}
			if end < start {
				end = start
			}
			out = append(out, body[start:end])
		}
		after := at + len(delim)
		if bytes.HasPrefix(body[after:], []byte("--")) {
			return out
		}
		nl := bytes.IndexByte(body[after:], '\n')
		if nl < 0 {
			return out
		}
		start = after + nl + 1
		pos = start
	}
	if start >= 0 && start <= len(body) {
		out = append(out, body[start:])
	}
	return out
}

var wsRE = regexp.MustCompile(`[ \t\r\n]+`)

func decodeCTE(cte string, body []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := wsRE.ReplaceAll(body, nil)
		clean = bytes.TrimRight(clean, "=")
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
		n, err := base64.RawStdEncoding.Decode(out, clean)
		if err != nil && n == 0 {
			return body
		}
		return out[:n]
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return body
		}
		return out
	}
	return body
}

var wordDecoder = &mime.WordDecoder{
	CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		enc, err := htmlindex.Get(charset)
		if err != nil {
			return nil, err
		}
		return enc.NewDecoder().Reader(input), nil
	},
}

// decodeHeader decodes RFC 2047 encoded words, keeping the raw value when
// that fails, and always returns valid UTF-8.
func decodeHeader(v string) string {
	if strings.Contains(v, "=?") {
		if d, err := wordDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	return clean(v)
}

// clean makes s valid UTF-8 without control characters, so reports
// marshal to stable JSON and log safely.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

var (
	tagRE   = regexp.MustCompile(`(?is)<(script|style)[^>]*>.*?</(script|style)>|<[^>]*>`)
	breakRE = regexp.MustCompile(`(?i)<(br|/p|/div|/tr|/li|/h[1-6]|p|div|tr)\b[^>]*>`)
)

// text returns the human-readable text of a leaf: decoded bodies of text/*
// parts, HTML reduced to its text.
func (p *part) text() string {
	body := p.body
	if cs := strings.ToLower(p.params["charset"]); cs != "" && cs != "us-ascii" && cs != "utf-8" && cs != "utf8" {
		// ISO-2022-JP (the Japanese carriers), ISO-8859-x, windows-125x...
		// An unknown or lying charset leaves the bytes as they are.
		if enc, err := htmlindex.Get(cs); err == nil {
			if d, err := enc.NewDecoder().Bytes(body); err == nil {
				body = d
			}
		}
	}
	s := strings.ReplaceAll(string(body), "\r\n", "\n")
	if p.mediaType == "text/html" {
		s = breakRE.ReplaceAllString(s, "\n")
		s = tagRE.ReplaceAllString(s, "")
		s = html.UnescapeString(s)
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
