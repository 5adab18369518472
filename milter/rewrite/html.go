package rewrite

import (
	"bytes"
	"strings"

	"golang.org/x/net/html"

	"github.com/leadpush/leadpush/linkurl"
)

const notrackAttr = "data-leadpush-notrack"

// pixelStyle keeps the pixel invisible and out of the layout.
const pixelStyle = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"

// rewriteHTML rewrites the links of an HTML document and adds the open
// pixel. Every token it does not change is copied from Raw(). The result
// lives in the walker's buffer until the next call: the leaf writes it out
// before another leaf is rewritten. wk.edits says which bytes of doc became
// which bytes of the result, so that an encoded leaf is re-encoded only
// where it changed.
func (wk *walker) rewriteHTML(doc []byte) ([]byte, bool) {
	wantPixel := wk.opt.Opens && wk.opt.PixelURL != ""
	out := wk.htmlOut[:0]
	if need := len(doc) + len(doc)/8 + 256; cap(out) < need {
		out = make([]byte, 0, need)
	}
	defer func() { wk.htmlOut = out[:0] }()
	wk.edits = wk.edits[:0]
	out, changed, pixelSeen, at := wk.rewriteTokens(out, doc, false, wantPixel, &wk.edits)
	if wantPixel && !pixelSeen {
		// Before </body>; without one, before </html>; without either, at
		// the end, before the final line ends.
		outAt := at.body
		if outAt < 0 {
			outAt = at.html
		}
		if outAt < 0 {
			outAt = len(bytes.TrimRight(out, " \t\r\n"))
			if openTag(out[:outAt]) {
				// The document ends inside a tag: a pixel would become
				// attributes of it, and another pixel would follow next time.
				return out, changed
			}
		}
		docAt := docPos(wk.edits, outAt)
		tail := append([]byte(nil), out[outAt:]...)
		out = append(out[:outAt], `<img src="`...)
		out = appendAttrValue(out, wk.opt.PixelURL, '"')
		out = append(out, `" width="1" height="1" alt="" style="`+pixelStyle+`">`...)
		n := len(out) - outAt
		out = append(out, tail...)
		wk.edits = insertEdit(wk.edits, edit{docStart: docAt, docEnd: docAt, outStart: outAt, outEnd: outAt + n})
		changed = true
		wk.pixel = true
	}
	return out, changed
}

// openTag reports whether b ends inside a tag that was never closed.
func openTag(b []byte) bool {
	rest := b[bytes.LastIndexByte(b, '>')+1:]
	for {
		i := bytes.IndexByte(rest, '<')
		if i < 0 || i+1 >= len(rest) {
			return false
		}
		if c := rest[i+1]; c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '/' || c == '!' || c == '?' {
			return true
		}
		rest = rest[i+1:]
	}
}

// edit says that doc[docStart:docEnd] became out[outStart:outEnd].
type edit struct {
	docStart, docEnd, outStart, outEnd int
}

// docPos maps a position of the output that is not inside an edit to the
// document.
func docPos(edits []edit, outPos int) int {
	d := outPos
	for _, e := range edits {
		if e.outEnd > outPos {
			break
		}
		d -= (e.outEnd - e.outStart) - (e.docEnd - e.docStart)
	}
	return d
}

// insertEdit adds an insertion edit, shifting the output positions of the
// edits after it.
func insertEdit(edits []edit, n edit) []edit {
	i := 0
	for i < len(edits) && edits[i].outEnd <= n.outStart {
		i++
	}
	shift := n.outEnd - n.outStart
	for j := i; j < len(edits); j++ {
		edits[j].outStart += shift
		edits[j].outEnd += shift
	}
	edits = append(edits, edit{})
	copy(edits[i+1:], edits[i:])
	edits[i] = n
	return edits
}

// endTags are where the pixel may go: the first </body> and </html>
// outside comments, as positions in the output, or -1.
type endTags struct{ body, html int }

