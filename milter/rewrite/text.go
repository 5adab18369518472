package rewrite

import "bytes"

// rewriteText rewrites the bare http(s) URLs of a text/plain document,
// recording each change in wk.edits.
func (wk *walker) rewriteText(doc []byte) ([]byte, bool) {
	var out []byte
	wk.edits = wk.edits[:0]
	copied := 0 // doc[:copied] is in out
	for i := 0; i < len(doc); {
		k := bytes.Index(doc[i:], []byte("://"))
		if k < 0 {
			break
		}
		p := i + k
		i = p + 3
		start := -1
		switch {
		case p >= 5 && asciiEqualFold(doc[p-5:p], "https"):
			start = p - 5
		case p >= 4 && asciiEqualFold(doc[p-4:p], "http"):
			start = p - 4
		}
		if start < 0 || start < copied || start > 0 && isWordByte(doc[start-1]) {
			continue
		}
		end := p + 3
		for end < len(doc) && !endsURL(doc[end]) {
			end++
		}
		if end < len(doc) && doc[end] >= 0x80 {
			// Probably an internationalized URL: rather leave it alone than cut it.
			for i < len(doc) && !endsURL(doc[i]) || i < len(doc) && doc[i] >= 0x80 {
				i++
			}
			continue
		}
		end = trimURLEnd(doc, start, end)
		i = end
		nu, ok := wk.track(string(doc[start:end]))
		if !ok {
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(doc)+len(doc)/4+len(nu))
		}
		out = append(out, doc[copied:start]...)
		wk.edits = append(wk.edits, edit{docStart: start, docEnd: end, outStart: len(out), outEnd: len(out) + len(nu)})
		out = append(out, nu...)
		copied = end
	}
	if out == nil {
		return doc, false
	}
	return append(out, doc[copied:]...), true
}

// endsURL reports bytes that cannot be in a bare URL.
func endsURL(c byte) bool {
	return c <= ' ' || c == '<' || c == '>' || c == '"' || c >= 0x7f
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c >= 0x80
}

// trimURLEnd drops trailing punctuation that ends a sentence rather than the
// URL, keeping a ')' that closes a '(' of the URL.
func trimURLEnd(doc []byte, start, end int) int {
	for end > start {
		switch doc[end-1] {
		case '.', ',', ';', ':', '!', '?', '\'', '"':
			end--
			continue
		case ')':
			u := doc[start:end]
			if bytes.Count(u, []byte("(")) >= bytes.Count(u, []byte(")")) {
				return end
			}
			end--
			continue
		}
		return end
	}
	return end
}
