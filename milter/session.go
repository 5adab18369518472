package milter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/milter/rewrite"
	"github.com/leadpush/leadpush/token"
)

// session is one milter connection, which Postfix opens per SMTP session.
// go-milter calls, in order: Connect, Helo, then per message MailFrom,
// RcptTo (once per recipient), Header (per header), Headers (end of
// headers), BodyChunk (per chunk) and Body (end of message); Abort at RSET
// and at the end of every SMTP session. go-milter replaces the session value
// after a final response (we answer Accept at end of message), so the
// connection facts are copied over by the Server's NewMilter; per-message
// state lives in msg and is reset at MailFrom and Abort.
type session struct {
	srv        *Server
	lean       bool // headers and body chunks get no reply (see leanProtocol)
	clientAddr string
	trustedNet bool
	// nonSMTP: mail that came through no SMTP client (Postfix's pickup,
	// which the milter sees as a connect from port 0, or a local socket):
	// nobody would retry a 452, so recipients are never split.
	nonSMTP bool
	msg     *message
}

// message is the state of one message.
type message struct {
	// rewrite says what became of the body, for the message's log line.
	rewrite  string
	id       string
	start    time.Time
	envFrom  string
	authUser string
	rcpts    []string
	rejects  []*ledger.Event
	// pinned is the stream the envelope rules placed the message in
	// (known at RCPT, final), or nil.
	pinned *config.Stream
	// accepted counts the recipients accepted for delivery.
	accepted int
	// scoped holds the entries of recipients suppressed only in some
	// streams, when the stream is not known at RCPT: they are checked
	// against the message's stream at its end.
	scoped map[string][]*ledger.Suppression

	nHeaders                       int
	nControl                       int                       // X-Leadpush-* headers seen, kept or not
	headerBytes                    int64                     // the header's size, as "Name: value\r\n" lines
	control                        map[string]*controlHeader // lower-case name -> occurrences
	controlList                    []string                  // names in first-seen order
	from, to                       string
	subject                        string
	messageID                      string
	contentType                    string
	cte                            string
	dkimSigned                     bool
	hasListUnsub, hasListUnsubPost bool
	candidates                     []ledger.Header // headers that may be recorded

	body *spool
}

type controlHeader struct {
	name   string // as first seen
	values []string
}

func (s *session) logger() *slog.Logger { return s.srv.log }

// trusted reports whether the current message is recorded and tracked:
// from a trusted network, or SASL-authenticated.
func (m *message) trusted(s *session) bool { return s.trustedNet || m.authUser != "" }

// guard runs a callback, turning a panic into Continue: the milter never
// takes Postfix's transaction down with it, and with the message state
// dropped the rest of the message passes through unmodified.
func (s *session) guard(stage string, fn func() (gomilter.Response, error)) (resp gomilter.Response, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.srv.metrics.Panics.Add(1)
			s.logger().Error("milter panic recovered, message accepted unmodified", "stage", stage, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			s.reset()
			resp, err = gomilter.RespContinue, nil
		}
	}()
	return fn()
}

func (s *session) reset() {
	if s.msg != nil && s.msg.body != nil {
		s.msg.body.Close()
	}
	s.msg = nil
}

// Connect implements gomilter.Milter.
func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("connect", func() (gomilter.Response, error) {
		s.srv.metrics.Connections.Add(1)
		s.clientAddr = ""
		s.trustedNet = false
		// Postfix sends non-SMTP mail (sendmail(1), pickup) as a connect
		// from localhost port 0; Sendmail's local mail comes on a socket.
		s.nonSMTP = port == 0
		if a, ok := netip.AddrFromSlice(addr); ok {
			a = a.Unmap()
			s.clientAddr = a.String()
			for _, p := range s.srv.cfg.TrustedNetworks {
				if p.Contains(a) {
					s.trustedNet = true
					break
				}
			}
		} else if family == "unix" || family == "local" {
			// A local socket client (sendmail(1) through pickup shows as
			// localhost 127.0.0.1; Sendmail may say "local").
			s.clientAddr = "local"
			s.trustedNet = s.srv.cfg.TrustLocal
			s.nonSMTP = true
		}
		return gomilter.RespContinue, nil
	})
}

