package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/notify/webhook"
)

// receiver is a real HTTP server on loopback that keeps every request
// whose Standard Webhooks signature verifies, and fails the test for any
// that does not.
type receiver struct {
	t      *testing.T
	secret string
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	ctypes []string
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodHead {
			w.WriteHeader(200) // URL verification (seed 002)
			return
		}
		body, _ := io.ReadAll(req.Body)
		if err := webhook.VerifySignature(secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(400)
			return
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, body)
		r.ctypes = append(r.ctypes, req.Header.Get("Content-Type"))
		r.mu.Unlock()
		w.WriteHeader(200)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) snapshot() ([][]byte, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...), append([]string(nil), r.ctypes...)
}

// TestWebhooksThroughPostfix: the seed's swaks example with a Contact-ID
// header gives processed and delivered at a json endpoint (seed 001) and
// sent at a batch endpoint (seed 002), each with Contact-ID and the tag.
func TestWebhooksThroughPostfix(t *testing.T) {
	jsonR := newReceiver(t, "whsec_"+"c2VjcmV0LWZvci1qc29uLWVuZHBvaW50")
	batchR := newReceiver(t, "plain batch secret")
	e := newEnv(t, envOptions{daemon: true, extraToml: fmt.Sprintf(`
[[webhook]]
name = "app-json"
url = %q
format = "json"
secret = %q

[[webhook]]
name = "app-batch"
url = %q
format = "batch"
param = "leadersend_events"
secret = %q
events = ["delivered", "open", "click", "hard_bounce"]
`, jsonR.srv.URL+"/hooks/json", jsonR.secret, batchR.srv.URL+"/hooks/batch", batchR.secret)})
	_, qid := e.delivered(t, e.seedSwaks("clicks", "--header", "Contact-ID: 12345")...)
	m := e.message(t, qid)

	// json: one event per POST, exactly seed 001's shape
	var got []webhook.Payload
	deadline := time.Now().Add(30 * time.Second)
	for {
		bodies, ctypes := jsonR.snapshot()
		got = got[:0]
		for i, b := range bodies {
			if ctypes[i] != "application/json" {
				t.Errorf("json endpoint got Content-Type %q", ctypes[i])
			}
			var p webhook.Payload
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("json payload %s: %v", b, err)
			}
			if p.Event.MessageID == m.ID {
				got = append(got, p)
			}
		}
		types := map[int]bool{}
		for _, p := range got {
			types[p.Event.Type] = true
		}
		if types[webhook.TypeProcessed] && types[webhook.TypeDelivered] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("json endpoint: want Processed (0) and Delivered (2) for %s, got %+v", m.ID, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range got {
		em := p.EmailMessage
		if em.Headers["Contact-ID"] != "12345" || em.MessageID != m.ID || em.Subject != "Your password reset link" ||
			em.From.Email != "app@example.com" || len(em.To) != 1 || em.To[0].Email != "customer@example.com" || p.Event.EventID == "" {
			t.Errorf("json event type %d: %+v", p.Event.Type, p)
		}
		if len(em.Tags) != 1 || em.Tags[0] != "password reset" {
			t.Errorf("json event type %d: tags %v", p.Event.Type, em.Tags)
		}
		if em.Stream != "default" { // the implicit stream, with no [[stream]]
			t.Errorf("json event type %d: stream %q, want default", p.Event.Type, em.Stream)
		}
	}

	// batch: form-encoded leadersend_events, processed filtered out
	deadline = time.Now().Add(30 * time.Second)
	for {
		bodies, ctypes := batchR.snapshot()
		var sent []webhook.BatchEvent
		for i, b := range bodies {
			if ctypes[i] != "application/x-www-form-urlencoded" {
				t.Errorf("batch endpoint got Content-Type %q", ctypes[i])
			}
			form, err := url.ParseQuery(string(b))
			if err != nil {
				t.Fatal(err)
			}
			var evs []webhook.BatchEvent
			if err := json.Unmarshal([]byte(form.Get("leadersend_events")), &evs); err != nil {
				t.Fatalf("batch payload %q: %v", b, err)
			}
			for _, ev := range evs {
				if ev.Msg.ID != m.ID {
					continue
				}
				if ev.Event != "sent" {
					t.Errorf("batch endpoint filtered to delivered/open/click/hard_bounce got %q", ev.Event)
				}
				sent = append(sent, ev)
			}
		}
		if len(sent) > 0 {
			ev := sent[0]
			if ev.Msg.Headers["Contact-ID"] != "12345" || strings.Join(ev.Msg.Tags, ",") != "password reset" ||
				ev.Msg.Email != "customer@example.com" || ev.Msg.Subject != "Your password reset link" || ev.Timestamp == 0 ||
				ev.Msg.Stream != "default" {
				t.Errorf("batch sent event %+v", ev)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch endpoint: no sent event for %s; bodies: %q", m.ID, bodies)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := e.ctl(t, "webhooks", "list"); !strings.Contains(out, "app-json") || !strings.Contains(out, "app-batch") || !strings.Contains(out, "true") {
		t.Errorf("leadpushctl webhooks list:\n%s", out)
	}
}
