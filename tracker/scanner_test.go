package tracker

import (
	"regexp"
	"testing"
)

// scannerUARegexp is the rule isScannerUA implements, as it was first
// written; FuzzScannerUA keeps them in step.
var scannerUARegexp = regexp.MustCompile(`(?i)mimecast|proofpoint|barracuda|safelinks|safe links|forcepoint|ironport|` +
	`sophos|trend ?micro|headless|phantomjs|(?:bot|crawler|spider|preview|scanner)\b|` +
	`^curl/|^wget/|python-requests|python-urllib|go-http-client|okhttp|^java/|libwww-perl|httpclient`)

func TestScannerUA(t *testing.T) {
	for ua, want := range map[string]bool{
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)":                       true,
		"Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 Chrome/91.0 Mobile Safari/537.36": false,
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0":    true,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36":        false,
		"curl/8.5.0":                          true,
		"xcurl/8":                             false,
		"Mimecast-Link-Scan":                  true,
		"Trend Micro":                         true,
		"Mozilla/5.0 (link preview)":          true,
		"Slackbot-LinkExpanding 1.0":          true,
		"Mozilla/5.0 (compatible; robotron)":  false,
		"Mozilla/5.0 Thunderbird/115.0":       false,
		"Java/17.0.2":                         true,
		"Microsoft Office/16.0 (Windows NT)":  false,
		"python-requests/2.31":                true,
		"Mozilla/5.0 (compatible; Scanner_1)": false,
	} {
		if got := isScannerUA(ua); got != want {
			t.Errorf("isScannerUA(%q) = %v, want %v", ua, got, want)
		}
		if got := scannerUARegexp.MatchString(ua); got != want {
			t.Errorf("reference regexp(%q) = %v, want %v", ua, got, want)
		}
	}
}

// FuzzScannerUA: the substring rules decide exactly as the regexp, for
// ASCII user agents (Go's (?i) also folds the long s and the Kelvin sign,
// which no user agent contains).
func FuzzScannerUA(f *testing.F) {
	for _, s := range []string{"Googlebot/2.1", "CUBOT", "curl/1", "trendmicro", "a preview_", "bot", "BOT!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		for i := 0; i < len(ua); i++ {
			if ua[i] >= 0x80 {
				return
			}
		}
		if got, want := isScannerUA(ua), scannerUARegexp.MatchString(ua); got != want {
			t.Fatalf("isScannerUA(%q) = %v, regexp says %v", ua, got, want)
		}
	})
}

func BenchmarkScannerUA(b *testing.B) {
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	for b.Loop() {
		isScannerUA(ua)
	}
}
