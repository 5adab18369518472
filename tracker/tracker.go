// Package tracker is the recipients' side of Leadpush tracking: the HTTP
// handlers leadpushd serves for the URLs the milter writes into messages.
//
// # Endpoints
//
//   - GET /o/TOKEN[.anything]: the 43-byte transparent GIF; records an open.
//   - GET /c/TOKEN: 302 to the URL signed in the token (http and https
//     only); records a click. The first click of a message that has no
//     open yet also records an open (text mails can only be seen opened by
//     their clicks).
//   - GET /u/TOKEN: a page asking to confirm the unsubscribe. It changes
//     nothing: mail scanners and link previews follow GET links.
//   - POST /u/TOKEN: unsubscribes and shows a confirmation page. A body of
//     List-Unsubscribe=One-Click (RFC 8058 section 3.2) gets 200 and a tiny
//     text body, never a redirect.
//   - HEAD on any of them answers like GET and records nothing (the
//     recording goroutine only remembers it for the "head before get" rule).
//
// Those are all the public listener (Handler) serves: everything else is
// 404. The operators' listener (AdminHandler, leadpushd's admin.listen,
// loopback by default) serves GET /healthz, "ok" and the queue depth as
// JSON, and GET /metrics, the Prometheus exposition of Options.Registry:
// neither is published through the tracking domain.
//
// A token that fails verification (malformed, wrong kind, unknown key,
// forged) gets 404 with a fixed body; nothing of the request is reflected
// and nothing is recorded. Paths are never cleaned or redirected, so
// "/o/../x" is just a bad token.
//
// # Tokens without a recipient
//
// The milter leaves the recipient out of tokens of messages with several
// recipients. The unsubscribe page then asks for the address, and the
// unsubscribe is recorded only when that address is one of the message's
// envelope recipients (checked through Options.Messages; without Messages
// nothing is recorded). The confirmation page reads the same either way, so
// it does not tell a stranger who received the message. A one-click POST
// with such a token carries no address and records nothing (logged).
//
// # Recording
//
// A hit answers after token verification alone: it goes into a bounded
// queue and [Server.Run] does the rest (client IP, user agent parsing with
// uap-go, machine flags, the first-click open, Messages lookups) and hands
// the events to Options.Recorder. Hits of one message always go to the same
// recording goroutine, in order. When the queue is full the hit is counted
// (leadpush_tracker_dropped_hits_total) and logged at most once a second;
// the pixel and the redirect are still served. An unsubscribe that cannot
// be queued answers 503 so the recipient can retry.
//
// The client IP is the peer address, or, when the peer is in
// Options.TrustedProxies, the rightmost X-Forwarded-For address that is not
// itself a trusted proxy. With AnonymizeIP the last octet of an IPv4 address
// and the last 80 bits of an IPv6 address are zeroed.
//
// # Machine hits
//
// Hits that were probably not made by a person are recorded with
// Detail.Machine set and the first matching rule in Detail.MachineReason:
//
//   - "apple mail privacy protection": an open whose user agent is exactly
//     "Mozilla/5.0" (Apple's prefetch proxy sends no version), or an open
//     from Apple's own network 17.0.0.0/8, from which Mail Privacy
//     Protection fetches. (iCloud Private Relay egress ranges are not used:
//     they carry real people too.)
//   - "gmail image proxy": user agent contains "GoogleImageProxy". Gmail
//     fetches when the mail is displayed, so these are usually real opens,
//     but the IP and user agent are Google's.
//   - "yahoo mail proxy": user agent contains "YahooMailProxy".
//   - "security scanner": user agent names a mail security gateway
//     (Mimecast, Proofpoint, Barracuda, SafeLinks, Forcepoint, IronPort,
//     Sophos, Trend Micro), a headless browser, or contains bot, crawler,
//     spider, preview, scanner as a word, or is a plain HTTP library
//     (curl, Wget, python-requests, Go-http-client, okhttp, Java); also a
//     click whose user agent is exactly "Mozilla/5.0".
//   - "empty user agent".
//   - "microsoft office link check": a click whose user agent contains
//     "ms-office" or "Microsoft Office" (Office checks links before opening
//     them in the browser; the person's click arrives from the browser).
//     Opens with those user agents are Outlook for Windows displaying the
//     message and are not flagged.
//   - "head before get": a GET of the same token from the same IP within
//     Options.HeadWindow (default 5 s) after a HEAD; link scanners probe
//     with HEAD, browsers do not.
//   - "too soon after sending": the hit came within Options.SoonAfterSend
//     (default 5 s) of the message's CreatedAt (needs Options.Messages).
//
// Unsubscribes are never flagged: a GET never unsubscribes and scanners do
// not POST.
package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/linkurl"
	"github.com/leadpush/leadpush/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ua-parser/uap-go/uaparser"
)

