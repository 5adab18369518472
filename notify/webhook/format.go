package webhook

import (
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leadpush/leadpush/ledger"
)

// batchNames maps ledger event types to seed 002's names; a type missing
// here (processed) is not sent to batch endpoints.
var batchNames = map[ledger.EventType]string{
	ledger.Reject:      "reject",
	ledger.Delivered:   "sent",
	ledger.SoftBounce:  "soft_bounce",
	ledger.HardBounce:  "hard_bounce",
	ledger.Open:        "open",
	ledger.Click:       "click",
	ledger.Unsubscribe: "unsubscribe",
	ledger.Spam:        "spam",
}

// jsonTypes maps ledger event types to seed 001's numbers.
var jsonTypes = map[ledger.EventType]int{
	ledger.Processed:   TypeProcessed,
	ledger.Reject:      TypeDropped,
	ledger.Delivered:   TypeDelivered,
	ledger.SoftBounce:  TypeSoftBounced,
	ledger.HardBounce:  TypeHardBounced,
	ledger.Open:        TypeOpened,
	ledger.Click:       TypeClicked,
	ledger.Unsubscribe: TypeUnsubscribed,
	ledger.Spam:        TypeSpam,
}

// sendable reports whether an event of type t can be sent in format f.
func sendable(f string, t ledger.EventType) bool {
	if f == FormatBatch {
		_, ok := batchNames[t]
		return ok
	}
	_, ok := jsonTypes[t]
	return ok
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// headerMap returns the custom headers as an object, never nil: values
// for display, a repeated name's values joined with ", ".
func headerMap(hs []ledger.Header) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		v := display(h.Value)
		if prev, ok := m[h.Name]; ok {
			m[h.Name] = prev + ", " + v
		} else {
			m[h.Name] = v
		}
	}
	return m
}

// headerList returns the custom headers one entry each, in order, values
// for display, when a name occurs more than once; nil (left out of the
// payload) when headers already says everything.
func headerList(hs []ledger.Header) []HeaderField {
	if !repeated(hs) {
		return nil
	}
	l := make([]HeaderField, len(hs))
	for i, h := range hs {
		l[i] = HeaderField{Name: h.Name, Value: display(h.Value)}
	}
	return l
}

// repeated reports whether a header name occurs more than once (names
// compare without regard to case, RFC 5322 section 1.2.2).
func repeated(hs []ledger.Header) bool {
	for i := 1; i < len(hs); i++ {
		for _, h := range hs[:i] {
			if strings.EqualFold(h.Name, hs[i].Name) {
				return true
			}
		}
	}
	return false
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	return nil, fmt.Errorf("charset %s", charset) // utf-8, us-ascii and iso-8859-1 only
}}

// display is a recorded header value (kept as it was in the mail) as a
// receiver should see it: RFC 2047 encoded words decoded, everything else
// byte for byte; a value that does not decode stays as it was.
func display(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	d, err := wordDecoder.DecodeHeader(v)
	if err != nil || !utf8.ValidString(d) {
		return v
	}
	return d
}

// counts are the message's opens and clicks as of the event, when the
// ledger kept them with it, else the message's current ones.
func counts(e *ledger.Event, m *ledger.Message) (opens, clicks int) {
	if e.MsgSeq > 0 {
		return e.Opens, e.Clicks
	}
	return m.Opens, m.Clicks
}

func tags(m *ledger.Message) []string {
	if m.Tag == "" {
		return []string{}
	}
	return []string{m.Tag}
}

// recipient is the event's recipient, else the message's sole one.
func recipient(e *ledger.Event, m *ledger.Message) string {
	if e.Recipient != "" {
		return e.Recipient
	}
	if len(m.Recipients) == 1 {
		return m.Recipients[0]
	}
	return ""
}

// messageOrStub returns m, or a message carrying only the event's message
// id when the ledger has none (an event about a message recorded elsewhere
// or already pruned).
func messageOrStub(e *ledger.Event, m *ledger.Message) *ledger.Message {
	if m != nil {
		return m
	}
	return &ledger.Message{ID: e.MessageID}
}

