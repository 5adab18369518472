package sendmaillab

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
)

// syslogSink receives what Sendmail sends to /dev/log (which the lab points
// at its own socket) and appends each message to a file as a classic
// syslog line, "Mmm dd hh:mm:ss HOST TAG[PID]: MSG": the <PRI> dropped and
// the host name inserted, as rsyslog or sysklogd write /var/log/mail.log.
// Sendmail has no log-file setting of its own: it only calls syslog(3).
type syslogSink struct {
	conn *net.UnixConn
	out  *os.File
	host string
	wg   sync.WaitGroup
}

func listenSyslog(sock, file, host string) (*syslogSink, error) {
	_ = os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	// Sendmail's mailers log as their own (unprivileged) users too.
	if err := os.Chmod(sock, 0o666); err != nil {
		conn.Close()
		return nil, err
	}
	out, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &syslogSink{conn: conn, out: out, host: host}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

func (s *syslogSink) run() {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a datagram socket has no transient state to lose
		}
		if line := syslogLine(buf[:n], s.host); line != nil {
			_, _ = s.out.Write(line)
		}
	}
}

// syslogLine turns one syslog(3) datagram, "<22>Dec  2 04:20:21
// sm-mta[31832]: msg", into a log file line with host inserted after the
// timestamp. nil for an empty datagram.
func syslogLine(d []byte, host string) []byte {
	d = bytes.TrimRight(d, "\x00\r\n")
	if len(d) > 2 && d[0] == '<' {
		if i := bytes.IndexByte(d[:min(len(d), 5)], '>'); i > 0 {
			d = d[i+1:]
		}
	}
	if len(d) == 0 {
		return nil
	}
	var line []byte
	if len(d) > 16 && d[15] == ' ' && d[3] == ' ' && d[9] == ':' && d[12] == ':' {
		line = append(append(append(line, d[:15]...), ' '), host...)
		line = append(line, d[15:]...)
	} else {
		line = append(line, d...)
	}
	// A message with newlines would forge lines of its own.
	line = bytes.ReplaceAll(line, []byte("\n"), []byte(" "))
	return append(line, '\n')
}

// Close stops the listener and closes the file once the last datagram is
// written.
func (s *syslogSink) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return errors.Join(err, s.out.Close())
}