// Recorder takes the events of hits; *ledger.Writer is one. Add must not
// block.
type Recorder interface {
	Add(msg *ledger.Message, events ...*ledger.Event)
}

// MessageSource looks messages up; ledger.Store is one. It returns an error
// wrapping ledger.ErrNotFound for an unknown id.
type MessageSource interface {
	Message(ctx context.Context, id string) (*ledger.Message, error)
}

// Options configure a Server.
type Options struct {
	// Keyring verifies tokens. Required.
	Keyring *token.Keyring
	// Recorder receives the events. Required.
	Recorder Recorder
	// Messages, when set, gives the message's creation time (the "too soon"
	// rule), its open count (the first-click open) and its recipients
	// (unsubscribes with recipient-less tokens). Nil: the first-click open
	// relies on the opens seen by this process alone, the "too soon" rule
	// is off and recipient-less unsubscribes are not recorded.
	Messages MessageSource
	// TrustedProxies are the peers whose X-Forwarded-For is honoured.
	// Nil: none, the peer address is the client.
	TrustedProxies []netip.Prefix
	// AnonymizeIP zeroes the last octet (IPv4) or last 80 bits (IPv6) of
	// recorded client addresses.
	AnonymizeIP bool
	// Logger; nil discards.
	Logger *slog.Logger
	// Registry receives the metrics and is what /metrics serves. Nil: a
	// private registry.
	Registry *prometheus.Registry
	// QueueSize is how many hits may wait for recording; default 100000.
	QueueSize int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// SoonAfterSend flags hits this soon after the message was created;
	// default 5 s, negative disables.
	SoonAfterSend time.Duration
	// HeadWindow flags a GET this soon after a HEAD of the same token from
	// the same IP; default 5 s, negative disables.
	HeadWindow time.Duration
	// Confirm, when set (with Messages and BaseURL), lets the unsubscribe
	// page of a message with several recipients ask for the address and
	// send a signed link, valid for ConfirmTTL, to it when it is one of
	// the message's recipients; the link's page unsubscribes that address.
	// Nil: that page refuses (nobody can be told apart).
	Confirm Confirmer
	// BaseURL is the tracker's public URL (tracking.base_url), for the
	// links Confirm sends.
	BaseURL string
	// ConfirmTTL is how long a confirmation link works; default 24h.
	ConfirmTTL time.Duration
}

// Confirmer sends the confirmation link of an unsubscribe to the address
// it is for.
type Confirmer interface {
	SendConfirmation(ctx context.Context, to, link string) error
}

// Server serves the tracking endpoints and records their hits. Create it
// with New; it is safe for concurrent use.
type Server struct {
	live     atomic.Pointer[Live] // what Reconfigure changes
	rec      Recorder
	msgs     MessageSource
	log      *slog.Logger
	now      func() time.Time
	soon     time.Duration
	headWin  time.Duration
	shards   []chan *hit
	parser   *uaparser.Parser
	m        *metrics
	metricsH http.Handler
	running  atomic.Bool
	lastDrop atomic.Int64 // unix second of the last "queue full" log line

	lastLookup atomic.Int64 // unix second of the last "lookup failed" log line

	confirm    Confirmer
	baseURL    string
	confirmTTL time.Duration
	confirmSem chan struct{} // confirmations being sent
}

