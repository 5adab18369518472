package milter

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseTag(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{`"password reset"`}, "password reset"},
		{[]string{`password reset`}, "password reset"},
		{[]string{`  welcome  `}, "welcome"},
		{[]string{`""`}, ""},
		{[]string{`   `}, ""},
		{[]string{``, `second`}, "second"},
		{[]string{`first`, `second`}, "first"},
		{[]string{`"a \"quoted\" tag"`}, `a "quoted" tag`},
		{[]string{"folded\r\n value"}, "folded value"},
		{[]string{"=?UTF-8?B?UGFzc3dvcnQgesO8csO8Y2tzZXR6ZW4=?="}, "Passwort zürücksetzen"},
		{[]string{"bad\xffbyte"}, "bad\uFFFDbyte"},
		{[]string{"inject\r\nBcc: evil@example.com"}, "injectBcc: evil@example.com"},
		{[]string{"nul\x00and\x07bell"}, "nulandbell"},
		{[]string{`"unbalanced`}, `"unbalanced`},
	} {
		if got := ParseTag(c.in); got != c.want {
			t.Errorf("ParseTag(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := ParseTag([]string{strings.Repeat("é", 400)}); len(got) > maxTagLen || !utf8.ValidString(got) {
		t.Errorf("long tag not capped on a rune boundary: %d bytes", len(got))
	}
}

func TestParseTracking(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{nil, "all"},
		{[]string{"all"}, "all"},
		{[]string{"opens"}, "opens"},
		{[]string{"clicks"}, "clicks"},
		{[]string{"none"}, "none"},
		{[]string{" Clicks "}, "clicks"},
		{[]string{"NONE"}, "none"},
		{[]string{`"opens"`}, "opens"},
		{[]string{"click"}, "all"},
		{[]string{""}, "all"},
		{[]string{"none, opens"}, "all"},
		{[]string{"none", "all"}, "none"},
		{[]string{"bogus", "none"}, "all"},
	} {
		if got := ParseTracking(c.in); string(got) != c.want {
			t.Errorf("ParseTracking(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMatcher(t *testing.T) {
	m, err := NewMatcher([]string{"*-ID", "X-Campaign", "message-id"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"Contact-ID": true, "campaign-id": true, "X-Campaign": true, "Message-ID": true, // named exactly
		"Content-ID": false, "In-Reply-To": false, "Subject": false, "X-Leadpush-ID": false,
	} {
		if got := m.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
	if _, err := NewMatcher([]string{"[bad"}); err == nil {
		t.Error("bad glob accepted")
	}
}

func TestParseRecordList(t *testing.T) {
	got := ParseRecordList([]string{"Contact-ID, Campaign-ID", "Bad:Name Account-ID"})
	if strings.Join(got, "|") != "Contact-ID|Campaign-ID|Account-ID" {
		t.Errorf("got %q", got)
	}
}

func FuzzControlHeaders(f *testing.F) {
	for _, s := range []string{`"password reset"`, "clicks", " NONE ", "=?UTF-8?Q?a?=", "\xff\xfe", `"\"`, "a\r\n b"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		tag := ParseTag([]string{a, b})
		if !utf8.ValidString(tag) || len(tag) > maxTagLen || strings.ContainsAny(tag, "\r\n\x00") || strings.TrimSpace(tag) != tag {
			t.Fatalf("ParseTag(%q, %q) = %q", a, b, tag)
		}
		switch ParseTracking([]string{a, b}) {
		case "all", "opens", "clicks", "none":
		default:
			t.Fatalf("ParseTracking(%q) out of range", a)
		}
		for _, n := range ParseRecordList([]string{a, b}) {
			if !validHeaderName(n) {
				t.Fatalf("invalid header name %q", n)
			}
		}
		if st := ParseStream([]string{a, b}); st != strings.ToLower(st) || len(st) > maxTagLen || !utf8.ValidString(st) {
			t.Fatalf("ParseStream(%q, %q) = %q", a, b, st)
		}
	})
}

func TestParseStream(t *testing.T) {
	for in, want := range map[string]string{`"Newsletter"`: "newsletter", " tx ": "tx", "": "", `""`: ""} {
		if got := ParseStream([]string{in}); got != want {
			t.Errorf("ParseStream(%q) = %q, want %q", in, got, want)
		}
	}
	if got := ParseStream([]string{"", "second"}); got != "second" {
		t.Errorf("first non-empty: %q", got)
	}
}
