package intake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/bounce"
)

// AddressVerifier checks the signed local part of the VERP and unsubscribe
// addresses (token.Keyring, through a small adapter: notify must not import
// tracker).
type AddressVerifier interface {
	// Return verifies a bounce+TOKEN token; Unsub an unsub+TOKEN token.
	Return(tok string) (messageID string, err error)
	Unsub(tok string) (messageID string, err error)
}

// IngestStore is what the ingester needs of the ledger.
type IngestStore interface {
	Message(ctx context.Context, id string) (*ledger.Message, error)
	MessageByHeaderID(ctx context.Context, messageID string) (*ledger.Message, error)
	RecordInbound(ctx context.Context, in *ledger.Inbound, events []*ledger.Event) error
}

// Ingester classifies one piece of returned mail and records what it says.
type Ingester struct {
	Store   IngestStore
	Tokens  AddressVerifier // nil: only the returned headers can match
	Options bounce.Options
	Logger  *slog.Logger
	Now     func() time.Time
	MaxRaw  int // bytes of the raw message kept; default 1 MiB
}

// Result says what Ingest did.
type Result struct {
	Kind      bounce.Kind
	MessageID string // the matched message, "" if none
	Events    []*ledger.Event
	Reason    string
}

// ErrTemporary wraps failures worth a retry by the MTA (EX_TEMPFAIL): the
// ledger could not be written.
var ErrTemporary = errors.New("intake: temporary failure")

// Ingest reads one message delivered to envelopeTo. It records the events
// the message gives and keeps the message itself in the inbound table,
// whatever it is, so nothing is dropped silently. Only a failure to store
// is an error (wrapping ErrTemporary): the MTA then keeps the message and
// retries.
func (in *Ingester) Ingest(ctx context.Context, r io.Reader, envelopeTo string) (*Result, error) {
	now := time.Now
	if in.Now != nil {
		now = in.Now
	}
	log := in.Logger
	if log == nil {
		log = slog.Default()
	}
	maxRaw := in.MaxRaw
	if maxRaw <= 0 {
		maxRaw = 1 << 20
	}
	limit := in.Options.MaxSize
	if limit <= 0 {
		limit = bounce.DefaultMaxSize
	}
	raw, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the message: %v", ErrTemporary, err)
	}
	res := &Result{}
	rep, perr := bounce.Parse(bytes.NewReader(raw), envelopeTo, in.Options)
	switch {
	case perr != nil:
		res.Kind, res.Reason = bounce.KindUnknown, "unparsable: "+perr.Error()
	default:
		res.Kind, res.Reason = rep.Kind, rep.Reason
		m := in.match(ctx, rep, envelopeTo)
		if m != nil {
			res.MessageID = m.ID
		}
		res.Events = in.events(rep, m, now(), &res.Reason)
	}
	keep := raw
	if len(keep) > maxRaw {
		keep = keep[:maxRaw]
	}
	rec := &ledger.Inbound{ReceivedAt: now(), Kind: string(res.Kind), Reason: res.Reason, EnvelopeTo: envelopeTo,
		MessageID: res.MessageID, Events: len(res.Events), Raw: keep}
	if err := in.Store.RecordInbound(ctx, rec, res.Events); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTemporary, err)
	}
	log.Info("returned mail ingested", "kind", res.Kind, "message_id", res.MessageID, "events", len(res.Events), "reason", res.Reason)
	return res, nil
}

// match finds the message a report is about: by the signed VERP or
// unsubscribe token in the address it came to, else by the Message-ID of
// the returned headers.
func (in *Ingester) match(ctx context.Context, rep *bounce.Report, envelopeTo string) *ledger.Message {
	if in.Tokens != nil {
		local, _, _ := strings.Cut(envelopeTo, "@")
		prefix, tok, ok := strings.Cut(local, "+")
		if ok {
			var id string
			var err error
			switch strings.ToLower(prefix) {
			case in.prefix(in.Options.BouncePrefix, "bounce"):
				id, err = in.Tokens.Return(tok)
			case in.prefix(in.Options.UnsubscribePrefix, "unsub"):
				id, err = in.Tokens.Unsub(tok)
			default:
				err = errors.New("no token")
			}
			if err == nil {
				if m, err := in.Store.Message(ctx, id); err == nil {
					return m
				}
			}
		}
	}
	if id := rep.OriginalMessageID; id != "" {
		for _, form := range []string{"<" + strings.Trim(id, "<>") + ">", id} {
			if m, err := in.Store.MessageByHeaderID(ctx, form); err == nil {
				return m
			}
		}
	}
	return nil
}

func (in *Ingester) prefix(p, def string) string {
	if p == "" {
		return def
	}
	return strings.ToLower(p)
}