// New checks opt and builds a Server. It starts nothing: call Run.
func New(opt Options) (*Server, error) {
	if opt.Keyring == nil {
		return nil, errors.New("tracker: no keyring")
	}
	if opt.Recorder == nil {
		return nil, errors.New("tracker: no recorder")
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = 100000
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Registry == nil {
		opt.Registry = prometheus.NewRegistry()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.SoonAfterSend == 0 {
		opt.SoonAfterSend = 5 * time.Second
	}
	if opt.HeadWindow == 0 {
		opt.HeadWindow = 5 * time.Second
	}
	if opt.ConfirmTTL <= 0 {
		opt.ConfirmTTL = 24 * time.Hour
	}
	if opt.Confirm != nil && (opt.Messages == nil || opt.BaseURL == "") {
		return nil, errors.New("tracker: Confirm needs Messages and BaseURL")
	}
	s := &Server{
		rec: opt.Recorder, msgs: opt.Messages,
		log: opt.Logger, now: opt.Now, soon: opt.SoonAfterSend, headWin: opt.HeadWindow,
		parser:  sharedParser(),
		confirm: opt.Confirm, baseURL: strings.TrimRight(opt.BaseURL, "/"), confirmTTL: opt.ConfirmTTL,
		confirmSem: make(chan struct{}, 4),
	}
	s.Reconfigure(Live{Keyring: opt.Keyring, TrustedProxies: opt.TrustedProxies, AnonymizeIP: opt.AnonymizeIP})
	n := min(max(runtime.GOMAXPROCS(0), 1), 8)
	n = min(n, opt.QueueSize)
	s.shards = make([]chan *hit, n)
	for i := range s.shards {
		s.shards[i] = make(chan *hit, (opt.QueueSize+n-1)/n)
	}
	m, err := newMetrics(opt.Registry, s.queueDepth)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.metricsH = promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{})
	return s, nil
}

// Live are the settings a running Server can change (on leadpushd's
// SIGHUP), as in Options.
type Live struct {
	Keyring        *token.Keyring
	TrustedProxies []netip.Prefix
	AnonymizeIP    bool
}

// Reconfigure changes the live settings; hits already answered keep the
// ones they were answered with. A nil Keyring keeps the current one.
func (s *Server) Reconfigure(l Live) {
	if l.Keyring == nil {
		if cur := s.live.Load(); cur != nil {
			l.Keyring = cur.Keyring
		}
	}
	var masked []netip.Prefix
	for _, p := range l.TrustedProxies {
		masked = append(masked, p.Masked())
	}
	l.TrustedProxies = masked
	s.live.Store(&l)
}

// sharedParser compiles uap-go's regexes once per process (it takes a
// while); the parser and its cache are safe for concurrent use.
var sharedParser = sync.OnceValue(uaparser.NewFromSaved)

// LedgerWriterOptions are the ledger.Writer settings for a process that
// records tracker hits (leadpushd): longer, larger transactions than the
// Writer's defaults, which suit leadpush-milter's one record a message.
// Under load a transaction's cost is mostly the pages it dirties, and the
// per-message event index dirties a page for every message hit, however
// many hits it took: 100 ms and up to 5000 events per transaction instead
// of 20 ms and 1000 cost about a sixth less CPU a hit (TestTrackerProfile
// A/B, 4 rounds: process 33-37 -> 28-35 us a hit). Hits still commit
// within a second and shutdown still flushes them; a crash (kill -9)
// loses what was not yet committed, about 100 ms of hits instead of 20.
func LedgerWriterOptions() ledger.WriterOptions {
	return ledger.WriterOptions{Linger: 100 * time.Millisecond, MaxBatch: 5000}
}

// NewHTTPServer returns an http.Server for the tracker, with timeouts and
// limits fit for many slow clients: a client gets 5 s to send its headers,
// 10 s for the whole request and 10 s to take the answer; idle keep-alive
// connections are closed after 30 s. Headers are limited to 32 KiB (a
// token is at most 12 KiB).
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
}

// Handler returns the HTTP handler of all endpoints.
// Handler serves the public tracking paths /o/, /c/ and /u/.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

// AdminHandler serves /healthz and /metrics, for the operators' listener.
func (s *Server) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			s.health(w, r)
		case "/metrics":
			if !getOrHead(w, r, epMetrics, s) {
				return
			}
			s.m.count(epMetrics, http.StatusOK)
			s.metricsH.ServeHTTP(w, r)
		default:
			s.notFound(w, epOther)
		}
	})
}

// Endpoint names, as the metrics label them.
const (
	epOpen    = "open"
	epClick   = "click"
	epUnsub   = "unsubscribe"
	epHealth  = "healthz"
	epMetrics = "metrics"
	epOther   = "other"
)

