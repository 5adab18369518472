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
	if len(evs) != 2 || evs[0].Detail.IP != "198.51.100.0" || evs[1].Detail.IP != "10.0.0.1" {
		t.Fatalf("events %+v: want the proxied, anonymized address, then the peer's", evs)
	}
}
