package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/leadpush/leadpush/internal/units"
)

// API is the [api] section of leadpush.toml: leadpushd's HTTP send API. The zero value is valid and
// means the API is off (Listen empty).
type API struct {
	// Listen is the host:port of the API's own HTTP listener, e.g.
	// "127.0.0.1:8025". Empty: the API is off. Serve it behind a TLS proxy
	// unless it stays on loopback.
	Listen string `toml:"listen"`
	// Submit is where composed messages go: "host:port" of an SMTP listener
	// of the local MTA (default "127.0.0.1:25"), or the absolute path of
	// Postfix's sendmail(1), which queues without telling which recipients
	// are suppressed and cannot select a pool.
	Submit string `toml:"submit"`
	// Key lists the API keys ([[api.key]]); none means every request is 401.
	Key []APIKey `toml:"key"`
	// Pools maps an "ippool" name to the Postfix transport that sends
	// through it, e.g. marketing = "smtp-marketing:" (see
	// contrib/postfix/ippool.cf). Empty: any ippool is a 400.
	Pools map[string]string `toml:"pools"`
	// MaxSize caps the request body in bytes; larger requests get 413.
	// Zero: 10 MiB.
	MaxSize units.Size `toml:"max_size"`
}

// APIKey is one API key. The key itself is never stored, only its SHA-256.
type APIKey struct {
	Name   string `toml:"name"`   // shown in logs
	SHA256 string `toml:"sha256"` // hex SHA-256 of the key (leadpushctl api-key new NAME)
	// SenderDomains limits the From addresses the key may use (exact
	// domains, case-insensitive). Empty: any sender.
	SenderDomains []string `toml:"sender_domains"`
}

// Defaults of the [api] section.
const (
	DefaultAPISubmit  = "127.0.0.1:25"
	DefaultAPIMaxSize = 10 << 20
)

// Enabled reports whether the API is to be served.
func (c *API) Enabled() bool { return c.Listen != "" }

// Validate checks every value and fills defaults (Submit, MaxSize). Keys
// are reported by position and name, never by value.
func (c *API) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("api."+key+": "+format, args...))
	}
	if c.Submit == "" {
		c.Submit = DefaultAPISubmit
	}
	if c.MaxSize == 0 {
		c.MaxSize = DefaultAPIMaxSize
	}
	if c.MaxSize < 1024 {
		bad("max_size", "%d is too small", c.MaxSize)
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "%q: want host:port", c.Listen)
		}
	}
	if strings.HasPrefix(c.Submit, "/") {
		if filepath.Clean(c.Submit) != c.Submit {
			bad("submit", "%q: want a clean absolute path", c.Submit)
		}
	} else if _, _, err := net.SplitHostPort(c.Submit); err != nil {
		bad("submit", "%q: want host:port or the path of sendmail", c.Submit)
	}
	seen := map[string]bool{}
	for i, k := range c.Key {
		where := fmt.Sprintf("key %d (%q)", i+1, k.Name)
		if k.Name == "" {
			bad(where, "name must be set")
		}
		h := strings.ToLower(k.SHA256)
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			bad(where, "sha256 must be 64 hex digits (leadpushctl api-key new NAME prints it)")
		} else if seen[h] {
			bad(where, "the same key twice")
		}
		seen[h] = true
		c.Key[i].SHA256 = h
		for j, d := range k.SenderDomains {
			d = strings.ToLower(strings.TrimSpace(d))
			if d == "" || strings.ContainsAny(d, "@ /:<>") {
				bad(where, "sender_domains: %q is not a domain", k.SenderDomains[j])
			}
			c.Key[i].SenderDomains[j] = d
		}
	}
	for name, tr := range c.Pools {
		if name == "" || !validToken(name) {
			bad("pools", "%q is not a pool name (letters, digits, - _ .)", name)
		}
		t, _, ok := strings.Cut(tr, ":")
		if !ok || t == "" || !validToken(t) || strings.ContainsAny(tr, " \t\r\n") {
			bad("pools", "%s = %q: want a Postfix transport such as \"smtp-marketing:\"", name, tr)
		}
	}
	return errors.Join(errs...)
}

func validToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}
