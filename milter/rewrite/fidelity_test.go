package rewrite

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/linkurl"
)

// What a mail client lets a person click is tracked, and nothing the
// tracker would refuse: each case was measured on real mail.

func TestNoscriptLinksTracked(t *testing.T) {
	o := markOptions()
	o.Opens = false
	top := Top{ContentType: "text/html; charset=utf-8"}
	m := func(u string) string { return "https://t.example.com/c?u=" + u }
	tests := []struct{ in, want string }{
		{`<noscript><a href="https://x.com/a">a</a></noscript>`, `<noscript><a href="` + m("https://x.com/a") + `">a</a></noscript>`},
		{`<NOSCRIPT><p>View <A HREF="https://x.com/b">online</A></p></NOSCRIPT><a href="https://x.com/c">c</a>`,
			`<NOSCRIPT><p>View <A HREF="` + m("https://x.com/b") + `">online</A></p></NOSCRIPT><a href="` + m("https://x.com/c") + `">c</a>`},
		{"<head><noscript><style>a{}</style></noscript></head><body><noscript>\r\n<a href=https://x.com/d>d</a>\r\n</noscript></body>",
			"<head><noscript><style>a{}</style></noscript></head><body><noscript>\r\n<a href=" + m("https://x.com/d") + ">d</a>\r\n</noscript></body>"},
		// still raw text: scripts, styles, titles
		{`<script><a href="https://x.com/e"></script>`, ``},
		{`<style>/* <a href="https://x.com/f"> */</style>`, ``},
	}
	for _, tc := range tests {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		got, _, err := body(t, tc.in, top, o)
		if err != nil || got != want {
			t.Errorf("%v\n got  %s\n want %s", err, got, want)
		}
	}
}

func TestWhitespaceInHrefCleaned(t *testing.T) {
	o := markOptions()
	o.Opens = false
	top := Top{ContentType: "text/html"}
	m := func(u string) string { return "https://t.example.com/c?u=" + u }
	tests := []struct{ in, want string }{
		{"<a href=\"https://x.com/a?b=1\r\n&amp;c=2\">x</a>", `<a href="` + m("https://x.com/a?b=1&amp;c=2") + `">x</a>`},
		{"<a href=\"\r\n\thttps://x.com/a\r\n\">x</a>", `<a href="` + m("https://x.com/a") + `">x</a>`},
		{"<a href='https://x.com/long/pa\tth'>x</a>", `<a href='` + m("https://x.com/long/path") + `'>x</a>`},
		{"<a href=\"https://x.com/&#10;p\">x</a>", `<a href="` + m("https://x.com/p") + `">x</a>`},
		{"<a href=\"ht\ntps://x.com/\">x</a>", `<a href="` + m("https://x.com/") + `">x</a>`},
	}
	for _, tc := range tests {
		got, res, err := body(t, tc.in, top, o)
		if err != nil || got != tc.want || len(res.Links) != 1 {
			t.Errorf("%q: %v, links %q\n got  %s\n want %s", tc.in, err, res.Links, got, tc.want)
		}
	}
}

// TestTrackedLinksAreTrackable: every URL the rewriter hands to ClickURL is
// one the tracker redirects to (linkurl.Trackable, its click check), so a
// working link never becomes a 404.
func TestTrackedLinksAreTrackable(t *testing.T) {
	var given []string
	o := testOptions()
	click := o.ClickURL
	o.ClickURL = func(u string) string { given = append(given, u); return click(u) }
	docs := []string{
		"<a href=\"https://www.example.com/offer?id=1#EmailAddr\r\n#\">x</a>",
		`<a href="http://www.codeweavers.com/ target="_blank">CodeWeavers</a>`,
		"<a href=\"https://x.com/a\x7fb\">x</a><a href=\"https://x.com/ \">y</a>",
	}
	for _, c := range corpus(t) {
		docs = append(docs, string(c))
	}
	for _, d := range docs {
		body(t, d, Top{ContentType: "text/html"}, o)
	}
	if len(given) < 3 {
		t.Fatalf("only %d links given to ClickURL", len(given))
	}
	for _, u := range given {
		if !linkurl.Trackable(u) {
			t.Errorf("tracked %q, which the tracker refuses", u)
		}
	}
	for _, want := range []string{"https://www.example.com/offer?id=1#EmailAddr#", "http://www.codeweavers.com/%20target="} {
		found := false
		for _, u := range given {
			found = found || u == want
		}
		if !found {
			t.Errorf("%q not tracked as a browser follows it; tracked %q", want, given)
		}
	}
}

func TestPixelBeforeHTMLEnd(t *testing.T) {
	o := testOptions()
	o.Clicks = false
	top := Top{ContentType: "text/html"}
	pix := `<img src="https://t.example.com/o/PIXEL.gif" width="1" height="1" alt="" style="` + pixelStyle + `">`
	tests := []struct{ in, want string }{
		{"<html><p>x</p></html>\r\n", "<html><p>x</p>" + pix + "</html>\r\n"},
		{"<html><p>x</p></html>\r\nSent from my phone\r\n", "<html><p>x</p>" + pix + "</html>\r\nSent from my phone\r\n"},
		{"<HTML><p>x</p></HTML>trailer", "<HTML><p>x</p>" + pix + "</HTML>trailer"},
		{"<html><body>x</body>\r\n</html>\r\n", "<html><body>x" + pix + "</body>\r\n</html>\r\n"},
		{"<p>x</p>trailer\r\n", "<p>x</p>trailer" + pix + "\r\n"},
	}
	for _, tc := range tests {
		got, _, err := body(t, tc.in, top, o)
		if err != nil || got != tc.want {
			t.Errorf("%q: %v\n got  %q\n want %q", tc.in, err, got, tc.want)
		}
	}
}