// Helo implements gomilter.Milter.
func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// MailFrom implements gomilter.Milter: a new message starts.
func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("mail", func() (gomilter.Response, error) {
		s.flushRejects()
		s.reset()
		s.msg = &message{
			id:       token.NewMessageID(),
			start:    s.srv.now(),
			envFrom:  from,
			authUser: m.Macros["{auth_authen}"], // sent with MAIL FROM only: keep it
			control:  map[string]*controlHeader{},
		}
		if s.msg.trusted(s) {
			s.msg.pinned = s.srv.streams.byEnvelope(s.msg.authUser, from)
		}
		return gomilter.RespContinue, nil
	})
}

// RcptTo implements gomilter.Milter: suppressed recipients of trusted mail
// are turned away here, each on its own.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guard("rcpt", func() (gomilter.Response, error) {
		msg := s.msg
		if msg == nil {
			return gomilter.RespContinue, nil
		}
		if msg.trusted(s) && s.srv.cfg.Suppressions != nil {
			// The stream is known here only when the envelope placed the
			// message; otherwise only entries for every stream are sure
			// to apply, and the others wait for the end of the message.
			known := s.srv.streams.atRCPT(msg.pinned)
			stream, broadcast := "", false
			if known != nil {
				stream, broadcast = known.Name, known.Broadcast()
			}
			entries := s.suppressions(rcpt)
			if sp := applying(entries, stream, broadcast); sp != nil {
				msg.rejects = append(msg.rejects, s.rejectEvent(msg, rcpt, sp))
				s.srv.metrics.Rejected.Add(1)
				s.logger().Info("suppressed recipient", "message_id", msg.id, "rcpt", rcpt, "reason", sp.Reason, "scope", scopeName(sp.Stream), "action", s.srv.cfg.SuppressionAction)
				if s.srv.cfg.SuppressionAction == config.SuppressionDrop {
					msg.rcpts = append(msg.rcpts, "\x00drop:"+rcpt) // removed at end of message
					return gomilter.RespContinue, nil
				}
				// A 'y' reply rejects this recipient only: a final Reject
				// would end the transaction for all of them.
				return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "550 5.7.1 "+rejectText(rcpt, sp.Reason)), nil
			}
			if len(entries) > 0 && known == nil {
				if msg.scoped == nil {
					msg.scoped = map[string][]*ledger.Suppression{}
				}
				msg.scoped[rcpt] = entries
			}
			// split_recipients: one recipient per tracked message; RFC 5321
			// 4.5.3.1.10: the client sends the others in a new transaction.
			if msg.pinned != nil && msg.pinned.SplitRecipients && !s.nonSMTP && msg.accepted >= 1 {
				s.srv.metrics.Split.Add(1)
				return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), "452 4.5.3 Too many recipients"), nil
			}
		}
		msg.accepted++
		if len(msg.rcpts) < 10000 {
			msg.rcpts = append(msg.rcpts, rcpt)
		}
		return gomilter.RespContinue, nil
	})
}

// applying returns the first entry that turns away mail of the stream.
func applying(entries []*ledger.Suppression, stream string, broadcast bool) *ledger.Suppression {
	for _, sp := range entries {
		if sp.Applies(stream, broadcast) {
			return sp
		}
	}
	return nil
}

// scopeName is a suppression scope as logs and leadpushctl show it.
func scopeName(scope string) string {
	if scope == ledger.ScopeAll {
		return "all"
	}
	return scope
}

