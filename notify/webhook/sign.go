package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com/).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Errors of VerifySignature.
var (
	ErrNoSignature  = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrTimestamp    = errors.New("webhook: timestamp outside the tolerance")
	ErrBadSignature = errors.New("webhook: no matching signature")
)

// Sign returns the webhook-signature header value of a request:
// "v1," followed by the base64 HMAC-SHA256, keyed by secret, of
// id + "." + unix seconds of ts + "." + body. A secret "whsec_<base64>" is
// the decoded key; any other string (an invalid whsec_ one included) is
// used as raw bytes.
func Sign(secret, id string, ts time.Time, body []byte) string {
	key, err := secretKey(secret)
	if err != nil {
		key = []byte(secret)
	}
	return sign(key, id, ts.Unix(), body)
}

func sign(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a received request's Standard Webhooks headers
// against its body, for receivers written in Go. The timestamp must be
// within tolerance of now (zero tolerance: 5 minutes), which defeats
// replays; the signature header may list several space-separated
// signatures (key rotation), one match is enough. The errors are
// ErrNoSignature, ErrTimestamp and ErrBadSignature, possibly wrapped.
func VerifySignature(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not unix seconds", ErrTimestamp, tsText)
	}
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off", ErrTimestamp, d.Round(time.Second))
	}
	key, err := secretKey(secret)
	if err != nil {
		key = []byte(secret)
	}
	want := []byte(sign(key, id, ts, body))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrBadSignature
}