// maxPath bounds the path before any work: the longest token plus room
// for the prefix and a pixel suffix.
const maxPath = token.MaxLen + 64

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case len(p) > maxPath:
		s.notFound(w, epOther)
	case strings.HasPrefix(p, "/o/"):
		s.open(w, r, p[3:])
	case strings.HasPrefix(p, "/c/"):
		s.click(w, r, p[3:])
	case strings.HasPrefix(p, "/u/"):
		s.unsubscribe(w, r, p[3:])
	default:
		s.notFound(w, epOther)
	}
}

// getOrHead answers 405 to other methods.
func getOrHead(w http.ResponseWriter, r *http.Request, ep string, s *Server) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	s.plain(w, ep, http.StatusMethodNotAllowed, "method not allowed\n")
	return false
}

const notFoundBody = "not found\n"

func (s *Server) notFound(w http.ResponseWriter, ep string) {
	s.plain(w, ep, http.StatusNotFound, notFoundBody)
}

func (s *Server) plain(w http.ResponseWriter, ep string, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", noStore)
	w.WriteHeader(code)
	s.m.count(ep, code)
	w.Write([]byte(body))
}

const noStore = "no-store, no-cache, must-revalidate, private"

// pixel is the smallest transparent GIF: 1x1, two-colour table, one
// transparent pixel.
var pixel = []byte{
	'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, // header, screen descriptor
	0, 0, 0, 0xff, 0xff, 0xff, // colour table
	0x21, 0xf9, 4, 1, 0, 0, 0, 0, // graphic control: transparent index 0
	0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, // image descriptor
	2, 2, 0x44, 1, 0, // LZW data
	0x3b, // trailer
}

var pixelLen = strconv.Itoa(len(pixel))

var (
	hdrGIF      = []string{"image/gif"}
	hdrPixelLen = []string{pixelLen}
	hdrNoStore  = []string{noStore}

	hdrNoReferrer = []string{"no-referrer"}
)

func (s *Server) open(w http.ResponseWriter, r *http.Request, rest string) {
	if !getOrHead(w, r, epOpen, s) {
		return
	}
	// any suffix after a dot (".gif") is decoration
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		rest = rest[:i]
	}
	c, err := s.live.Load().Keyring.Verify(token.Open, rest)
	if err != nil {
		s.notFound(w, epOpen)
		return
	}
	// The pixel's header values are shared, read-only slices under
	// canonical keys: no canonicalising and no allocation per hit.
	h := w.Header()
	h["Content-Type"] = hdrGIF
	h["Content-Length"] = hdrPixelLen
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(http.StatusOK)
	s.m.count(epOpen, http.StatusOK)
	w.Write(pixel)
	s.enqueue(r, rest, c, r.Method == http.MethodHead, false)
}

func (s *Server) click(w http.ResponseWriter, r *http.Request, tok string) {
	if !getOrHead(w, r, epClick, s) {
		return
	}
	c, err := s.live.Load().Keyring.Verify(token.Click, tok)
	if err != nil || !safeTarget(c.URL) {
		s.notFound(w, epClick)
		return
	}
	h := w.Header()
	h["Location"] = []string{c.URL}
	h["Cache-Control"] = hdrNoStore
	// the token names the recipient: do not leak it to the target site
	h["Referrer-Policy"] = hdrNoReferrer
	w.WriteHeader(http.StatusFound)
	s.m.count(epClick, http.StatusFound)
	s.enqueue(r, tok, c, r.Method == http.MethodHead, false)
}

// safeTarget accepts the URLs the rewriter tracks (linkurl.Trackable):
// absolute http and https URLs without control characters or spaces, which
// could split or bend the Location header.
func safeTarget(raw string) bool { return linkurl.Trackable(raw) }

// enqueue queues a hit for Run without waiting; it reports false when the
// queue was full.
func (s *Server) enqueue(r *http.Request, tok string, c token.Claims, head bool, oneClick bool) bool {
	return s.enqueueHit(r, &hit{claims: c, tok: tok, head: head, oneClick: oneClick})
}

