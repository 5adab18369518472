package tracker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/token"
)

const slowRHT = 3 * time.Second // ReadHeaderTimeout for the test; NewHTTPServer's 5 s would only make it longer

// raiseNoFile lifts RLIMIT_NOFILE to its hard limit.
func raiseNoFile(t testing.TB) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return lim.Cur
}

// TestSlowClients holds 10 000 connections that sent half a request (from a
// child process, so that neither side runs out of descriptors), checks that
// a normal request is still answered quickly, and that every slow
// connection is closed once ReadHeaderTimeout has passed.
func TestSlowClients(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	if lim := raiseNoFile(t); lim < uint64(n)+200 {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below %d", lim, n+200)
	}
	e := newEnv(t, nil)
	srv := NewHTTPServer("", e.h)
	srv.ReadHeaderTimeout = slowRHT
	// know when the server has taken every slow connection off the
	// accept queue, so the timing below measures serving, not accepting
	var accepted atomic.Int64
	allAccepted := make(chan struct{})
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew && accepted.Add(1) == int64(n) {
			close(allAccepted)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestSlowClientsHelper$")
	cmd.Env = append(os.Environ(), "TRACKER_SLOW_ADDR="+ln.Addr().String(), "TRACKER_SLOW_N="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(stdout)
	next := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return rest
			}
		}
		t.Fatalf("helper ended before %q: %v", prefix, lines.Err())
		return ""
	}
	if got := next("ready "); got != strconv.Itoa(n) {
		t.Fatalf("helper opened %s connections, want %d", got, n)
	}

	select {
	case <-allAccepted:
	case <-time.After(20 * time.Second):
		t.Fatalf("server accepted %d of %d connections", accepted.Load(), n)
	}

	// a normal client is still served, quickly
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tok := e.sign(token.Open, token.NewMessageID(), "", "")
	start := time.Now()
	resp, err := c.Get("http://" + ln.Addr().String() + "/o/" + tok + ".gif")
	if err != nil {
		t.Fatalf("normal request with %d slow clients: %v", n, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) != len(pixel) {
		t.Errorf("normal request: %d, %d bytes", resp.StatusCode, len(body))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("normal request took %v with %d slow clients", d, n)
	}

	io.WriteString(stdin, "go\n")
	var closed, open int
	var took time.Duration
	if _, err := fmt.Sscanf(next("result "), "%d %d %v", &closed, &open, &took); err != nil {
		t.Fatal(err)
	}
	if closed != n {
		t.Errorf("%d of %d slow connections closed by the server (%d still open)", closed, n, open)
	}
	if took > slowRHT+3*time.Second {
		t.Errorf("closing the slow connections took %v after they were all open, ReadHeaderTimeout %v", took, slowRHT)
	}
	cmd.Wait()
}

// TestSlowClientsHelper is the child process of TestSlowClients.
func TestSlowClientsHelper(t *testing.T) {
	addr := os.Getenv("TRACKER_SLOW_ADDR")
	if addr == "" {
		t.Skip("child process of TestSlowClients")
	}
	n, _ := strconv.Atoi(os.Getenv("TRACKER_SLOW_N"))
	raiseNoFile(t)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dialErr error
	const dialers = 16
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < n; i += dialers {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err == nil {
					_, err = io.WriteString(c, "GET /o/slow HTTP/1.1\r\nHost: tracker\r\nUser-Agent: sl")
				}
				if err != nil {
					mu.Lock()
					dialErr = err
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if dialErr != nil {
		t.Fatal(dialErr)
	}
	fmt.Printf("\nready %d\n", n)
	bufio.NewReader(os.Stdin).ReadString('\n')
	start := time.Now()
	deadline := start.Add(slowRHT + 5*time.Second)
	closed, open := 0, 0
	buf := make([]byte, 512)
	for _, c := range conns {
		c.SetReadDeadline(deadline)
		_, err := c.Read(buf)
		for err == nil { // a 408 or similar first, then the close
			_, err = c.Read(buf)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
		} else {
			closed++
		}
		c.Close()
	}
	fmt.Printf("\nresult %d %d %v\n", closed, open, time.Since(start))
}
