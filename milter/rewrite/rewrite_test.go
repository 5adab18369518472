package rewrite

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/internal/golden"
	"github.com/leadpush/leadpush/linkurl"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset"
	"golang.org/x/net/html"
)

const (
	trackPrefix = "https://t.example.com/"
	clickPrefix = trackPrefix + "c/"
	pixelURL    = trackPrefix + "o/PIXEL.gif"
)

// testOptions are deterministic: a click URL encodes its original.
func testOptions() Options {
	return Options{
		Opens:     true,
		Clicks:    true,
		TextLinks: true,
		ClickURL: func(u string) string {
			return clickPrefix + base64.RawURLEncoding.EncodeToString([]byte(u))
		},
		PixelURL:  pixelURL,
		IsTracked: func(u string) bool { return strings.HasPrefix(u, trackPrefix) },
	}
}

func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob("testdata/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string][]byte)
	for _, n := range names {
		if strings.HasSuffix(n, ".golden.eml") {
			continue
		}
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(n)] = b
	}
	if len(m) < 16 {
		t.Fatalf("corpus has %d messages, want at least 16", len(m))
	}
	return m
}

func rewriteMessage(t testing.TB, msg []byte, opt Options) ([]byte, Result) {
	t.Helper()
	var out bytes.Buffer
	res, err := Message(&out, bytes.NewReader(msg), opt)
	if err != nil && !errors.Is(err, ErrUnparsable) {
		t.Fatalf("Message: %v", err)
	}
	return out.Bytes(), res
}

func TestGolden(t *testing.T) {
	for name, in := range corpus(t) {
		t.Run(name, func(t *testing.T) {
			got, res := rewriteMessage(t, in, testOptions())
			golden.Check(t, filepath.Join("testdata", strings.TrimSuffix(name, ".eml")+".golden.eml"), got)
			if res.Changed == bytes.Equal(got, in) {
				t.Errorf("Changed = %v, but output equal to input is %v", res.Changed, bytes.Equal(got, in))
			}
		})
	}
}

// TestNoStateAcrossMessages: walkers are pooled; a message rewritten after
// another must come out exactly as when rewritten alone (the line ends of
// a CRLF message once leaked into the next, LF-only one).
func TestNoStateAcrossMessages(t *testing.T) {
	msgs := corpus(t)
	for first, a := range msgs {
		for second, b := range msgs {
			want, err := os.ReadFile(filepath.Join("testdata", strings.TrimSuffix(second, ".eml")+".golden.eml"))
			if err != nil {
				t.Fatal(err)
			}
			rewriteMessage(t, a, testOptions())
			if got, _ := rewriteMessage(t, b, testOptions()); !bytes.Equal(got, want) {
				t.Fatalf("%s rewritten after %s differs from its golden file", second, first)
			}
		}
	}
}