func (s *session) rejectEvent(msg *message, rcpt string, sp *ledger.Suppression) *ledger.Event {
	return &ledger.Event{ID: ledger.NewID(), Type: ledger.Reject, MessageID: msg.id, Recipient: ledger.NormalizeAddress(rcpt),
		Time: s.srv.now(), Detail: ledger.Detail{Source: "milter", Reason: string(sp.Reason)}}
}

// rejectText is what the SMTP client sees: it names the address and the
// reason, nothing internal.
func rejectText(rcpt string, reason ledger.SuppressionReason) string {
	r := strings.Map(func(c rune) rune {
		if c < ' ' || c > '~' {
			return -1
		}
		return c
	}, rcpt)
	why := map[ledger.SuppressionReason]string{
		ledger.ReasonHardBounce:      "it bounced",
		ledger.ReasonSoftBounceLimit: "it bounced repeatedly",
		ledger.ReasonUnsubscribe:     "the recipient unsubscribed",
		ledger.ReasonSpam:            "the recipient complained of spam",
		ledger.ReasonManual:          "listed by the operator",
	}[reason]
	if why == "" {
		why = "suppressed"
	}
	return fmt.Sprintf("<%s>: recipient address is on the suppression list (%s)", r, why)
}

func (s *session) suppressions(rcpt string) []*ledger.Suppression {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.LookupTimeout)
	defer cancel()
	list, err := s.srv.cfg.Suppressions.SuppressionsOf(ctx, rcpt, s.srv.now())
	if err != nil {
		// Fail open: an unreadable list must not stop mail.
		s.srv.metrics.LookupErrors.Add(1)
		s.logger().Warn("suppression lookup failed; recipient accepted", "rcpt", rcpt, "err", err)
		return nil
	}
	return list
}

// Header implements gomilter.Milter.
func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guardNR("header", func() (gomilter.Response, error) {
		msg := s.msg
		if msg == nil {
			return gomilter.RespContinue, nil
		}
		msg.nHeaders++
		msg.headerBytes += int64(len(name) + len(value) + 4)
		if IsControl(name) {
			msg.nControl++
			if msg.nControl > MaxControlHeaders {
				return gomilter.RespContinue, nil // counted: the message is refused at its end
			}
			ln := strings.ToLower(name)
			c := msg.control[ln]
			if c == nil {
				c = &controlHeader{name: name}
				msg.control[ln] = c
				msg.controlList = append(msg.controlList, ln)
			}
			if len(c.values) < 100 {
				c.values = append(c.values, value)
			} else {
				c.values = append(c.values, "") // still counted, for deletion
			}
			return gomilter.RespContinue, nil
		}
		switch strings.ToLower(name) {
		case "from":
			msg.from = cleanValue(value, maxHeaderValueLen)
		case "to":
			msg.to = cleanValue(value, maxHeaderValueLen)
		case "subject":
			msg.subject = cleanValue(value, maxHeaderValueLen)
		case "message-id":
			msg.messageID = cleanValue(value, maxHeaderValueLen)
		case "content-type":
			msg.contentType = value
		case "content-transfer-encoding":
			msg.cte = value
		case "dkim-signature":
			msg.dkimSigned = true
		case "list-unsubscribe":
			msg.hasListUnsub = true
		case "list-unsubscribe-post":
			msg.hasListUnsubPost = true
		}
		if msg.trusted(s) && len(msg.candidates) < maxCandidates && validHeaderName(name) {
			msg.candidates = append(msg.candidates, ledger.Header{Name: name, Value: value})
		}
		return gomilter.RespContinue, nil
	})
}

