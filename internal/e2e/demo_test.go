package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestDemo is `make demo`: the seed's swaks example through a private
// Postfix with leadpush-milter, printing what the recipient received and
// what Leadpush recorded. It runs only when LEADPUSH_DEMO=1.
func TestDemo(t *testing.T) {
	if os.Getenv("LEADPUSH_DEMO") != "1" {
		t.Skip("set LEADPUSH_DEMO=1 (make demo)")
	}
	e := newEnv(t, envOptions{})
	args := e.seedSwaks("clicks")
	fmt.Printf("\n== 1. swaks, as in the seed (submission port %s, STARTTLS + AUTH LOGIN as %s):\n", e.lab.SubmitAddr, e.lab.SASLUser)
	fmt.Println("   swaks " + strings.Join(quoteArgs(args), " "))
	got, qid := e.delivered(t, args...)
	fmt.Printf("\n== 2. What the recipient received (queue id %s; relayed to the lab's sink; envelope from <%s>):\n\n", qid, got.From)
	fmt.Println(strings.ReplaceAll(string(got.Data), "\r\n", "\n"))
	m := e.message(t, qid)
	fmt.Println("== 3. What Leadpush recorded: leadpushctl messages --json")
	fmt.Print(e.ctl(t, "messages", "--json"))
	fmt.Printf("\n== 4. leadpushctl message %s\n\n", m.ID)
	fmt.Print(e.ctl(t, "message", m.ID))
	fmt.Printf("\nTag %q, tracking %q; no X-Leadpush-* header reached the recipient: %v\n",
		m.Tag, m.Tracking, !strings.Contains(strings.ToLower(string(got.Data)), "x-leadpush"))
	if m.Tag != "password reset" || m.Tracking != "clicks" {
		t.Fatalf("recorded %+v", m)
	}
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return out
}
