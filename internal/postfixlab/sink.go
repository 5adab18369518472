package postfixlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Received is one message as the Sink got it.
type Received struct {
	From string   // MAIL FROM address without <>; "" for a bounce (null sender)
	To   []string // recipients the sink accepted (250), in RCPT order
	Data []byte   // the message with CRLF line ends as received, dot-unstuffed, without the final "."
	Time time.Time
}

// Sink is a small in-process SMTP server for use as Postfix's relayhost. It
// keeps every message with its envelope and can answer RCPT TO per recipient
// with a configured reply. It speaks plain SMTP with PIPELINING, no TLS and
// no AUTH, and listens on 127.0.0.1 only.
type Sink struct {
	Addr string // "127.0.0.1:PORT"

	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	msgs []Received
	// rcptReply maps a lower-cased recipient to its RCPT TO reply.
	rcptReply map[string]string
	// changed is closed (and replaced) whenever msgs grows.
	changed chan struct{}
	conns   map[net.Conn]struct{}
	closed  bool
}

// NewSink starts a Sink on a random port of 127.0.0.1. t.Cleanup closes it.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	s, err := listenSink("127.0.0.1:0")
	if err != nil {
		t.Fatalf("postfixlab: sink: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ListenSink starts a Sink on addr ("127.0.0.1:0": a random port) for use
// outside a test, such as a lab started once in TestMain (internal/sendmaillab).
// The caller closes it.
func ListenSink(addr string) (*Sink, error) { return listenSink(addr) }

func listenSink(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &Sink{
		Addr:      ln.Addr().String(),
		ln:        ln,
		rcptReply: map[string]string{},
		changed:   make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// SetRcptReply makes the sink answer RCPT TO:<rcpt> (compared
// case-insensitively) with code and text, e.g. 550 "5.1.1 no such user" or
// 452 "4.2.2 mailbox full". A 2xx code accepts the recipient; code 0 removes
// the entry (back to "250 2.1.5 Ok").
func (s *Sink) SetRcptReply(rcpt string, code int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(rcpt)
	if code == 0 {
		delete(s.rcptReply, key)
		return
	}
	s.rcptReply[key] = fmt.Sprintf("%03d %s", code, text)
}

// Messages returns a copy of the list of messages received so far, oldest first.
func (s *Sink) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.msgs...)
}

// WaitFor returns the first received message (oldest first, including those
// that arrived before the call) for which match returns true, waiting up to
// timeout. It calls t.Fatal when none arrives in time. A nil match accepts
// any message.
func (s *Sink) WaitFor(t testing.TB, match func(Received) bool, timeout time.Duration) Received {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for {
		s.mu.Lock()
		for ; seen < len(s.msgs); seen++ {
			if m := s.msgs[seen]; match == nil || match(m) {
				s.mu.Unlock()
				return m
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("postfixlab: no matching message at the sink within %v; it has %d: %s", timeout, seen, s.summary())
			return Received{}
		}
	}
}

func (s *Sink) summary() string {
	var b strings.Builder
	for i, m := range s.Messages() {
		fmt.Fprintf(&b, "\n  #%d from=<%s> to=%v size=%d", i, m.From, m.To, len(m.Data))
	}
	return b.String()
}

// Close stops the listener, closes open sessions and waits for their
// goroutines. It is safe to call more than once.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // transient (EMFILE, ECONNABORTED); the loop ends on Close
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// maxLine bounds an SMTP command line (RFC 5321 section 4.5.3.1.4 says 512;
// extensions add parameters).
const maxLine = 4096

// maxData bounds one message, matching the SIZE the sink advertises.
const maxData = 64 << 20

func (s *Sink) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, 64*1024)
	w := bufio.NewWriter(c)
	sess := session{sink: s, r: r, w: w}
	deadline := func() { _ = c.SetDeadline(time.Now().Add(2 * time.Minute)) }
	deadline()
	sess.run(deadline)
}

type session struct {
	sink *Sink
	r    *bufio.Reader
	w    *bufio.Writer
	from string
	mail bool
	rcpt []string
}

// reply queues a response and flushes it unless more pipelined input is
// already buffered (RFC 2920 section 3.2: the server may batch responses).
func (ss *session) reply(line string) error {
	ss.w.WriteString(line + "\r\n")
	if ss.r.Buffered() == 0 {
		return ss.w.Flush()
	}
	return nil
}

func (ss *session) reset() { ss.from, ss.mail, ss.rcpt = "", false, nil }

func (ss *session) run(touch func()) {
	defer ss.w.Flush()
	if ss.reply("220 sink.localdomain ESMTP postfixlab sink") != nil {
		return
	}
	for {
		touch()
		line, err := readLine(ss.r)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				ss.reply("500 5.5.2 Line too long")
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		var out string
		switch strings.ToUpper(verb) {
		case "EHLO":
			ss.reset()
			out = "250-sink.localdomain\r\n250-PIPELINING\r\n250-SIZE 67108864\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8"
		case "HELO":
			ss.reset()
			out = "250 sink.localdomain"
		case "MAIL":
			if !strings.HasPrefix(strings.ToUpper(arg), "FROM:") {
				out = "501 5.5.4 Syntax: MAIL FROM:<address>"
				break
			}
			ss.reset()
			ss.from, ss.mail = addrArg(arg[5:]), true
			out = "250 2.1.0 Ok"
		case "RCPT":
			switch {
			case !ss.mail:
				out = "503 5.5.1 Error: need MAIL command"
			case !strings.HasPrefix(strings.ToUpper(arg), "TO:"):
				out = "501 5.5.4 Syntax: RCPT TO:<address>"
			default:
				to := addrArg(arg[3:])
				ss.sink.mu.Lock()
				rep, ok := ss.sink.rcptReply[strings.ToLower(to)]
				ss.sink.mu.Unlock()
				if !ok {
					rep = "250 2.1.5 Ok"
				}
				if rep[0] == '2' {
					ss.rcpt = append(ss.rcpt, to)
				}
				out = rep
			}
		case "DATA":
			if len(ss.rcpt) == 0 {
				out = "554 5.5.1 Error: no valid recipients"
				break
			}
			if ss.reply("354 End data with <CR><LF>.<CR><LF>") != nil || ss.w.Flush() != nil {
				return
			}
			data, err := readData(ss.r, maxData)
			if err != nil {
				if errors.Is(err, errTooBig) {
					ss.reply("552 5.3.4 Message too big")
				}
				return
			}
			ss.sink.add(Received{From: ss.from, To: ss.rcpt, Data: data, Time: time.Now()})
			ss.reset()
			out = "250 2.0.0 Ok: queued"
		case "RSET":
			ss.reset()
			out = "250 2.0.0 Ok"
		case "NOOP":
			out = "250 2.0.0 Ok"
		case "QUIT":
			ss.reply("221 2.0.0 Bye")
			return
		default:
			out = "502 5.5.2 Error: command not recognized"
		}
		if ss.reply(out) != nil {
			return
		}
	}
}

func (s *Sink) add(m Received) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

var (
	errLineTooLong = errors.New("line too long")
	errTooBig      = errors.New("message too big")
)

// readLine reads one CRLF- (or LF-) terminated command line of at most
// maxLine bytes, without the line end.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxLine {
			return "", errLineTooLong
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
}

