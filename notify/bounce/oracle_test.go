package bounce

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestOracle compares the package's answers on testdata with those of
// sisimai, the reference bounce analyser (Debian's libsisimai-perl 4.25),
// and prints the figures of issue 14. It needs perl and sisimai, so it
// runs only with LEADPUSH_SISIMAI=1:
//
//	apt-get install -y libsisimai-perl
//	LEADPUSH_SISIMAI=1 go test ./notify/bounce/ -run TestOracle -v
//
// It fails when a figure falls below the targets.
func TestOracle(t *testing.T) {
	if os.Getenv("LEADPUSH_SISIMAI") != "1" {
		t.Skip("set LEADPUSH_SISIMAI=1 (and install libsisimai-perl) to compare with sisimai")
	}
	files := corpus(t)
	out, err := exec.Command("perl", append([]string{filepath.Join("oracle", "oracle.pl")}, files...)...).Output()
	if err != nil {
		t.Fatalf("oracle.pl: %v", err)
	}
	refs := map[string][]oracleRecipient{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			File       string            `json:"file"`
			Recipients []oracleRecipient `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		refs[l.File] = l.Recipients
	}
	facts := loadFacts(t)
	var f, fx figures // fx leaves out the disputed samples
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(bytes.NewReader(data), envelopeFor(name), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if fc, ok := facts[name]; ok {
			f.kindFacts.add(rep.Kind == fc.Kind)
		}
		rs := refs[file]
		_, disputed := sisimaiDisputed[name]
		both := func(pick func(*figures) *ratio, ok bool) {
			pick(&f).add(ok)
			if !disputed {
				pick(&fx).add(ok)
			}
		}
		f.kindRef.add(kindGroup(rep.Kind) == refGroup(rs))
		if kindGroup(rep.Kind) != refGroup(rs) {
			t.Logf("%s: kind %s, sisimai %s", name, rep.Kind, refGroup(rs))
		}
		for _, r := range rs {
			if r.Reason == "feedback" || r.Reason == "vacation" || r.Reason == "delivered" {
				continue
			}
			var got *Recipient
			for i := range rep.Recipients {
				if strings.EqualFold(rep.Recipients[i].Address, r.Address) {
					got = &rep.Recipients[i]
				}
			}
			both(func(x *figures) *ratio { return &x.found }, got != nil)
			if got == nil {
				t.Logf("%s: sisimai names %s, we do not", name, r.Address)
				continue
			}
			if realStatusRE.MatchString(r.Status) {
				both(func(x *figures) *ratio { return &x.status }, got.Status == r.Status)
				if got.Status != r.Status {
					t.Logf("%s: status %q, sisimai %q", name, got.Status, r.Status)
				}
			}
			if r.Softbounce == 0 || r.Softbounce == 1 {
				want := Soft
				if r.Softbounce == 0 {
					want = Hard
				}
				both(func(x *figures) *ratio { return &x.class }, got.Class == want)
				if got.Class != want {
					t.Logf("%s: class %s (%s), sisimai %s (%s)", name, got.Class, got.BounceReason, want, r.Reason)
				}
				if rr := Reason(r.Reason); rr.Temporary() || rr.Policy() || rr == Expired {
					both(func(x *figures) *ratio { return &x.tempHard }, got.Class == Hard)
				}
			}
			ok := agrees(got.BounceReason, r.Reason)
			both(func(x *figures) *ratio { return &x.reason }, ok)
			if !ok {
				t.Logf("%s: reason %s, sisimai %s (%q)", name, got.BounceReason, r.Reason, got.Diagnostic)
			}
		}
	}
	fx.kindFacts, fx.kindRef = f.kindFacts, f.kindRef
	fmt.Printf("all samples:\n%s\n\nwithout the %d samples in sisimaiDisputed:\n%s\n", f, len(sisimaiDisputed), fx)
	// The targets, held against the undisputed answers.
	for _, c := range []struct {
		name string
		r    ratio
		min  float64
	}{{"kind (facts)", fx.kindFacts, 0.99}, {"recipient found", fx.found, 0.97}, {"status", fx.status, 0.95},
		{"hard/soft", fx.class, 0.95}, {"reason", fx.reason, 0.85}} {
		if c.r.pct() < c.min*100 {
			t.Errorf("%s %.1f%% under %.0f%%", c.name, c.r.pct(), c.min*100)
		}
	}
	if fx.tempHard.pct() > 2 {
		t.Errorf("temporary or policy failures classified hard: %.1f%%", fx.tempHard.pct())
	}
}

var realStatusRE = regexp.MustCompile(`^[245]\.\d{1,3}\.(?:\d{1,2}|[0-8]\d\d)$`)

type ratio struct{ ok, n int }

func (r *ratio) add(ok bool) {
	r.n++
	if ok {
		r.ok++
	}
}

func (r ratio) pct() float64 {
	if r.n == 0 {
		return 100
	}
	return 100 * float64(r.ok) / float64(r.n)
}

func (r ratio) String() string { return fmt.Sprintf("%5.1f%% (%d/%d)", r.pct(), r.ok, r.n) }

type figures struct{ kindFacts, kindRef, found, status, class, tempHard, reason ratio }

func (f figures) String() string {
	return fmt.Sprintf("kind right (facts.json)            %s\n"+
		"kind agrees with sisimai           %s\n"+
		"recipient found                    %s\n"+
		"enhanced status agrees             %s\n"+
		"hard/soft agrees with sisimai      %s\n"+
		"temporary/policy classified hard   %s\n"+
		"bounce_reason agrees (4.25 -> 5.x) %s",
		f.kindFacts, f.kindRef, f.found, f.status, f.class, f.tempHard, f.reason)
}

// kindGroup and refGroup put our kinds and sisimai's answers in the
// groups sisimai can tell apart: bounces (and delays), complaints,
// auto-replies, and the rest (sisimai returns nothing).
func kindGroup(k Kind) string {
	switch k {
	case KindBounce, KindDelayed:
		return "bounce"
	case KindComplaint:
		return "complaint"
	case KindAutoReply:
		return "autoreply"
	}
	return "none"
}

func refGroup(rs []oracleRecipient) string {
	if len(rs) == 0 {
		return "none"
	}
	for _, r := range rs {
		switch r.Reason {
		case "feedback":
			return "complaint"
		case "vacation":
			return "autoreply"
		}
	}
	return "bounce"
}

// sisimaiDisputed lists the samples where sisimai 4.25's answer is wrong
// or empty for a reason it documents or that its output shows, and why.
// TestOracle prints the figures with and without them.
var sisimaiDisputed = map[string]string{
	"courier-user-unknown":         "4.25 calls a user-unknown reply filtered when it cannot tell the SMTP command (Reason::Filtered); the reply to RCPT is 550 User unknown",
	"kddi-ezweb-user-unknown":      "same: 550 user unknown in reply to RCPT TO, read as filtered",
	"yahoo":                        "same: Yahoo's 'Not a valid recipient' read as filtered",
	"yahoo-disabled":               "same: 'This user doesn't have a yahoo.com account' read as filtered",
	"exchange-o365":                "same: RESOLVER.ADR.RecipientNotFound (5.1.10) read as filtered",
	"postfix-multi":                "4.25 gives every recipient of a multi-recipient Postfix bounce the last recipient's diagnostic (5.7.1 spam)",
	"yandex-no-such-user":          "same rule: Yandex's '550 5.7.1 No such user!' read as filtered",
	"wrapped-gateway-sender":       "4.25 takes the sender named in a gateway's summary ('<news@example.com> sent a message') for a recipient",
	"postfix-real-two-recipients":  "same, on Postfix's own DSN from the lab",
	"biglobe-iso2022jp":            "4.25 reads no reason from the Japanese text (onhold); 宛先不明 is 'address unknown'",
	"kddi-au-mailbox-full":         "4.25 reads no reason from the Japanese text (onhold); 容量を超えた is 'over capacity'",
	"docomo-rejected":              "4.25 reads no reason from the Japanese text (onhold); 受信拒否 is the recipient's refusal filter",
	"lotus-mailbox-full":           "4.25 has no pattern for Domino's 'mail file is full' (onhold)",
	"mimecast-spoofing":            "4.25 has no pattern for 'Anti-Spoofing policy' (onhold)",
	"exchange2010-unable-to-relay": "4.25 knows 'unable to relay for' only and falls back to securityerror for 5.7.1",
	"proofpoint-virus":             "4.25 falls back to securityerror for 5.7.1; the text says virus found",
	"qmail-blocked":                "4.25 reads qmail's 'Giving up on <host>' as expiry",
	"sendmail-warning-delayed":     "4.25 calls a delay notice for a refused connection blocked",
	"zoho-delayed":                 "4.25 calls a delay notice for a dropped connection blocked",
}

// oracleRecipient is one recipient as oracle.pl prints it.
type oracleRecipient struct {
	Address    string `json:"address"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	Softbounce int    `json:"softbounce"`
	Action     string `json:"action"`
}

// sisimai4 maps the reasons sisimai 5 added or renamed to the sisimai 4.25
// names the oracle answers with.
var sisimai4 = map[Reason][]string{
	AuthFailure:     {"securityerror", "policyviolation"},
	BadReputation:   {"blocked"},
	RequirePTR:      {"blocked"},
	Speeding:        {"toomanyconn"},
	NotCompliantRFC: {"contenterror"},
	Suspend:         {"suspend", "filtered"}, // 4.25 maps 5.2.1 to filtered, 5.x to suspend
}

// agrees reports whether our reason is sisimai 4.25's, by name or through
// sisimai4.
func agrees(ours Reason, theirs string) bool {
	if string(ours) == theirs {
		return true
	}
	for _, n := range sisimai4[ours] {
		if n == theirs {
			return true
		}
	}
	return false
}
