package milter

import (
	"mime"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/leadpush/leadpush/ledger"
)

// Control headers (seed 000). Every header whose name starts with
// ControlPrefix is removed from every message before delivery.
const (
	ControlPrefix  = "x-leadpush-"
	TagHeader      = "X-Leadpush-Tag"
	TrackingHeader = "X-Leadpush-Tracking"
	RecordHeader   = "X-Leadpush-Record"
	StreamHeader   = "X-Leadpush-Stream"
)

// MaxControlHeaders is the most X-Leadpush-* header fields a message may
// carry; one with more is refused at its end (550 5.7.1) rather than
// stripped, since each deletion costs the MTA a request.
const MaxControlHeaders = 100

// Bounds on what one message may make the milter keep in memory.
const (
	maxTagLen         = 256
	maxHeaderValueLen = 1000
	maxRecorded       = 100 // custom headers recorded per message
	maxCandidates     = 500 // headers kept until end of headers, when X-Leadpush-Record is known
)

// IsControl reports whether a header name is one of ours.
func IsControl(name string) bool {
	return len(name) >= len(ControlPrefix) && strings.EqualFold(name[:len(ControlPrefix)], ControlPrefix)
}

var wordDecoder = mime.WordDecoder{
	// Unknown charsets are left encoded rather than failing the whole value.
	CharsetReader: nil,
}

// unfold removes the line breaks of folded header values (RFC 5322
// section 2.2.3); built once, it is safe for concurrent use.
var unfold = strings.NewReplacer("\r\n", "", "\n", "", "\r", "")

// cleanValue turns a raw header value, as Postfix hands it over, into text:
// unfolded (RFC 5322 section 2.2.3), RFC 2047 words decoded, invalid UTF-8
// and control characters replaced, surrounding space trimmed, and capped at
// max bytes on a character boundary.
func cleanValue(v string, max int) string {
	v = unfold.Replace(v)
	if strings.Contains(v, "=?") {
		if d, err := wordDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Map(func(r rune) rune {
		if r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, v)
	v = strings.TrimSpace(v)
	if len(v) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	return v
}

// ParseTag returns the message tag given the values of every X-Leadpush-Tag
// header, in order. Seed 000: any non-empty string, quoted or unquoted;
// `"password reset"` is the tag `password reset`. The first occurrence with
// a non-empty value wins; an empty or blank value is no tag. A quoted value
// loses its outer quotes and backslash escapes (RFC 5322 quoted-string).
func ParseTag(values []string) string {
	for _, v := range values {
		v = cleanValue(v, 4*maxTagLen)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = unquote(v[1 : len(v)-1])
		}
		v = cleanValue(v, maxTagLen)
		if v != "" {
			return v
		}
	}
	return ""
}

func unquote(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseTracking returns the tracking mode given the values of every
// X-Leadpush-Tracking header. Seed 000: all, opens, clicks or none; a
// missing or unrecognised value is all. Values are compared without regard
// to case, surrounding space or quotes ("Clicks", ` none `, `"opens"`).
// When the header appears several times the first occurrence decides, even
// if it is invalid (then all): the same rule as the tag, and a second header
// appended later by some relay cannot loosen the sender's choice silently.
func ParseTracking(values []string) ledger.TrackingMode {
	if len(values) == 0 {
		return ledger.TrackAll
	}
	v := ledger.TrackingMode(strings.TrimSpace(strings.Trim(strings.ToLower(cleanValue(values[0], 64)), `"'`)))
	switch v {
	case ledger.TrackAll, ledger.TrackOpens, ledger.TrackClicks, ledger.TrackNone:
		return v
	}
	return ledger.TrackAll
}

// ParseStream reads X-Leadpush-Stream values: the first non-empty one,
// as ParseTag reads it, lower-cased; "" for none. Whether it names a
// configured stream is the caller's question.
func ParseStream(values []string) string {
	return strings.ToLower(ParseTag(values))
}

// ParseRecordList reads X-Leadpush-Record values: header names separated by
// commas or space ("Contact-ID, Campaign-ID").
func ParseRecordList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, f := range strings.FieldsFunc(cleanValue(v, maxHeaderValueLen), func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
			if validHeaderName(f) && len(out) < maxRecorded {
				out = append(out, f)
			}
		}
	}
	return out
}

// validHeaderName reports whether s is a field name per RFC 5322 section
// 3.6.8: printable US-ASCII except colon.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == ':' {
			return false
		}
	}
	return true
}

// standardHeaders are never picked up by a record_headers glob (a glob
// such as "*-ID" is about the sender's own identifiers, not Message-ID or
// Content-ID); naming one exactly still records it.
var standardHeaders = map[string]bool{
	"message-id": true, "content-id": true, "resent-message-id": true, "in-reply-to": true,
	"references": true, "x-ms-exchange-organization-network-message-id": true,
}

// Matcher decides which headers are recorded as custom headers.
type Matcher struct {
	patterns []string // lower case
}

// NewMatcher compiles record_headers patterns: header names, or globs with
// * and ? (path.Match syntax), compared without regard to case. A bad
// pattern is an error naming it.
func NewMatcher(patterns []string) (*Matcher, error) {
	m := &Matcher{}
	for _, p := range patterns {
		lp := strings.ToLower(strings.TrimSpace(p))
		if _, err := path.Match(lp, ""); err != nil || lp == "" {
			return nil, &PatternError{Pattern: p}
		}
		m.patterns = append(m.patterns, lp)
	}
	return m, nil
}

// PatternError reports a bad record_headers pattern.
type PatternError struct{ Pattern string }

func (e *PatternError) Error() string { return "bad header pattern " + `"` + e.Pattern + `"` }

// Match reports whether a header is recorded. Control headers never are.
func (m *Matcher) Match(name string) bool {
	if m == nil || IsControl(name) {
		return false
	}
	ln := strings.ToLower(name)
	for _, p := range m.patterns {
		if p == ln {
			return true
		}
		if strings.ContainsAny(p, "*?[") && !standardHeaders[ln] {
			if ok, _ := path.Match(p, ln); ok {
				return true
			}
		}
	}
	return false
}