// Headers implements gomilter.Milter (end of headers).
func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// BodyChunk implements gomilter.Milter: the body of trusted mail is kept
// for rewriting; other mail's body is not looked at.
func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	return s.guardNR("body", func() (gomilter.Response, error) {
		msg := s.msg
		if msg == nil || !msg.trusted(s) || !s.srv.rewrites() {
			return gomilter.RespContinue, nil
		}
		if msg.body == nil {
			msg.body = newSpool(s.srv.cfg.TempDir, s.srv.cfg.BodyMemory, s.srv.cfg.MaxTrackSize, s.srv.bodyMem)
		}
		if _, err := msg.body.Write(chunk); err != nil {
			s.logger().Warn("body spool failed; message will pass untracked", "message_id", msg.id, "err", err)
			msg.body.overflow = true
		}
		return gomilter.RespContinue, nil
	})
}

// guardNR is guard for the callbacks whose reply may be negotiated away:
// whatever they or a recovered panic answer, a lean session answers nil.
func (s *session) guardNR(stage string, fn func() (gomilter.Response, error)) (gomilter.Response, error) {
	resp, err := s.guard(stage, fn)
	if s.lean && err == nil {
		return nil, nil
	}
	return resp, err
}

// Abort implements gomilter.Milter: RSET, or the end of the SMTP session.
func (s *session) Abort(m *gomilter.Modifier) error {
	_, _ = s.guard("abort", func() (gomilter.Response, error) {
		s.flushRejects()
		s.reset()
		return nil, nil
	})
	return nil
}

// flushRejects records the reject events of a message that never reached
// its end (every recipient refused, or the client gave up), with a stub
// message so that their webhooks still say who sent what to whom.
func (s *session) flushRejects() {
	msg := s.msg
	if msg == nil || len(msg.rejects) == 0 {
		return
	}
	stub := &ledger.Message{ID: msg.id, EnvelopeFrom: msg.envFrom, Tracking: ledger.TrackAll, SASLUser: msg.authUser,
		ClientAddr: s.clientAddr, CreatedAt: msg.start, From: msg.from, To: msg.to, Subject: msg.subject}
	if known := s.srv.streams.atRCPT(msg.pinned); known != nil {
		stub.Stream = known.Name // headers unseen: only a stream the envelope decides is known
	}
	for _, ev := range msg.rejects {
		stub.Recipients = append(stub.Recipients, ev.Recipient)
	}
	s.srv.cfg.Recorder.Add(stub, msg.rejects...)
	msg.rejects = nil
}

// Body implements gomilter.Milter: the end of the message, where every
// change is made.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	resp, err := s.guard("eom", func() (gomilter.Response, error) {
		msg := s.msg
		if msg == nil {
			return gomilter.RespContinue, nil
		}
		return s.endOfMessage(msg, m)
	})
	s.reset()
	return resp, err
}

// accept is the end-of-message answer. Continue, which Postfix (like
// libmilter) takes as accept at end of message, rather than Accept:
// go-milter replaces the Milter value after a final response, which would
// lose the connection's facts (client address, trust) for the next message
// on the same SMTP session.
var accept gomilter.Response = gomilter.RespContinue

