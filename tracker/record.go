package tracker

import (
	"context"
	"errors"
	"hash/maphash"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// hit is one answered request waiting to be recorded. It holds the raw
// request facts only: everything costly happens in Run.
type hit struct {
	claims   token.Claims
	tok      string // the verified token, for the HEAD-then-GET rule
	head     bool   // a HEAD: remembered, never recorded
	oneClick bool   // RFC 8058 POST
	// confirmTo is an address typed on the page of a message with several
	// recipients: a confirmation link goes to it if it is one of them.
	confirmTo string
	confirmed bool // an unsubscribe through a confirmation link
	at        time.Time
	remote    string   // http.Request.RemoteAddr
	xff       []string // X-Forwarded-For values, only read when the peer is trusted
	ua        string
	live      *Live // the settings the hit was answered with
}

func kindEvent(k token.Kind) ledger.EventType {
	switch k {
	case token.Open:
		return ledger.Open
	case token.Click:
		return ledger.Click
	case token.Unsubscribe:
		return ledger.Unsubscribe
	}
	return "unknown"
}

// Bounds of each recording goroutine's memory.
const (
	msgCacheSize  = 10000 // messages remembered per goroutine (times two generations)
	headCacheSize = 10000 // HEADs remembered per goroutine (times two generations)
	uaCacheSize   = 2000  // user agents remembered per goroutine (times two generations)
	maxCachedUA   = 512   // longer user agents are analysed every time
	lookupTimeout = 2 * time.Second
)

// Run records the queued hits until ctx ends, then records what is still
// queued and returns. Call it once, and cancel ctx only after the HTTP
// server has stopped: hits queued after Run returns are not recorded.
func (s *Server) Run(ctx context.Context) {
	if !s.running.CompareAndSwap(false, true) {
		s.log.Error("tracker: Run called twice; the second call does nothing")
		return
	}
	var wg sync.WaitGroup
	for _, ch := range s.shards {
		wg.Go(func() { newWorker(s).loop(ctx, ch) })
	}
	wg.Wait()
}

// worker is one recording goroutine. Hits of one message always reach the
// same worker, so its caches need no locks and see the hits in order.
type worker struct {
	s     *Server
	msgs  genMap[*msgInfo]
	heads genMap[time.Time]
	uas   genMap[*uaInfo]
	seed  maphash.Seed
	// confirms: when a confirmation link last went to a recipient of a
	// message, so a page reloaded in a loop does not flood a mailbox
	confirms genMap[time.Time]
}

// noUA is the uaInfo of a request without a user agent; never modified.
var noUA uaInfo

// uaInfo is what a worker learnt of a user agent string: a few browsers
// and mail clients make most hits, so each is parsed and classified once.
type uaInfo struct {
	family, major string
	scanner       bool // isScannerUA
	office        bool // a Microsoft Office link check, for clicks
}

// msgInfo is what a worker knows of a message.
type msgInfo struct {
	known   bool // found through Options.Messages
	retry   bool // the lookup failed for another reason than not found
	created time.Time
	opened  bool // an open is recorded (in the store or by this process)
	// noOpens: the message is known and its tracking mode does not track
	// opens (clicks, none), so a click is only a click (seed 002: opens
	// occur only when open tracking is enabled).
	noOpens bool
}

func newWorker(s *Server) *worker {
	return &worker{s: s, msgs: newGenMap[*msgInfo](msgCacheSize), heads: newGenMap[time.Time](headCacheSize),
		uas: newGenMap[*uaInfo](uaCacheSize), seed: maphash.MakeSeed(), confirms: newGenMap[time.Time](headCacheSize)}
}

// maxHitBatch bounds the events a worker hands the Recorder in one Add:
// one queue operation for the hits that arrived together, not one per hit.
const maxHitBatch = 256

func (wk *worker) loop(ctx context.Context, ch chan *hit) {
	var events []*ledger.Event
	for {
		select {
		case h := <-ch:
			events, _ = wk.drain(ch, wk.handle(h, events[:0]), maxHitBatch-1)
			wk.record(events)
		case <-ctx.Done():
			// flush what is queued, a batch at a time; bounded by the
			// queue's capacity, as handlers may still be adding
			for left := cap(ch); left > 0; {
				var taken int
				events, taken = wk.drain(ch, events[:0], min(left, maxHitBatch))
				wk.record(events)
				if taken == 0 {
					break
				}
				left -= taken
			}
			return
		}
	}
}

// drain handles up to max more hits already queued in ch, without
// waiting, while the events stay under maxHitBatch; it returns the events
// and how many hits it took.
func (wk *worker) drain(ch chan *hit, events []*ledger.Event, max int) ([]*ledger.Event, int) {
	for taken := 0; taken < max; taken++ {
		if len(events) >= maxHitBatch {
			return events, taken
		}
		select {
		case h := <-ch:
			events = wk.handle(h, events)
		default:
			return events, taken
		}
	}
	return events, max
}

// record hands events to the Recorder and counts them.
func (wk *worker) record(events []*ledger.Event) {
	if len(events) == 0 {
		return
	}
	wk.s.rec.Add(nil, slices.Clone(events)...)
	for _, e := range events {
		wk.s.m.event(e.Type, e.Detail.Machine)
	}
}

// handle analyses a hit and appends the events it makes to events.
func (wk *worker) handle(h *hit, events []*ledger.Event) []*ledger.Event {
	s := wk.s
	start := time.Now()
	ip := clientIP(h.live.TrustedProxies, h.remote, h.xff)
	if h.head {
		if ip.IsValid() && s.headWin > 0 {
			wk.heads.put(wk.headKey(h.tok, ip), h.at)
		}
		return events
	}
	d := ledger.Detail{Source: "tracker", UserAgent: h.ua}
	if ip.IsValid() {
		if h.live.AnonymizeIP {
			d.IP = anonymize(ip).String()
		} else {
			d.IP = ip.String()
		}
	}
	ua := wk.userAgent(h.ua)
	d.UAFamily, d.UAMajor = ua.family, ua.major
	c := h.claims
	switch c.Kind {
	case token.Open, token.Click:
		info := wk.message(c.MessageID)
		d.MachineReason = wk.machine(h, ip, info, ua)
		d.Machine = d.MachineReason != ""
		if c.Kind == token.Click && !info.opened && !info.noOpens {
			// text mails can only be seen opened by their clicks
			events = append(events, &ledger.Event{ID: ledger.NewID(), Type: ledger.Open, MessageID: c.MessageID,
				Recipient: c.Recipient, Time: h.at, Detail: d})
		}
		info.opened = true
		if c.Kind == token.Click {
			d.URL = c.URL
		}
		events = append(events, &ledger.Event{ID: ledger.NewID(), Type: kindEvent(c.Kind), MessageID: c.MessageID,
			Recipient: c.Recipient, Time: h.at, Detail: d})
	case token.Unsubscribe:
		if h.confirmTo != "" {
			wk.sendConfirmation(h)
			return events
		}
		rcpt := c.Recipient
		d.Reason = "page"
		if h.oneClick {
			d.Reason = "one-click"
		}
		if h.confirmed {
			d.Reason = "confirmed"
		}
		if rcpt == "" {
			// never queued (the handler refuses tokens without a recipient)
			return events
		}
		events = append(events, &ledger.Event{ID: ledger.NewID(), Type: ledger.Unsubscribe, MessageID: c.MessageID,
			Recipient: rcpt, Time: h.at, Detail: d,
			DedupKey: "tracker-unsubscribe:" + c.MessageID + ":" + ledger.NormalizeAddress(rcpt)})
	default:
		return events
	}
	s.m.record.Observe(time.Since(start).Seconds())
	return events
}

// message returns what is known of a message, asking Options.Messages the
// first time (and again after a failed lookup).
func (wk *worker) message(id string) *msgInfo {
	info, ok := wk.msgs.get(id)
	if ok && !info.retry {
		return info
	}
	if !ok {
		info = &msgInfo{}
		wk.msgs.put(id, info)
	}
	if wk.s.msgs == nil {
		return info
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	m, err := wk.s.msgs.Message(ctx, id)
	switch {
	case err == nil && m != nil:
		info.known, info.retry = true, false
		info.created = m.CreatedAt
		info.opened = info.opened || m.Opens > 0
		// a message recorded before modes were stored has none: all
		info.noOpens = m.Tracking != "" && !m.Tracking.Opens()
	case errors.Is(err, ledger.ErrNotFound):
		info.retry = false
	default:
		info.retry = true
		wk.s.lookupFailed(id, err)
	}
	return info
}

// confirmEvery is the least time between two confirmation links to one
// recipient of one message.
const confirmEvery = 10 * time.Minute

// sendConfirmation sends a confirmation link to the address typed, when it
// is a recipient of the message; the mail goes out from a goroutine of its
// own (at most 4 at once), so recording never waits for the MTA.
func (wk *worker) sendConfirmation(h *hit) {
	s, c := wk.s, h.claims
	rcpt := wk.recipient(c.MessageID, h.confirmTo)
	if rcpt == "" {
		s.log.Info("tracker: unsubscribe confirmation not sent: the address is not a recipient of the message", "message_id", c.MessageID)
		s.m.confirm("not_recipient")
		return
	}
	key := c.MessageID + ":" + ledger.NormalizeAddress(rcpt)
	if last, ok := wk.confirms.get(key); ok && h.at.Sub(last) < confirmEvery {
		s.m.confirm("too_soon")
		return
	}
	tok, err := h.live.Keyring.Sign(token.ConfirmClaims(c.MessageID, rcpt, h.at.Add(s.confirmTTL)))
	if err != nil {
		s.log.Error("tracker: confirmation token", "message_id", c.MessageID, "err", err)
		return
	}
	select {
	case s.confirmSem <- struct{}{}:
	default:
		s.log.Warn("tracker: unsubscribe confirmation not sent: too many being sent", "message_id", c.MessageID)
		s.m.confirm("busy")
		return
	}
	wk.confirms.put(key, h.at)
	link := s.baseURL + "/u/" + tok
	go func() {
		defer func() { <-s.confirmSem }()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.confirm.SendConfirmation(ctx, rcpt, link); err != nil {
			s.log.Warn("tracker: unsubscribe confirmation not sent", "message_id", c.MessageID, "err", err)
			s.m.confirm("failed")
			return
		}
		s.m.confirm("sent")
	}()
}

// recipient returns the envelope recipient of the message that email
// names, or "" when it names none or the message cannot be looked up.
func (wk *worker) recipient(id, email string) string {
	if wk.s.msgs == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	m, err := wk.s.msgs.Message(ctx, id)
	if err != nil || m == nil {
		if !errors.Is(err, ledger.ErrNotFound) {
			wk.s.lookupFailed(id, err)
		}
		return ""
	}
	want := ledger.NormalizeAddress(email)
	for _, r := range m.Recipients {
		if ledger.NormalizeAddress(r) == want {
			return r
		}
	}
	return ""
}

// lookupFailed logs a failed message lookup, at most once a second.
func (s *Server) lookupFailed(id string, err error) {
	now := time.Now().Unix()
	if last := s.lastLookup.Load(); last != now && s.lastLookup.CompareAndSwap(last, now) {
		s.log.Warn("tracker: message lookup failed", "message_id", id, "err", err)
	}
}

// appleNet is Apple's own network (AS714), where Mail Privacy Protection
// fetches images from.
var appleNet = netip.MustParsePrefix("17.0.0.0/8")

// scannerSubstrings, scannerWords and scannerPrefixes are the user agents of
// mail security gateways, headless browsers, bots and HTTP libraries,
// lower case. They were one case-insensitive regexp, whose backtracking
// took half of the tracker's CPU under load; scannerUARegexp in the tests
// is that regexp, and FuzzScannerUA keeps the two in step.
var (
	scannerSubstrings = []string{"mimecast", "proofpoint", "barracuda", "safelinks", "safe links", "forcepoint",
		"ironport", "sophos", "trendmicro", "trend micro", "headless", "phantomjs", "python-requests",
		"python-urllib", "go-http-client", "okhttp", "libwww-perl", "httpclient"}
	// a word that ends the word it is in: "Googlebot/2.1", "AhrefsBot;", "preview)"
	scannerWords    = []string{"bot", "crawler", "spider", "preview", "scanner"}
	scannerPrefixes = []string{"curl/", "wget/", "java/"}
)

// isScannerUA reports whether a user agent names an automated client.
func isScannerUA(ua string) bool {
	lower := strings.ToLower(ua)
	for _, p := range scannerPrefixes {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	for _, sub := range scannerSubstrings {
		if strings.Contains(lower, sub) {
			return true
		}
	}
	for _, w := range scannerWords {
		for i := 0; ; {
			j := strings.Index(lower[i:], w)
			if j < 0 {
				break
			}
			end := i + j + len(w)
			if end == len(lower) || !isWordByte(lower[end]) {
				return true
			}
			i += j + 1
		}
	}
	return false
}

// isWordByte is regexp's \b notion of a word character (ASCII).
func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// userAgent parses and classifies a user agent, once per string while it
// stays in the worker's cache.
func (wk *worker) userAgent(raw string) *uaInfo {
	if raw == "" {
		return &noUA
	}
	if info, ok := wk.uas.get(raw); ok {
		return info
	}
	t := time.Now()
	ua := wk.s.parser.ParseUserAgent(raw)
	wk.s.m.uaParse.Observe(time.Since(t).Seconds())
	trimmed := strings.TrimSpace(raw)
	info := &uaInfo{family: ua.Family, major: ua.Major, scanner: isScannerUA(trimmed),
		office: containsFold(trimmed, "ms-office") || containsFold(trimmed, "microsoft office")}
	if len(raw) <= maxCachedUA {
		wk.uas.put(raw, info)
	}
	return info
}

// machine returns why a hit looks automated, or "". The package doc lists
// the rules; keep both in step.
func (wk *worker) machine(h *hit, ip netip.Addr, info *msgInfo, uai *uaInfo) string {
	ua := strings.TrimSpace(h.ua)
	open := h.claims.Kind == token.Open
	switch {
	case open && (ua == "Mozilla/5.0" || (ip.IsValid() && appleNet.Contains(ip))):
		return "apple mail privacy protection"
	case strings.Contains(ua, "GoogleImageProxy"):
		return "gmail image proxy"
	case strings.Contains(ua, "YahooMailProxy"):
		return "yahoo mail proxy"
	case uai.scanner || (!open && ua == "Mozilla/5.0"):
		return "security scanner"
	case ua == "":
		return "empty user agent"
	case !open && uai.office:
		return "microsoft office link check"
	}
	if wk.s.headWin > 0 && ip.IsValid() && wk.heads.len() > 0 {
		if t, ok := wk.heads.get(wk.headKey(h.tok, ip)); ok {
			if d := h.at.Sub(t); d >= 0 && d < wk.s.headWin {
				return "head before get"
			}
		}
	}
	if wk.s.soon > 0 && info.known && h.at.Sub(info.created) < wk.s.soon {
		return "too soon after sending"
	}
	return ""
}

// headKey names a token and a client: a hash, as tokens reach 12 KiB.
func (wk *worker) headKey(tok string, ip netip.Addr) string {
	b, _ := ip.MarshalBinary()
	return strconv.FormatUint(maphash.String(wk.seed, tok), 36) + string(b)
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), sub)
}

// clientIP is the peer, or, behind trusted proxies, the rightmost
// X-Forwarded-For address that is not a trusted proxy. The zero Addr means
// unknown.
func clientIP(trusted []netip.Prefix, remote string, xff []string) netip.Addr {
	peer := parseAddr(remote)
	if !peer.IsValid() || !isTrusted(trusted, peer) {
		return peer
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var part string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				v, part = v[:j], v[j+1:]
			} else {
				v, part = "", v
			}
			a := parseAddr(strings.TrimSpace(part))
			if !a.IsValid() {
				// garbage from the client side: trust no further
				return client
			}
			client = a
			if !isTrusted(trusted, a) {
				return a
			}
		}
	}
	return client
}

