package sendmaillab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// nsProcs lists the live processes whose mount namespace is ns
// ("mnt:[4026532845]"). Every process of an instance inherits the
// namespace unshare made for it, whatever it renames itself to (Sendmail
// rewrites its argv and clears its environment, so neither identifies it).
func nsProcs(ns string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err != nil || l != ns {
			continue
		}
		if alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// alive reports whether pid is a process that has not exited. The
// sandbox's PID 1 reaps orphans only now and then, so a stopped child can
// sit as a zombie for seconds.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// listening reports whether something listens on 127.0.0.1:port, read from
// /proc/net/tcp. Dialing instead would start an SMTP session, which shows
// up in the log and reaches the milters.
func listening(port int) bool {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ...; st 0A = LISTEN
		if len(f) > 3 && f[3] == "0A" && f[1] == local {
			return true
		}
	}
	return false
}