func (s *session) endOfMessage(msg *message, m *gomilter.Modifier) (gomilter.Response, error) {
	start := time.Now()
	defer func() { s.srv.metrics.observeEOM(time.Since(start)) }()
	queueID := m.Macros["i"]
	log := s.logger().With("queue_id", queueID)

	// 0. A message with more control headers than any sender needs is
	// refused, not stripped: each deletion is a request that costs Postfix's
	// cleanup time quadratic in their number (11,000 made it abort).
	if msg.nControl > MaxControlHeaders {
		s.srv.metrics.ControlFlood.Add(1)
		log.Info("message refused: too many control headers", "control_headers", msg.nControl, "max", MaxControlHeaders,
			"client", s.clientAddr, "trusted", msg.trusted(s))
		s.flushRejects()
		return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), fmt.Sprintf(
			"550 5.7.1 Message refused: it has %d X-Leadpush-* header fields, at most %d are accepted", msg.nControl, MaxControlHeaders)), nil
	}

	// 1. Strip every X-Leadpush-* header, of every message, highest index
	// first (ChangeHeader indexes count per name, from 1).
	for _, ln := range msg.controlList {
		c := msg.control[ln]
		for i := len(c.values); i >= 1; i-- {
			if err := m.ChangeHeader(i, c.name, ""); err != nil {
				return nil, fmt.Errorf("milter: delete %s: %w", c.name, err)
			}
		}
		s.srv.metrics.Stripped.Add(int64(len(c.values)))
	}
	if !msg.trusted(s) {
		s.srv.metrics.Untrusted.Add(1)
		return accept, nil
	}

	values := func(name string) []string {
		if c := msg.control[strings.ToLower(name)]; c != nil {
			return c.values
		}
		return nil
	}
	rec := &ledger.Message{
		ID: msg.id, QueueID: queueID, EnvelopeFrom: msg.envFrom, From: msg.from, To: msg.to, Subject: msg.subject,
		MessageID: msg.messageID, Tag: ParseTag(values(TagHeader)),
		SASLUser: msg.authUser, ClientAddr: s.clientAddr, CreatedAt: msg.start,
	}
	log = log.With("message_id", rec.ID)
	stream := s.stream(msg, ParseStream(values(StreamHeader)), rec.Tag, log)
	rec.Stream = stream.Name
	// Seed 000: a missing header means all; a stream may set another mode
	// for messages without one (an invalid value still means all).
	rec.Tracking = ParseTracking(values(TrackingHeader))
	if len(values(TrackingHeader)) == 0 {
		rec.Tracking = stream.TrackingMode()
	}
	var drop []string
	for _, r := range msg.rcpts {
		if d, ok := strings.CutPrefix(r, "\x00drop:"); ok {
			drop = append(drop, d)
			continue
		}
		// Suppressed only in some streams, and the stream known only now:
		// removed here, with a reject event that carries the whole message.
		if sp := applying(msg.scoped[r], stream.Name, stream.Broadcast()); sp != nil {
			msg.rejects = append(msg.rejects, s.rejectEvent(msg, r, sp))
			s.srv.metrics.Rejected.Add(1)
			log.Info("suppressed recipient removed at end of message", "rcpt", r, "reason", sp.Reason, "scope", scopeName(sp.Stream), "stream", stream.Name)
			drop = append(drop, r)
			continue
		}
		rec.Recipients = append(rec.Recipients, r)
	}
	rec.Headers = s.recordedHeaders(msg, ParseRecordList(values(RecordHeader)))

	// 2. Suppressed recipients removed at the end leave quietly; with none
	// left, the message is discarded (the client sees 250: it was taken,
	// and the reject events say why nobody got it).
	for _, r := range drop {
		if err := m.DeleteRecipient(r); err != nil { // go-milter adds the angle brackets
			return nil, fmt.Errorf("milter: delete recipient: %w", err)
		}
	}
	if len(drop) > 0 && len(rec.Recipients) == 0 {
		rec.Tracking = ledger.TrackNone
		s.srv.cfg.Recorder.Add(rec, msg.rejects...)
		msg.rejects = nil
		s.srv.metrics.Recorded.Add(1)
		log.Info("message discarded: every recipient is suppressed", "tag", rec.Tag, "stream", rec.Stream, "rejected", len(drop))
		return discard, nil
	}

	// 3. Tracking: body rewrite, List-Unsubscribe, VERP return path.
	if err := s.track(msg, rec, stream, m, log); err != nil {
		return nil, err
	}

	events := append([]*ledger.Event{{ID: ledger.NewID(), Type: ledger.Processed, MessageID: rec.ID,
		Time: rec.CreatedAt, Detail: ledger.Detail{Source: "milter"}}}, msg.rejects...)
	msg.rejects = nil
	s.srv.cfg.Recorder.Add(rec, events...)
	s.srv.metrics.Recorded.Add(1)
	log.Info("message recorded", "header_message_id", rec.MessageID, "tag", rec.Tag, "recipients", len(rec.Recipients), "tracking", rec.Tracking, "links_tracked", len(rec.Links), "verp", rec.ReturnPath != "", "rewrite", msg.rewrite, "stream", rec.Stream)
	return accept, nil
}

