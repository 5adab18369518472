package config

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/leadpush/leadpush/ledger"
)

// Stream is one message stream ([[stream]]): Postmark's message streams.
// A message belongs to exactly one. Which one is decided, in this order:
//
//  1. the envelope rules (SASLUsers, Senders) of the streams, in file
//     order, first match: known at RCPT, so suppressed recipients are
//     refused there and split_recipients can work; an X-Leadpush-Stream
//     header cannot move such a message to another stream (it is ignored,
//     logged and counted), so an application cannot escape a stream's
//     unsubscribes by naming another;
//  2. the X-Leadpush-Stream header of a trusted message naming a
//     configured stream (an unknown name: the default stream, logged and
//     counted; a stream with split_recipients cannot be named);
//  3. the Tags globs of the streams, in file order, first match;
//  4. the default stream.
type Stream struct {
	Name string `toml:"name"` // lower case letters, digits, '.', '_', '-'; at most 64
	// Kind is "transactional" (default) or "broadcast". An unsubscribe
	// whose UnsubscribeScope is "broadcast" applies to every broadcast
	// stream.
	Kind string `toml:"kind"`
	// Default makes this the stream of messages no rule or header places;
	// at most one. Without one, a stream named "default" is, else an
	// implicit transactional stream named "default" with every default
	// but unsubscribe_scope, which is "all" (as before streams existed).
	Default bool `toml:"default"`
	// ListUnsubscribe adds List-Unsubscribe and List-Unsubscribe-Post
	// (default true, seed 002: all mail gets it); a transactional stream
	// may turn it off.
	ListUnsubscribe *bool `toml:"list_unsubscribe"`
	// Tracking is the mode of messages without X-Leadpush-Tracking: all
	// (default, seed 000), opens, clicks or none. An invalid header value
	// still means all.
	Tracking string `toml:"tracking"`
	// UnsubscribeScope is where an unsubscribe from this stream's mail
	// suppresses the address: "stream" (default: this stream only),
	// "broadcast" (every broadcast stream) or "all" (every stream). Hard
	// bounces and spam complaints always suppress for every stream.
	UnsubscribeScope string `toml:"unsubscribe_scope"`
	// SplitRecipients answers the 2nd and later RCPT of a tracked SMTP
	// message with 452 4.5.3 (RFC 5321 4.5.3.1.10), so each message has
	// one recipient and its opens, clicks and unsubscribes name them. Only
	// on a stream chosen from the envelope (SASLUsers or Senders, no Tags,
	// not the default stream); never applied to non-SMTP mail.
	SplitRecipients bool `toml:"split_recipients"`
	// SASLUsers are SASL login names ({auth_authen}) whose mail is in
	// this stream.
	SASLUsers []string `toml:"sasl_users"`
	// Senders are envelope senders whose mail is in this stream: an
	// address (app@example.com) or a domain (@example.com or example.com).
	Senders []string `toml:"senders"`
	// Tags are globs (path.Match: *, ?, [a-z]) matched against the
	// message's X-Leadpush-Tag, case-insensitively.
	Tags []string `toml:"tags"`
}

// Stream kinds and unsubscribe scopes.
const (
	StreamTransactional = "transactional"
	StreamBroadcast     = "broadcast"
	ScopeStream         = "stream"
	ScopeBroadcast      = "broadcast"
	ScopeAll            = "all"
	DefaultStreamName   = "default"
)

var streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Broadcast reports whether the stream's kind is broadcast.
func (s Stream) Broadcast() bool { return s.Kind == StreamBroadcast }

// AddsListUnsubscribe is list_unsubscribe with its default.
func (s Stream) AddsListUnsubscribe() bool { return s.ListUnsubscribe == nil || *s.ListUnsubscribe }

// TrackingMode is tracking with its default.
func (s Stream) TrackingMode() ledger.TrackingMode {
	if s.Tracking == "" {
		return ledger.TrackAll
	}
	return ledger.TrackingMode(s.Tracking)
}

// Envelope reports whether the stream has rules the milter can apply at
// RCPT (SASL user, sender).
func (s Stream) Envelope() bool { return len(s.SASLUsers) > 0 || len(s.Senders) > 0 }

