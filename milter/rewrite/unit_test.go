package rewrite

import (
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// mark makes tracked URLs readable in table tests.
func markOptions() Options {
	o := testOptions()
	o.ClickURL = func(u string) string { return "https://t.example.com/c?u=" + u }
	return o
}

func body(t *testing.T, in string, top Top, opt Options) (string, Result, error) {
	t.Helper()
	var out bytes.Buffer
	res, err := Body(&out, strings.NewReader(in), top, opt)
	return out.String(), res, err
}

func TestHTMLTags(t *testing.T) {
	html := Top{ContentType: "text/html; charset=utf-8"}
	o := markOptions()
	o.Opens = false
	tests := []struct{ name, in, want string }{
		{"double quotes", `<a href="https://x.com/a?b=1&amp;c=2">x</a>`, `<a href="https://t.example.com/c?u=https://x.com/a?b=1&amp;c=2">x</a>`},
		{"single quotes", `<a href='https://x.com/'>x</a>`, `<a href='https://t.example.com/c?u=https://x.com/'>x</a>`},
		{"unquoted", `<a href=https://x.com/ id=1>x</a>`, `<a href=https://t.example.com/c?u=https://x.com/ id=1>x</a>`},
		{"uppercase", `<A HREF="HTTP://X.COM/">x</A>`, `<A HREF="https://t.example.com/c?u=HTTP://X.COM/">x</A>`},
		{"area", `<area shape=rect href="https://x.com/">`, `<area shape=rect href="https://t.example.com/c?u=https://x.com/">`},
		{"img is no link", `<img href="https://x.com/" src="https://x.com/i.png">`, ``},
		{"mailto", `<a href="mailto:a@x.com">x</a>`, ``},
		{"tel", `<a href="tel:+1">x</a>`, ``},
		{"sms", `<a href="sms:+1">x</a>`, ``},
		{"fragment", `<a href="#top">x</a>`, ``},
		{"relative", `<a href="/p">x</a>`, ``},
		{"javascript", `<a href="javascript:alert(1)">x</a>`, ``},
		{"tracked", `<a href="https://t.example.com/c/abc">x</a>`, ``},
		{"no host", `<a href="https:///path">x</a>`, ``},
		{"empty href", `<a href>x</a>`, ``},
		{"notrack last", `<a href="https://x.com/" data-leadpush-notrack>x</a>`, `<a href="https://x.com/">x</a>`},
		{"notrack first", `<a data-leadpush-notrack="1" href="https://x.com/">x</a>`, `<a href="https://x.com/">x</a>`},
		{"notrack upper", `<a href=https://x.com/ DATA-LEADPUSH-NOTRACK>x</a>`, `<a href=https://x.com/>x</a>`},
		{"notrack before slash", `<a href=https://x.com/ data-leadpush-notrack/>`, `<a href=https://x.com/ />`},
		{"escape quote in new url", `<a href="https://x.com/?q=&quot;">x</a>`, `<a href="https://t.example.com/c?u=https://x.com/?q=&#34;">x</a>`},
		{"first href wins", `<a href="https://x.com/1" href="https://x.com/2">x</a>`, `<a href="https://t.example.com/c?u=https://x.com/1" href="https://x.com/2">x</a>`},
		{"conditional comment", `<!--[if mso]><v:roundrect href="https://x.com/b" fill="t"><center>x</center></v:roundrect><![endif]-->`,
			`<!--[if mso]><v:roundrect href="https://t.example.com/c?u=https://x.com/b" fill="t"><center>x</center></v:roundrect><![endif]-->`},
		{"plain comment", `<!-- <a href="https://x.com/"> -->`, ``},
		{"script", `<script>var s = '<a href="https://x.com/">';</script>`, ``},
		{"text url", `<p>https://x.com/</p>`, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			got, res, err := body(t, tc.in, html, o)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if res.Changed != (got != tc.in) {
				t.Errorf("Changed = %v", res.Changed)
			}
		})
	}
}