// addrArg returns the address of a MAIL FROM/RCPT TO argument (after the
// colon): "<a@b> SIZE=12" -> "a@b", "<>" -> "".
func addrArg(arg string) string {
	arg = strings.TrimSpace(arg)
	if strings.HasPrefix(arg, "<") {
		if j := strings.IndexByte(arg, '>'); j >= 0 {
			return arg[1:j]
		}
	}
	a, _, _ := strings.Cut(arg, " ")
	return a
}

// readData reads a DATA section up to the "." line and undoes dot-stuffing
// (RFC 5321 section 4.5.2). Line ends are kept as received. It reads on to
// the end marker even past max so the session stays in sync, then returns
// errTooBig.
func readData(r *bufio.Reader, max int) ([]byte, error) {
	var buf bytes.Buffer
	lineStart, tooBig := true, false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if lineStart {
			if bytes.Equal(line, []byte(".\r\n")) || bytes.Equal(line, []byte(".\n")) {
				if tooBig {
					return nil, errTooBig
				}
				return buf.Bytes(), nil
			}
			if len(line) > 0 && line[0] == '.' {
				line = line[1:]
			}
		}
		if buf.Len()+len(line) > max {
			tooBig = true
		} else if !tooBig {
			buf.Write(line)
		}
		lineStart = err == nil // ErrBufferFull: the rest of this line follows
	}
}
