package milter

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/testmsg"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/token"
)

// The milter alone, driven in process by go-milter's client playing
// Postfix: every op is one message (mail, rcpt, headers, EOH, body, EOB and
// the modifications). 20 milter connections run at once (SetParallelism(10)
// on GOMAXPROCS 2), like smtp-source -s 20, each carrying many messages, as
// Postfix's smtpd keeps its milter connection for every message of an SMTP
// session. The newconn- rows open a new milter connection for every
// message (OPTNEG, connect, helo, the message, quit), as Postfix does when
// each SMTP session carries one message. The client's cost is counted too:
// both share the same cores.
//
//	go test -run '^$' -bench MilterAlone -benchtime 20000x ./milter/
//
// The rows run over a unix socket, the transport the README and contrib/
// configure, where Server negotiates the lean protocol (no replies to
// headers and body chunks), except the tcp- rows: new connections over
// 127.0.0.1, where every command is answered.
//
// noop is a go-milter server that negotiates like ours on the same
// transport and answers continue to everything (it reads the body:
// go-milter decodes every chunk); it is the baseline of the same run.
// leadpush-record is our Server with a real SQLite ledger and no keyring;
// leadpush-track adds the keyring, base URL and bounce domain: pixel, 20
// rewritten links, List-Unsubscribe, VERP.

// benchLinks is the number of links in benchHTML.
const benchLinks = 20

// benchHTML returns a ~20 KB HTML body with benchLinks links and CRLF line
// ends, as Postfix sends bodies to milters.
func benchHTML() string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"><title>Your weekly digest</title></head>\r\n<body>\r\n")
	para := "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>\r\n"
	for i := 0; i < benchLinks; i++ {
		fmt.Fprintf(&b, "<h2>Article %d</h2>\r\n", i+1)
		for b.Len() < (i+1)*19500/benchLinks {
			b.WriteString(para)
		}
		fmt.Fprintf(&b, "<p><a href=\"https://www.example.com/articles/%d?utm_source=digest&amp;utm_medium=email\">Read article %d</a></p>\r\n", i+1, i+1)
	}
	b.WriteString("</body></html>\r\n")
	return b.String()
}

var benchHeaders = [][2]string{
	{"From", "Example News <news@example.com>"},
	{"To", "customer@example.org"},
	{"Subject", "Your weekly digest"},
	{"Date", "Mon, 23 Nov 2026 10:00:00 +0000"},
	{"Message-ID", "<digest-1@example.com>"},
	{"MIME-Version", "1.0"},
	{"Content-Type", "text/html; charset=UTF-8"},
	{"X-Leadpush-Tag", `"weekly digest"`},
}

// noopMilter answers continue to every event, like libmilter's default
// callbacks, and counts what it was sent. With lean it answers nil to the
// events whose reply is negotiated away, as go-milter then requires.
type noopMilter struct {
	lean                bool
	bodyBytes, messages *atomic.Int64
}

func (noopMilter) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (noopMilter) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (noopMilter) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (noopMilter) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m noopMilter) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	if m.lean {
		return nil, nil
	}
	return gomilter.RespContinue, nil
}
func (noopMilter) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (m noopMilter) BodyChunk(c []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.bodyBytes.Add(int64(len(c)))
	if m.lean {
		return nil, nil
	}
	return gomilter.RespContinue, nil
}
func (m noopMilter) Body(*gomilter.Modifier) (gomilter.Response, error) {
	m.messages.Add(1)
	return gomilter.RespContinue, nil
}
func (noopMilter) Abort(*gomilter.Modifier) error { return nil }

// startNoop serves noopMilter on a unix socket (lean negotiation) or on
// 127.0.0.1 (every command answered), negotiating exactly what Server does
// on the same kind of listener.
func startNoop(b testing.TB, network string) (addr string, messages *atomic.Int64) {
	b.Helper()
	var bodyBytes atomic.Int64
	messages = new(atomic.Int64)
	lean := network == "unix"
	gm := NegotiatingServer(func() gomilter.Milter {
		return noopMilter{lean: lean, bodyBytes: &bodyBytes, messages: messages}
	}, lean)
	addr = "127.0.0.1:0"
	if lean {
		addr = filepath.Join(b.TempDir(), "noop.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	go gm.Serve(ln)
	b.Cleanup(func() { gm.Close() })
	return ln.Addr().String(), messages
}

// benchClient is a go-milter client for addr. Its action mask leaves out
// OptChangeFrom: go-milter servers answer with protocol version 2 and its
// client only downgrades for v2 actions; the client still parses the
// change-from that Server sends. It reads through a buffer, as Postfix's
// milter client reads its VSTREAM; go-milter's client alone would make two
// read system calls for every packet of the answer.
func benchClient(network, addr string) *gomilter.Client {
	return gomilter.NewClientWithOptions(network, addr, gomilter.ClientOptions{
		Dialer: bufDialer{},
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
			gomilter.OptRemoveRcpt | gomilter.OptAddRcpt,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	})
}

// bufDialer dials connections whose reads are buffered; each write still
// goes out at once, one per milter command.
type bufDialer struct{}

func (bufDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &bufReadConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10)}, nil
}

type bufReadConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufReadConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// oneMessage sends one message on a new milter connection, as Postfix does
// for an SMTP session with one message, and returns the end-of-message
// modifications.
func oneMessage(c *gomilter.Client, headers [][2]string, body []byte) ([]gomilter.ModifyAction, error) {
	s, err := openSession(c)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return transaction(s, headers, body)
}

// openSession opens a milter connection and sends what Postfix sends once
// per SMTP session: the connect macros, CONNECT and HELO.
func openSession(c *gomilter.Client) (*gomilter.ClientSession, error) {
	s, err := c.Session()
	if err != nil {
		return nil, err
	}
	if err := s.Macros(gomilter.CodeConn, "j", "lab.localdomain"); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := s.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := s.Helo("localhost"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// transaction sends one message (MAIL to end of message) on an open session
// and returns the end-of-message modifications.
func transaction(s *gomilter.ClientSession, headers [][2]string, body []byte) ([]gomilter.ModifyAction, error) {
	if _, err := s.Mail("<a@example.com>", nil); err != nil {
		return nil, err
	}
	if _, err := s.Rcpt("<b@example.org>", nil); err != nil {
		return nil, err
	}
	for _, h := range headers {
		if _, err := s.HeaderField(h[0], h[1]); err != nil {
			return nil, err
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return nil, err
	}
	if err := s.Macros(gomilter.CodeEOB, "i", "4AbCdEfGh"); err != nil {
		return nil, err
	}
	// Chunks of the body itself, as Postfix sends its queue file's
	// records (BodyReadFrom would allocate a 64 KB buffer per message).
	for len(body) > 0 {
		n := min(len(body), gomilter.MaxBodyChunk)
		if _, err := s.BodyChunk(body[:n]); err != nil {
			return nil, err
		}
		body = body[n:]
	}
	mods, act, err := s.End()
	if err != nil {
		return nil, err
	}
	if act.Code != gomilter.ActContinue && act.Code != gomilter.ActAccept {
		return nil, fmt.Errorf("end of message: action %c", act.Code)
	}
	return mods, nil
}

func BenchmarkMilterAlone(b *testing.B) {
	body := []byte(benchHTML())
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		b.Fatal(err)
	}
	for _, cfg := range []struct {
		name    string
		network string
		newConn bool
		noop    bool
		track   bool
	}{
		{"noop", "unix", false, true, false},
		{"leadpush-record", "unix", false, false, false},
		{"leadpush-track", "unix", false, false, true},
		{"newconn-noop", "unix", true, true, false},
		{"newconn-leadpush-track", "unix", true, false, true},
		{"tcp-noop", "tcp", true, true, false},
		{"tcp-leadpush-track", "tcp", true, false, true},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			var addr string
			var h *harness
			var noopMsgs *atomic.Int64
			if cfg.noop {
				addr, noopMsgs = startNoop(b, cfg.network)
			} else {
				h = newHarness(b, cfg.network, func(c *Config) {
					if cfg.track {
						c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
					}
				})
				addr = h.addr
			}
			c := benchClient(cfg.network, addr)
			var bad atomic.Int64 // messages whose modifications are wrong
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.SetParallelism(10)
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var s *gomilter.ClientSession // the connection, when reused
				defer func() {
					if s != nil {
						s.Close()
					}
				}()
				for pb.Next() {
					var mods []gomilter.ModifyAction
					var err error
					if cfg.newConn {
						mods, err = oneMessage(c, benchHeaders, body)
					} else {
						if s == nil {
							if s, err = openSession(c); err != nil {
								b.Error(err)
								return
							}
						}
						mods, err = transaction(s, benchHeaders, body)
					}
					if err != nil {
						b.Error(err)
						return
					}
					if !modsOK(cfg.noop, cfg.track, mods) {
						bad.Add(1)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			// CPU of the whole process (client, milter, ledger writer) per
			// message: unlike msgs/s it barely moves when other processes
			// load the machine. 2 cores / this = msgs/s on an idle machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
			if n := bad.Load(); n > 0 {
				b.Errorf("%d of %d messages had unexpected modifications", n, b.N)
			}
			if noopMsgs != nil {
				// Continue at end of message is written after Body returns:
				// every message was counted before its reply was read.
				if got := noopMsgs.Load(); got != int64(b.N) {
					b.Errorf("noop milter saw %d messages, want %d", got, b.N)
				}
				return
			}
			h.sync(b)
			st := h.w.Stats()
			// each message is written with its processed event: two records
			if rec := h.srv.Metrics().Recorded.Load(); rec != int64(b.N) || st.Written != 2*int64(b.N) || st.Lost != 0 {
				b.Errorf("recorded %d, written %d, lost %d; want %d messages, %d records written", rec, st.Written, st.Lost, b.N, 2*b.N)
			}
			if cfg.track && h.srv.Metrics().Rewritten.Load() != int64(b.N) {
				b.Errorf("rewritten %d, want %d", h.srv.Metrics().Rewritten.Load(), b.N)
			}
		})
	}
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// modsOK checks the end-of-message modifications of one benchmark message.
func modsOK(noop, track bool, mods []gomilter.ModifyAction) bool {
	var stripped, unsub, verp bool
	var body []byte
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActChangeHeader:
			stripped = stripped || (m.HeaderName == "X-Leadpush-Tag" && m.HeaderValue == "")
		case gomilter.ActAddHeader:
			unsub = unsub || m.HeaderName == "List-Unsubscribe"
		case gomilter.ActChangeFrom:
			verp = strings.HasPrefix(m.From, "<bounce+")
		case gomilter.ActReplBody:
			if body == nil {
				body = m.Body // one chunk (20 KB): no copy
			} else {
				body = append(slices.Clip(body), m.Body...)
			}
		}
	}
	switch {
	case noop:
		return len(mods) == 0
	case !track:
		return stripped && !unsub && !verp && body == nil
	default:
		return stripped && unsub && verp && bytes.Count(body, []byte("https://t.example.com/c/")) == benchLinks &&
			bytes.Contains(body, []byte("https://t.example.com/o/"))
	}
}

var bigHeaders = [][2]string{
	{"From", "reports@example.com"},
	{"To", "customer@example.org"},
	{"Subject", "Your monthly report"},
	{"MIME-Version", "1.0"},
	{"Content-Type", `multipart/mixed; boundary="b1"`},
	{"X-Leadpush-Tag", "report"},
}

// peakHeap samples runtime.MemStats.HeapInuse every 5 ms until stop is
// closed and returns the highest value seen.
func peakHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var ms runtime.MemStats
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// TestMemoryBounded sends 20 concurrent 25 MB messages (a base64
// attachment) through a tracking Server with the default BodyMemory (1 MiB)
// and MaxTrackSize (10 MiB): bodies past 1 MiB go to an unlinked temporary
// file and past 10 MiB are dropped, so the heap stays far below 20 x 25 MB.
// The 25 MB body itself (shared by all clients) is part of the figure.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 500 MB through the milter")
	}
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		size    int
		limit   uint64
		tracked bool
	}{
		// over max_track_size: spooled to 10 MiB, then passed untracked
		{"25MB-untracked", 25 << 20, 200 << 20, false},
		// under it: spooled to disk and rewritten (the attachment part is
		// copied through)
		{"8MB-tracked", 8 << 20, 200 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "tcp", func(c *Config) {
				c.Keyring, c.BaseURL, c.BounceDomain = keys, "https://t.example.com", "bounces.example.com"
				c.TempDir = t.TempDir()
			})
			body := testmsg.Big(tc.size)
			// Postfix waits milter_content_timeout (300 s) for the end of
			// message: rewrites queue for the memory budget, and under
			// -race on a loaded machine the last of 20 waits longer than
			// benchClient's 10 s.
			c := gomilter.NewClientWithOptions(h.network, h.addr, gomilter.ClientOptions{
				Dialer: bufDialer{},
				ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
					gomilter.OptRemoveRcpt | gomilter.OptAddRcpt,
				ReadTimeout: 300 * time.Second, WriteTimeout: 300 * time.Second,
			})
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stop := make(chan struct{})
			peak := peakHeap(stop)
			const sessions = 20
			var wg sync.WaitGroup
			errs := make(chan error, sessions)
			start := time.Now()
			for range sessions {
				wg.Go(func() {
					mods, err := oneMessage(c, bigHeaders, body)
					if err != nil {
						errs <- err
						return
					}
					var replaced int
					for _, m := range mods {
						if m.Code == gomilter.ActReplBody {
							replaced += len(m.Body)
						}
					}
					if tc.tracked != (replaced > 0) {
						errs <- fmt.Errorf("replaced %d body bytes, tracked=%v", replaced, tc.tracked)
					}
				})
			}
			wg.Wait()
			close(stop)
			p := <-peak
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			h.sync(t)
			m := h.srv.Metrics()
			t.Logf("%d x %d MB in %v: peak HeapInuse %.1f MB (%.1f MB before; %d MB sent in all); recorded %d, rewritten %d, too large %d",
				sessions, tc.size>>20, time.Since(start).Round(time.Millisecond), float64(p)/(1<<20), float64(before.HeapInuse)/(1<<20),
				sessions*tc.size>>20, m.Recorded.Load(), m.Rewritten.Load(), m.TooLarge.Load())
			if p > tc.limit {
				t.Errorf("peak heap %d MB, want < %d MB", p>>20, tc.limit>>20)
			}
			if m.Recorded.Load() != sessions {
				t.Errorf("recorded %d, want %d", m.Recorded.Load(), sessions)
			}
			if tc.tracked && m.Rewritten.Load() != sessions || !tc.tracked && m.TooLarge.Load() != sessions {
				t.Errorf("rewritten %d, too large %d", m.Rewritten.Load(), m.TooLarge.Load())
			}
		})
	}
}
