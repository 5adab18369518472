package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// TestContribExample: the documented example parses once its placeholders
// are replaced, and every key in it is known.
func TestContribExample(t *testing.T) {
	b, err := os.ReadFile("../../contrib/leadpush.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(
		"2026a:REPLACE-WITH-OUTPUT-OF-leadpushctl-keygen", token.NewKey("2026a"),
		"whsec_REPLACE", "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
		`sha256 = "..."`, `sha256 = "`+strings.Repeat("ab", 32)+`"`,
	).Replace(string(b))
	// uncomment the optional keys too: they must be known
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if k, ok := strings.CutPrefix(l, "# "); ok && !strings.HasPrefix(k, "events") &&
			(strings.Contains(k, " = ") || strings.HasPrefix(k, "[") && strings.HasSuffix(k, "]")) {
			l = k
		}
		lines = append(lines, l)
	}
	c, err := Parse(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Milter.Listen != "unix:/var/spool/postfix/leadpush/milter.sock" || c.Tracking.BaseURL != "https://t.example.com" || len(c.Webhook) != 1 ||
		c.Milter.BodyMemory != 1<<20 || c.Milter.MaxTrackSize != 10<<20 || len(c.Webhooks.BackoffTable()) != 9 || c.Keyring() == nil ||
		!c.API.Enabled() || len(c.API.Key) != 1 || c.API.Pools["marketing"] != "smtp-marketing:" {
		t.Errorf("parsed %+v", c)
	}
	if st := c.Streams(); len(st) != 3 || !st[0].Default || st[1].LedgerScope() != ledger.ScopeBroadcast ||
		len(st[1].Senders) != 2 || len(st[1].Tags) != 2 || !st[2].SplitRecipients || !st[0].AddsListUnsubscribe() {
		t.Errorf("streams %+v", st)
	}
}