// TestCorpusExpectations pins what the goldens must show, so that a bad
// -update does not go unnoticed.
func TestCorpusExpectations(t *testing.T) {
	tests := []struct {
		name        string
		links       int // number of distinct rewritten links
		pixel       bool
		skipped     string
		setCTE      string
		qp          bool // match against the quoted-printable decoded output
		contains    []string
		notContains []string
	}{
		{name: "gmail-alternative.eml", links: 2, pixel: true},
		{name: "outlook-conditional.eml", links: 2, pixel: true, notContains: []string{`href="https://www.example.com/account?from=button"`}},
		{name: "apple-related.eml", links: 1, pixel: true, contains: []string{"Content-Id: <E1D2C3B4"}},
		{name: "thunderbird-flowed.eml", links: 1, pixel: true},
		{name: "mailchimp.eml", links: 9, pixel: true, qp: true, contains: []string{
			`<a href="https://partner.example.org/terms">`, `<a href="https://example.com/privacy">`,
			`href="tel:+15551234567"`, `href="#top"`, `href="/relative/path"`, `https://t.example.com/u/ALREADY`,
		}, notContains: []string{"leadpush-notrack"}},
		{name: "phpmailer.eml", links: 2, pixel: true, contains: []string{`<a href='https://t.example.com/c/`}},
		{name: "nodemailer.eml", links: 1, pixel: true},
		{name: "django.eml", links: 2, pixel: true},
		{name: "rails.eml", links: 1, pixel: true},
		{name: "pdf-attachment.eml", links: 1, pixel: true, contains: []string{`<a href="https://example.com/terms">`}},
		{name: "latin1-singlepart.eml", links: 1, pixel: true},
		{name: "long-lines.eml", links: 16, pixel: true, setCTE: "quoted-printable", contains: []string{"Content-Transfer-Encoding: quoted-printable\r\n"}},
		{name: "long-lines-multipart.eml", links: 16, pixel: true, contains: []string{"charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"}},
		{name: "uppercase-tags.eml", links: 2, pixel: true, contains: []string{`<A HREF="https://t.example.com/c/`, `<AREA SHAPE="rect" COORDS="0,0,10,10" HREF="https://t.example.com/c/`, `HREF="JAVASCRIPT:void(0)"`}},
		{name: "unquoted-attrs.eml", links: 4, pixel: true, contains: []string{
			`<a href=https://t.example.com/c/`, `<a href='https://t.example.com/c/`, `<a href = "https://t.example.com/c/`,
			`<a href=https://tiny.example.com/e />five</a>`,
		}},
		{name: "entities.eml", links: 4, pixel: true, contains: []string{`href="ftp://files.example.com/pub"`, `href="https://exa mple.com/bad host"`, `href="sms:+15550001111"`}},
		{name: "no-body.eml", links: 1, pixel: true},
		{name: "signed.eml", skipped: "multipart/signed"},
		{name: "forwarded-rfc822.eml", links: 1, pixel: true, contains: []string{`<a href="https://erin.example.org/agenda">`}},
		{name: "preamble-epilogue.eml", links: 1, pixel: true, contains: []string{"mentions https://preamble.example.com/ and", "mentions https://epilogue.example.com/ and"}},
		{name: "plain-text.eml", links: 7, contains: []string{"https://ja.example.com/wiki/", "mailto:plain@example.com", "glued:xhttps://no.example.com/"}},
		{name: "lf-only.eml", links: 1, pixel: true},
		{name: "unknown-charset.eml", notContains: []string{trackPrefix}},
		// issue 15: what a mail client lets a person click, and byte fidelity
		{name: "noscript-view-online.eml", links: 3, pixel: true, qp: true, notContains: []string{`"https://acme.example/view`}},
		{name: "noscript-head-and-body.eml", links: 2, pixel: true, contains: []string{"<noscript><style>.js-only{display:none}</style></noscript>", `<A HREF="https://t.example.com/c/`}},
		{name: "noscript-base64.eml", links: 1, pixel: true},
		{name: "href-folded-qp.eml", links: 2, pixel: true},
		{name: "href-tabs-7bit.eml", links: 3, pixel: true, contains: []string{"Caf\xe9 at the venue"}},
		{name: "href-entity-newlines.eml", links: 2, pixel: true},
		{name: "href-fragment-crlf.eml", links: 1, pixel: true},
		{name: "href-space-unclosed-quote.eml", links: 3, pixel: true, contains: []string{`"_blank">our site</a>`}},
		{name: "href-space-in-query.eml", links: 2, pixel: true, contains: []string{`ef=3D"https://exa mple.jobs/bad-host">`}},
		{name: "qp-encoded-newlines.eml", links: 1, pixel: true, contains: []string{"<html>=0A<body>=0A<p>Hello,</p>=0A<p>Someone asked to reset your password.=\r\n"}},
		{name: "qp-soft-breaks-60.eml", links: 2, pixel: true, contains: []string{"<html><body style=3D\"margin:0;padding:0\"><table width=3D\"100%\"=\r\n><tr>"}},
		{name: "qp-lone-cr.eml", links: 1, pixel: true, contains: []string{"<html><body><pre>Line one\rLine two=0D\r\n", "MjAyNC0xMA\">Statement online</a>=0D=0A<p=\r\n"}},
		{name: "qp-trailing-space.eml", links: 1, pixel: true, contains: []string{"<p>Notes from the meeting,   =\r\n"}},
		{name: "b64-blank-first-line.eml", links: 1, pixel: true, contains: []string{"base64\r\n\r\n\r\nPCFET0NUWVBFIGh0bWw+PGh0bWw+PGJvZHk+DQo8aDE+T3JkZXIgc2hpcHBlZDwv\r\n"}},
		{name: "b64-blank-lines-72.eml", links: 1, pixel: true, contains: []string{"base64\r\n\r\n\r\nPCFET0NUWVBFIGh0bWw+PGh0bWw+PGJvZHk+DQo8aDE+T3JkZXIgc2hpcHBlZDwvaDE+DQo8\r\n"}},
		{name: "b64-one-line.eml", links: 1, pixel: true},
		{name: "pixel-html-no-body.eml", links: 1, pixel: true, contains: []string{`padding:0"></html>` + "\r\nSent from my phone\r\n"}},
		{name: "pixel-uppercase-html-end.eml", links: 1, pixel: true, contains: []string{`padding:0"></HTML>` + "\r\n\r\n-- \r\nLegacy Tool v2\r\n--rep--"}},
		{name: "pixel-fragment-trailer.eml", links: 1, pixel: true, contains: []string{"Trailing text after the markup.<img"}},
	}
	c := corpus(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, ok := c[tc.name]
			if !ok {
				t.Fatalf("no testdata/%s", tc.name)
			}
			got, res := rewriteMessage(t, in, testOptions())
			if tc.qp {
				var err error
				if got, err = io.ReadAll(quotedprintable.NewReader(bytes.NewReader(got))); err != nil {
					t.Fatal(err)
				}
			}
			if len(res.Links) != tc.links || res.Pixel != tc.pixel || res.Skipped != tc.skipped || res.SetContentTransferEncoding != tc.setCTE {
				t.Errorf("got %d links %q, pixel %v, skipped %q, setCTE %q; want %d, %v, %q, %q",
					len(res.Links), res.Links, res.Pixel, res.Skipped, res.SetContentTransferEncoding, tc.links, tc.pixel, tc.skipped, tc.setCTE)
			}
			for _, s := range tc.contains {
				if !bytes.Contains(got, []byte(s)) {
					t.Errorf("output lacks %q", s)
				}
			}
			for _, s := range tc.notContains {
				if bytes.Contains(got, []byte(s)) {
					t.Errorf("output has %q", s)
				}
			}
		})
	}
}

