package tracker

import (
	"net/netip"
	"testing"

	"github.com/leadpush/leadpush/token"
)

// TestReconfigure: keys and proxy settings change on a running Server
// (leadpushd's SIGHUP).
func TestReconfigure(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Keyring = mustKeyring(t, testKeys[0]) })
	other := token.NewKey("other")
	tok := signWith(t, mustKeyring(t, other), token.Open, token.NewMessageID(), "a@example.com", "")
	if w := e.do(req{target: "/o/" + tok}); w.Code != 404 {
		t.Fatalf("unknown key: got %d", w.Code)
	}
	e.s.Reconfigure(Live{Keyring: mustKeyring(t, testKeys[0], other),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, AnonymizeIP: true})
	if w := e.do(req{target: "/o/" + tok, remote: "10.0.0.1:4000", xff: []string{"198.51.100.77"}, ua: chromeUA}); w.Code != 200 {
		t.Fatalf("key added by Reconfigure: got %d", w.Code)
	}
	// a nil keyring keeps the current one
	e.s.Reconfigure(Live{})
	if w := e.do(req{target: "/o/" + tok, remote: "10.0.0.1:4000", xff: []string{"198.51.100.77"}, ua: chromeUA}); w.Code != 200 {
		t.Fatalf("after Reconfigure without keys: got %d", w.Code)
	}
	evs := e.stop()
	ips := map[string]bool{}
	for _, ev := range evs {
		ips[ev.Detail.IP] = true
	}
	if len(evs) != 2 || !ips["198.51.100.0"] || !ips["10.0.0.1"] {
		t.Fatalf("recorded addresses %v of %d events: want the proxied, anonymized one and the peer's", ips, len(evs))
	}
}