func TestStreams(t *testing.T) {
	c, err := Parse("")
	if err != nil {
		t.Fatal(err)
	}
	// no [[stream]]: one implicit default stream, seed 000's tracking
	if st := c.Streams(); len(st) != 1 || st[0].Name != "default" || !st[0].Default || st[0].TrackingMode() != ledger.TrackAll ||
		!st[0].AddsListUnsubscribe() || st[0].Broadcast() || c.Policy().UnsubscribeScope("default") != ledger.ScopeAll {
		t.Errorf("implicit streams %+v", st)
	}
	c, err = Parse("[[stream]]\nname = \"news\"\nkind = \"broadcast\"\nunsubscribe_scope = \"all\"\n[[stream]]\nname = \"default\"\ntracking = \"none\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Streams(); len(st) != 2 || st[0].Default || !st[1].Default || st[1].TrackingMode() != ledger.TrackNone {
		t.Errorf("a stream named default is the default: %+v", st)
	}
	if p := c.Policy(); p.UnsubscribeScope("news") != ledger.ScopeAll || p.UnsubscribeScope("gone") != "gone" || p.UnsubscribeScope("") != ledger.ScopeAll {
		t.Errorf("policy %+v", p)
	}
	for text, want := range map[string]string{
		"[[stream]]\nname = \"News\"\n":                                                             "stream 1.name",
		"[[stream]]\nname = \"a\"\n[[stream]]\nname = \"a\"\n":                                      "used twice",
		"[[stream]]\nname = \"a\"\nkind = \"bulk\"\n":                                               "stream a.kind",
		"[[stream]]\nname = \"a\"\ntracking = \"some\"\n":                                           "stream a.tracking",
		"[[stream]]\nname = \"a\"\nunsubscribe_scope = \"x\"\n":                                     "stream a.unsubscribe_scope",
		"[[stream]]\nname = \"a\"\ntags = [\"[\"]\n":                                                "stream a.tags",
		"[[stream]]\nname = \"a\"\nsenders = [\"a@b@c\"]\n":                                         "stream a.senders",
		"[[stream]]\nname = \"a\"\ndefault = true\n[[stream]]\nname = \"b\"\ndefault = true\n":      "at most one",
		"[[stream]]\nname = \"a\"\nsplit_recipients = true\n":                                       "chosen from the envelope",
		"[[stream]]\nname = \"a\"\nsplit_recipients = true\nsasl_users = [\"u\"]\ntags = [\"x\"]\n": "chosen by tag",
		"[[stream]]\nname = \"a\"\nsplit_recipients = true\nsasl_users = [\"u\"]\ndefault = true\n": "default stream",
		"[[stream]]\nname = \"a\"\nbogus = 1\n":                                                     "unknown key stream.bogus",
	} {
		if _, err := Parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", text, err, want)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Path != "/var/lib/leadpush/leadpush.db" || c.Store.SpoolDir != "/var/lib/leadpush/spool" || c.Suppression.Action != "reject" ||
		!c.SkipDKIMSigned() || c.Keyring() != nil {
		t.Errorf("defaults %+v", c)
	}
	nets, _ := c.TrustedNetworks()
	if len(nets) != 2 {
		t.Errorf("trusted networks %v", nets)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	for text, want := range map[string]string{
		"[milter]\nlisten = \"unix:/x\"\nbogus = 1":                  "unknown key milter.bogus",
		"[nosuchsection]\nx = 1":                                     "unknown key nosuchsection",
		"[milter]\nlisten = \"/tmp/sock\"":                           "milter.listen",
		"[milter]\ntrusted_networks = [\"10.0.0.0/33\"]":             "milter.trusted_networks",
		"[milter]\nbody_memory = \"lots\"":                           "bad size",
		"[tracking]\nbase_url = \"ftp://x\"\nkeys = [\"a:b\"]":       "tracking.base_url",
		"[tracking]\nbase_url = \"https://t.example.com\"":           "tracking.keys",
		"[bounce]\ndomain = \"bounce.example.com\"":                  "needs tracking.keys",
		"[suppression]\naction = \"ignore\"":                         "suppression.action",
		"[suppression]\nrefresh = \"1ms\"":                           "suppression.refresh",
		"[suppression]\nrefresh = \"-1s\"":                           "suppression.refresh",
		"[log]\nlevel = \"loud\"":                                    "log.level",
		"[[webhook]]\nurl = \"ftp://x\"":                             "webhook 1",
		"[webhooks]\nbackoff = [\"soon\"]":                           "bad duration",
		"[maillog]\npath = \"/var/log/mail.log\"\nformat = \"exim\"": "maillog.format",
		"[milter]\nmax_message_size = -1":                            "milter.max_message_size",
	} {
		_, err := Parse(text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error naming %q", text, err, want)
		}
	}
}

func TestRetention(t *testing.T) {
	c, err := Parse(`[retention]
messages = "45d"
inbound = "0"
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retention.RetainMessages() != 45*24*time.Hour || c.Retention.RetainInbound() != 0 || c.Retention.PruneInterval() != DefaultPruneInterval {
		t.Errorf("retention %v %v %v", c.Retention.RetainMessages(), c.Retention.RetainInbound(), c.Retention.PruneInterval())
	}
	if d, _ := Parse(""); d.Retention.RetainMessages() != 90*24*time.Hour || d.Retention.RetainInbound() != 30*24*time.Hour {
		t.Errorf("defaults %v %v", d.Retention.RetainMessages(), d.Retention.RetainInbound())
	}
	for _, bad := range []string{`messages = "10m"`, `messages = "-1h"`, `inbound = "soon"`, `messages = "1.5d"`} {
		if _, err := Parse("[retention]\n" + bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestTrackerConfirm(t *testing.T) {
	c, err := Parse("[tracker]\nconfirm_from = \"unsubscribe@example.com\"\n")
	if err != nil || c.Tracker.ConfirmFrom != "unsubscribe@example.com" || c.Tracker.ConfirmSubmit != DefaultConfirmSubmit {
		t.Fatalf("%+v, %v", c, err)
	}
	for text, want := range map[string]string{
		"[tracker]\nconfirm_from = \"nobody\"\n":      "tracker.confirm_from",
		"[tracker]\nconfirm_submit = \"localhost\"\n": "tracker.confirm_submit",
	} {
		if _, err := Parse(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %q", text, err, want)
		}
	}
}