func hasNotrack(b []byte) bool {
	return bytes.Contains(bytes.ToLower(b), []byte("leadpush-notrack"))
}

func TestIdempotent(t *testing.T) {
	for name, in := range corpus(t) {
		t.Run(name, func(t *testing.T) {
			once, _ := rewriteMessage(t, in, testOptions())
			twice, res := rewriteMessage(t, once, testOptions())
			if hasNotrack(in) {
				// The first pass strips data-leadpush-notrack (see the package
				// doc), so the second may track those links; the third must not
				// change anything.
				once = twice
				twice, res = rewriteMessage(t, once, testOptions())
			}
			if !bytes.Equal(once, twice) || res.Changed {
				t.Errorf("second pass changed the output (Changed=%v, links %q)", res.Changed, res.Links)
			}
			// Body on the split message must agree with Message.
			top, body := splitMessage(t, once)
			var out bytes.Buffer
			if _, err := Body(&out, bytes.NewReader(body), top, testOptions()); err != nil && !errors.Is(err, ErrUnparsable) {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), body) {
				t.Errorf("Body changed an already rewritten body")
			}
		})
	}
}

func splitMessage(t testing.TB, msg []byte) (Top, []byte) {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	n := 4
	if j := bytes.Index(msg, []byte("\n\n")); i < 0 || j >= 0 && j < i {
		i, n = j, 2
	}
	if i < 0 {
		t.Fatal("message without a body")
	}
	h := parseHeader(msg[:i+n])
	return Top{ContentType: h.contentType, ContentTransferEncoding: h.cte}, msg[i+n:]
}

