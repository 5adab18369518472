package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	gomilter "github.com/emersion/go-milter"
)

// replay is the -replay mode: the Postfix benchmark's floor. At end of
// message it makes the modifications leadpush-milter makes to the
// benchmark's message, taken from one message leadpush-milter rewrote
// (a fixed body, a fixed List-Unsubscribe value), without doing any of the
// work: it deletes the X-Leadpush-* headers it saw, adds List-Unsubscribe
// and List-Unsubscribe-Post, sets a unique VERP-shaped envelope sender and
// replaces the body. Postfix's share of a tracked message costs what it
// costs with this milter; leadpush-milter's own work is the difference.
type replay struct {
	noop
	body        []byte // the replacement, with CRLF line ends
	unsubscribe string // the List-Unsubscribe value
	control     map[string]int
	order       []string
}

var replayed atomic.Int64

// reset forgets the control headers of the last message.
func (r *replay) reset() { clear(r.control); r.order = r.order[:0] }

func (r *replay) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	r.reset()
	return gomilter.RespContinue, nil
}

func (r *replay) Header(name, _ string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.HasPrefix(strings.ToLower(name), "x-leadpush-") {
		if r.control[name] == 0 {
			r.order = append(r.order, name)
		}
		r.control[name]++
	}
	return r.cont(), nil
}

func (r *replay) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	messages.Add(1)
	for _, name := range r.order {
		for i := r.control[name]; i >= 1; i-- {
			if err := m.ChangeHeader(i, name, ""); err != nil {
				return nil, err
			}
		}
	}
	if err := m.AddHeader("List-Unsubscribe", r.unsubscribe); err != nil {
		return nil, err
	}
	if err := m.AddHeader("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"); err != nil {
		return nil, err
	}
	// unique per message, as a VERP address is, and as long as one
	if err := m.ChangeFrom(fmt.Sprintf("<bounce+%048d@bounces.example.com>", replayed.Add(1))); err != nil {
		return nil, err
	}
	for b := r.body; len(b) > 0; {
		n := min(len(b), 65535)
		if err := m.ReplaceBody(b[:n]); err != nil {
			return nil, err
		}
		b = b[n:]
	}
	return gomilter.RespContinue, nil
}

func (r *replay) Abort(*gomilter.Modifier) error {
	aborts.Add(1)
	r.reset()
	return nil
}

// loadReplay reads a message leadpush-milter delivered: its body and its
// List-Unsubscribe value (unfolded).
func loadReplay(file string) (body []byte, unsubscribe string, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	head, body, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, "", errors.New(file + ": no header/body separator")
	}
	unfolded := strings.ReplaceAll(string(head), "\n ", " ")
	unfolded = strings.ReplaceAll(unfolded, "\n\t", " ")
	for _, line := range strings.Split(unfolded, "\n") {
		if v, ok := strings.CutPrefix(line, "List-Unsubscribe: "); ok {
			unsubscribe = v
		}
	}
	if unsubscribe == "" {
		return nil, "", errors.New(file + ": no List-Unsubscribe header")
	}
	return bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n")), unsubscribe, nil
}