// discard is the end-of-message answer for a message with no recipient
// left. Discard is a final response, after which go-milter would replace
// the session and lose the connection's facts (trust) for the next message
// of the SMTP session: keepSession says "continue" to go-milter alone.
var discard gomilter.Response = keepSession{gomilter.RespDiscard}

type keepSession struct{ r gomilter.Response }

func (k keepSession) Response() *gomilter.Message { return k.r.Response() }
func (keepSession) Continue() bool                { return true }

// stream decides the message's stream (config.Stream's order): the
// envelope's, else the header's, else the tag's, else the default.
func (s *session) stream(msg *message, header, tag string, log *slog.Logger) *config.Stream {
	st := s.srv.streams
	if msg.pinned != nil {
		if header != "" && header != msg.pinned.Name {
			s.srv.metrics.StreamIgnored.Add(1)
			log.Info("X-Leadpush-Stream ignored: the envelope placed the message in another stream", "header", header, "stream", msg.pinned.Name)
		}
		return msg.pinned
	}
	if header != "" {
		named, ok := st.byName[header]
		switch {
		case !ok:
			s.srv.metrics.UnknownStream.Add(1)
			log.Warn("X-Leadpush-Stream names no configured stream: default stream used", "header", header, "stream", st.def.Name)
			return st.def
		case named.SplitRecipients:
			s.srv.metrics.StreamIgnored.Add(1)
			log.Info("X-Leadpush-Stream ignored: a stream that splits recipients is chosen by the envelope only", "header", header)
		default:
			return named
		}
	}
	if t := st.byTag(tag); t != nil {
		return t
	}
	return st.def
}

// recordedHeaders picks the custom headers to record: those matching
// record_headers, and those X-Leadpush-Record names. Values are kept as
// sent, only unfolded.
func (s *session) recordedHeaders(msg *message, named []string) []ledger.Header {
	var out []ledger.Header
	for _, h := range msg.candidates {
		ok := s.srv.headers.Match(h.Name)
		for _, n := range named {
			if strings.EqualFold(n, h.Name) {
				ok = true
			}
		}
		if ok && len(out) < maxRecorded {
			v := strings.TrimLeft(unfold.Replace(h.Value), " \t")
			if len(v) > maxHeaderValueLen {
				v = v[:maxHeaderValueLen]
			}
			out = append(out, ledger.Header{Name: h.Name, Value: strings.ToValidUTF8(v, "\uFFFD")})
		}
	}
	return out
}