// BatchEventOf builds the seed 002 form of an event; ok is false for event
// types that format does not carry (processed). m may be nil.
func BatchEventOf(e *ledger.Event, m *ledger.Message) (BatchEvent, bool) {
	name, ok := batchNames[e.Type]
	if !ok {
		return BatchEvent{}, false
	}
	m = messageOrStub(e, m)
	ts := unix(e.Time)
	opens, clicks := counts(e, m)
	be := BatchEvent{
		Event:     name,
		Timestamp: ts,
		EventID:   e.ID,
		Msg: BatchMsg{
			ID:         m.ID,
			Timestamp:  unix(m.CreatedAt),
			Email:      recipient(e, m),
			Sender:     sender(m),
			Subject:    m.Subject,
			Opens:      opens,
			Clicks:     clicks,
			Seq:        e.MsgSeq,
			Stream:     m.Stream,
			Tags:       tags(m),
			Headers:    headerMap(m.Headers),
			HeaderList: headerList(m.Headers),
		},
	}
	switch e.Type {
	case ledger.Open, ledger.Click:
		be.IP, be.UserAgent, be.Machine = e.Detail.IP, e.Detail.UserAgent, e.Detail.Machine
		if e.Type == ledger.Open {
			be.OpenDate = ts
		} else {
			be.ClickDate, be.URL = ts, e.Detail.URL
		}
	case ledger.SoftBounce, ledger.HardBounce:
		be.BounceDate = ts
		be.Msg.DeliveryReport, be.Msg.BounceReason = e.Detail.Report, e.Detail.BounceReason
	case ledger.Spam:
		be.BounceDate = ts
	case ledger.Unsubscribe:
		be.UnsubscribeDate = ts
	}
	return be, true
}

// sender is the envelope sender, else the From header's address.
func sender(m *ledger.Message) string {
	if m.EnvelopeFrom != "" {
		return m.EnvelopeFrom
	}
	return parseAddress(m.From).Email
}

// PayloadOf builds the seed 001 form of an event. m may be nil.
func PayloadOf(e *ledger.Event, m *ledger.Message) Payload {
	m = messageOrStub(e, m)
	d := e.Detail
	md := EventMetadata{
		Timestamp: unix(e.Time),
		Recipient: recipient(e, m),
		Reason:    d.Reason,
		Source:    d.Source,
	}
	switch e.Type {
	case ledger.Open, ledger.Click:
		fam := d.UAFamily
		if fam == "" {
			fam = "Other" // uap-core's name for an unknown agent
		}
		md.UserAgent = &UserAgent{Family: fam, Major: d.UAMajor}
		md.RawUA, md.IP, md.Machine, md.MachineReason = d.UserAgent, d.IP, d.Machine, d.MachineReason
		if e.Type == ledger.Click {
			md.URL = d.URL
		}
	case ledger.SoftBounce, ledger.HardBounce, ledger.Spam, ledger.Delivered, ledger.Reject:
		md.DeliveryReport, md.Status, md.Relay, md.BounceReason = d.Report, d.Status, d.Relay, d.BounceReason
	default:
		md.IP = d.IP
	}
	from := parseAddress(m.From)
	if from.Email == "" {
		from.Email = m.EnvelopeFrom
	}
	return Payload{
		Event: PayloadEvent{
			EventID:       e.ID,
			Type:          jsonTypes[e.Type],
			MessageID:     m.ID,
			Sequence:      e.MsgSeq,
			EventMetadata: md,
		},
		EmailMessage: EmailMessage{
			MessageID:  m.ID,
			From:       from,
			To:         toList(m),
			Subject:    m.Subject,
			Headers:    headerMap(m.Headers),
			HeaderList: headerList(m.Headers),
			Tags:       tags(m),
			Stream:     m.Stream,
		},
	}
}

// parseAddress splits a From-style header into name and address; a string
// net/mail cannot parse is kept whole as the address.
func parseAddress(s string) Address {
	s = strings.TrimSpace(s)
	if s == "" {
		return Address{}
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return Address{Email: s}
	}
	return Address{Email: a.Address, Name: a.Name}
}

// toList is the To header's mailboxes, else the envelope recipients.
func toList(m *ledger.Message) []Address {
	out := []Address{}
	if s := strings.TrimSpace(m.To); s != "" {
		if l, err := mail.ParseAddressList(s); err == nil {
			for _, a := range l {
				out = append(out, Address{Email: a.Address, Name: a.Name})
			}
			return out
		}
		return append(out, Address{Email: s})
	}
	for _, r := range m.Recipients {
		out = append(out, Address{Email: r})
	}
	return out
}
