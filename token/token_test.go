package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func ring(t testing.TB, specs ...string) *Keyring {
	t.Helper()
	k, err := ParseKeyring(specs)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	keyA = "2026a:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
	keyB = "2026b:YW5vdGhlci1zZWNyZXQtYW5vdGhlci1zZWNyZXQ"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	k := ring(t, keyA)
	id := NewMessageID()
	cases := []Claims{
		{Kind: Open, MessageID: id, Recipient: "customer@example.com"},
		{Kind: Click, MessageID: id, Recipient: "customer@example.com", URL: "https://example.com/reset?a=1&b=%20x#frag"},
		{Kind: Unsubscribe, MessageID: id},
		{Kind: Click, MessageID: id, URL: "http://example.org/" + strings.Repeat("x", 4000)},
	}
	for _, c := range cases {
		tok, err := k.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.Verify(c.Kind, tok)
		if err != nil {
			t.Fatalf("Verify(%q): %v", tok, err)
		}
		c.KeyID = "2026a"
		if got != c {
			t.Errorf("got %+v, want %+v", got, c)
		}
		if strings.ContainsAny(tok, "+/=") {
			t.Errorf("token %q is not base64url without padding", tok)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	k := ring(t, keyA)
	id := NewMessageID()
	good, _ := k.Sign(Claims{Kind: Click, MessageID: id, URL: "https://example.com/"})
	other := ring(t, "2026a:b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA")
	forged, _ := other.Sign(Claims{Kind: Click, MessageID: id, URL: "https://evil.example/"})
	flip := []byte(good)
	flip[10] ^= 1
	for name, tok := range map[string]string{
		"empty":       "",
		"garbage":     "!!!not-base64!!!",
		"truncated":   good[:len(good)-3],
		"bit flipped": string(flip),
		"forged key":  forged,
		"too long":    strings.Repeat("A", MaxLen+1),
		"path":        "../../etc/passwd",
		"crlf":        good + "%0d%0aSet-Cookie:x",
	} {
		if _, err := k.Verify(Click, tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := k.Verify(Open, good); !errors.Is(err, ErrInvalid) {
		t.Errorf("click token accepted as open token: %v", err)
	}
}

func TestRotation(t *testing.T) {
	old := ring(t, keyA)
	id := NewMessageID()
	tok, _ := old.Sign(Claims{Kind: Open, MessageID: id})
	rotated := ring(t, keyB, keyA) // new key signs, old still verifies
	c, err := rotated.Verify(Open, tok)
	if err != nil || c.KeyID != "2026a" {
		t.Fatalf("retired key token: %+v, %v", c, err)
	}
	tok2, _ := rotated.Sign(Claims{Kind: Open, MessageID: id})
	if c, _ := rotated.Verify(Open, tok2); c.KeyID != "2026b" {
		t.Errorf("new tokens signed by %q, want 2026b", c.KeyID)
	}
	dropped := ring(t, keyB)
	if _, err := dropped.Verify(Open, tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("token of a key removed from the ring verified: %v", err)
	}
}

func TestAddressToken(t *testing.T) {
	k := ring(t, "abcdefgh:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0") // longest key id
	id := NewMessageID()
	tok, err := k.SignAddress(Return, id)
	if err != nil {
		t.Fatal(err)
	}
	if n := len("bounce+" + tok); n > 64 {
		t.Errorf("VERP local part is %d octets, RFC 5321 allows 64", n)
	}
	for _, s := range []string{tok, strings.ToUpper(tok)} {
		got, err := k.VerifyAddress(Return, s)
		if err != nil || got != id {
			t.Errorf("VerifyAddress(%q) = %q, %v; want %q", s, got, err, id)
		}
	}
	if _, err := k.VerifyAddress(UnsubMail, tok); !errors.Is(err, ErrInvalid) {
		t.Errorf("return token accepted as unsubscribe token")
	}
}

func TestParseKeyringErrors(t *testing.T) {
	for _, specs := range [][]string{
		nil,
		{"nocolon"},
		{":c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
		{"toolongid9:c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
		{"a:short"},
		{"a:***"},
		{keyA, keyA},
	} {
		if _, err := ParseKeyring(specs); err == nil {
			t.Errorf("ParseKeyring(%q) accepted", specs)
		}
	}
	if _, err := ParseKeyring([]string{NewKey("gen")}); err != nil {
		t.Errorf("NewKey output refused: %v", err)
	}
}

func TestMessageID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewMessageID()
		if !ValidMessageID(id) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	if ValidMessageID("short") || ValidMessageID(strings.Repeat("A", 20)) {
		t.Error("invalid ids accepted")
	}
}

func FuzzVerify(f *testing.F) {
	k := ring(f, keyA)
	good, _ := k.Sign(Claims{Kind: Click, MessageID: NewMessageID(), Recipient: "a@b.c", URL: "https://x.example/"})
	addr, _ := k.SignAddress(Return, NewMessageID())
	f.Add(good)
	f.Add(addr)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := k.Verify(Click, s); err == nil {
			// Anything that verifies must re-sign to a token that verifies
			// to the same claims.
			c.KeyID = ""
			tok, err := k.Sign(c)
			if err != nil {
				t.Fatalf("verified claims %+v do not re-sign: %v", c, err)
			}
			if c2, err := k.Verify(Click, tok); err != nil || c2.URL != c.URL || c2.MessageID != c.MessageID {
				t.Fatalf("re-signed token differs: %+v %v", c2, err)
			}
		}
		if id, err := k.VerifyAddress(Return, s); err == nil && !ValidMessageID(id) {
			t.Fatalf("address token gave invalid id %q", id)
		}
	})
}

func BenchmarkSignVerifyClick(b *testing.B) {
	k := ring(b, keyA)
	c := Claims{Kind: Click, MessageID: NewMessageID(), Recipient: "customer@example.com", URL: "https://example.com/some/path?utm_source=x"}
	for b.Loop() {
		tok, _ := k.Sign(c)
		if _, err := k.Verify(Click, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConfirmToken: a confirmation link names its recipient and expiry,
// and is refused as an unsubscribe token and vice versa.
func TestConfirmToken(t *testing.T) {
	kr, err := ParseKeyring([]string{NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	id := NewMessageID()
	exp := time.Unix(1900000000, 0)
	tok, err := kr.Sign(ConfirmClaims(id, "bob@example.com", exp))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kr.Verify(Confirm, tok)
	if err != nil || c.Recipient != "bob@example.com" || c.MessageID != id || !c.ConfirmExpiry().Equal(exp) {
		t.Fatalf("Verify: %+v, %v", c, err)
	}
	if _, err := kr.Verify(Unsubscribe, tok); err == nil {
		t.Errorf("a confirm token verified as an unsubscribe token")
	}
	u, _ := kr.Sign(Claims{Kind: Unsubscribe, MessageID: id})
	if _, err := kr.Verify(Confirm, u); err == nil {
		t.Errorf("an unsubscribe token verified as a confirm token")
	}
	if !(Claims{Kind: Unsubscribe, URL: "5"}).ConfirmExpiry().IsZero() {
		t.Errorf("expiry of a non-confirm token")
	}
}