func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

func isTrusted(trusted []netip.Prefix, a netip.Addr) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// anonymize zeroes the last octet of an IPv4 address and the last 80 bits
// of an IPv6 address.
func anonymize(a netip.Addr) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[3] = 0
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	clear(b[6:])
	return netip.AddrFrom16(b)
}

// genMap is a bounded map: when the current generation is full it becomes
// the old one and the older is dropped. Entries read from the old
// generation move to the current one, so it works as a cheap LRU.
type genMap[V any] struct {
	cur, old map[string]V
	max      int
}

func newGenMap[V any](max int) genMap[V] {
	return genMap[V]{cur: map[string]V{}, old: map[string]V{}, max: max}
}

// len is the number of entries in both generations.
func (g *genMap[V]) len() int { return len(g.cur) + len(g.old) }

func (g *genMap[V]) get(k string) (V, bool) {
	if v, ok := g.cur[k]; ok {
		return v, true
	}
	if v, ok := g.old[k]; ok {
		delete(g.old, k)
		g.put(k, v)
		return v, true
	}
	var zero V
	return zero, false
}

func (g *genMap[V]) put(k string, v V) {
	if _, ok := g.cur[k]; !ok && len(g.cur) >= g.max {
		g.old, g.cur = g.cur, make(map[string]V, g.max)
	}
	g.cur[k] = v
}
