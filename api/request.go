package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"unicode/utf8"
)

// Request is the body of POST /api/v1/send (seed 001).
type Request struct {
	From        Address           `json:"from"`
	To          []Address         `json:"to"`
	Cc          []Address         `json:"cc,omitempty"`
	Bcc         []Address         `json:"bcc,omitempty"`
	ReplyTo     AddressList       `json:"replyTo,omitempty"`
	Subject     string            `json:"subject"`
	HTMLBody    string            `json:"htmlBody,omitempty"`
	TextBody    string            `json:"textBody,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	TrackOpens  *bool             `json:"trackOpens,omitempty"`  // nil: true
	TrackClicks *bool             `json:"trackClicks,omitempty"` // nil: true
	Tag         string            `json:"tag,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
	IPPool      string            `json:"ippool,omitempty"`
	// PreserveRecipients sends one message to every recipient, each seeing
	// the others in To and Cc. Default false (Mandrill's
	// preserve_recipients): one message per recipient, whose To names only
	// them, so its opens, clicks and unsubscribe name them.
	PreserveRecipients bool `json:"preserveRecipients,omitempty"`
}

// Address is an email address with an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// AddressList is replyTo: one address object or an array of them.
type AddressList []Address

// UnmarshalJSON accepts {"email":...} as well as [{"email":...}, ...].
func (l *AddressList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		var a Address
		if err := strictUnmarshal(b, &a); err != nil {
			return err
		}
		*l = AddressList{a}
		return nil
	}
	var as []Address
	if err := strictUnmarshal(b, &as); err != nil {
		return err
	}
	*l = as
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// Attachment is a file attached to the message; Content is base64.
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"contentType"`
	Content     string `json:"content"`

	data []byte // decoded by validate
}

// FieldError names one invalid field of a request, as a JSON path such
// as "to[1].email" or "headers.Contact-ID".
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Limits on what one request may ask for.
const (
	maxRecipients = 100
	maxHeaders    = 50
	maxNameLen    = 256
	maxSubjectLen = 998
	maxTagLen     = 256
	maxHeaderLen  = 998 // a header line, name + ": " + value (RFC 5322 section 2.1.1)
	maxAddrLen    = 254 // RFC 5321 section 4.5.3.1.3 path, less the brackets
)

// reserved are the headers the API writes itself; custom headers may not
// set them (RFC 5322 section 3.6 fields, MIME fields, trace fields).
var reserved = map[string]bool{
	"from": true, "sender": true, "to": true, "cc": true, "bcc": true, "reply-to": true, "subject": true,
	"date": true, "message-id": true, "mime-version": true, "return-path": true, "received": true,
}

// decodeRequest reads a JSON request; a malformed or mistyped body yields
// field errors, never a Go error string.
func decodeRequest(r io.Reader) (*Request, []FieldError) {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	var req Request
	if err := d.Decode(&req); err != nil {
		return nil, []FieldError{jsonFieldError(err)}
	}
	if d.More() {
		return nil, []FieldError{{Field: "", Message: "trailing data after the JSON object"}}
	}
	return &req, nil
}

func jsonFieldError(err error) FieldError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return FieldError{Field: te.Field, Message: "must be a JSON " + jsonKind(te.Type.Kind().String())}
	case errors.As(err, &se):
		return FieldError{Field: "", Message: fmt.Sprintf("malformed JSON at byte %d", se.Offset)}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FieldError{Field: "", Message: "empty or truncated JSON body"}
	}
	// json: unknown field "x"
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return FieldError{Field: strings.Trim(name, `"`), Message: "unknown field"}
	}
	return FieldError{Field: "", Message: "malformed JSON"}
}

func jsonKind(k string) string {
	switch k {
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	case "map", "struct":
		return "object"
	case "string":
		return "string"
	}
	return "value of another type"
}

