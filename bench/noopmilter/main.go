// Command noopmilter is the baseline milter of the Postfix benchmark
// (bench/postfix_test.go): a go-milter v0.5.0 server that negotiates exactly
// what leadpush-milter does (same actions, same macro lists, no no-reply
// flags), receives every event, body chunks included, and answers continue
// to all of them, end of message included, without modifying anything.
// With -replay FILE it is the benchmark's floor instead: it makes the
// modifications leadpush-milter made to the message in FILE to every
// message, without the work (replay.go).
//
//	noopmilter -listen unix:/path/milter.sock
//	noopmilter -listen inet:127.0.0.1:10030
//	noopmilter -listen unix:/path/replay.sock -replay delivered.eml
//
// SIGTERM or SIGINT stops it; it then prints its counters on standard error.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	gomilter "github.com/emersion/go-milter"

	"github.com/leadpush/leadpush/milter"
)

var connections, messages, bodyBytes, aborts atomic.Int64

// noop answers like leadpush-milter and does nothing; lean: headers and
// body chunks get no reply, as negotiated over unix sockets.
type noop struct{ lean bool }

func (n noop) cont() gomilter.Response {
	if n.lean {
		return nil
	}
	return gomilter.RespContinue
}

func (noop) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	connections.Add(1)
	return gomilter.RespContinue, nil
}

func (noop) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (noop) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (noop) RcptTo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (n noop) Header(string, string, *gomilter.Modifier) (gomilter.Response, error) {
	return n.cont(), nil
}

func (noop) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

func (n noop) BodyChunk(c []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	bodyBytes.Add(int64(len(c)))
	return n.cont(), nil
}

// Body answers continue, as leadpush-milter does (Postfix takes it as
// accept), so go-milter keeps the same Milter value for the session.
func (noop) Body(*gomilter.Modifier) (gomilter.Response, error) {
	messages.Add(1)
	return gomilter.RespContinue, nil
}

func (noop) Abort(*gomilter.Modifier) error {
	aborts.Add(1)
	return nil
}

func main() {
	listen := flag.String("listen", "inet:127.0.0.1:10030", "unix:/path or inet:host:port")
	replayFile := flag.String("replay", "", "a message leadpush-milter delivered: make its modifications to every message (see replay.go)")
	flag.Parse()
	var body []byte
	var unsubscribe string
	if *replayFile != "" {
		var err error
		if body, unsubscribe, err = loadReplay(*replayFile); err != nil {
			fmt.Fprintln(os.Stderr, "noopmilter:", err)
			os.Exit(1)
		}
	}
	ln, err := milter.Listen(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noopmilter:", err)
		os.Exit(1)
	}
	// The same negotiation as leadpush-milter on the same transport.
	_, lean := ln.Addr().(*net.UnixAddr)
	srv := milter.NegotiatingServer(func() gomilter.Milter {
		if body != nil {
			return &replay{noop: noop{lean: lean}, body: body, unsubscribe: unsubscribe, control: map[string]int{}}
		}
		return noop{lean: lean}
	}, lean)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-sig:
		srv.Close()
	case err = <-errc:
		if err != nil && err != gomilter.ErrServerClosed {
			log.Printf("noopmilter: %v", err)
		}
	}
	fmt.Fprintf(os.Stderr, "noopmilter: connections=%d messages=%d body_bytes=%d aborts=%d\n",
		connections.Load(), messages.Load(), bodyBytes.Load(), aborts.Load())
}
