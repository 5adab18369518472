package rewrite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/linkurl"
)

func FuzzBody(f *testing.F) {
	for _, in := range corpus(f) {
		top, body := splitMessage(f, in)
		f.Add(body, top.ContentType, top.ContentTransferEncoding)
	}
	f.Add([]byte(`<a href="https://x.com/">x</a><!--[if mso]><v:rect href="https://y.com/"><![endif]-->`), "text/html", "")
	f.Add([]byte("see https://x.com/(a)).\r\n"), "text/plain", "quoted-printable")
	f.Add([]byte("<p>a=0Ab\rc</p>=\r\n<a href=3D\"https://x.com/a=\r\nb\">x</a>=0D\r\n"), "text/html; charset=utf-8", "quoted-printable")
	f.Add([]byte("<a href=3D\"https://x.com/\">x</a> =\r\n<b>=E9</b>\r\n"), "text/html; charset=iso-8859-1", "quoted-printable")
	f.Add([]byte("--b\r\n\r\n--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj1odHRwOi8veC5jb20+\r\n--b--"), "multipart/mixed; boundary=b", "")
	f.Fuzz(func(t *testing.T, in []byte, ct, cte string) {
		top := Top{ContentType: ct, ContentTransferEncoding: cte}
		run := func(in []byte, top Top, opt Options) ([]byte, Result) {
			var out bytes.Buffer
			res, err := Body(&out, bytes.NewReader(in), top, opt)
			if err != nil {
				if !errors.Is(err, ErrUnparsable) {
					t.Fatalf("Body: %v", err)
				}
				if !bytes.Equal(out.Bytes(), in) || res.Skipped == "" || res.Changed {
					t.Fatalf("unparsable input not copied unchanged (Skipped %q)", res.Skipped)
				}
			}
			return out.Bytes(), res
		}

		// No options: the body is untouched.
		if got, _ := run(in, top, Options{}); !bytes.Equal(got, in) {
			t.Fatal("zero Options changed the body")
		}

		// Everything tracked already and no pixel wanted: the walker and the
		// tokenizer must give back every byte.
		o := testOptions()
		o.Opens = false
		o.IsTracked = func(string) bool { return true }
		if got, res := run(in, top, o); !hasNotrack(in) && (!bytes.Equal(got, in) || res.Changed) {
			t.Fatalf("nothing to rewrite, yet the output differs\nin:  %q\nout: %q", in, got)
		}

		// Full rewrite: bounded, consistent, idempotent, and every link
		// tracked is one the tracker redirects to.
		full := testOptions()
		full.ClickURL = func(u string) string {
			if !linkurl.Trackable(u) {
				t.Fatalf("tracked %q, which the tracker refuses", u)
			}
			return testOptions().ClickURL(u)
		}
		once, res := run(in, top, full)

		// A quoted-printable leaf, rewritten in place line by line, decodes
		// to what its decoded text rewritten whole gives.
		if strings.EqualFold(strings.TrimSpace(cte), "quoted-printable") && strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "text/html") {
			if din, err := decodeQP(in); err == nil {
				want, _ := run(din, Top{ContentType: ct, ContentTransferEncoding: "binary"}, testOptions())
				got, err := decodeQP(once)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("quoted-printable rewrite decodes differently (%v)\nin:   %q\nout:  %q\ngot:  %q\nwant: %q", err, in, once, got, want)
				}
			}
		}
		if len(once) > 8*len(in)+4096 {
			t.Fatalf("output of %d bytes for %d bytes of input", len(once), len(in))
		}
		if res.Changed == bytes.Equal(once, in) {
			t.Fatalf("Changed = %v, output equal to input: %v", res.Changed, bytes.Equal(once, in))
		}
		if res.SetContentTransferEncoding != "" {
			top.ContentTransferEncoding = res.SetContentTransferEncoding
		}
		twice, res2 := run(once, top, testOptions())
		if hasNotrack(in) {
			// See the package doc: the first pass strips the attribute.
			once = twice
			if res2.SetContentTransferEncoding != "" {
				top.ContentTransferEncoding = res2.SetContentTransferEncoding
			}
			twice, res2 = run(once, top, testOptions())
		}
		if !bytes.Equal(once, twice) || res2.Changed {
			t.Fatalf("not idempotent\nin:     %q\nonce:   %q\ntwice:  %q", in, once, twice)
		}
	})
}

