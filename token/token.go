// Package token signs and verifies Leadpush tracking tokens.
//
// A token is self-contained: it carries the message id, the recipient and,
// for clicks, the target URL, followed by a truncated HMAC-SHA256 under a key
// from the keyring. The tracker needs no database lookup to answer a hit, and
// nobody without a key can mint a token, so the click redirect is never an
// open redirect and the unsubscribe endpoint never unsubscribes a stranger.
//
// Two encodings exist:
//
//   - Web tokens ([Keyring.Sign]) go into the /o/, /c/ and /u/ URLs:
//     base64url without padding, MAC truncated to 96 bits.
//   - Address tokens ([Keyring.SignAddress]) go into the local part of the
//     VERP return path (bounce+TOKEN@) and the mailto: unsubscribe address
//     (unsub+TOKEN@). RFC 5321 section 4.5.3.1.1 caps a local part at 64
//     octets, and some MTAs change its case, so they carry only the message
//     id, use lowercase base32 and a 64-bit MAC: at most 57 characters with
//     the "bounce+" prefix. The recipient of a bounce comes from the DSN; the
//     one of an unsubscribe mail from its sender.
//
// Keys rotate: the first key of the ring signs, every key verifies, so links
// already sent keep working while their key stays in the ring.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind says what a token is for. It is covered by the MAC, so a token minted
// for one endpoint is refused by the others.
type Kind byte

// Token kinds.
const (
	Open        Kind = 'o' // open pixel, /o/
	Click       Kind = 'c' // click redirect, /c/
	Unsubscribe Kind = 'u' // unsubscribe page and RFC 8058 one-click POST, /u/
	Return      Kind = 'b' // VERP return path, bounce+TOKEN@ (address token)
	UnsubMail   Kind = 'm' // mailto: unsubscribe address, unsub+TOKEN@ (address token)
	// Confirm is the link, sent to an address typed on the unsubscribe page
	// of a message with several recipients, that unsubscribes that address
	// (/u/). It carries the recipient, and its expiry in URL as Unix
	// seconds (ConfirmExpiry).
	Confirm Kind = 'k'
)

// Limits on what a token may carry; Sign truncates nothing, so callers must
// keep within them (the rewriter leaves longer URLs alone).
const (
	MaxRecipient = 320
	MaxURL       = 8 << 10
	// MaxLen is the longest web token Verify accepts.
	MaxLen = 12 << 10
	// MaxKeyID is the longest key id: keeps address tokens within 64 octets.
	MaxKeyID = 8
	// MinSecret is the shortest key secret accepted, in bytes.
	MinSecret = 16

	idLen      = 12 // raw message id bytes
	webMACLen  = 12
	addrMACLen = 8
	version    = 1
)

// ErrInvalid is returned for every token that does not verify: malformed,
// truncated, of another kind, signed by an unknown key or forged. Callers
// answer 404 and record nothing.
var ErrInvalid = errors.New("token: invalid")

// Claims is what a token says.
type Claims struct {
	Kind      Kind
	MessageID string // as minted by NewMessageID
	Recipient string // empty when the message had several recipients
	URL       string // the original link; Click tokens only
	KeyID     string // the key that signed it; set by Verify
}

var (
	idEnc   = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	addrEnc = idEnc
	webEnc  = base64.RawURLEncoding
)