func TestNoOptionsIsIdentity(t *testing.T) {
	opts := map[string]Options{
		"zero":            {},
		"callbacks only":  {ClickURL: testOptions().ClickURL, PixelURL: pixelURL},
		"clicks, no func": {Clicks: true, Opens: true},
	}
	for name, in := range corpus(t) {
		for oname, opt := range opts {
			got, res := rewriteMessage(t, in, opt)
			if !bytes.Equal(got, in) || res.Changed {
				t.Errorf("%s with %s options: output differs from input", name, oname)
			}
			top, body := splitMessage(t, in)
			var out bytes.Buffer
			if _, err := Body(&out, bytes.NewReader(body), top, opt); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), body) {
				t.Errorf("%s with %s options: Body output differs from input", name, oname)
			}
		}
	}
}

// TestOnlyLeavesChange walks input and output independently of the package
// and requires every byte outside the rewritten leaves to be identical.
func TestOnlyLeavesChange(t *testing.T) {
	for name, in := range corpus(t) {
		t.Run(name, func(t *testing.T) {
			got, _ := rewriteMessage(t, in, testOptions())
			a, b := skeleton(t, in, 0), skeleton(t, got, 0)
			if len(a) != len(b) {
				t.Fatalf("input has %d pieces, output %d", len(a), len(b))
			}
			for i := range a {
				if a[i].kind != b[i].kind {
					t.Fatalf("piece %d: kind %q became %q", i, a[i].kind, b[i].kind)
				}
				if bytes.Equal(a[i].raw, b[i].raw) {
					continue
				}
				switch a[i].kind {
				case "leaf text/html", "leaf text/plain":
				case "header":
					if !bytes.Equal(dropCTE(a[i].raw), dropCTE(b[i].raw)) {
						t.Errorf("piece %d: header changed beyond Content-Transfer-Encoding:\n%s\n---\n%s", i, a[i].raw, b[i].raw)
					}
				default:
					t.Errorf("piece %d (%s) changed", i, a[i].kind)
				}
			}
		})
	}
}

type piece struct {
	kind string
	raw  []byte
}

// skeleton splits an entity into header, boundary lines, preamble/epilogue
// and leaves, with a deliberately simple parser of its own.
func skeleton(t *testing.T, ent []byte, depth int) []piece {
	if depth > 10 {
		t.Fatal("too deep")
	}
	end := bytes.Index(ent, []byte("\r\n\r\n"))
	n := 4
	if j := bytes.Index(ent, []byte("\n\n")); end < 0 || j >= 0 && j < end {
		end, n = j, 2
	}
	if bytes.HasPrefix(ent, []byte("\r\n")) {
		end, n = 0, 2
	} else if bytes.HasPrefix(ent, []byte("\n")) {
		end, n = 0, 1
	}
	if end < 0 {
		return []piece{{"leaf", ent}}
	}
	hdr, body := ent[:end+n], ent[end+n:]
	h := parseHeader(hdr)
	ps := []piece{{"header", hdr}}
	ct := "text/plain"
	var params map[string]string
	if h.contentType != "" {
		ct, params, _ = parseContentTypeForTest(h.contentType)
	}
	disp := strings.ToLower(h.disposition)
	if !strings.HasPrefix(ct, "multipart/") || ct == "multipart/signed" || params["boundary"] == "" {
		kind := "opaque"
		if (ct == "text/html" || ct == "text/plain") && !strings.HasPrefix(disp, "attachment") && params["name"] == "" {
			kind = "leaf " + ct
		}
		return append(ps, piece{kind, body})
	}
	delim := []byte("--" + params["boundary"])
	// Split on delimiter lines.
	var lines [][]byte
	for rest := body; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			lines = append(lines, rest)
			break
		}
		lines = append(lines, rest[:i+1])
		rest = rest[i+1:]
	}
	var cur []byte
	inPart, closed := false, false
	flush := func() {
		if inPart {
			// The line end before a delimiter belongs to the delimiter.
			c, eol := splitFinalEOL(cur)
			ps = append(ps, skeleton(t, c, depth+1)...)
			ps = append(ps, piece{"eol", eol})
		} else {
			ps = append(ps, piece{"preamble", cur})
		}
		cur = nil
	}
	for _, l := range lines {
		if !closed && bytes.HasPrefix(l, delim) && len(bytes.Trim(bytes.TrimPrefix(l[len(delim):], []byte("--")), " \t\r\n")) == 0 {
			flush()
			ps = append(ps, piece{"delimiter", l})
			closed = bytes.HasPrefix(l[len(delim):], []byte("--"))
			inPart = !closed
			continue
		}
		cur = append(cur, l...)
	}
	if inPart {
		flush()
	} else {
		ps = append(ps, piece{"epilogue", cur})
	}
	return ps
}