// benchHTML builds an HTML document of about 20 KB with 20 links.
func benchHTML() string {
	var b strings.Builder
	b.WriteString("<!doctype html>\r\n<html><head><meta charset=\"utf-8\"><style>td{padding:8px;font-family:Arial,sans-serif}</style></head>\r\n<body style=\"margin:0\">\r\n<table width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\r\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&b, "<tr><td class=\"item\" style=\"color:#333333;font-size:14px;line-height:20px\"><h2 style=\"margin:0\">Item %d</h2>\r\n", i)
		b.WriteString("<p style=\"margin:0 0 10px 0\">" + strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 13) + "</p>\r\n")
		fmt.Fprintf(&b, "<a href=\"https://shop.example.com/products/%d?utm_source=newsletter&amp;utm_medium=email\" style=\"color:#2BAADF\">See item %d</a></td></tr>\r\n", i, i)
	}
	b.WriteString("</table>\r\n</body></html>\r\n")
	return b.String()
}

func BenchmarkBody(b *testing.B) {
	doc := benchHTML()
	multi := "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain text version.\r\n\r\n" +
		"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		string(encodeQP([]byte(doc), "\r\n")) + "\r\n--alt--\r\n"
	cases := []struct {
		name string
		top  Top
		body string
	}{
		{"single", Top{ContentType: "text/html; charset=utf-8", ContentTransferEncoding: "7bit"}, doc},
		{"alternative", Top{ContentType: "multipart/alternative; boundary=alt"}, multi},
	}
	opt := testOptions()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			r := strings.NewReader(c.body)
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(c.body)
				res, err := Body(io.Discard, r, c.top, opt)
				if err != nil || len(res.Links) != 20 || !res.Pixel {
					b.Fatalf("%v %d %v", err, len(res.Links), res.Pixel)
				}
			}
		})
	}
}

// bigReader produces a multipart/mixed body with a small HTML part and a
// base64 attachment of about size bytes, without holding it in memory.
type bigReader struct {
	head, tail string
	line       []byte
	lines      int
	state      int
	pos        int
}

func newBigReader(size int) *bigReader {
	return &bigReader{
		head: "--mix\r\nContent-Type: text/html\r\n\r\n<body><a href=\"https://x.com/\">x</a></body>\r\n" +
			"--mix\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n",
		tail:  "--mix--\r\n",
		line:  []byte(strings.Repeat("QUJD", 19) + "\r\n"),
		lines: size / 78,
	}
}

func (r *bigReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		var src []byte
		switch {
		case r.state == 0:
			src = []byte(r.head)
		case r.state <= r.lines:
			src = r.line
		case r.state == r.lines+1:
			src = []byte(r.tail)
		default:
			if n == 0 {
				return 0, io.EOF
			}
			return n, nil
		}
		c := copy(p[n:], src[r.pos:])
		n += c
		r.pos += c
		if r.pos == len(src) {
			r.state++
			r.pos = 0
		}
	}
	return n, nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func TestBoundedMemory(t *testing.T) {
	const size = 25 << 20
	var out countWriter
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := Body(&out, newBigReader(size), Top{ContentType: "multipart/mixed; boundary=mix"}, testOptions())
	runtime.ReadMemStats(&after)
	if err != nil || len(res.Links) != 1 || !res.Pixel {
		t.Fatalf("res %+v, err %v", res, err)
	}
	if out.n < size {
		t.Fatalf("wrote %d bytes", out.n)
	}
	// Everything allocated during the call, not just what is live at the end.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("allocated %d bytes for a %d-byte message", alloc, out.n)
	}
}
