package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"
)

// Options are the Server's collaborators; the zero value is usable.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Now is the clock for the Date header; nil: time.Now.
	Now func() time.Time
	// NewID returns a unique token for a Message-ID's left part and MIME
	// boundaries; nil: 20 random base32 characters.
	NewID func() string
	// Hostname is the EHLO name; empty: os.Hostname, else "localhost".
	Hostname string
	// Timeout bounds one submission to the MTA; zero: 60s.
	Timeout time.Duration
	// RetryAfter is the Retry-After of a 503; zero: 60s.
	RetryAfter time.Duration
}

// Server serves POST /api/v1/send.
type Server struct {
	cfg        Config
	keys       []key
	log        *slog.Logger
	comp       composer
	sub        submitter
	retryAfter string
}

type key struct {
	name    string
	hash    [sha256.Size]byte
	domains []string
}

// New returns a Server for a configuration; it validates cfg (filling its
// defaults) and has no side effects.
func New(cfg Config, opt Options) (*Server, error) {
	cfg.Key = append([]Key(nil), cfg.Key...)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: opt.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, k := range cfg.Key {
		var e key
		hex.Decode(e.hash[:], []byte(k.SHA256)) // validated
		e.name, e.domains = k.Name, k.SenderDomains
		s.keys = append(s.keys, e)
	}
	s.comp = composer{now: opt.Now, newID: opt.NewID, pools: cfg.Pools}
	if s.comp.now == nil {
		s.comp.now = time.Now
	}
	if s.comp.newID == nil {
		s.comp.newID = randomID
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	if strings.HasPrefix(cfg.Submit, "/") {
		s.sub = &sendmailSubmitter{path: cfg.Submit, timeout: timeout}
	} else {
		helo := opt.Hostname
		if helo == "" {
			helo, _ = os.Hostname()
		}
		if helo == "" || strings.ContainsAny(helo, " \r\n") {
			helo = "localhost"
		}
		s.sub = &smtpSubmitter{addr: cfg.Submit, helo: helo, timeout: timeout}
	}
	ra := opt.RetryAfter
	if ra <= 0 {
		ra = 60 * time.Second
	}
	s.retryAfter = fmt.Sprint(int(ra.Seconds()))
	return s, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

func randomID() string {
	b := make([]byte, 15)
	rand.Read(b)
	return strings.ToLower(b32.EncodeToString(b))
}

// Handler returns the API's routes: POST /api/v1/send and GET /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/send", s.send)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/send" {
			w.Header().Set("Allow", "POST")
			writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "use POST"})
			return
		}
		writeJSON(w, http.StatusNotFound, errorBody{Error: "not found"})
	})
	return mux
}

// NewHTTPServer wraps h with the timeouts the API listener uses.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		WriteTimeout: 120 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
}

// Response is the body of a 200, and of a 422 when every recipient was
// refused (then without MessageID and QueueID).
type Response struct {
	MessageID string     `json:"messageID,omitempty"` // the first message's Message-ID header, with angle brackets
	QueueID   string     `json:"queueID,omitempty"`   // Postfix's; leadpushctl message QUEUEID shows the ledger record
	Messages  []Sent     `json:"messages"`            // every message sent: one per recipient unless preserveRecipients
	Rejected  []Rejected `json:"rejected"`            // recipients the MTA refused, e.g. suppressed ones
}

// Sent is one message the request sent.
type Sent struct {
	MessageID string   `json:"messageID"`
	QueueID   string   `json:"queueID"`
	To        []string `json:"to"`
}

type errorBody struct {
	Sent     []Sent       `json:"sent,omitempty"` // what went before the failure (a retry would send it again)
	Error    string       `json:"error"`
	Fields   []FieldError `json:"fields,omitempty"`
	Rejected []Rejected   `json:"rejected,omitempty"`
	Reply    string       `json:"reply,omitempty"` // the MTA's refusal
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// authenticate returns the key of an "Authorization: Bearer KEY" header.
// Every configured hash is compared, in constant time.
func (s *Server) authenticate(r *http.Request) *key {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	var found *key
	for i := range s.keys {
		if subtle.ConstantTimeCompare(sum[:], s.keys[i].hash[:]) == 1 {
			found = &s.keys[i]
		}
	}
	return found
}

func (k *key) mayUse(domain string) bool {
	if len(k.domains) == 0 {
		return true
	}
	for _, d := range k.domains {
		if d == domain {
			return true
		}
	}
	return false
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	k := s.authenticate(r)
	if k == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="leadpush"`)
		writeJSON(w, http.StatusUnauthorized, errorBody{Error: "missing or unknown API key (Authorization: Bearer KEY)"})
		return
	}
	log := s.log.With("key", k.name)
	tooBig := func() {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("request larger than %d bytes", s.cfg.MaxSize)})
	}
	if r.ContentLength > int64(s.cfg.MaxSize) {
		tooBig()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxSize)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooBig()
			return
		}
		log.Debug("reading request", "err", err)
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "could not read the request body"})
		return
	}
	req, ferrs := decodeRequest(strings.NewReader(string(body)))
	if ferrs == nil {
		ferrs = req.validate(s.cfg.Pools)
	}
	if len(ferrs) > 0 {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid request", Fields: ferrs})
		return
	}
	if !k.mayUse(domainOf(req.From.Email)) {
		writeJSON(w, http.StatusForbidden, errorBody{Error: "this API key may not send from " + domainOf(req.From.Email),
			Fields: []FieldError{{Field: "from.email", Message: "domain not allowed for this key"}}})
		return
	}
	// One message per recipient (unless preserveRecipients): each message
	// has one recipient, so every open, click and unsubscribe names it.
	var sent []Sent
	var rejected []Rejected
	for _, c := range req.copies() {
		msg, msgID, err := s.comp.compose(c)
		if err != nil {
			log.Error("composing a message", "err", err)
			writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error", Sent: sent})
			return
		}
		res, err := s.sub.submit(r.Context(), req.From.Email, c.recipients(), msg)
		var refused *refusedError
		switch {
		case errors.Is(err, errAllRejected):
			log.Info("all recipients rejected", "message_id", msgID, "rejected", len(res.Rejected))
			rejected = append(rejected, res.Rejected...)
			continue
		case errors.As(err, &refused):
			log.Info("MTA refused a message", "message_id", msgID, "reply", refused.Reply)
			writeJSON(w, http.StatusBadGateway, errorBody{Error: "the MTA refused the message", Reply: refused.Reply, Sent: sent})
			return
		case err != nil:
			log.Warn("MTA unavailable", "message_id", msgID, "submit", s.cfg.Submit, "err", err)
			w.Header().Set("Retry-After", s.retryAfter)
			writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the mail server is unavailable; retry later", Sent: sent})
			return
		}
		rejected = append(rejected, res.Rejected...)
		log.Info("message submitted", "message_id", msgID, "queue_id", res.QueueID, "rejected", len(res.Rejected))
		var to []string
		for _, a := range c.recipientAddrs() {
			to = append(to, a.Email)
		}
		sent = append(sent, Sent{MessageID: msgID, QueueID: res.QueueID, To: to})
	}
	if len(sent) == 0 {
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: "every recipient was rejected; nothing was sent", Rejected: rejected})
		return
	}
	if rejected == nil {
		rejected = []Rejected{}
	}
	writeJSON(w, http.StatusOK, Response{MessageID: sent[0].MessageID, QueueID: sent[0].QueueID, Messages: sent, Rejected: rejected})
}
