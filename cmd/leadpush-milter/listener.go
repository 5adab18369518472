package main

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// retryListener retries temporary Accept errors (out of file descriptors,
// a connection aborted before it was accepted) with a growing pause, as
// net/http and go-smtp do, instead of ending Serve: one such error would
// otherwise stop the milter and hold all mail (milter_default_action).
type retryListener struct {
	net.Listener
	log *slog.Logger
}

// maxAcceptPause bounds the pause between retries.
const maxAcceptPause = time.Second

func (l retryListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !temporary(err) {
			return c, err
		}
		if pause == 0 {
			pause = 5 * time.Millisecond
		} else {
			pause = min(2*pause, maxAcceptPause)
		}
		l.log.Warn("milter accept failed; retrying", "err", err, "in", pause)
		time.Sleep(pause)
	}
}

func temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
