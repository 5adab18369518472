package milter

import (
	"path"
	"strings"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/ledger"
)

// streams picks a message's stream by the rules of config.Stream: the
// envelope rules first (known at RCPT), then the X-Leadpush-Stream header,
// then the tag globs, then the default stream.
type streams struct {
	list   []config.Stream
	byName map[string]*config.Stream
	def    *config.Stream
	// defaultOnly: mail no envelope rule placed can only end in the
	// default stream (no other stream a header or tag can choose), so its
	// stream is known at RCPT. True without any [[stream]].
	defaultOnly bool
}

func newStreams(list []config.Stream) *streams {
	if len(list) == 0 {
		list = (&config.Config{}).Streams() // the implicit default stream alone
	}
	st := &streams{list: list, byName: map[string]*config.Stream{}}
	for i := range st.list {
		s := &st.list[i]
		st.byName[s.Name] = s
		if s.Default && st.def == nil {
			st.def = s
		}
	}
	if st.def == nil {
		st.def = &st.list[0]
	}
	st.defaultOnly = true
	for i := range st.list {
		// a split stream is chosen by the envelope alone
		if s := &st.list[i]; s != st.def && !s.SplitRecipients {
			st.defaultOnly = false
		}
	}
	return st
}

// atRCPT returns the stream of a message known from its envelope alone:
// the one its rules place it in, or the default when nothing else is
// possible; nil when a header or tag may still decide.
func (st *streams) atRCPT(pinned *config.Stream) *config.Stream {
	if pinned == nil && st.defaultOnly {
		return st.def
	}
	return pinned
}

// byEnvelope returns the first stream whose SASL user or sender rule
// matches, or nil.
func (st *streams) byEnvelope(saslUser, envFrom string) *config.Stream {
	from := ledger.NormalizeAddress(envFrom)
	_, domain, _ := strings.Cut(from, "@")
	for i := range st.list {
		s := &st.list[i]
		if saslUser != "" {
			for _, u := range s.SASLUsers {
				if u == saslUser {
					return s
				}
			}
		}
		if from != "" {
			for _, a := range s.Senders {
				a = strings.ToLower(a)
				switch {
				case strings.HasPrefix(a, "@"):
					if domain != "" && domain == a[1:] {
						return s
					}
				case strings.Contains(a, "@"):
					if a == from {
						return s
					}
				default:
					if domain != "" && domain == a {
						return s
					}
				}
			}
		}
	}
	return nil
}

// byTag returns the first stream with a tag glob matching tag, or nil.
func (st *streams) byTag(tag string) *config.Stream {
	if tag == "" {
		return nil
	}
	tag = strings.ToLower(tag)
	for i := range st.list {
		for _, g := range st.list[i].Tags {
			if ok, _ := path.Match(strings.ToLower(g), tag); ok {
				return &st.list[i]
			}
		}
	}
	return nil
}