// NewMessageID mints an unguessable message id: 96 random bits as 20
// lowercase base32 characters.
func NewMessageID() string {
	var b [idLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("token: crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return idEnc.EncodeToString(b[:])
}

// ValidMessageID reports whether s has the form NewMessageID mints.
func ValidMessageID(s string) bool {
	_, err := rawID(s)
	return err == nil
}

func rawID(s string) ([]byte, error) {
	if len(s) != 20 {
		return nil, ErrInvalid
	}
	b, err := idEnc.DecodeString(s)
	if err != nil || len(b) != idLen {
		return nil, ErrInvalid
	}
	return b, nil
}

type key struct {
	id     string
	secret []byte
	// macs holds keyed HMAC states: Reset returns one to its keyed state,
	// which costs far less than hmac.New (a milter signs ~20 tokens per
	// message).
	macs *sync.Pool
}

func newKey(id string, secret []byte) key {
	return key{id: id, secret: secret, macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}}
}

// Keyring holds the signing keys. The zero Keyring signs nothing and
// verifies nothing.
type Keyring struct {
	keys []key
}

// ParseKeyring reads keys written as "ID:BASE64SECRET" (standard or URL
// base64, padding optional). The first key signs; all verify. IDs are 1 to 8
// characters of [A-Za-z0-9_-] and must be unique; secrets at least 16 bytes.
func ParseKeyring(specs []string) (*Keyring, error) {
	if len(specs) == 0 {
		return nil, errors.New("token: no keys")
	}
	k := &Keyring{}
	seen := map[string]bool{}
	for i, spec := range specs {
		id, b64, ok := strings.Cut(spec, ":")
		if !ok {
			return nil, fmt.Errorf("token: key %d: want ID:BASE64SECRET", i+1)
		}
		if len(id) == 0 || len(id) > MaxKeyID || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != "" {
			return nil, fmt.Errorf("token: key %d: id %q must be 1-%d characters of A-Z a-z 0-9 _ -", i+1, id, MaxKeyID)
		}
		if seen[id] {
			return nil, fmt.Errorf("token: key id %q appears twice", id)
		}
		seen[id] = true
		secret, err := decodeSecret(b64)
		if err != nil {
			return nil, fmt.Errorf("token: key %q: secret is not base64: %w", id, err)
		}
		if len(secret) < MinSecret {
			return nil, fmt.Errorf("token: key %q: secret has %d bytes, want at least %d", id, len(secret), MinSecret)
		}
		k.keys = append(k.keys, newKey(id, secret))
	}
	return k, nil
}

func decodeSecret(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// NewKey returns a fresh key spec "ID:BASE64SECRET" with a 32-byte secret.
func NewKey(id string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("token: crypto/rand failed: " + err.Error())
	}
	return id + ":" + base64.StdEncoding.EncodeToString(b[:])
}

// KeyIDs lists the key ids, signing key first.
func (k *Keyring) KeyIDs() []string {
	ids := make([]string, len(k.keys))
	for i, kk := range k.keys {
		ids[i] = kk.id
	}
	return ids
}

func (k *Keyring) find(id string) (key, bool) {
	for _, kk := range k.keys {
		if kk.id == id {
			return kk, true
		}
	}
	return key{}, false
}

// mac returns the first n bytes of the key's HMAC-SHA256 of data.
func (kk key) mac(data []byte, n int) []byte {
	h := kk.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte("leadpush-token-v1\x00"))
	h.Write(data)
	sum := h.Sum(make([]byte, 0, sha256.Size))[:n]
	kk.macs.Put(h)
	return sum
}

// Sign returns the web token for c, or an error when c is out of bounds or
// the keyring is empty.
//
// Layout before base64url: version, kind, key id (length-prefixed), the 12
// message id bytes, recipient and URL (uvarint length-prefixed), MAC.
func (k *Keyring) Sign(c Claims) (string, error) {
	if k == nil || len(k.keys) == 0 {
		return "", errors.New("token: empty keyring")
	}
	id, err := rawID(c.MessageID)
	if err != nil {
		return "", fmt.Errorf("token: bad message id %q", c.MessageID)
	}
	if len(c.Recipient) > MaxRecipient || len(c.URL) > MaxURL {
		return "", errors.New("token: recipient or URL too long")
	}
	if c.Kind != Click && c.Kind != Confirm && c.URL != "" {
		return "", errors.New("token: only click and confirm tokens carry a URL")
	}
	sk := k.keys[0]
	b := make([]byte, 0, 3+len(sk.id)+idLen+4+len(c.Recipient)+len(c.URL)+webMACLen)
	b = append(b, version, byte(c.Kind), byte(len(sk.id)))
	b = append(b, sk.id...)
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(c.Recipient)))
	b = append(b, c.Recipient...)
	b = binary.AppendUvarint(b, uint64(len(c.URL)))
	b = append(b, c.URL...)
	b = append(b, sk.mac(b, webMACLen)...)
	return webEnc.EncodeToString(b), nil
}

