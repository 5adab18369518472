package api

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-message/mail"
)

// FuzzRequest: any body decodes without panic; a body that validates
// composes to a message that go-message reads back with the same subject
// and that has CRLF line ends only and no header injection.
func FuzzRequest(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte(`{"from":{"email":"a@b.c"},"to":[{"email":"d@e.f","name":"\u00e9\""}],"subject":"=?x?=","htmlBody":"."}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, ferrs := decodeRequest(bytes.NewReader(b))
		if ferrs != nil {
			if len(ferrs) != 1 {
				t.Fatalf("decode errors %+v", ferrs)
			}
			return
		}
		if req.validate(map[string]string{"marketing": "smtp-marketing:"}) != nil {
			return
		}
		raw, _, err := fixedComposer().compose(req)
		if err != nil {
			t.Fatalf("valid request did not compose: %v", err)
		}
		if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\r")) {
			t.Fatal("bare CR or LF in the message")
		}
		mr, err := mail.CreateReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("composed message unreadable: %v", err)
		}
		if s, _ := mr.Header.Subject(); s != strings.TrimSpace(req.Subject) {
			t.Fatalf("subject %q, want %q", s, req.Subject)
		}
		// one From and one Subject: no field smuggled in by a value
		hdr, _, _ := strings.Cut(string(raw), "\r\n\r\n")
		for _, name := range []string{"\r\nFrom:", "\r\nSubject:", "\r\nBcc:"} {
			if strings.Count("\r\n"+hdr, name) > 1 {
				t.Fatalf("%s twice:\n%s", name, hdr)
			}
		}
	})
}
