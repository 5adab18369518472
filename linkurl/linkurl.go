// Package linkurl decides which link URLs Leadpush tracks. The rewriter
// (milter/rewrite) tracks a link only when [Target] says so, and the
// tracker's click handler redirects only to URLs [Trackable] accepts; since
// Target's answers always pass Trackable, a link is never tracked into a
// redirect the tracker would refuse (a broken link where a working one was).
//
// It follows what a browser does with an href (WHATWG URL Standard, "basic
// URL parser"): leading and trailing C0 controls and spaces are stripped,
// ASCII tab and newline removed wherever they are, and the characters the
// parser percent-encodes in path, query and fragment (C0 controls, space,
// DEL) are percent-encoded. So the tracked link leads where the original
// one led.
package linkurl

import (
	"net/url"
	"strings"
)

// Clean returns raw as the URL parser reads it: leading and trailing C0
// controls and spaces stripped, and every ASCII tab, LF and CR removed
// (WHATWG URL Standard, basic URL parser, first steps).
func Clean(raw string) string {
	i, j := 0, len(raw)
	for i < j && raw[i] <= ' ' {
		i++
	}
	for j > i && raw[j-1] <= ' ' {
		j--
	}
	s := raw[i:j]
	if strings.ContainsAny(s, "\t\n\r") {
		s = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return -1
			}
			return r
		}, s)
	}
	return s
}

// Target returns the URL a browser follows for the link raw (an href value,
// entities already decoded) and whether Leadpush tracks it: raw is cleaned,
// the C0 controls, spaces and DEL left inside are percent-encoded, and the
// result must be [Trackable].
func Target(raw string) (string, bool) {
	u := Clean(raw)
	if !hasHTTPScheme(u) {
		return "", false
	}
	if needsEscape(u) {
		var b strings.Builder
		b.Grow(len(u) + 8)
		for i := 0; i < len(u); i++ {
			if c := u[i]; c <= ' ' || c == 0x7f {
				b.WriteByte('%')
				b.WriteByte("0123456789ABCDEF"[c>>4])
				b.WriteByte("0123456789ABCDEF"[c&15])
				continue
			}
			b.WriteByte(u[i])
		}
		u = b.String()
	}
	if !Trackable(u) {
		return "", false
	}
	return u, true
}

// Trackable reports whether the tracker may redirect to u: an absolute http
// or https URL with a host, that net/url parses, without control
// characters, spaces or DEL (which could split or bend a Location header).
func Trackable(u string) bool {
	if !hasHTTPScheme(u) || needsEscape(u) {
		return false
	}
	p, err := url.Parse(u)
	return err == nil && p.Host != "" && (strings.EqualFold(p.Scheme, "http") || strings.EqualFold(p.Scheme, "https"))
}

func needsEscape(u string) bool {
	for i := 0; i < len(u); i++ {
		if u[i] <= ' ' || u[i] == 0x7f {
			return true
		}
	}
	return false
}

func hasHTTPScheme(u string) bool {
	return len(u) > 7 && strings.EqualFold(u[:7], "http://") || len(u) > 8 && strings.EqualFold(u[:8], "https://")
}