// LedgerScope is the suppression scope an unsubscribe from this stream
// writes (ledger.Suppression.Stream).
func (s Stream) LedgerScope() string {
	switch s.UnsubscribeScope {
	case ScopeAll:
		return ledger.ScopeAll
	case ScopeBroadcast:
		return ledger.ScopeBroadcast
	}
	return s.Name
}

// Streams returns the configured streams with their defaults, and the
// implicit default stream last when none is the default.
func (c *Config) Streams() []Stream {
	out := make([]Stream, 0, len(c.Stream)+1)
	hasDefault := false
	for _, s := range c.Stream {
		if s.Kind == "" {
			s.Kind = StreamTransactional
		}
		if s.UnsubscribeScope == "" {
			s.UnsubscribeScope = ScopeStream
		}
		hasDefault = hasDefault || s.Default
		out = append(out, s)
	}
	if !hasDefault {
		for i := range out {
			if out[i].Name == DefaultStreamName {
				out[i].Default, hasDefault = true, true
			}
		}
	}
	if !hasDefault {
		// The implicit stream keeps the behaviour from before streams: an
		// unsubscribe from its mail suppresses for every stream.
		out = append(out, Stream{Name: DefaultStreamName, Kind: StreamTransactional, Default: true, UnsubscribeScope: ScopeAll})
	}
	return out
}

// streamUnsubscribeScopes is the ledger Policy's map of stream names to
// the scope their unsubscribes write.
func (c *Config) streamUnsubscribeScopes() map[string]string {
	m := map[string]string{}
	for _, s := range c.Streams() {
		m[s.Name] = s.LedgerScope()
	}
	return m
}

func (c *Config) validateStreams(bad func(key, format string, args ...any)) {
	seen := map[string]bool{}
	defaults := 0
	for i, s := range c.Stream {
		key := fmt.Sprintf("stream %d", i+1)
		if !streamName.MatchString(s.Name) {
			bad(key+".name", "%q: want 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", s.Name)
		} else if seen[s.Name] {
			bad(key+".name", "%q is used twice", s.Name)
		}
		seen[s.Name] = true
		key = "stream " + s.Name
		switch s.Kind {
		case "", StreamTransactional, StreamBroadcast:
		default:
			bad(key+".kind", "%q: want \"transactional\" or \"broadcast\"", s.Kind)
		}
		switch s.UnsubscribeScope {
		case "", ScopeStream, ScopeBroadcast, ScopeAll:
		default:
			bad(key+".unsubscribe_scope", "%q: want \"stream\", \"broadcast\" or \"all\"", s.UnsubscribeScope)
		}
		if s.Tracking != "" && !validTracking(s.Tracking) {
			bad(key+".tracking", "%q: want all, opens, clicks or none", s.Tracking)
		}
		if s.Default {
			defaults++
		}
		for _, t := range s.Tags {
			if _, err := path.Match(strings.ToLower(t), ""); err != nil || t == "" {
				bad(key+".tags", "%q is not a glob", t)
			}
		}
		for _, a := range s.Senders {
			if a == "" || strings.ContainsAny(a, " <>") || strings.Count(a, "@") > 1 {
				bad(key+".senders", "%q: want an address or a domain (@example.com)", a)
			}
		}
		for _, u := range s.SASLUsers {
			if u == "" {
				bad(key+".sasl_users", "empty name")
			}
		}
		if s.SplitRecipients {
			// The milter answers RCPT before it sees a header: it can split
			// only what the envelope already places in the stream.
			switch {
			case len(s.Tags) > 0:
				bad(key+".split_recipients", "a stream chosen by tag cannot split recipients: the tag is known only after RCPT")
			case !s.Envelope():
				bad(key+".split_recipients", "needs sasl_users or senders: only a stream chosen from the envelope can split recipients at RCPT")
			case s.Default || (s.Name == DefaultStreamName && !c.hasDefaultFlag()):
				bad(key+".split_recipients", "the default stream takes mail no rule placed, known only at end of message: it cannot split recipients")
			}
		}
	}
	if defaults > 1 {
		bad("stream", "%d streams say default = true: at most one", defaults)
	}
}

func (c *Config) hasDefaultFlag() bool {
	for _, s := range c.Stream {
		if s.Default {
			return true
		}
	}
	return false
}

func validTracking(t string) bool {
	for _, m := range ledger.TrackingModes {
		if string(m) == t {
			return true
		}
	}
	return false
}
