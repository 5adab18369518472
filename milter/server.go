// Package milter is leadpush-milter's session with Postfix or Sendmail.
//
// For every message it removes the X-Leadpush-* control headers (seed 000),
// whoever sent it. For mail from a trusted source (a trusted network, or a
// SASL-authenticated client) it also records the message in the ledger with
// its tag, tracking mode and custom headers, turns suppressed recipients
// away at RCPT, rewrites the body for open and click tracking, adds
// List-Unsubscribe and List-Unsubscribe-Post (RFC 2369, RFC 8058) and sets a
// VERP return path. It never fails a transaction: a panic, a rewriter that
// gives up or a ledger that is down lets the message through.
//
// go-milter v0.5.0 has no Shutdown, no timeouts and no panic recovery, and
// logs through the standard logger; Server adds the first three.
package milter

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// Recorder takes what the milter records; it must never block
// (*ledger.Writer).
type Recorder interface {
	Add(msg *ledger.Message, events ...*ledger.Event)
}

// Suppressions lists a recipient's live suppression entries, of every
// scope (none: an empty list); the milter picks those that apply to the
// message's stream (ledger.Suppression.Applies).
type Suppressions interface {
	SuppressionsOf(ctx context.Context, address string, now time.Time) ([]*ledger.Suppression, error)
}

// Config is what a Server needs. Zero values take the defaults given.
type Config struct {
	TrustedNetworks []netip.Prefix
	TrustLocal      bool     // trust clients on a local socket with no address
	RecordHeaders   []string // record_headers patterns
	Recorder        Recorder // required
	Suppressions    Suppressions
	// SuppressionAction is "reject" (550 5.7.1 at RCPT, the default) or
	// "drop" (accept, then remove the recipient at end of message).
	SuppressionAction string
	LookupTimeout     time.Duration // suppression lookups; default 2s, then fail open
	// Streams are the message streams (config.Config.Streams, the default
	// stream among them); nil: one implicit default stream.
	Streams []config.Stream

	Keyring        *token.Keyring // nil: no tracking, no List-Unsubscribe, no VERP
	BaseURL        string         // tracker base URL, no trailing slash
	TextLinks      bool
	SkipDKIMSigned bool
	BounceDomain   string
	BouncePrefix   string // VERP local-part prefix; default "bounce"
	BodyMemory     int64  // body bytes kept in memory before spooling to disk; default 1 MiB
	MaxTrackSize   int64  // larger bodies pass untracked; default 10 MiB
	// MaxMessageSize is the largest message the MTA accepts: a rewrite
	// that would make the message larger leaves the body untracked. Default
	// DefaultMaxMessageSize.
	MaxMessageSize int64
	TempDir        string // spool directory; default os.TempDir()

	// IdleTimeout closes a milter connection on which the MTA has said
	// nothing for this long; default 10 minutes (Postfix's own milter
	// timeouts are shorter, so only a dead peer hits it).
	IdleTimeout time.Duration
	Logger      *slog.Logger
	Now         func() time.Time

	// MemoryBudget bounds the memory all rewrites hold at once, process-wide
	// (a rewrite needs about rewriteCost(size) bytes); one that cannot get its
	// share within BudgetWait passes untracked. Default DefaultMemoryBudget.
	MemoryBudget int64
	BudgetWait   time.Duration // default 60s, well under Postfix's milter_content_timeout (300s)
	// BodyMemoryTotal bounds the body bytes all messages hold in memory at
	// once (each at most BodyMemory); past it, bodies go to disk at once.
	// Default DefaultBodyMemoryTotal.
	BodyMemoryTotal int64
}

// DefaultMaxMessageSize is Config.MaxMessageSize's default (Postfix's
// message_size_limit default), written once in internal/config.
const DefaultMaxMessageSize = config.DefaultMaxMessageSize

// DefaultMemoryBudget is Config.MemoryBudget's default. With the default
// body_memory it keeps the milter's peak RSS under 300 MB with 20 concurrent
// 10 MB link-dense messages (bench TestMilterMemoryLinks).
const DefaultMemoryBudget = 64 << 20

// DefaultBodyMemoryTotal is Config.BodyMemoryTotal's default.
const DefaultBodyMemoryTotal = 32 << 20