// enqueueHit queues h, filling in the request facts.
func (s *Server) enqueueHit(r *http.Request, h *hit) bool {
	c := h.claims
	*h = hit{
		claims: c, tok: h.tok, head: h.head, oneClick: h.oneClick, confirmTo: h.confirmTo, confirmed: h.confirmed, at: s.now(),
		remote: r.RemoteAddr, ua: r.Header.Get("User-Agent"), live: s.live.Load(),
	}
	if len(h.live.TrustedProxies) > 0 {
		h.xff = r.Header.Values("X-Forwarded-For")
	}
	ch := s.shards[shardOf(c.MessageID, len(s.shards))]
	select {
	case ch <- h:
		return true
	default:
	}
	s.m.dropped.Inc()
	now := time.Now().Unix()
	if last := s.lastDrop.Load(); last != now && s.lastDrop.CompareAndSwap(last, now) {
		s.log.Warn("tracker queue full, hit not recorded", "message_id", c.MessageID, "event", kindEvent(c.Kind))
	}
	return false
}

func shardOf(id string, n int) int {
	// FNV-1a
	var x uint32 = 2166136261
	for i := 0; i < len(id); i++ {
		x ^= uint32(id[i])
		x *= 16777619
	}
	return int(x % uint32(n))
}

func (s *Server) queueDepth() int {
	n := 0
	for _, ch := range s.shards {
		n += len(ch)
	}
	return n
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if !getOrHead(w, r, epHealth, s) {
		return
	}
	b, _ := json.Marshal(struct {
		Status     string `json:"status"`
		QueueDepth int    `json:"queue_depth"`
		QueueCap   int    `json:"queue_capacity"`
	}{"ok", s.queueDepth(), cap(s.shards[0]) * len(s.shards)})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", noStore)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	s.m.count(epHealth, http.StatusOK)
	w.Write(append(b, '\n'))
}

// Unsubscribe pages.