func parseContentTypeForTest(v string) (string, map[string]string, error) {
	return parseContentType(v, "text/plain")
}

func dropCTE(h []byte) []byte {
	var out []byte
	for _, l := range bytes.SplitAfter(h, []byte("\n")) {
		if !bytes.HasPrefix(bytes.ToLower(l), []byte("content-transfer-encoding:")) {
			out = append(out, l...)
		}
	}
	return out
}

// TestLinksDecode checks, with go-message decoding the leaves, that every
// tracked href in the output decodes to an href of the input, and that every
// absolute http(s) href of the input that is not tracked in the output had a
// reason to be left alone.
func TestLinksDecode(t *testing.T) {
	for name, in := range corpus(t) {
		t.Run(name, func(t *testing.T) {
			got, res := rewriteMessage(t, in, testOptions())
			before := make(map[string]bool)
			for _, h := range hrefs(t, in) {
				before[strings.TrimSpace(h)] = true
				if u, ok := linkurl.Target(h); ok {
					before[u] = true // as a browser cleans it
				}
			}
			rewritten := make(map[string]bool)
			for _, h := range hrefs(t, got) {
				if !strings.HasPrefix(h, clickPrefix) {
					continue
				}
				orig, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(h, clickPrefix))
				if err != nil {
					t.Fatalf("tracked href %q: %v", h, err)
				}
				if !before[string(orig)] && !before[h] {
					t.Errorf("tracked href decodes to %q, which is no href of the input", orig)
				}
				rewritten[string(orig)] = true
			}
			for _, l := range res.Links {
				if !rewritten[l] && !strings.Contains(string(in), "text/plain") {
					t.Errorf("Result.Links has %q, not found in the HTML output", l)
				}
			}
		})
	}
}

// hrefs returns the decoded href values of <a>, <area> and conditional
// comment tags of the non-attachment text/html parts of msg.
func hrefs(t *testing.T, msg []byte) []string {
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		t.Fatalf("go-message: %v", err)
	}
	var out []string
	var walk func(e *message.Entity)
	walk = func(e *message.Entity) {
		ct, _, _ := e.Header.ContentType()
		if mr := e.MultipartReader(); mr != nil {
			if ct == "multipart/signed" {
				return
			}
			for {
				p, err := mr.NextPart()
				if err != nil {
					return
				}
				walk(p)
			}
		}
		d, _, _ := e.Header.ContentDisposition()
		if ct != "text/html" || d == "attachment" {
			return
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			return
		}
		out = append(out, htmlHrefs(b)...)
	}
	walk(e)
	return out
}

func htmlHrefs(doc []byte) []string {
	var out []string
	z := html.NewTokenizer(bytes.NewReader(doc))
	for {
		switch z.Next() {
		case html.ErrorToken:
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			if name, _ := z.TagName(); string(name) == "noscript" {
				z.NextIsNotRawText() // mail clients show it: its links count
			}
			for {
				k, v, more := z.TagAttr()
				if string(k) == "href" {
					out = append(out, string(v))
				}
				if !more {
					break
				}
			}
		case html.CommentToken:
			if d := z.Token().Data; strings.HasPrefix(strings.TrimSpace(d), "[if") {
				out = append(out, htmlHrefs([]byte(d))...)
			}
		}
	}
}
