package linkurl

import "testing"

func TestTarget(t *testing.T) {
	tests := []struct {
		raw, want string
		ok        bool
	}{
		{"https://x.com/", "https://x.com/", true},
		{"  https://x.com/a\r\n", "https://x.com/a", true},
		{"\x00\x1f https://x.com/ \x0b", "https://x.com/", true},
		// the two links that were tracked and then refused with 404
		{"https://www.example.com/p?id=1#EmailAddr\r\n#", "https://www.example.com/p?id=1#EmailAddr#", true},
		{"http://www.codeweavers.com/ target=", "http://www.codeweavers.com/%20target=", true},
		// line breaks and tabs inside, as long hrefs get folded
		{"https://x.com/very/long/\r\n  path?q=1", "https://x.com/very/long/%20%20path?q=1", true},
		{"https://x.com/very/long/\npath?\tq=1", "https://x.com/very/long/path?q=1", true},
		{"ht\ntps://x.com/", "https://x.com/", true},
		{"HTTP://X.COM/", "HTTP://X.COM/", true},
		{"https://x.com/\x7f\x01a", "https://x.com/%7F%01a", true},
		{"https://exa mple.com/", "", false},
		{"https:///path", "", false},
		{"mailto:a@x.com", "", false},
		{"javascript:alert(1)", "", false},
		{"//x.com/", "", false},
		{"/relative", "", false},
		{"", "", false},
		{"https://x.com:notaport/", "", false},
	}
	for _, tc := range tests {
		got, ok := Target(tc.raw)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Target(%q) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
}

func TestTrackable(t *testing.T) {
	for u, want := range map[string]bool{
		"https://x.com/":          true,
		"http://x.com/a?b#c":      true,
		"https://x.com/a b":       false,
		"https://x.com/a\r\nb":    false,
		"https://x.com/a\x7f":     false,
		"ftp://x.com/":            false,
		"https://":                false,
		"https://x.com/%zz":       false,
		"https://x.com/#EmailAdd": true,
	} {
		if got := Trackable(u); got != want {
			t.Errorf("Trackable(%q) = %v, want %v", u, got, want)
		}
	}
}

// FuzzTarget: whatever Target tracks, the tracker accepts, and cleaning is
// idempotent.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{"https://x.com/", " http://a.b/ c\r\n", "https://x.com/#a\r\n#", "ht\ttp://x/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, ok := Target(raw)
		if ok && !Trackable(u) {
			t.Fatalf("Target(%q) = %q, which Trackable refuses", raw, u)
		}
		if ok {
			if v, ok2 := Target(u); !ok2 || v != u {
				t.Fatalf("Target not idempotent: %q -> %q -> %q %v", raw, u, v, ok2)
			}
		}
		if c := Clean(raw); Clean(c) != c {
			t.Fatalf("Clean not idempotent on %q", raw)
		}
	})
}