func TestPixel(t *testing.T) {
	o := testOptions()
	o.Clicks = false
	top := Top{ContentType: "text/html"}
	pix := `<img src="https://t.example.com/o/PIXEL.gif" width="1" height="1" alt="" style="` + pixelStyle + `">`
	tests := []struct{ name, in, want string }{
		{"before body end", "<html><body>x</body></html>\r\n", "<html><body>x" + pix + "</body></html>\r\n"},
		{"uppercase body", "<BODY>x</BODY>", "<BODY>x" + pix + "</BODY>"},
		{"no body", "<p>x</p>\r\n\r\n", "<p>x</p>" + pix + "\r\n\r\n"},
		{"already there", "<body>" + pix + "</body>", ""},
		{"other tracked img", `<body><img src="https://t.example.com/o/OTHER.gif"></body>`, ""},
		{"body end in comment", "<body>x<!-- </body> --></body>", "<body>x<!-- </body> -->" + pix + "</body>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			got, res, err := body(t, tc.in, top, o)
			if err != nil {
				t.Fatal(err)
			}
			if got != want || res.Pixel != (want != tc.in) {
				t.Errorf("got %s (pixel %v)\nwant %s", got, res.Pixel, want)
			}
		})
	}
	o.PixelURL = "https://t.example.com/o/x.gif?a=1&b=2"
	got, _, _ := body(t, "<p>x</p>", top, o)
	if !strings.Contains(got, `src="https://t.example.com/o/x.gif?a=1&amp;b=2"`) {
		t.Errorf("pixel URL not escaped: %s", got)
	}
}

func TestTextLinks(t *testing.T) {
	o := markOptions()
	top := Top{ContentType: "text/plain; charset=utf-8"}
	m := func(u string) string { return "https://t.example.com/c?u=" + u }
	tests := []struct{ in, want string }{
		{"see https://x.com/a.", "see " + m("https://x.com/a") + "."},
		{"(https://x.com/a)", "(" + m("https://x.com/a") + ")"},
		{"https://x.com/w/A_(b)", m("https://x.com/w/A_(b)")},
		{"https://x.com/w/A_(b)).", m("https://x.com/w/A_(b)") + ")."},
		{"<https://x.com/a?b=1&c=2>", "<" + m("https://x.com/a?b=1&c=2") + ">"},
		{`"https://x.com/a",`, `"` + m("https://x.com/a") + `",`},
		{"'https://x.com/a'!?", "'" + m("https://x.com/a") + "'!?"},
		{"end https://x.com/a;:", "end " + m("https://x.com/a") + ";:"},
		{"http://x.com\r\nhttps://y.com", m("http://x.com") + "\r\n" + m("https://y.com")},
		{"xhttps://x.com/", ""},
		{"https://", ""},
		{"ftp://x.com/", ""},
		{"https://t.example.com/c/abc", ""},
		{"https://x.com/\u00e9t\u00e9", ""},
		{"https://x.com/?r=https://y.com/", m("https://x.com/?r=https://y.com/")},
	}
	for _, tc := range tests {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		got, _, err := body(t, tc.in, top, o)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, got, want)
		}
	}
	// Without TextLinks, text/plain is not touched.
	o.TextLinks = false
	if got, _, _ := body(t, "https://x.com/", top, o); got != "https://x.com/" {
		t.Errorf("TextLinks=false rewrote text: %q", got)
	}
}

func TestSkipped(t *testing.T) {
	tests := []struct {
		name       string
		top        Top
		reason     string
		unparsable bool
	}{
		{"signed", Top{ContentType: `multipart/signed; boundary=b; protocol="application/pgp-signature"`}, "multipart/signed", false},
		{"encrypted", Top{ContentType: `multipart/encrypted; boundary=b`}, "multipart/encrypted", false},
		{"pkcs7", Top{ContentType: `application/pkcs7-mime; smime-type=enveloped-data`}, "application/pkcs7-mime", false},
		{"bad content type", Top{ContentType: `text/html; charset`}, "unparsable Content-Type", true},
		{"no boundary", Top{ContentType: `multipart/mixed`}, "multipart without a valid boundary", true},
	}
	in := "--b\r\nContent-Type: text/html\r\n\r\n<a href=\"https://x.com/\">x</a>\r\n--b--\r\n"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res, err := body(t, in, tc.top, testOptions())
			if got != in {
				t.Errorf("output differs from input")
			}
			if !strings.HasPrefix(res.Skipped, tc.reason) {
				t.Errorf("Skipped = %q, want %q", res.Skipped, tc.reason)
			}
			if errors.Is(err, ErrUnparsable) != tc.unparsable {
				t.Errorf("err = %v", err)
			}
		})
	}
	// Message with a header and no body is left as it is.
	var out bytes.Buffer
	if _, err := Message(&out, strings.NewReader("Subject: x\r\n"), testOptions()); err != nil || out.String() != "Subject: x\r\n" {
		t.Errorf("header-only message: %q, %v", out.String(), err)
	}
}