// rewriteTokens appends the rewritten doc to out. In a conditional comment
// (inComment) the href of every tag is rewritten, not only of <a> and <area>.
// The content of <noscript> is tokenized as markup: mail clients run no
// scripts, so they show it and its links are clicked. When edits is not nil,
// every changed token is recorded in it.
func (wk *walker) rewriteTokens(out, doc []byte, inComment, wantPixel bool, edits *[]edit) (_ []byte, changed, pixelSeen bool, at endTags) {
	at = endTags{-1, -1}
	z := html.NewTokenizer(bytes.NewReader(doc))
	pos := 0 // doc[:pos] has been tokenized
	for {
		tt := z.Next()
		start := len(out)
		// Raw first: TagName and TagAttr change the bytes Raw returns.
		out = append(out, z.Raw()...)
		rawLen := len(out) - start
		var ch bool
		switch tt {
		case html.ErrorToken:
			return out, changed, pixelSeen, at
		case html.StartTagToken, html.SelfClosingTagToken:
			if !inComment && !maybeTag(out[start:], 1, "aAiInN") {
				break // TagName allocates: skip tags that cannot matter
			}
			name, hasAttr := z.TagName()
			if tt == html.StartTagToken && string(name) == "noscript" {
				z.NextIsNotRawText()
			}
			if !hasAttr {
				break
			}
			switch {
			case inComment || string(name) == "a" || string(name) == "area":
				out, ch = wk.rewriteTag(z, out, start)
			case wantPixel && !pixelSeen && string(name) == "img":
				pixelSeen = wk.isPixel(z)
			}
		case html.EndTagToken:
			// From the raw bytes: TagName allocates, and </h2>, </b> abound.
			if wantPixel && !inComment {
				switch raw := out[start:]; {
				case at.body < 0 && endTagIs(raw, "body"):
					at.body = start
				case at.html < 0 && endTagIs(raw, "html"):
					at.html = start
				}
			}
		case html.CommentToken:
			if inComment {
				break
			}
			raw := out[start:]
			if !bytes.HasPrefix(raw, []byte("<!--")) || !bytes.HasSuffix(raw, []byte("-->")) || len(raw) < 7 {
				break
			}
			inner := raw[4 : len(raw)-3]
			if !bytes.HasPrefix(bytes.TrimLeft(inner, " \t\r\n"), []byte("[if")) {
				break
			}
			inner = append([]byte(nil), inner...)
			rw, cch, _, _ := wk.rewriteTokens(make([]byte, 0, len(inner)+64), inner, true, false, nil)
			if cch {
				out = append(out[:start+4], rw...)
				out = append(out, "-->"...)
				ch = true
			}
		}
		if ch {
			changed = true
			if edits != nil {
				*edits = append(*edits, edit{docStart: pos, docEnd: pos + rawLen, outStart: start, outEnd: len(out)})
			}
		}
		pos += rawLen
	}
}

// endTagIs reports whether the raw end tag </...> is </name>, in any case,
// as the tokenizer reads a tag name (ended by white space, '/' or '>').
func endTagIs(raw []byte, name string) bool {
	n := 2 + len(name)
	return len(raw) > n && asciiEqualFold(raw[2:n], name) && (isHTMLSpace(raw[n]) || raw[n] == '/' || raw[n] == '>')
}

// maybeTag reports whether raw[i] is one of the bytes of first.
func maybeTag(raw []byte, i int, first string) bool {
	return i < len(raw) && strings.IndexByte(first, raw[i]) >= 0
}

// isPixel reports whether the current <img> has a tracked src.
func (wk *walker) isPixel(z *html.Tokenizer) bool {
	for {
		k, v, more := z.TagAttr()
		if string(k) == "src" {
			return wk.isTracked(strings.TrimSpace(string(v)))
		}
		if !more {
			return false
		}
	}
}

func (wk *walker) isTracked(u string) bool {
	if wk.opt.IsTracked != nil {
		return wk.opt.IsTracked(u)
	}
	return u != "" && u == wk.opt.PixelURL
}

// attrSpan locates one attribute in a raw tag.
type attrSpan struct {
	keyStart, keyEnd int
	valStart, valEnd int
	end              int  // end of the attribute (after a closing quote)
	quote            byte // '"', '\'', 0 for unquoted, noValue for none
}

const noValue = 1

// rewriteTag rewrites the <a>-like tag that out[start:] holds: its href, and
// the removal of data-leadpush-notrack.
func (wk *walker) rewriteTag(z *html.Tokenizer, out []byte, start int) ([]byte, bool) {
	var spansBuf [8]attrSpan
	tag := out[start:]
	spans := scanAttrs(tag, spansBuf[:0])
	href, notrack := -1, -1
	var hrefVal string
	for i := 0; ; i++ {
		k, v, more := z.TagAttr()
		// The tokenizer is the reference: on any disagreement with the
		// scanner, leave the tag alone.
		if i >= len(spans) || !asciiEqualFold(tag[spans[i].keyStart:spans[i].keyEnd], string(k)) {
			return out, false
		}
		switch string(k) {
		case "href":
			href, hrefVal = i, string(v)
		case notrackAttr:
			notrack = i
		}
		if !more {
			if i != len(spans)-1 {
				return out, false
			}
			break
		}
	}
	switch {
	case notrack >= 0:
		s := spans[notrack]
		from := s.keyStart
		for from > 0 && isHTMLSpace(tag[from-1]) {
			from-- // and the white space before it
		}
		if notrack > 0 && spans[notrack-1].quote == 0 && s.end < len(tag) && tag[s.end] == '/' {
			from = s.keyStart // keep the space that ends the unquoted value before
		}
		t := append([]byte(nil), tag...)
		out = append(out[:start], t[:from]...)
		return append(out, t[s.end:]...), true
	case href >= 0 && spans[href].quote != noValue && wk.opt.Clicks && wk.opt.ClickURL != nil:
		nu, ok := wk.track(hrefVal)
		if !ok {
			return out, false
		}
		s := spans[href]
		t := append([]byte(nil), tag...)
		out = append(out[:start], t[:s.valStart]...)
		out = appendAttrValue(out, nu, s.quote)
		return append(out, t[s.valEnd:]...), true
	}
	return out, false
}