// Verify checks a web token of the given kind and returns its claims. Every
// failure is ErrInvalid.
func (k *Keyring) Verify(kind Kind, tok string) (Claims, error) {
	if k == nil || len(tok) == 0 || len(tok) > MaxLen {
		return Claims{}, ErrInvalid
	}
	b, err := webEnc.DecodeString(tok)
	if err != nil || len(b) < 3+1+idLen+2+webMACLen {
		return Claims{}, ErrInvalid
	}
	body, sum := b[:len(b)-webMACLen], b[len(b)-webMACLen:]
	if body[0] != version || Kind(body[1]) != kind {
		return Claims{}, ErrInvalid
	}
	p := body[2:]
	idn := int(p[0])
	if idn == 0 || idn > MaxKeyID || len(p) < 1+idn+idLen {
		return Claims{}, ErrInvalid
	}
	kk, ok := k.find(string(p[1 : 1+idn]))
	if !ok || !hmac.Equal(sum, kk.mac(body, webMACLen)) {
		return Claims{}, ErrInvalid
	}
	p = p[1+idn:]
	c := Claims{Kind: kind, MessageID: idEnc.EncodeToString(p[:idLen]), KeyID: kk.id}
	p = p[idLen:]
	var rcpt, url []byte
	if rcpt, p, ok = field(p, MaxRecipient); !ok {
		return Claims{}, ErrInvalid
	}
	if url, p, ok = field(p, MaxURL); !ok || len(p) != 0 {
		return Claims{}, ErrInvalid
	}
	c.Recipient, c.URL = string(rcpt), string(url)
	return c, nil
}

func field(p []byte, max int) (val, rest []byte, ok bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(max) || uint64(len(p)-w) < n {
		return nil, nil, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// SignAddress returns the address token (for bounce+TOKEN@ or unsub+TOKEN@)
// of a message. kind is Return or UnsubMail.
func (k *Keyring) SignAddress(kind Kind, messageID string) (string, error) {
	if k == nil || len(k.keys) == 0 {
		return "", errors.New("token: empty keyring")
	}
	id, err := rawID(messageID)
	if err != nil {
		return "", fmt.Errorf("token: bad message id %q", messageID)
	}
	sk := k.keys[0]
	b := make([]byte, 0, 1+len(sk.id)+idLen+addrMACLen)
	b = append(b, byte(len(sk.id)))
	b = append(b, sk.id...)
	b = append(b, id...)
	b = append(b, sk.mac(append([]byte{byte(kind)}, b...), addrMACLen)...)
	return addrEnc.EncodeToString(b), nil
}

// VerifyAddress checks an address token of the given kind, in any letter
// case, and returns the message id.
func (k *Keyring) VerifyAddress(kind Kind, tok string) (messageID string, err error) {
	if k == nil || len(tok) == 0 || len(tok) > 64 {
		return "", ErrInvalid
	}
	b, err := addrEnc.DecodeString(strings.ToLower(tok))
	if err != nil || len(b) < 2+idLen+addrMACLen {
		return "", ErrInvalid
	}
	body, sum := b[:len(b)-addrMACLen], b[len(b)-addrMACLen:]
	idn := int(body[0])
	if idn == 0 || idn > MaxKeyID || len(body) != 1+idn+idLen {
		return "", ErrInvalid
	}
	kk, ok := k.find(string(body[1 : 1+idn]))
	if !ok || !hmac.Equal(sum, kk.mac(append([]byte{byte(kind)}, body...), addrMACLen)) {
		return "", ErrInvalid
	}
	return idEnc.EncodeToString(body[1+idn:]), nil
}

// ConfirmClaims are the claims of a Confirm token for recipient of a
// message, valid until expires.
func ConfirmClaims(messageID, recipient string, expires time.Time) Claims {
	return Claims{Kind: Confirm, MessageID: messageID, Recipient: recipient, URL: strconv.FormatInt(expires.Unix(), 10)}
}

// ConfirmExpiry is when a Confirm token's claims stop being valid; the
// zero time for claims that carry none.
func (c Claims) ConfirmExpiry() time.Time {
	n, err := strconv.ParseInt(c.URL, 10, 64)
	if c.Kind != Confirm || err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0)
}