// validate checks every field against the key's sender domains and the
// configured pools, decodes the attachments, and returns one error per
// invalid field.
func (req *Request) validate(pools map[string]string) []FieldError {
	var errs []FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	addr := func(field string, a Address) {
		if a.Email == "" {
			bad(field+".email", "required")
		} else if msg := checkEmail(a.Email); msg != "" {
			bad(field+".email", "%s", msg)
		}
		if msg := checkText(a.Name, maxNameLen); msg != "" {
			bad(field+".name", "%s", msg)
		}
	}
	addr("from", req.From)
	if len(req.To) == 0 {
		bad("to", "at least one recipient is required")
	}
	if n := len(req.To) + len(req.Cc) + len(req.Bcc); n > maxRecipients {
		bad("to", "%d recipients in to, cc and bcc; at most %d", n, maxRecipients)
	}
	for _, l := range []struct {
		name string
		list []Address
	}{{"to", req.To}, {"cc", req.Cc}, {"bcc", req.Bcc}, {"replyTo", req.ReplyTo}} {
		for i, a := range l.list {
			addr(fmt.Sprintf("%s[%d]", l.name, i), a)
		}
	}
	if strings.TrimSpace(req.Subject) == "" {
		bad("subject", "required")
	} else if msg := checkText(req.Subject, maxSubjectLen); msg != "" {
		bad("subject", "%s", msg)
	}
	if req.HTMLBody == "" && req.TextBody == "" {
		bad("htmlBody", "htmlBody or textBody is required")
	}
	if !utf8.ValidString(req.HTMLBody) {
		bad("htmlBody", "must be valid UTF-8")
	}
	if !utf8.ValidString(req.TextBody) {
		bad("textBody", "must be valid UTF-8")
	}
	if len(req.Headers) > maxHeaders {
		bad("headers", "%d headers; at most %d", len(req.Headers), maxHeaders)
	}
	for name, value := range req.Headers {
		field := "headers." + name
		switch {
		case !validHeaderName(name):
			bad(field, "not a header name (RFC 5322: printable ASCII, no colon or space)")
		case reserved[strings.ToLower(name)]:
			bad(field, "%s is set by the API and cannot be overridden", name)
		case strings.HasPrefix(strings.ToLower(name), "content-"):
			bad(field, "MIME headers are set by the API")
		case strings.HasPrefix(strings.ToLower(name), "x-leadpush-"):
			bad(field, "X-Leadpush-* headers are the API's; use trackOpens, trackClicks, tag and ippool")
		}
		if msg := checkHeaderValue(value); msg != "" {
			bad(field, "%s", msg)
		} else if len(name)+2+len(value) > maxHeaderLen {
			bad(field, "longer than %d characters", maxHeaderLen)
		}
	}
	if msg := checkText(req.Tag, maxTagLen); msg != "" {
		bad("tag", "%s", msg)
	}
	for i, a := range req.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		if a.Filename == "" {
			bad(field+".filename", "required")
		} else if msg := checkText(a.Filename, 255); msg != "" {
			bad(field+".filename", "%s", msg)
		} else if strings.ContainsAny(a.Filename, `/\`) {
			bad(field+".filename", "must not contain a path")
		}
		if a.ContentType == "" {
			bad(field+".contentType", "required")
		} else if mt, params, err := mime.ParseMediaType(a.ContentType); err != nil || !strings.Contains(mt, "/") || strings.HasPrefix(mt, "multipart/") || len(params) > 0 && params["boundary"] != "" {
			bad(field+".contentType", "not a MIME type such as application/pdf")
		}
		data, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			bad(field+".content", "must be standard base64")
		}
		req.Attachments[i].data = data
	}
	if req.IPPool != "" {
		if _, ok := pools[req.IPPool]; !ok {
			bad("ippool", "unknown pool %q", req.IPPool)
		}
	}
	return errs
}

// checkEmail returns why an address is not a plain addr-spec, or "".
func checkEmail(s string) string {
	if len(s) > maxAddrLen {
		return "too long"
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || strings.ContainsAny(s, "<> \t\r\n\"") {
		return "not an email address (want local@domain)"
	}
	local, domain, _ := strings.Cut(s, "@")
	if local == "" || !strings.Contains(domain, ".") && !strings.HasPrefix(domain, "[") {
		return "not an email address (want local@domain)"
	}
	return ""
}

// checkText returns why s cannot go into a header as (RFC 2047 encoded)
// text, or "".
func checkText(s string, max int) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case strings.ContainsAny(s, "\r\n"):
		return "must not contain CR or LF"
	case hasControl(s):
		return "must not contain control characters"
	case len(s) > max:
		return fmt.Sprintf("longer than %d bytes", max)
	}
	return ""
}

// checkHeaderValue: custom header values go into the message as given:
// printable ASCII as is (RFC 5322 section 2.2 unstructured, leading
// whitespace included), any other UTF-8 text RFC 2047 encoded (compose).
func checkHeaderValue(s string) string {
	switch {
	case strings.ContainsAny(s, "\r\n"):
		return "must not contain CR or LF"
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case hasControl(s):
		return "must not contain control characters"
	case strings.TrimSpace(s) == "":
		return "must not be empty"
	}
	return ""
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return true
		}
	}
	return false
}

// validHeaderName: RFC 5322 section 3.6.8 field-name, printable ASCII
// other than colon.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// tracking is the X-Leadpush-Tracking value (seed 000) for the request's
// trackOpens and trackClicks; a missing flag means true, as a missing
// header means "all" to the milter.
func (req *Request) tracking() string {
	opens := req.TrackOpens == nil || *req.TrackOpens
	clicks := req.TrackClicks == nil || *req.TrackClicks
	switch {
	case opens && clicks:
		return "all"
	case opens:
		return "opens"
	case clicks:
		return "clicks"
	}
	return "none"
}

// copies returns the messages a request sends: itself when it preserves
// its recipients or has one, else one copy per recipient (to, cc and bcc,
// each once) whose To names only that recipient.
func (req *Request) copies() []*Request {
	rcpts := req.recipientAddrs()
	if req.PreserveRecipients || len(rcpts) <= 1 {
		return []*Request{req}
	}
	out := make([]*Request, 0, len(rcpts))
	for _, a := range rcpts {
		c := *req
		c.To, c.Cc, c.Bcc = []Address{a}, nil, nil
		out = append(out, &c)
	}
	return out
}

// recipientAddrs lists to, cc and bcc, each address once.
func (req *Request) recipientAddrs() []Address {
	var out []Address
	seen := map[string]bool{}
	for _, l := range [][]Address{req.To, req.Cc, req.Bcc} {
		for _, a := range l {
			if k := strings.ToLower(a.Email); !seen[k] {
				seen[k] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// recipients lists the envelope recipients: to, cc and bcc, each once.
func (req *Request) recipients() []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range [][]Address{req.To, req.Cc, req.Bcc} {
		for _, a := range l {
			if k := strings.ToLower(a.Email); !seen[k] {
				seen[k] = true
				out = append(out, a.Email)
			}
		}
	}
	return out
}
