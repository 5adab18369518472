package api

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/golden"

	"github.com/emersion/go-message/mail"
)

// fixedComposer is deterministic: a fixed clock and counting ids.
func fixedComposer() *composer {
	n := 0
	return &composer{
		now:   func() time.Time { return time.Date(2024, 6, 1, 12, 30, 0, 0, time.FixedZone("CEST", 2*3600)) },
		newID: func() string { n++; return fmt.Sprintf("id%04d", n) },
		pools: map[string]string{"marketing": "smtp-marketing:"},
	}
}

func loadRequest(t testing.TB, path string) *Request {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, ferrs := decodeRequest(f)
	if ferrs != nil {
		t.Fatalf("%s: %+v", path, ferrs)
	}
	if ferrs := req.validate(map[string]string{"marketing": "smtp-marketing:"}); ferrs != nil {
		t.Fatalf("%s: %+v", path, ferrs)
	}
	return req
}

func TestComposeGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			req := loadRequest(t, in)
			got, msgID, err := fixedComposer().compose(req)
			if err != nil {
				t.Fatal(err)
			}
			if want := "<id0001@" + domainOf(req.From.Email) + ">"; msgID != want {
				t.Errorf("Message-ID %q, want %q", msgID, want)
			}
			// idempotence: the same request composes to the same bytes
			again, _, _ := fixedComposer().compose(loadRequest(t, in))
			if !bytes.Equal(got, again) {
				t.Error("composition is not deterministic")
			}
			golden.Check(t, strings.TrimSuffix(in, ".json")+".golden.eml", got)
			checkParsesBack(t, req, got)
		})
	}
}

// checkParsesBack reads the message with go-message and compares what a
// mail client would show with the request.
func checkParsesBack(t *testing.T, req *Request, raw []byte) {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
		t.Error("bare LF in the message")
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line longer than 998 octets: %.60q...", line)
		}
	}
	mr, err := mail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := mr.Header.Subject(); s != strings.TrimSpace(req.Subject) {
		t.Errorf("subject %q, want %q", s, req.Subject)
	}
	from, _ := mr.Header.AddressList("From")
	if len(from) != 1 || from[0].Address != req.From.Email || from[0].Name != req.From.Name {
		t.Errorf("From %v", from)
	}
	to, _ := mr.Header.AddressList("To")
	if len(to) != len(req.To) || to[0].Name != req.To[0].Name {
		t.Errorf("To %v", to)
	}
	if mr.Header.Has("Bcc") {
		t.Error("Bcc header written")
	}
	for n, v := range req.Headers {
		if headerValue(v) == v && !bytes.Contains(raw, []byte("\r\n"+n+": "+v+"\r\n")) {
			t.Errorf("header %s: %s not in the message exactly as given", n, v)
		}
		// What a reader decodes (RFC 2047) is the value as given, leading
		// whitespace included.
		got, err := new(mime.WordDecoder).DecodeHeader(rawHeader(raw, n))
		if err != nil || got != v {
			t.Errorf("header %s decodes to %q (%v), want %q", n, got, err, v)
		}
	}
	if got := mr.Header.Get(trackingHeader); got != req.tracking() {
		t.Errorf("tracking %q", got)
	}
	var text, html string
	var atts []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		switch h := p.Header.(type) {
		case *mail.InlineHeader:
			ct, _, _ := h.ContentType()
			if ct == "text/html" {
				html = string(b)
			} else {
				text = string(b)
			}
		case *mail.AttachmentHeader:
			name, _ := h.Filename()
			atts = append(atts, name+":"+string(b))
		}
	}
	if text != crlf(req.TextBody) || html != crlf(req.HTMLBody) {
		t.Errorf("bodies text=%q html=%q", text, html)
	}
	var want []string
	for _, a := range req.Attachments {
		want = append(want, a.Filename+":"+string(a.data))
	}
	if strings.Join(atts, "|") != strings.Join(want, "|") {
		t.Errorf("attachments %q, want %q", atts, want)
	}
}

func TestTracking(t *testing.T) {
	tr, fa := true, false
	for _, c := range []struct {
		opens, clicks *bool
		want          string
	}{{nil, nil, "all"}, {&tr, &tr, "all"}, {&tr, &fa, "opens"}, {&fa, &tr, "clicks"}, {&fa, &fa, "none"}, {nil, &fa, "opens"}} {
		r := &Request{TrackOpens: c.opens, TrackClicks: c.clicks}
		if got := r.tracking(); got != c.want {
			t.Errorf("%v %v: %q, want %q", c.opens, c.clicks, got, c.want)
		}
	}
}

func TestTagValue(t *testing.T) {
	for in, want := range map[string]string{
		"password reset": `"password reset"`,
		`a "b" \c`:       `"a \"b\" \\c"`,
		"expédition":     "=?utf-8?q?exp=C3=A9dition?=",
	} {
		if got := tagValue(in); got != want {
			t.Errorf("tagValue(%q) = %q, want %q", in, got, want)
		}
	}
}

// rawHeader is the unfolded value of the first field named name, with
// the one space after the colon removed and nothing else.
func rawHeader(raw []byte, name string) string {
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	head = strings.ReplaceAll(head, "\r\n ", " ")
	head = strings.ReplaceAll(head, "\r\n\t", "\t")
	for _, line := range strings.Split(head, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimPrefix(v, " ")
		}
	}
	return ""
}