func TestLeftAlone(t *testing.T) {
	link := `<a href="https://x.com/">x</a>`
	tests := []struct{ name, top, in string }{
		{"attachment", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"named", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html; name=a.html\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"inline with filename", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html\r\nContent-Disposition: inline; filename=a.html\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"rfc822", "multipart/mixed; boundary=b", "--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"digest default", "multipart/digest; boundary=b", "--b\r\n\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"nested signed", "multipart/mixed; boundary=b", "--b\r\nContent-Type: multipart/signed; boundary=c\r\n\r\n--c\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n--c--\r\n--b--\r\n"},
		{"unknown charset", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html; charset=x-nope\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"bad base64", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--b--\r\n"},
		{"uuencode", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"bad part content type", "multipart/mixed; boundary=b", "--b\r\nContent-Type: text/html; charset\r\n\r\n" + link + "\r\n--b--\r\n"},
		{"image", "image/png", link},
		{"too large", "text/html", link + strings.Repeat(" ", 200)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions()
			o.MaxPartSize = 100
			got, res, err := body(t, tc.in, Top{ContentType: tc.top}, o)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.in || res.Changed {
				t.Errorf("changed:\n%s", got)
			}
		})
	}
}

func TestStructure(t *testing.T) {
	o := markOptions()
	o.Opens = false
	tr := `<a href="https://t.example.com/c?u=https://x.com/">x</a>`
	link := `<a href="https://x.com/">x</a>`
	tests := []struct{ name, top, in, want string }{
		{"missing close delimiter", "multipart/alternative; boundary=b",
			"--b\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n",
			"--b\r\nContent-Type: text/html\r\n\r\n" + tr + "\r\n"},
		{"nested without close", "multipart/mixed; boundary=a",
			"--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n--a\r\nContent-Type: text/html\r\n\r\n" + link + "\r\n--a--\r\n",
			"--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n" + tr + "\r\n--a\r\nContent-Type: text/html\r\n\r\n" + tr + "\r\n--a--\r\n"},
		{"boundary prefix", "multipart/mixed; boundary=b",
			"--b\r\nContent-Type: text/html\r\n\r\n--bb not a delimiter " + link + "\r\n--b--",
			"--b\r\nContent-Type: text/html\r\n\r\n--bb not a delimiter " + tr + "\r\n--b--"},
		{"empty part", "multipart/mixed; boundary=b", "--b\r\n--b\r\n\r\n--b--\r\n", ""},
		{"bare LF", "multipart/mixed; boundary=b",
			"--b\nContent-Type: text/html\n\n" + link + "\n--b--\n",
			"--b\nContent-Type: text/html\n\n" + tr + "\n--b--\n"},
		{"base64 line length", "multipart/mixed; boundary=b",
			"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj0i\r\naHR0cHM6Ly94\r\nLmNvbS8iPng8\r\nL2E+\r\n\r\n--b--\r\n",
			"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj0i\r\naHR0cHM6Ly90\r\nLmV4YW1wbGUu\r\nY29tL2M/dT1o\r\ndHRwczovL3gu\r\nY29tLyI+eDwv\r\nYT4=\r\n\r\n--b--\r\n"},
		{"7bit to QP in a part", "multipart/mixed; boundary=b",
			"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + strings.Repeat("a", 960) + link + "\r\n--b--\r\n",
			"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qpString(strings.Repeat("a", 960)+strings.ReplaceAll(tr, "=", "=3D")) + "\r\n--b--\r\n"},
		{"QP added when absent", "multipart/mixed; boundary=b",
			"--b\r\nContent-Type: text/html\r\n\r\n" + strings.Repeat("a", 960) + link + "\r\n--b--\r\n",
			"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qpString(strings.Repeat("a", 960)+strings.ReplaceAll(tr, "=", "=3D")) + "\r\n--b--\r\n"},
		{"iso-2022-jp round trip", "multipart/mixed; boundary=b",
			"--b\r\nContent-Type: text/html; charset=iso-2022-jp\r\n\r\n\x1b$B$3$s$K$A$O\x1b(B " + link + "\r\n--b--\r\n",
			"--b\r\nContent-Type: text/html; charset=iso-2022-jp\r\n\r\n\x1b$B$3$s$K$A$O\x1b(B " + tr + "\r\n--b--\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			got, _, err := body(t, tc.in, Top{ContentType: tc.top}, o)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("got\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// qpString wraps an ASCII line without '=' or trailing space the way
// quoted-printable soft line breaks do (76 columns).
func qpString(s string) string {
	var b strings.Builder
	for len(s) > 75 {
		cut := 75
		// do not split an =XX escape
		for i := cut - 2; i < cut; i++ {
			if s[i] == '=' {
				cut = i
			}
		}
		b.WriteString(s[:cut] + "=\r\n")
		s = s[cut:]
	}
	b.WriteString(s)
	return b.String()
}

func TestSetContentTransferEncoding(t *testing.T) {
	in := strings.Repeat("a", 980) + ` <a href="https://x.com/">x</a>`
	got, res, err := body(t, in, Top{ContentType: "text/html", ContentTransferEncoding: "8bit"}, markOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.SetContentTransferEncoding != "quoted-printable" || hasLongLine([]byte(got), 76) {
		t.Errorf("SetContentTransferEncoding = %q, output:\n%s", res.SetContentTransferEncoding, got)
	}
	// Message splices it into the header, replacing the folded old field.
	var out bytes.Buffer
	msg := "Subject: x\r\nContent-Transfer-Encoding:\r\n 8bit\r\nContent-Type: text/html\r\n\r\n" + in
	if _, err := Message(&out, strings.NewReader(msg), markOptions()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/html\r\n\r\n") {
		t.Errorf("header not changed:\n%s", out.String()[:120])
	}
}

func TestScanAttrsMatchesTokenizer(t *testing.T) {
	for _, tag := range []string{
		`<a href="x" b='y' c=z d>`, `<a =x href=y>`, `<a/href=x>`, `<a href = x / >`, `<a href=x/>`,
		`<a HREF=1 href=2>`, `<a b c="d"e=f>`,
	} {
		spans := scanAttrs([]byte(tag), nil)
		var keys []string
		for _, s := range spans {
			keys = append(keys, strings.ToLower(tag[s.keyStart:s.keyEnd]))
		}
		want := tokenizerKeys(tag)
		if strings.Join(keys, ",") != strings.Join(want, ",") {
			t.Errorf("%s: scanner %q, tokenizer %q", tag, keys, want)
		}
	}
}

func tokenizerKeys(tag string) []string {
	z := html.NewTokenizer(strings.NewReader(tag))
	var keys []string
	if tt := z.Next(); tt != html.StartTagToken && tt != html.SelfClosingTagToken {
		return nil
	}
	for {
		k, _, more := z.TagAttr()
		if len(k) > 0 {
			keys = append(keys, string(k))
		}
		if !more {
			return keys
		}
	}
}

func TestDecodeQPMatchesStdlib(t *testing.T) {
	for _, in := range []string{
		"a=3Db\r\nc", "soft=\r\nbreak", "trailing   \r\nspace\t\n", "=4a=4A", "bad=ZZ=", "x=\n", "=", "==",
		"caf\xe9", "ctl\x01", "a=\r\n", "=3", "end\r\n", "\n\n", "x=  \r\ny", "x= \ny",
	} {
		want, werr := io.ReadAll(quotedprintable.NewReader(strings.NewReader(in)))
		got, gerr := decodeQP([]byte(in))
		if (werr != nil) != (gerr != nil) || werr == nil && !bytes.Equal(got, want) {
			t.Errorf("%q: got %q, %v; stdlib %q, %v", in, got, gerr, want, werr)
		}
	}
}

// An escaped attribute value, in each kind of quoting, reads back from the
// tokenizer as the value itself: the copy-whole fast path and the escaping
// loop must agree on what needs escaping.
func TestAppendAttrValue(t *testing.T) {
	for _, v := range []string{
		"https://t.example.com/c/AbC_-09",
		"https://example.com/?a=1&b=2",
		`say "hi" and 'bye'`,
		"<script>",
		"a b\tc\nd\re\ff`g",
		"",
	} {
		for _, q := range []byte{'"', '\'', 0} {
			if q == 0 && v == "" {
				continue // an empty unquoted value is not an attribute value
			}
			tag := []byte("<a href=")
			if q != 0 {
				tag = append(tag, q)
			}
			tag = appendAttrValue(tag, v, q)
			if q != 0 {
				tag = append(tag, q)
			}
			tag = append(tag, " x=y>"...)
			z := html.NewTokenizer(bytes.NewReader(tag))
			if z.Next() != html.StartTagToken {
				t.Fatalf("%q: not a start tag", tag)
			}
			z.TagName()
			k, got, _ := z.TagAttr()
			if string(k) != "href" || string(got) != v {
				t.Errorf("quote %q: %s reads back as %s=%q, want %q", q, tag, k, got, v)
			}
		}
	}
}