// events turns a report into ledger events. Only real bounces of real
// recipients count: nothing is recorded for a report that matches none of
// our messages (by its signed VERP token, or by the Message-ID of the
// returned headers), nor for an address the report names that was not a
// recipient of the matched message: a forged DSN naming strangers
// suppresses nobody. Such reports are still kept as inbound mail.
func (in *Ingester) events(rep *bounce.Report, m *ledger.Message, now time.Time, reason *string) []*ledger.Event {
	var out []*ledger.Event
	msgID := ""
	if m != nil {
		msgID = m.ID
	}
	sole := ""
	recipient := map[string]bool{}
	if m != nil {
		for _, r := range m.Recipients {
			recipient[ledger.NormalizeAddress(r)] = true
		}
		if len(m.Recipients) == 1 {
			sole = ledger.NormalizeAddress(m.Recipients[0])
		}
	}
	// ours returns the address a report names as one of the message's
	// recipients, the sole recipient when it names nobody, or "".
	var strangers []string
	ours := func(a string) string {
		addr := ledger.NormalizeAddress(a)
		if addr == "" {
			return sole
		}
		if !recipient[addr] {
			strangers = append(strangers, addr)
			return ""
		}
		return addr
	}
	defer func() {
		if len(strangers) > 0 {
			*reason += fmt.Sprintf("; %d address(es) not recipients of the message, ignored", len(strangers))
		}
	}()
	switch rep.Kind {
	case bounce.KindBounce, bounce.KindDelayed:
		if m == nil {
			*reason += "; no matching message"
			return nil
		}
		for _, r := range rep.Recipients {
			addr := ours(r.Address)
			if addr == "" {
				continue
			}
			ev := &ledger.Event{ID: ledger.NewID(), MessageID: msgID, Recipient: addr, Time: now,
				Detail: ledger.Detail{Status: r.Status, Report: r.Diagnostic, Relay: r.RemoteMTA, Source: "dsn",
					BounceReason: string(r.BounceReason)}}
			switch {
			case rep.Kind == bounce.KindDelayed || strings.EqualFold(r.Action, "delayed"):
				// Still trying: a soft event, never a bounce that counts.
				ev.Type, ev.DedupKey = ledger.SoftBounce, "delayed:"+msgID+":"+addr+":"+r.Status
				ev.Detail.Reason = "delayed"
			case r.Class == bounce.Hard:
				ev.Type, ev.DedupKey = ledger.HardBounce, HardBounceKey(msgID, addr)
			case r.Class == bounce.Soft:
				ev.Type, ev.DedupKey = ledger.SoftBounce, SoftFailureKey(msgID, addr)
				ev.Escalates = r.BounceReason.DeadLooking()
				if r.BounceReason == bounce.Expired {
					ev.Detail.Reason = "expired"
				}
			default:
				continue // delivered, relayed, expanded: not a failure
			}
			out = append(out, ev)
		}
	case bounce.KindComplaint:
		if m == nil {
			*reason += "; no matching message"
			return nil
		}
		// A complaint suppresses only a recipient of the matched message.
		rcpts := make([]string, 0, len(rep.Recipients))
		for _, r := range rep.Recipients {
			if r.Address == "" {
				continue
			}
			if a := ours(r.Address); a != "" && !slices.Contains(rcpts, a) {
				rcpts = append(rcpts, a)
			}
		}
		if len(rcpts) == 0 && len(strangers) == 0 && sole != "" {
			rcpts = append(rcpts, sole)
		}
		for _, a := range rcpts {
			out = append(out, &ledger.Event{ID: ledger.NewID(), Type: ledger.Spam, MessageID: msgID, Recipient: a, Time: now,
				DedupKey: "spam:" + msgID + ":" + a, Detail: ledger.Detail{Source: "arf", Reason: rep.FeedbackType, IP: rep.SourceIP, UserAgent: rep.UserAgent}})
		}
	case bounce.KindUnsubscribe:
		// Only with a valid token: it proves the request is about one of
		// our messages, so nobody can unsubscribe an address by forging a
		// From header. The address unsubscribed is the message's only
		// recipient. A message to several people carries one token for all
		// of them, and a From header is easily forged: any recipient could
		// unsubscribe the others, so nothing is done (the tracker's page
		// can confirm an address by mail instead).
		if m == nil {
			*reason += "; no valid unsubscribe token, nothing done"
			return nil
		}
		if len(m.Recipients) > 1 {
			*reason += "; the message had several recipients and a From header cannot prove which one asked, nothing done"
			return nil
		}
		from := ledger.NormalizeAddress(rep.From)
		addr := sole
		for _, r := range m.Recipients {
			if ledger.NormalizeAddress(r) == from {
				addr = from
			}
		}
		if addr == "" {
			*reason += "; sender is not a recipient of a message with several, nothing done"
			return nil
		}
		out = append(out, &ledger.Event{ID: ledger.NewID(), Type: ledger.Unsubscribe, MessageID: msgID, Recipient: addr,
			Time: now, DedupKey: "unsub-mail:" + msgID + ":" + addr, Detail: ledger.Detail{Source: "mail"}})
	}
	return out
}
