package api

import (
	"bytes"
	"fmt"
	"mime"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// Control headers the API writes for the milter (seed 000). The milter
// strips every X-Leadpush-* header before delivery.
const (
	tagHeader      = "X-Leadpush-Tag"
	trackingHeader = "X-Leadpush-Tracking"
	recordHeader   = "X-Leadpush-Record"
	// PoolHeader carries the transport of the request's ippool, for a
	// Postfix header_checks FILTER rule (contrib/postfix/ippool.cf).
	PoolHeader = "X-Leadpush-Pool"
)

// composer builds messages; now and newID are injectable for golden tests.
type composer struct {
	now   func() time.Time
	newID func() string // a unique token: the Message-ID's left part and MIME boundaries
	pools map[string]string
}

type field struct{ name, value string }

// compose returns the message for a validated request and its Message-ID
// header value (with angle brackets).
//
// Structure: one text part, multipart/alternative (text, then HTML, RFC
// 2046 section 5.1.4: the preferred last) when both bodies exist, inside
// multipart/mixed when there are attachments. Names and the subject are
// RFC 2047 encoded when not ASCII, attachment filenames RFC 2231.
func (c *composer) compose(req *Request) ([]byte, string, error) {
	msgID := c.newID() + "@" + domainOf(req.From.Email)
	// textproto.Header keeps fields newest first, so build a list in order
	// and add it backwards.
	var fields []field
	add := func(name, value string) { fields = append(fields, field{name, value}) }
	tmp := func(f func(h *mail.Header), name string) {
		var t mail.Header
		f(&t)
		add(name, t.Get(name))
	}
	tmp(func(t *mail.Header) { t.SetDate(c.now()) }, "Date")
	tmp(func(t *mail.Header) { t.SetAddressList("From", addrs([]Address{req.From})) }, "From")
	if len(req.ReplyTo) > 0 {
		tmp(func(t *mail.Header) { t.SetAddressList("Reply-To", addrs(req.ReplyTo)) }, "Reply-To")
	}
	tmp(func(t *mail.Header) { t.SetAddressList("To", addrs(req.To)) }, "To")
	if len(req.Cc) > 0 {
		tmp(func(t *mail.Header) { t.SetAddressList("Cc", addrs(req.Cc)) }, "Cc")
	}
	tmp(func(t *mail.Header) { t.SetSubject(strings.TrimSpace(req.Subject)) }, "Subject")
	tmp(func(t *mail.Header) { t.SetMessageID(msgID) }, "Message-ID")
	names := make([]string, 0, len(req.Headers))
	for n := range req.Headers {
		names = append(names, n)
	}
	sort.Strings(names) // JSON objects are unordered; sorted is stable
	for _, n := range names {
		add(n, headerValue(req.Headers[n]))
	}
	if req.Tag != "" {
		add(tagHeader, tagValue(req.Tag))
	}
	add(trackingHeader, req.tracking())
	if len(names) > 0 {
		add(recordHeader, strings.Join(names, ", "))
	}
	if req.IPPool != "" {
		add(PoolHeader, c.pools[req.IPPool])
	}

	var buf bytes.Buffer
	if len(req.Attachments) == 0 {
		top := func(hdr message.Header) (*message.Writer, error) {
			return message.CreateWriter(&buf, withFields(hdr, fields))
		}
		if err := c.writeBody(top, req); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "<" + msgID + ">", nil
	}
	var h message.Header
	h.SetContentType("multipart/mixed", map[string]string{"boundary": c.boundary()})
	w, err := message.CreateWriter(&buf, withFields(h, fields))
	if err != nil {
		return nil, "", fmt.Errorf("api: compose: %w", err)
	}
	if err := c.writeBody(w.CreatePart, req); err != nil {
		return nil, "", err
	}
	for _, a := range req.Attachments {
		var ah message.Header
		mt, params, _ := mime.ParseMediaType(a.ContentType) // validated
		if params == nil {
			params = map[string]string{}
		}
		params["name"] = a.Filename
		ah.SetContentType(mt, params)
		ah.SetContentDisposition("attachment", map[string]string{"filename": a.Filename})
		ah.Set("Content-Transfer-Encoding", "base64")
		if err := writePart(w, ah, a.data); err != nil {
			return nil, "", err
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", fmt.Errorf("api: compose: %w", err)
	}
	return buf.Bytes(), "<" + msgID + ">", nil
}

// writeBody writes the text and/or HTML body with create: the message
// itself or the first part of a multipart/mixed.
func (c *composer) writeBody(create func(message.Header) (*message.Writer, error), req *Request) error {
	if req.TextBody == "" || req.HTMLBody == "" {
		kind, body := "plain", req.TextBody
		if req.HTMLBody != "" {
			kind, body = "html", req.HTMLBody
		}
		w, err := create(textHeader(message.Header{}, kind))
		if err != nil {
			return fmt.Errorf("api: compose: %w", err)
		}
		return closeWith(w, []byte(crlf(body)))
	}
	var alt message.Header
	alt.SetContentType("multipart/alternative", map[string]string{"boundary": c.boundary()})
	w, err := create(alt)
	if err != nil {
		return fmt.Errorf("api: compose: %w", err)
	}
	for _, p := range []struct{ kind, body string }{{"plain", req.TextBody}, {"html", req.HTMLBody}} {
		if err := writePart(w, textHeader(message.Header{}, p.kind), []byte(crlf(p.body))); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("api: compose: %w", err)
	}
	return nil
}

func textHeader(h message.Header, kind string) message.Header {
	h.SetContentType("text/"+kind, map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	return h
}

func writePart(w *message.Writer, h message.Header, data []byte) error {
	pw, err := w.CreatePart(h)
	if err != nil {
		return fmt.Errorf("api: compose: %w", err)
	}
	return closeWith(pw, data)
}

func closeWith(w *message.Writer, data []byte) error {
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("api: compose: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("api: compose: %w", err)
	}
	return nil
}

// withFields puts fields, in order, above the MIME fields already in h.
// They are added raw: textproto would canonicalise the names, and custom
// headers go out exactly as given ("Contact-ID", not "Contact-Id").
func withFields(h message.Header, fields []field) message.Header {
	h.AddRaw([]byte("MIME-Version: 1.0\r\n"))
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw([]byte(fold(fields[i].name, fields[i].value)))
	}
	return h
}

// fold writes one header field, folded at spaces before 78 characters
// where it can be (RFC 5322 section 2.2.3): unfolding gives back the value
// exactly.
func fold(name, value string) string {
	var b strings.Builder
	b.WriteString(name + ":")
	line := len(name) + 1
	// Each chunk is one blank and the word after it; a fold goes before
	// a chunk with a word, so no line is blank.
	rest := " " + value
	for rest != "" {
		// next chunk: up to and including the next run of non-space
		i := 1
		for i < len(rest) && rest[i] != ' ' && rest[i] != '\t' {
			i++
		}
		chunk := rest[:i]
		if line+len(chunk) > 76 && line > len(name)+1 && len(chunk) > 1 {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(chunk)
		line += len(chunk)
		rest = rest[i:]
	}
	b.WriteString("\r\n")
	return b.String()
}

func (c *composer) boundary() string { return "lp-" + c.newID() }

// crlf makes line ends CRLF, as quoted-printable (RFC 2045 section 6.7)
// treats them as hard line breaks either way.
func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

func addrs(l []Address) []*mail.Address {
	out := make([]*mail.Address, len(l))
	for i, a := range l {
		out[i] = &mail.Address{Name: a.Name, Address: a.Email}
	}
	return out
}

func domainOf(email string) string {
	_, d, _ := strings.Cut(email, "@")
	return strings.ToLower(strings.Trim(d, "[]"))
}

// tagValue quotes an ASCII tag (the milter unquotes it) and RFC 2047
// encodes any other.
func tagValue(tag string) string {
	for i := 0; i < len(tag); i++ {
		if tag[i] >= 0x80 {
			return mime.QEncoding.Encode("utf-8", tag)
		}
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(tag) + `"`
}

// headerValue is a custom header's value as written: printable ASCII
// exactly as given; other text, and a value that begins or ends with
// white space, as RFC 2047 Q-encoded words of UTF-8 (section 5(1) allows
// them in unstructured fields). The whole value goes inside the words, so
// decoding gives back every byte: MTAs hand milters a header's value
// without its leading white space (Postfix and Sendmail unless
// SMFIP_HDR_LEADSPC), but "_" inside a word is not white space to them.
func headerValue(v string) string {
	if v != strings.TrimSpace(v) {
		return qWords(v)
	}
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return mime.QEncoding.Encode("utf-8", v)
		}
	}
	return v
}

// qWords encodes v as Q-encoded words even when it is ASCII (the mime
// package leaves ASCII alone).
func qWords(v string) string {
	const max = 75 - len("=?utf-8?q??=")
	var words []string
	var w strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		var enc string
		switch {
		case c == ' ':
			enc = "_"
		case c >= 0x80 || c < 0x20 || strings.IndexByte("=?_\t", c) >= 0:
			enc = fmt.Sprintf("=%02X", c)
		default:
			enc = string(c)
		}
		// A UTF-8 sequence stays within one word (RFC 2047 section 5).
		if w.Len()+len(enc) > max && (c < 0x80 || c >= 0xc0) {
			words = append(words, "=?utf-8?q?"+w.String()+"?=")
			w.Reset()
		}
		w.WriteString(enc)
	}
	return strings.Join(append(words, "=?utf-8?q?"+w.String()+"?="), " ")
}
