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
	var f figures
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
			f.found.add(got != nil)
			if got == nil {
				t.Logf("%s: sisimai names %s, we do not", name, r.Address)
				continue
			}
			if realStatusRE.MatchString(r.Status) {
				f.status.add(got.Status == r.Status)
				if got.Status != r.Status {
					t.Logf("%s: status %q, sisimai %q", name, got.Status, r.Status)
				}
			}
			if r.Softbounce == 0 || r.Softbounce == 1 {
				want := Soft
				if r.Softbounce == 0 {
					want = Hard
				}
				f.class.add(got.Class == want)
				if got.Class != want {
					t.Logf("%s: class %s (%s), sisimai %s (%s)", name, got.Class, got.BounceReason, want, r.Reason)
				}
				if rr := Reason(r.Reason); rr.Temporary() || rr.Policy() || rr == Expired {
					f.tempHard.add(got.Class == Hard)
				}
			}
			ok := agrees(got.BounceReason, r.Reason)
			f.reason.add(ok)
			if !ok {
				t.Logf("%s: reason %s, sisimai %s (%q)", name, got.BounceReason, r.Reason, got.Diagnostic)
			}
		}
	}
	t.Logf("\n%s", f)
	fmt.Println(f)
	for _, c := range []struct {
		name string
		r    ratio
		min  float64
	}{{"kind (facts)", f.kindFacts, 0.99}, {"recipient found", f.found, 0.97}, {"status", f.status, 0.95},
		{"hard/soft", f.class, 0.95}, {"reason", f.reason, 0.85}} {
		if c.r.pct() < c.min*100 {
			t.Errorf("%s %.1f%% under %.0f%%", c.name, c.r.pct(), c.min*100)
		}
	}
	if f.tempHard.pct() > 2 {
		t.Errorf("temporary or policy failures classified hard: %.1f%%", f.tempHard.pct())
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
