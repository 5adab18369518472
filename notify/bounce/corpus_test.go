package bounce

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fact is what testdata/facts.json says a sample must yield. The facts
// were written with the samples, from what the MTA meant, not from the
// parser's output, so a -update of the golden files cannot hide a
// regression.
type fact struct {
	Kind       Kind `json:"kind"`
	Recipients []struct {
		Address string `json:"address"`
		Status  string `json:"status"`
		Class   Class  `json:"class"`
		Reason  Reason `json:"reason"`
	} `json:"recipients"`
	MessageID string `json:"message_id"`
}

func loadFacts(t testing.TB) map[string]fact {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "facts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var facts map[string]fact
	if err := json.Unmarshal(data, &facts); err != nil {
		t.Fatal(err)
	}
	return facts
}

func TestFacts(t *testing.T) {
	facts := loadFacts(t)
	names := make([]string, 0, len(facts))
	for n := range facts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		f := facts[name]
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name+".eml"))
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Parse(bytes.NewReader(data), envelopeFor(name), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind != f.Kind {
				t.Errorf("Kind = %q (%s), want %q", rep.Kind, rep.Reason, f.Kind)
			}
			if len(rep.Recipients) != len(f.Recipients) {
				t.Fatalf("recipients = %+v, want %+v", rep.Recipients, f.Recipients)
			}
			for i, want := range f.Recipients {
				got := rep.Recipients[i]
				if got.Address != want.Address || got.Status != want.Status || got.Class != want.Class || got.BounceReason != want.Reason {
					t.Errorf("recipient %d = {%s %s %s %s} (%q), want %+v", i, got.Address, got.Status, got.Class, got.BounceReason, got.Diagnostic, want)
				}
				if got.BounceReason != "" && !got.BounceReason.Valid() {
					t.Errorf("recipient %d: reason %q not in the vocabulary", i, got.BounceReason)
				}
			}
			if f.MessageID != "" && rep.OriginalMessageID != f.MessageID {
				t.Errorf("OriginalMessageID = %q, want %q", rep.OriginalMessageID, f.MessageID)
			}
		})
	}
}

// TestFactsCoverCorpus keeps facts.json and the samples in step.
func TestFactsCoverCorpus(t *testing.T) {
	facts := loadFacts(t)
	old := map[string]bool{} // the samples TestCorpusFacts states
	for _, n := range corpusFactNames {
		old[n] = true
	}
	for _, file := range corpus(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		if _, ok := facts[name]; !ok && !old[name] {
			t.Errorf("%s has no facts", name)
		}
	}
	if len(corpus(t)) < 80 {
		t.Errorf("corpus has %d samples, want 80 or more", len(corpus(t)))
	}
}
