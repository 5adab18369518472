// Package api is Leadpush's HTTP send API: POST /api/v1/send takes a JSON
// message (seed 001), composes it as RFC 5322 mail (RFC 2045-2047 MIME) and
// submits it to the local MTA over SMTP, so that it passes through
// leadpush-milter like any other mail: one delivery path, the same tagging,
// tracking, suppression, bounces and webhooks.
package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"

	"github.com/leadpush/leadpush/internal/config"
)

// Config is the [api] section of leadpush.toml (internal/config holds the
// type, its defaults and its validation).
type Config = config.API

// Key is one API key of the [api] section.
type Key = config.APIKey

// NewKey returns a new random API key and the hex SHA-256 to put in
// [[api.key]] sha256.
func NewKey() (key, sha256hex string) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	key = "lp_" + hex.EncodeToString(b)
	return key, HashKey(key)
}

// HashKey is the hex SHA-256 of a key, as stored in the config.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}
