package postfixlab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is the part of /proc/PID/stat that stop needs.
type procStat struct {
	state   byte // R, S, D, Z (zombie), X (dead), ...
	session int
}

// readProcStat parses /proc/PID/stat. The command name (field 2) may hold
// spaces and parentheses, so the fields are counted from the last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("postfixlab: bad /proc stat line %q", b)
	}
	// after ")": state ppid pgrp session ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 || len(f[0]) != 1 || !isLetter(f[0][0]) {
		return procStat{}, fmt.Errorf("postfixlab: bad /proc stat line %q", b)
	}
	sess, err := strconv.Atoi(f[3])
	if err != nil {
		return procStat{}, fmt.Errorf("postfixlab: bad session in /proc stat line %q: %w", b, err)
	}
	return procStat{state: f[0][0], session: sess}, nil
}

func isLetter(c byte) bool { return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' }

// alive reports whether pid is a process that has not exited. The sandbox's
// PID 1 reaps orphans only now and then, so a stopped daemon can sit as a
// zombie for seconds; kill(pid, 0) would call it alive.
func alive(pid int) bool {
	st, err := readProcStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

// WaitGone polls until none of pids is alive or the timeout passes, and
// reports whether they are all gone. Processes of another program give no
// event to wait on, so this polls /proc with a bounded loop. The Sendmail
// lab shares it.
func WaitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := false
		for _, p := range pids {
			if alive(p) {
				left = true
				break
			}
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instanceProcs lists the live processes of the instance whose master had
// pid masterPID (master calls setsid, so its daemons share its session id)
// or whose environment has MAIL_CONFIG=etc (master exports it to daemons).
func instanceProcs(masterPID int, etc string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	want := []byte("MAIL_CONFIG=" + etc + "\x00")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		if masterPID > 1 && st.session == masterPID {
			out = append(out, pid)
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err == nil && bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			out = append(out, pid)
		}
	}
	return out
}

// killAll sends sig to every pid, ignoring processes that already exited.
func killAll(pids []int, sig syscall.Signal) {
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
}

// readPidFile reads Postfix's pid file (the pid is space-padded).
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("postfixlab: pid file %s: %w", path, err)
	}
	return pid, nil
}

// listening reports whether something listens on 127.0.0.1:port, read from
// /proc/net/tcp. Dialing instead would start an SMTP session, which shows up
// in the maillog and reaches the milters.
func listening(port int) bool {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	local := fmt.Sprintf("0100007F:%04X", port)
	any := fmt.Sprintf("00000000:%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st ...; st 0A = LISTEN
		if len(f) > 3 && f[3] == "0A" && (f[1] == local || f[1] == any) {
			return true
		}
	}
	return false
}

// traversable reports an error unless user uid (group gid) can search every
// directory from / down to dir. Postfix daemons run as user postfix and must
// reach the queue directory and any unix milter socket.
func traversable(dir string, uid, gid int) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("postfixlab: %w", err)
	}
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("postfixlab: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := fi.Mode().Perm()
		var x bool
		switch {
		case int(st.Uid) == uid:
			x = mode&0o100 != 0
		case int(st.Gid) == gid:
			x = mode&0o010 != 0
		default:
			x = mode&0o001 != 0
		}
		if !x {
			return fmt.Errorf("postfixlab: user postfix cannot search %s (mode %v, owner %d:%d); chmod it 0755 or use SocketDir",
				p, mode, st.Uid, st.Gid)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}