// track applies the tracking mode. A body the rewriter cannot handle goes
// through unchanged, with a log line and a counter; headers are added only
// when their values can be minted.
func (s *session) track(msg *message, rec *ledger.Message, stream *config.Stream, m *gomilter.Modifier, log *slog.Logger) error {
	cfg := &s.srv.cfg
	if cfg.Keyring == nil {
		msg.rewrite = "no tracking keys"
		return nil
	}
	rcpt := ""
	if len(rec.Recipients) == 1 {
		rcpt = ledger.NormalizeAddress(rec.Recipients[0])
	}
	// List-Unsubscribe (RFC 2369) with the mailto "unsub" keyword of seed
	// 002 and the RFC 8058 one-click URL, unless the sender set its own.
	if !msg.hasListUnsub && cfg.BaseURL != "" && stream.AddsListUnsubscribe() {
		var parts []string
		if cfg.BounceDomain != "" {
			if tok, err := cfg.Keyring.SignAddress(token.UnsubMail, rec.ID); err == nil {
				parts = append(parts, "<mailto:unsub+"+tok+"@"+cfg.BounceDomain+"?subject=unsub>")
			}
		}
		if tok, err := cfg.Keyring.Sign(token.Claims{Kind: token.Unsubscribe, MessageID: rec.ID, Recipient: rcpt}); err == nil {
			parts = append(parts, "<"+cfg.BaseURL+"/u/"+tok+">")
		}
		if len(parts) > 0 {
			if err := m.AddHeader("List-Unsubscribe", strings.Join(parts, ",\r\n ")); err != nil {
				return fmt.Errorf("milter: add header: %w", err)
			}
			if !msg.hasListUnsubPost {
				if err := m.AddHeader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"); err != nil {
					return fmt.Errorf("milter: add header: %w", err)
				}
			}
		}
	}
	// VERP: bounces come back to bounce+TOKEN@ and name the message.
	if cfg.BounceDomain != "" && msg.envFrom != "" {
		if tok, err := cfg.Keyring.SignAddress(token.Return, rec.ID); err == nil {
			rec.ReturnPath = cfg.BouncePrefix + "+" + tok + "@" + cfg.BounceDomain
			if err := m.ChangeFrom("<" + rec.ReturnPath + ">"); err != nil {
				return fmt.Errorf("milter: change from: %w", err)
			}
		}
	}
	if rec.Tracking == ledger.TrackNone || !s.srv.rewrites() || msg.body == nil {
		msg.rewrite = "not tracked"
		return nil
	}
	if msg.body.Overflow() {
		s.srv.metrics.TooLarge.Add(1)
		log.Info("body over max_track_size: passed untracked", "size", msg.body.Size())
		msg.rewrite = "over max_track_size"
		return nil
	}
	if msg.dkimSigned && cfg.SkipDKIMSigned {
		s.srv.metrics.Skipped.Add(1)
		log.Info("message already DKIM-signed: body left alone")
		msg.rewrite = "DKIM-signed, left alone"
		return nil
	}
	in, err := msg.body.Reader()
	if err != nil {
		msg.rewrite = "body unreadable"
		return nil
	}
	opt := rewrite.Options{
		Opens:     rec.Tracking.Opens(),
		Clicks:    rec.Tracking.Clicks(),
		TextLinks: cfg.TextLinks,
		IsTracked: func(u string) bool { return strings.HasPrefix(u, cfg.BaseURL+"/") },
		ClickURL: func(u string) string {
			tok, err := cfg.Keyring.Sign(token.Claims{Kind: token.Click, MessageID: rec.ID, Recipient: rcpt, URL: u})
			if err != nil {
				return u
			}
			return cfg.BaseURL + "/c/" + tok
		},
		MaxPartSize: cfg.MaxTrackSize,
	}
	if opt.Opens {
		tok, err := cfg.Keyring.Sign(token.Claims{Kind: token.Open, MessageID: rec.ID, Recipient: rcpt})
		if err != nil {
			opt.Opens = false
		}
		opt.PixelURL = cfg.BaseURL + "/o/" + tok + ".gif"
	}
	// The process-wide memory budget: wait for this rewrite's share.
	cost := rewriteCost(msg.body.Size())
	held, ok := s.srv.budget.tryAcquire(cost)
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.BudgetWait)
		held, ok = s.srv.budget.acquire(ctx, cost)
		cancel()
	}
	if !ok {
		s.srv.metrics.BudgetWaits.Add(1)
		log.Warn("memory budget busy: body passed untracked", "size", msg.body.Size(), "waited", cfg.BudgetWait)
		msg.rewrite = "memory budget busy"
		return nil
	}
	defer s.srv.budget.release(held)
	out := newSpool(cfg.TempDir, cfg.BodyMemory, 4*cfg.MaxTrackSize, s.srv.bodyMem)
	if msg.body.InMemory() {
		out.grow(int(msg.body.Size()) + 4<<10) // links grow by their tokens
	}
	defer out.Close()
	res, err := rewrite.Body(out, in, rewrite.Top{ContentType: msg.contentType, ContentTransferEncoding: msg.cte}, opt)
	if err != nil || out.Overflow() {
		s.srv.metrics.RewriteErrors.Add(1)
		log.Warn("rewriter could not handle the body: passed unchanged", "err", err)
		msg.rewrite = "rewrite error"
		return nil
	}
	if res.Skipped != "" {
		s.srv.metrics.Skipped.Add(1)
		log.Info("body left alone", "reason", res.Skipped)
	}
	if !res.Changed {
		rec.Links = res.Links
		msg.rewrite = "nothing to rewrite"
		if res.Skipped != "" {
			msg.rewrite = "left alone: " + res.Skipped
		}
		return nil
	}
	// What Postfix will hold: the header, what the milter adds to it, and
	// the new body; envelope, added headers and record framing within the
	// margin.
	if size := withMargin(msg.headerBytes + out.Size()); size > cfg.MaxMessageSize {
		s.srv.metrics.TooBigRewrite.Add(1)
		log.Info("rewritten message would pass max_message_size: body passed untracked",
			"size", msg.headerBytes+msg.body.Size(), "rewritten_size", size, "max_message_size", cfg.MaxMessageSize)
		msg.rewrite = "would pass max_message_size"
		return nil
	}
	rec.Links = res.Links
	if res.SetContentTransferEncoding != "" {
		if err := setHeader(m, "Content-Transfer-Encoding", msg.cte != "", res.SetContentTransferEncoding); err != nil {
			return err
		}
	}
	if err := replaceBody(m, out); err != nil {
		return err
	}
	s.srv.metrics.Rewritten.Add(1)
	msg.rewrite = "rewritten"
	return nil
}