// Server serves milter connections.
type Server struct {
	cfg     Config
	log     *slog.Logger
	headers *Matcher
	streams *streams
	metrics *Metrics
	budget  *budget // rewrites, waited for
	bodyMem *budget // bodies in memory, never waited for

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	lns   []net.Listener
	wg    sync.WaitGroup
	done  atomic.Bool
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Recorder == nil {
		return nil, errors.New("milter: no Recorder")
	}
	m, err := NewMatcher(cfg.RecordHeaders)
	if err != nil {
		return nil, err
	}
	switch cfg.SuppressionAction {
	case "":
		cfg.SuppressionAction = config.DefaultSuppressionAction
	case config.SuppressionReject, config.SuppressionDrop:
	default:
		return nil, errors.New(`milter: suppression action must be "reject" or "drop"`)
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if cfg.BouncePrefix == "" {
		cfg.BouncePrefix = "bounce"
	}
	if cfg.BodyMemory <= 0 {
		cfg.BodyMemory = config.DefaultBodyMemory
	}
	if cfg.MaxTrackSize <= 0 {
		cfg.MaxTrackSize = config.DefaultMaxTrackSize
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MemoryBudget <= 0 {
		cfg.MemoryBudget = DefaultMemoryBudget
	}
	if cfg.BodyMemoryTotal <= 0 {
		cfg.BodyMemoryTotal = DefaultBodyMemoryTotal
	}
	if cfg.BudgetWait <= 0 {
		cfg.BudgetWait = 60 * time.Second
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	return &Server{cfg: cfg, log: cfg.Logger, headers: m, streams: newStreams(cfg.Streams), metrics: &Metrics{}, budget: newBudget(cfg.MemoryBudget),
		bodyMem: newBudget(cfg.BodyMemoryTotal),
		conns:   map[net.Conn]struct{}{}}, nil
}

// actions are the modifications the milter may make.
const actions = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
	gomilter.OptChangeFrom | gomilter.OptRemoveRcpt | gomilter.OptSetSymList

// leanProtocol negotiates away what the milter does not use (HELO, end of
// headers, DATA, unknown commands) and the replies to headers and body
// chunks, so Postfix sends those without waiting for an answer: fewer
// round trips per message. Only over unix sockets: over TCP, Postfix's
// back-to-back small writes meet Nagle and delayed ACKs and each message
// stalls for tens of milliseconds (measured; see the README). With the
// reply flags, go-milter writes whatever a callback returns, so Header and
// BodyChunk must then return nil.
const leanProtocol = gomilter.OptNoHelo | gomilter.OptNoEOH | gomilter.OptNoUnknown | gomilter.OptNoData |
	gomilter.OptNoHeaderReply | gomilter.OptNoBodyReply

// gomilterServer returns the go-milter server for one listener.
func (s *Server) gomilterServer(lean bool) *gomilter.Server {
	return NegotiatingServer(func() gomilter.Milter { return &session{srv: s, lean: lean} }, lean)
}

// NegotiatingServer is a go-milter server negotiating exactly what Server
// does: the benchmarks' no-op baseline uses it. With lean, newMilter's
// Header and BodyChunk must return a nil Response.
func NegotiatingServer(newMilter func() gomilter.Milter, lean bool) *gomilter.Server {
	var proto gomilter.OptProtocol
	if lean {
		proto = leanProtocol
	}
	return &gomilter.Server{
		NewMilter: newMilter,
		Actions:   actions,
		Protocol:  proto,
		SymList: map[gomilter.Stage][]string{
			gomilter.StageConnect:  {"j"},
			gomilter.StageMailFrom: {"{auth_authen}", "{auth_type}"},
			gomilter.StageEOM:      {"i"},
			// Sendmail uses a milter's own EOM list only if it also asked
			// for an end-of-headers list (milter_data picks the EOM list by
			// the EOH flag), whatever the site's confMILTER_MACROS_EOM.
			gomilter.StageEOH: {"i"},
		},
	}
}

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return s.metrics }

func (s *Server) now() time.Time { return s.cfg.Now() }

// rewrites reports whether bodies are kept for rewriting at all.
func (s *Server) rewrites() bool { return s.cfg.Keyring != nil && s.cfg.BaseURL != "" }

// Listen opens a listener from a Postfix-style address: "unix:/path" or
// "inet:host:port" (also "inet6:", "tcp:" and a bare "host:port"). A stale
// unix socket is replaced; its directory must exist.
func Listen(addr string) (net.Listener, error) {
	network, a, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, errors.New("milter: listen address must be unix:/path or inet:host:port")
	}
	switch network {
	case "unix", "local":
		if fi, err := os.Lstat(a); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.Dial("unix", a); err == nil {
				c.Close()
				return nil, errors.New("milter: " + a + " is in use by another process")
			}
			os.Remove(a)
		}
		ln, err := net.Listen("unix", a)
		if err != nil {
			return nil, err
		}
		// smtpd and cleanup run as user postfix; they must reach the socket.
		if err := os.Chmod(a, 0o666); err != nil {
			ln.Close()
			return nil, err
		}
		return ln, nil
	case "inet", "inet6", "tcp":
		return net.Listen("tcp", a)
	default:
		return net.Listen("tcp", addr)
	}
}

