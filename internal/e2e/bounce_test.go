package e2e

import (
	"bufio"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

type ctlEvent struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	Recipient string `json:"recipient"`
	Detail    struct {
		Status string `json:"status"`
		Report string `json:"delivery_report"`
		Relay  string `json:"relay"`
		Source string `json:"source"`
		Reason string `json:"reason"`
	} `json:"detail"`
}

// events lists the ledger's events through leadpushctl.
func (e *env) events(t *testing.T, args ...string) []ctlEvent {
	t.Helper()
	out := e.ctl(t, append([]string{"events", "--json"}, args...)...)
	var evs []ctlEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev ctlEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("events --json printed %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// waitEvents polls until ok is satisfied by the events, or fails showing them.
func (e *env) waitEvents(t *testing.T, what string, ok func([]ctlEvent) bool, args ...string) []ctlEvent {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := e.events(t, args...)
		if ok(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; events: %+v", what, evs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func find(evs []ctlEvent, typ, rcpt string) []ctlEvent {
	var out []ctlEvent
	for _, ev := range evs {
		if ev.Type == typ && (rcpt == "" || ev.Recipient == rcpt) {
			out = append(out, ev)
		}
	}
	return out
}

// TestDeliveryStatusBouncesAndSuppression is issue 5's whole path: the
// relay answers 250, 550 5.1.1 and 452 4.2.2 for three recipients; the
// mail-log follower records delivered, hard_bounce and soft_bounce; Postfix's
// own bounce comes back to the VERP address through the pipe transport and
// is matched without a second event; the next message to the bounced
// address is refused at RCPT with 550 5.7.1 and a reject event.
func TestDeliveryStatusBouncesAndSuppression(t *testing.T) {
	e := newEnv(t, envOptions{daemon: true, ingest: true, labOptions: postfixlab.Options{
		ExtraMain: "relay_domains = bounce.example.com\n" +
			"transport_maps = inline:{ bounce.example.com=leadpush-ingest: }\n" +
			"leadpush-ingest_destination_recipient_limit = 1\n",
		ExtraMaster: "leadpush-ingest unix - n n - - pipe\n" +
			"  flags=Rq user=nobody argv={{BIN}}/leadpushctl -config {{CONFIG}} ingest --recipient ${recipient}\n",
	}})
	e.lab.Sink.SetRcptReply("nobody@example.net", 550, "5.1.1 <nobody@example.net>: no such user")
	e.lab.Sink.SetRcptReply("full@example.net", 452, "4.2.2 <full@example.net>: mailbox full")
	out, qid, err := e.lab.Swaks(t, "--from", "app@example.com", "--to", "ok@example.net,nobody@example.net,full@example.net",
		"--header", "Subject: three recipients", "--header", "X-Leadpush-Tag: bounce-test", "--body", "hello")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := e.message(t, qid)
	evs := e.waitEvents(t, "delivered, hard_bounce and soft_bounce", func(evs []ctlEvent) bool {
		return len(find(evs, "delivered", "ok@example.net")) == 1 && len(find(evs, "hard_bounce", "nobody@example.net")) == 1 &&
			len(find(evs, "soft_bounce", "full@example.net")) == 1
	}, "--message", m.ID)
	if hb := find(evs, "hard_bounce", "nobody@example.net")[0]; hb.Detail.Status != "5.1.1" || !strings.Contains(hb.Detail.Report, "no such user") {
		t.Errorf("hard bounce %+v", hb)
	}
	if sb := find(evs, "soft_bounce", "full@example.net")[0]; sb.Detail.Status != "4.2.2" || !strings.Contains(sb.Detail.Report, "mailbox full") {
		t.Errorf("soft bounce %+v", sb)
	}
	if d := find(evs, "delivered", "ok@example.net")[0]; d.Detail.Status != "2.0.0" || d.Detail.Relay == "" {
		t.Errorf("delivered %+v", d)
	}

	// Postfix's bounce for nobody@ went to bounce+TOKEN@bounce.example.com,
	// through the pipe transport into leadpushctl ingest.
	deadline := time.Now().Add(30 * time.Second)
	for {
		in := e.ctl(t, "inbound", "--kind", "bounce")
		if strings.Contains(in, m.ID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix's bounce never reached leadpushctl ingest matched to %s; inbound:\n%s\nmaillog:\n%s", m.ID, in, e.ctl(t, "inbound"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if hb := find(e.events(t, "--message", m.ID), "hard_bounce", ""); len(hb) != 1 {
		t.Errorf("%d hard bounces after the DSN arrived too, want 1: %+v", len(hb), hb)
	}
	if sup := e.ctl(t, "suppressions", "list"); !strings.Contains(sup, "nobody@example.net") || !strings.Contains(sup, "hard_bounce") {
		t.Errorf("suppressions:\n%s", sup)
	}

	// The next message to the hard-bounced address is refused at RCPT.
	e.waitMilterSuppressions(t, 1)
	out, _, err = e.lab.Swaks(t, "--from", "app@example.com", "--to", "nobody@example.net",
		"--header", "Subject: again", "--body", "hello again")
	if err == nil || !strings.Contains(out, "550 5.7.1") {
		t.Fatalf("second message to a hard-bounced address: err=%v\n%s", err, out)
	}
	e.waitEvents(t, "a reject event", func(evs []ctlEvent) bool { return len(find(evs, "reject", "nobody@example.net")) == 1 }, "--type", "reject")
}

// TestSuppressionDropThroughPostfix: with [suppression] action = "drop" a
// suppressed recipient is accepted at RCPT and removed at end of message;
// Postfix delivers to the others only, and a reject event is recorded.
func TestSuppressionDropThroughPostfix(t *testing.T) {
	e := newEnv(t, envOptions{extraToml: "[suppression]\naction = \"drop\"\n"})
	e.ctl(t, "suppressions", "add", "--reason", "unsubscribe", "gone@example.net")
	e.waitMilterSuppressions(t, 1)
	out, qid, err := e.lab.Swaks(t, "--from", "app@example.com", "--to", "ok@example.net,gone@example.net",
		"--header", "Subject: drop test", "--body", "hello")
	if err != nil || qid == "" {
		t.Fatalf("swaks: the message must be accepted with action drop: %v\n%s", err, out)
	}
	got := e.lab.Sink.WaitFor(t, func(r postfixlab.Received) bool { return strings.Contains(string(r.Data), " id "+qid) }, 20*time.Second)
	if len(got.To) != 1 || got.To[0] != "ok@example.net" {
		t.Errorf("relay got recipients %v, want only ok@example.net", got.To)
	}
	e.lab.WaitDelivered(t, qid, 20*time.Second)
	if log := e.lab.WaitLog(t, regexp.MustCompile(qid+`: to=<ok@example.net>`), 5*time.Second); len(log) != 1 {
		t.Errorf("maillog: %q", log)
	}
	e.waitEvents(t, "a reject event for the dropped recipient", func(evs []ctlEvent) bool {
		return len(find(evs, "reject", "gone@example.net")) == 1
	}, "--type", "reject")
	// ok@ was answered from the in-memory set, gone@ by the database.
	if m, l := e.milterMetric(t, "leadpush_milter_suppression_memory_answers_total"), e.milterMetric(t, "leadpush_milter_suppression_db_lookups_total"); m != 1 || l != 1 {
		t.Errorf("suppression answers: %v from memory, %v from the database; want 1 and 1", m, l)
	}
}