// track returns the tracked URL for a link, or false when it stays as it
// is. linkurl decides, as for the tracker: the link is cleaned the way a
// browser cleans it, and only a URL the tracker redirects to is tracked.
func (wk *walker) track(raw string) (string, bool) {
	u, ok := linkurl.Target(raw)
	if !ok || wk.isTracked(u) {
		return "", false
	}
	nu := wk.opt.ClickURL(u)
	if nu == "" || nu == u {
		return "", false
	}
	wk.pend = append(wk.pend, u)
	return nu, true
}

// appendAttrValue appends s escaped for an attribute value quoted with quote
// (0 for unquoted), so that a tokenizer reads back exactly s.
func appendAttrValue(dst []byte, s string, quote byte) []byte {
	// Tracking URLs are base64url and never need escaping: copy them whole.
	if !strings.ContainsAny(s, "&<>\"'\r") && (quote != 0 || !strings.ContainsAny(s, " \t\n\f`")) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '&':
			dst = append(dst, "&amp;"...)
		case c == '<':
			dst = append(dst, "&lt;"...)
		case c == '>':
			dst = append(dst, "&gt;"...)
		case c == '"' && quote != '\'':
			dst = append(dst, "&#34;"...)
		case c == '\'' && quote != '"':
			dst = append(dst, "&#39;"...)
		case c == '\r' || quote == 0 && (c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '`'):
			// A raw CR would read back as LF (HTML input preprocessing).
			dst = append(dst, "&#"...)
			dst = append(dst, '0'+c/10, '0'+c%10, ';')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func isHTMLSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// scanAttrs locates the attributes of a raw start tag the way
// golang.org/x/net/html's Tokenizer reads them (readTag): attributes with an
// empty name and repeated names are dropped.
func scanAttrs(tag []byte, spans []attrSpan) []attrSpan {
	n := len(tag)
	i := 2 // '<' and the first byte of the name
	for i < n {
		c := tag[i]
		if isHTMLSpace(c) {
			i++
			break
		}
		if c == '/' || c == '>' {
			break
		}
		i++
	}
	i = skipSpace(tag, i)
	for i < n && tag[i] != '>' {
		s := attrSpan{keyStart: i, quote: noValue}
		j := i
		for j < n {
			c := tag[j]
			if c == '=' && j == s.keyStart {
				j++
				continue
			}
			if c == '=' || c == '/' || c == '>' || isHTMLSpace(c) {
				break
			}
			j++
		}
		s.keyEnd, s.end = j, j
		i = skipSpace(tag, j)
		if i < n {
			c := tag[i]
			i++
			switch c {
			case '/':
			case '=':
				i = skipSpace(tag, i)
				if i < n {
					q := tag[i]
					i++
					switch q {
					case '>':
						i--
						s.valStart, s.valEnd, s.end = i, i, i
						s.quote = 0
					case '"', '\'':
						s.quote, s.valStart = q, i
						if k := bytes.IndexByte(tag[i:], q); k >= 0 {
							s.valEnd, i = i+k, i+k+1
						} else {
							s.valEnd, i = n, n
						}
						s.end = i
					default:
						s.quote, s.valStart = 0, i-1
						for i < n && !isHTMLSpace(tag[i]) && tag[i] != '>' {
							i++
						}
						s.valEnd, s.end = i, i
						if i < n && isHTMLSpace(tag[i]) {
							i++
						}
					}
				} else {
					s.quote = 0
					s.valStart, s.valEnd, s.end = n, n, n
				}
			default:
				i--
			}
		}
		if s.keyEnd > s.keyStart && !dupAttr(tag, spans, s) {
			spans = append(spans, s)
		}
		i = skipSpace(tag, i)
	}
	return spans
}

func dupAttr(tag []byte, spans []attrSpan, s attrSpan) bool {
	k := string(tag[s.keyStart:s.keyEnd])
	for _, p := range spans {
		if asciiEqualFold(tag[p.keyStart:p.keyEnd], k) {
			return true
		}
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isHTMLSpace(b[i]) {
		i++
	}
	return i
}