var pages = template.Must(template.New("confirm").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
<style>body{font:1rem/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}
button{font:inherit;padding:.5rem 1.25rem;cursor:pointer}input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}
.error{color:#a00}</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
{{- if .Done}}
<p role="status">{{.Recipient}} has been unsubscribed and will get no more of these messages.</p>
{{- else if .Expired}}
<p role="alert">This confirmation link has expired. Use the unsubscribe link of the message again.</p>
{{- else if .Sent}}
<p role="status">If {{.Email}} received this message, we have sent it a link to confirm the unsubscribe. Nothing changes until that link is followed; it works for {{.TTL}}.</p>
{{- else if and (not .Recipient) (not .CanConfirm)}}
<p role="alert">This message was sent to several people at once, so this link cannot tell which of them you are, and it unsubscribes nobody: otherwise anyone who got it could unsubscribe the others.</p>
<p>To stop these messages, use the unsubscribe link of a message sent to you alone, or ask the sender to remove your address.</p>
{{- else if not .Recipient}}
{{- if .Error}}
<p class="error" role="alert">{{.Error}}</p>
{{- end}}
<p>This message was sent to several people at once. Enter your address: if it is one of them, we send it a link that unsubscribes it.</p>
<form method="post">
<p><label for="email">Your email address</label><br>
<input id="email" name="email" type="email" autocomplete="email" required value="{{.Email}}"></p>
<p><button type="submit">Send the link</button></p>
</form>
{{- else}}
{{- if .Error}}
<p class="error" role="alert">{{.Error}}</p>
{{- end}}
<form method="post">
<p>Stop sending these messages to <strong>{{.Recipient}}</strong>?</p>
<p><button type="submit">Unsubscribe</button></p>
</form>
{{- end}}
</main>
</body>
</html>
`))

type pageData struct {
	Title      string
	Recipient  string // "": a message to several recipients
	CanConfirm bool   // such a page may send a confirmation link
	Email      string // the address typed
	TTL        string // how long a confirmation link works
	Error      string
	Done       bool
	Sent       bool // a confirmation link is being sent
	Expired    bool // an expired confirmation link
}

const maxForm = 8 << 10

// plausibleAddress is a check of an address typed on the page: one @, no
// spaces or controls, within a token's limit.
func plausibleAddress(a string) bool {
	at := strings.IndexByte(a, '@')
	return at > 0 && at < len(a)-1 && strings.Count(a, "@") == 1 && len(a) <= token.MaxRecipient &&
		!strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '<' || r == '>' })
}

func (s *Server) unsubscribe(w http.ResponseWriter, r *http.Request, tok string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, HEAD, POST")
		s.plain(w, epUnsub, http.StatusMethodNotAllowed, "method not allowed\n")
		return
	}
	kr := s.live.Load().Keyring
	c, err := kr.Verify(token.Unsubscribe, tok)
	confirmed := false
	if err != nil {
		// a confirmation link: the address typed, proven by its mailbox
		cc, cerr := kr.Verify(token.Confirm, tok)
		if cerr != nil || cc.Recipient == "" {
			s.notFound(w, epUnsub)
			return
		}
		if !s.now().Before(cc.ConfirmExpiry()) {
			s.html(w, epUnsub, http.StatusGone, pageData{Title: "Unsubscribe", Expired: true})
			return
		}
		c = token.Claims{Kind: token.Unsubscribe, MessageID: cc.MessageID, Recipient: cc.Recipient, KeyID: cc.KeyID}
		confirmed = true
	}
	d := pageData{Title: "Unsubscribe", Recipient: c.Recipient, CanConfirm: s.confirm != nil}
	if r.Method != http.MethodPost {
		// GET never unsubscribes: scanners and previews follow links.
		s.html(w, epUnsub, http.StatusOK, d)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	var perr error
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		perr = r.ParseMultipartForm(maxForm)
		if r.MultipartForm != nil {
			defer r.MultipartForm.RemoveAll()
		}
	} else {
		perr = r.ParseForm()
	}
	if perr != nil {
		s.plain(w, epUnsub, http.StatusBadRequest, "bad request\n")
		return
	}
	oneClick := r.PostForm.Get("List-Unsubscribe") == "One-Click"
	if c.Recipient == "" {
		// A token without a recipient: the message went to several people
		// and one body served them all. Nobody is unsubscribed, and the
		// answer says so: RFC 8058 clients take a non-2xx status as a
		// failed unsubscribe, rather than telling the person it worked.
		// Unsubscribing whoever is typed in would let any recipient
		// unsubscribe the others; a confirmation mail to the typed address
		// is sent only when Options.Confirm is set.
		if oneClick {
			s.plain(w, epUnsub, http.StatusBadRequest, "not unsubscribed: this message had several recipients and its link names none of them\n")
			return
		}
		if s.confirm == nil {
			s.html(w, epUnsub, http.StatusBadRequest, d)
			return
		}
		email := strings.TrimSpace(r.PostForm.Get("email"))
		if !plausibleAddress(email) {
			d.Error, d.Email = "Please enter the address that received the message.", ""
			s.html(w, epUnsub, http.StatusBadRequest, d)
			return
		}
		if !s.enqueueHit(r, &hit{claims: c, tok: tok, confirmTo: email}) {
			w.Header().Set("Retry-After", "60")
			s.plain(w, epUnsub, http.StatusServiceUnavailable, "busy, please try again in a minute\n")
			return
		}
		// the same answer whether or not the address was a recipient: the
		// page tells nobody who got the message
		d.Sent, d.Email, d.TTL = true, email, s.confirmTTL.String()
		s.html(w, epUnsub, http.StatusOK, d)
		return
	}
	if !s.enqueueHit(r, &hit{claims: c, tok: tok, oneClick: oneClick, confirmed: confirmed}) {
		w.Header().Set("Retry-After", "60")
		s.plain(w, epUnsub, http.StatusServiceUnavailable, "busy, please try again in a minute\n")
		return
	}
	if oneClick {
		// RFC 8058 section 3.2: the mail client posts; a plain 200 is all it needs.
		s.plain(w, epUnsub, http.StatusOK, "unsubscribed\n")
		return
	}
	d.Title, d.Done = "Unsubscribed", true
	s.html(w, epUnsub, http.StatusOK, d)
}

func (s *Server) html(w http.ResponseWriter, ep string, code int, d pageData) {
	var b strings.Builder
	if err := pages.Execute(&b, d); err != nil {
		s.log.Error("tracker: page template", "err", err)
		s.plain(w, ep, http.StatusInternalServerError, "internal error\n")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", noStore)
	w.WriteHeader(code)
	s.m.count(ep, code)
	w.Write([]byte(b.String()))
}