// rewriteCost is the memory a rewrite of a body of size bytes may hold at
// its peak: the leaf read in (grown by doubling), its decoded and rewritten
// copies and the encoded result.
func rewriteCost(size int64) int64 { return 5*size + 64<<10 }

// withMargin is the size of a message held against max_message_size:
// Postfix's limit is on its queue file, where each line is a record whose
// framing may take one byte more than the CRLF it replaces once the line
// reaches 128 bytes (hence 1/128), plus the envelope, List-Unsubscribe and
// the other headers the milter adds (8 KiB).
func withMargin(size int64) int64 { return size + size/128 + 8<<10 }

func setHeader(m *gomilter.Modifier, name string, exists bool, value string) error {
	if exists {
		return m.ChangeHeader(1, name, value)
	}
	return m.AddHeader(name, value)
}

// replaceBody sends the body in packets of at most MaxBodyChunk bytes:
// go-milter sends one packet per call, and readers (its own among them)
// refuse packets over 1 MiB. A chunk never ends between CR and LF, because
// go-milter turns CRLF into LF per call.
func replaceBody(m *gomilter.Modifier, body *spool) error {
	if body.InMemory() {
		for b := body.buf.Bytes(); len(b) > 0; {
			n := min(len(b), gomilter.MaxBodyChunk)
			if n < len(b) && b[n-1] == '\r' {
				n--
			}
			if err := m.ReplaceBody(b[:n]); err != nil { // copied: go-milter converts line ends into a new slice
				return fmt.Errorf("milter: replace body: %w", err)
			}
			b = b[n:]
		}
		return nil
	}
	r, err := body.Reader()
	if err != nil {
		return err
	}
	buf := make([]byte, gomilter.MaxBodyChunk)
	carry := 0
	for {
		n, err := io.ReadFull(r, buf[carry:])
		n += carry
		if n == 0 {
			break
		}
		send := n
		carry = 0
		if err == nil && buf[n-1] == '\r' {
			send--
			carry = 1
		}
		if e := m.ReplaceBody(buf[:send]); e != nil {
			return fmt.Errorf("milter: replace body: %w", e)
		}
		if carry == 1 {
			buf[0] = '\r'
		}
		if err != nil {
			break
		}
	}
	return nil
}
