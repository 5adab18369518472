package tracker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// fakeRecorder keeps what it is given.
type fakeRecorder struct {
	mu      sync.Mutex
	events  []*ledger.Event
	largest int           // most events in one Add
	added   chan struct{} // receives after each Add, when non-nil
}

func (f *fakeRecorder) Add(msg *ledger.Message, events ...*ledger.Event) {
	f.mu.Lock()
	f.events = append(f.events, events...)
	f.largest = max(f.largest, len(events))
	f.mu.Unlock()
	if f.added != nil {
		f.added <- struct{}{}
	}
}

func (f *fakeRecorder) all() []*ledger.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*ledger.Event(nil), f.events...)
}

// fakeMessages serves messages from a map.
type fakeMessages struct {
	mu    sync.Mutex
	m     map[string]*ledger.Message
	calls int
}

func (f *fakeMessages) Message(ctx context.Context, id string) (*ledger.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	m, ok := f.m[id]
	if !ok {
		return nil, fmt.Errorf("message %s: %w", id, ledger.ErrNotFound)
	}
	c := *m
	return &c, nil
}

// env is a Server under test with its recorder.
type env struct {
	t    *testing.T
	s    *Server
	h    http.Handler
	adm  http.Handler // AdminHandler
	rec  *fakeRecorder
	kr   *token.Keyring
	msgs *fakeMessages
	stop func() []*ledger.Event
}

var testKeys = []string{token.NewKey("new"), token.NewKey("old")}

func mustKeyring(t testing.TB, specs ...string) *token.Keyring {
	t.Helper()
	kr, err := token.ParseKeyring(specs)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// newEnv starts a Server (with Run) whose Messages knows no message; edit
// lets a test change the options.
func newEnv(t *testing.T, edit func(*Options)) *env {
	t.Helper()
	e := &env{t: t, rec: &fakeRecorder{}, kr: mustKeyring(t, testKeys...), msgs: &fakeMessages{m: map[string]*ledger.Message{}}}
	opt := Options{Keyring: e.kr, Recorder: e.rec, Messages: e.msgs}
	if edit != nil {
		edit(&opt)
	}
	s, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	e.s, e.h, e.adm = s, s.Handler(), s.AdminHandler()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	var once sync.Once
	e.stop = func() []*ledger.Event {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
		})
		return e.rec.all()
	}
	t.Cleanup(func() { e.stop() })
	return e
}

// sign mints a token; url only for clicks.
func (e *env) sign(kind token.Kind, msgID, rcpt, url string) string {
	return signWith(e.t, e.kr, kind, msgID, rcpt, url)
}

func signWith(t testing.TB, kr *token.Keyring, kind token.Kind, msgID, rcpt, url string) string {
	t.Helper()
	tok, err := kr.Sign(token.Claims{Kind: kind, MessageID: msgID, Recipient: rcpt, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// addMessage makes a message known to Messages, created an hour ago.
func (e *env) addMessage(rcpts ...string) string {
	id := token.NewMessageID()
	e.msgs.mu.Lock()
	e.msgs.m[id] = &ledger.Message{ID: id, Recipients: rcpts, CreatedAt: time.Now().Add(-time.Hour)}
	e.msgs.mu.Unlock()
	return id
}

type req struct {
	method, target, body, ctype, remote, ua string
	xff                                     []string
	admin                                   bool // to the operators' listener
}

func (e *env) do(r req) *httptest.ResponseRecorder {
	e.t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.target, body)
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	if r.ua != "" {
		hr.Header.Set("User-Agent", r.ua)
	}
	if r.ctype != "" {
		hr.Header.Set("Content-Type", r.ctype)
	} else if r.body != "" {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, v := range r.xff {
		hr.Header.Add("X-Forwarded-For", v)
	}
	w := httptest.NewRecorder()
	if r.admin {
		e.adm.ServeHTTP(w, hr)
	} else {
		e.h.ServeHTTP(w, hr)
	}
	return w
}

const chromeUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"

func byType(events []*ledger.Event) map[ledger.EventType][]*ledger.Event {
	m := map[ledger.EventType][]*ledger.Event{}
	for _, ev := range events {
		m[ev.Type] = append(m[ev.Type], ev)
	}
	return m
}

func types(events []*ledger.Event) []ledger.EventType {
	var s []ledger.EventType
	for _, ev := range events {
		s = append(s, ev.Type)
	}
	return s
}