// Serve accepts milter connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.done.Load() {
		s.mu.Unlock()
		ln.Close()
		return gomilter.ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	_, lean := ln.Addr().(*net.UnixAddr)
	err := s.gomilterServer(lean).Serve(&trackingListener{Listener: ln, s: s})
	if s.done.Load() {
		return gomilter.ErrServerClosed
	}
	return err
}

// Shutdown stops accepting, waits for connections to end until ctx is done,
// then closes those left. Postfix applies milter_default_action to those.
func (s *Server) Shutdown(ctx context.Context) error {
	s.done.Store(true)
	s.mu.Lock()
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() { s.wg.Wait(); close(idle) }()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-idle
		return ctx.Err()
	}
}

// trackingListener registers connections, for Shutdown, and gives them an
// idle deadline, which go-milter lacks.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	l.s.conns[c] = struct{}{}
	l.s.wg.Add(1)
	l.s.mu.Unlock()
	return newIdleConn(c, l.s), nil
}

// idleConn gives a milter connection an idle deadline and buffers it.
// go-milter reads every packet with two read calls (length, then data) and
// writes every packet with its own flush; each is a system call, and they
// were the largest cost of a message. The milter protocol is strictly
// request and response: the server writes only answers and modifications,
// then reads the next command. So writes are held in a buffer and flushed
// when the server next needs input (or closes), which turns the burst of
// modifications at end of message into one write, and reads fill a buffer,
// so a macro packet and its command arrive with one read.
type idleConn struct {
	net.Conn
	s       *Server
	timeout time.Duration
	once    sync.Once
	r       *bufio.Reader
	w       *bufio.Writer
}

func newIdleConn(c net.Conn, s *Server) *idleConn {
	ic := &idleConn{Conn: c, s: s, timeout: s.cfg.IdleTimeout}
	// Small buffers: they gather the small packets; a body chunk or a
	// replaced body larger than the buffer bypasses it.
	ic.r = bufio.NewReaderSize(rawReader{ic}, 4<<10)
	ic.w = bufio.NewWriterSize(rawWriter{ic}, 4<<10)
	return ic
}

// rawReader and rawWriter reach the socket, with deadlines.
type rawReader struct{ c *idleConn }
type rawWriter struct{ c *idleConn }

func (r rawReader) Read(p []byte) (int, error) {
	r.c.Conn.SetReadDeadline(time.Now().Add(r.c.timeout))
	return r.c.Conn.Read(p)
}

func (w rawWriter) Write(p []byte) (int, error) {
	w.c.Conn.SetWriteDeadline(time.Now().Add(w.c.timeout))
	return w.c.Conn.Write(p)
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.r.Buffered() == 0 && c.w.Buffered() > 0 {
		// About to wait for the MTA: it must have our answers first.
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
	}
	return c.r.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *idleConn) Close() error {
	ferr := c.w.Flush()
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.Conn)
		c.s.mu.Unlock()
		c.s.wg.Done()
	})
	if err == nil && !errors.Is(ferr, net.ErrClosed) {
		err = ferr
	}
	return err
}