// missingLines returns the lines of in that are not in out.
func missingLines(in, out string) []string {
	have := map[string]int{}
	for _, l := range strings.SplitAfter(out, "\n") {
		have[l]++
	}
	var miss []string
	for _, l := range strings.SplitAfter(in, "\n") {
		if have[l] == 0 {
			miss = append(miss, l)
			continue
		}
		have[l]--
	}
	return miss
}

func TestQuotedPrintableKeptAsItWas(t *testing.T) {
	top := Top{ContentType: "text/html; charset=utf-8", ContentTransferEncoding: "quoted-printable"}
	tests := []struct {
		name, in string
		changed  int // raw lines that may change
	}{
		{"encoded LF and CR inside lines",
			"<p>one=0Atwo=0D=0Athree</p>=0D\r\n<p>four =3D five=0A</p>\r\n<a href=3D\"https://x.com/\">x</a>\r\n<p>six=0Dseven</p>\r\n", 1},
		{"soft breaks at 60 columns",
			"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit sed=\r\n do eiusmod tempor.</p>\r\n<p><a href=3D\"https://x.com/a\">a</a> and=\r\n then more text that runs on</p>\r\n<p>tail =\r\nend</p>\r\n", 1},
		{"lone CR", "<p>a\rb</p>\r\n<a href=3D\"https://x.com/\">x</a>\r\n<p>c=0Dd</p>\r\n", 1},
		{"LF line ends", "<p>x=0Ay</p>\n<a href=3D\"https://x.com/\">x</a>\n<p>soft=\nbreak</p>\n", 1},
		{"href across a soft break", "<p>keep=0A</p>\r\n<a href=3D\"https://x.com/a=\r\nb\">x</a> rest of the=\r\n line</p>\r\n<p>after</p>\r\n", 2},
	}
	o := testOptions()
	o.Opens = false
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res, err := body(t, tc.in, top, o)
			if err != nil || !res.Changed {
				t.Fatalf("%v %+v", err, res)
			}
			if miss := missingLines(tc.in, got); len(miss) != tc.changed {
				t.Errorf("%d raw lines changed, want %d: %q\nout:\n%s", len(miss), tc.changed, miss, got)
			}
			// decoded, the output is the input with the link replaced
			din, err1 := decodeQP([]byte(tc.in))
			dout, err2 := decodeQP([]byte(got))
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			for _, l := range res.Links {
				din = bytes.Replace(din, []byte(l), []byte(clickPrefix+base64.RawURLEncoding.EncodeToString([]byte(l))), 1)
			}
			din = bytes.ReplaceAll(din, []byte("https://x.com/a\r\nb"), []byte(clickPrefix+base64.RawURLEncoding.EncodeToString([]byte("https://x.com/ab"))))
			if !bytes.Equal(din, dout) {
				t.Errorf("decoded output differs\n got  %q\n want %q", dout, din)
			}
			for _, l := range strings.Split(got, "\n") {
				if len(strings.TrimRight(l, "\r")) > 76 {
					t.Errorf("line over 76 octets: %q", l)
				}
			}
		})
	}
}

func TestBase64LineLengthFromFirstFullLine(t *testing.T) {
	doc := strings.Repeat("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\r\n", 8) + `<a href="https://x.com/">x</a>` + "\r\n"
	wrap := func(s string, n int) string {
		var b strings.Builder
		for len(s) > n {
			b.WriteString(s[:n] + "\r\n")
			s = s[n:]
		}
		return b.String() + s + "\r\n"
	}
	enc := base64.StdEncoding.EncodeToString([]byte(doc))
	top := Top{ContentType: "text/html", ContentTransferEncoding: "base64"}
	for _, tc := range []struct {
		name, in string
		n        int
		lead     string
	}{
		{"blank first line", "\r\n" + wrap(enc, 64), 64, "\r\n"},
		{"two blank lines, 72 columns", "\r\n\r\n" + wrap(enc, 72), 72, "\r\n\r\n"},
		{"first line of 60", wrap(enc, 60), 60, ""},
		{"one long line", enc + "\r\n", len(enc), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, res, err := body(t, tc.in, top, testOptions())
			if err != nil || !res.Changed {
				t.Fatal(err, res)
			}
			if !strings.HasPrefix(got, tc.lead) || strings.HasPrefix(got, tc.lead+"\r\n") {
				t.Errorf("leading blank lines not kept: %q", got[:10])
			}
			lines := strings.Split(strings.TrimSpace(got), "\r\n")
			if len(lines) < 2 {
				t.Fatalf("not wrapped: %d lines", len(lines))
			}
			for i, l := range lines[:len(lines)-1] {
				if len(l) != tc.n {
					t.Fatalf("line %d has %d characters, want %d", i, len(l), tc.n)
				}
			}
		})
	}
}
