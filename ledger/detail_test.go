package ledger

import (
	"encoding/json"
	"testing"
)

// TestDetailJSON holds appendJSON to json.Marshal, byte for byte.
func TestDetailJSON(t *testing.T) {
	for _, d := range []Detail{
		{},
		{Source: "tracker"},
		{IP: "192.0.2.1", UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36", UAFamily: "Chrome", UAMajor: "120",
			URL: "https://example.com/a?b=1&c=<2>", Machine: true, MachineReason: "apple-mpp", Source: "tracker"},
		{Status: "5.1.1", Relay: "mx.example.net[192.0.2.2]:25", Report: "550 5.1.1 \"user\" unknown\r\n\tline two \\ é \u2028 \x00 \xff",
			Source: "maillog", Reason: "hard_bounce", BounceReason: "userunknown"},
		{Machine: true},
		{Report: `550 "user" unknown \ <b>&amp;</b>`, URL: `https://example.com/"q"?a=1&b=\&c=>`},
	} {
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.appendJSON(nil); string(got) != string(want) {
			t.Errorf("appendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzDetailJSON(f *testing.F) {
	f.Add("192.0.2.1", "Mozilla/5.0", "https://example.com/?a=1&b=2", "550 \"x\"", true)
	f.Fuzz(func(t *testing.T, ip, ua, url, report string, machine bool) {
		d := Detail{IP: ip, UserAgent: ua, URL: url, Report: report, Machine: machine, Source: "fuzz"}
		want, _ := json.Marshal(d)
		if got := d.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON:\n got %s\nwant %s", got, want)
		}
	})
}
