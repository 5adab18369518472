package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// needTool finds a program the test needs: missing, the test fails under
// CI=true and is skipped elsewhere, with a message.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true): install it with scripts/deps.sh", name)
		}
		t.Skipf("%s not found: skipping; scripts/deps.sh installs it", name)
	}
	return p
}

// TestStandardWebhooksNode verifies real requests of both formats, as the
// notifier sent them, with the official Standard Webhooks library for Node
// (npm standardwebhooks, pinned in testdata/node), the way the README tells
// receivers to: verify(body, headers, {jsonParse: false}). A tampered body
// must fail, and the library's default verify() must parse the json
// request and throw on the form-encoded batch (the trap the README warns
// of).
func TestStandardWebhooksNode(t *testing.T) {
	node, npm := needTool(t, "node"), needTool(t, "npm")
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "verify.js"} {
		b, err := os.ReadFile(filepath.Join("testdata", "node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ci := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline")
	ci.Dir = dir
	if out, err := ci.CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
		t.Skipf("npm ci failed (no registry?): skipping: %v\n%s", err, out)
	}

	// Capture one batch and the json requests of the sample events.
	type captured struct {
		name    string
		headers map[string]string
		body    []byte
	}
	var mu sync.Mutex
	var reqs []captured
	rc := newRecorder(t, func(_ int, r *http.Request, body []byte) int {
		h := map[string]string{}
		for _, k := range []string{HeaderID, HeaderTimestamp, HeaderSignature} {
			h[strings.ToLower(k)] = r.Header.Get(k)
		}
		mu.Lock()
		reqs = append(reqs, captured{strings.TrimPrefix(r.URL.Path, "/") + " " + r.Header.Get(HeaderID), h, body})
		mu.Unlock()
		return 200
	})
	s := openStore(t, "")
	n, err := New(s, []Endpoint{
		{Name: "batch", URL: rc.srv.URL + "/batch", Secret: testSecret},
		{Name: "json", URL: rc.srv.URL + "/json", Secret: testSecret, Format: FormatJSON},
	}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	recordSample(t, s)
	start(t, n)
	n.Wake()
	rc.wait(t, 10*time.Second, func(ps []post) bool {
		var b, j bool
		for _, p := range ps {
			b = b || strings.HasPrefix(p.id, "batch_")
			j = j || p.id == "test_open" // a sample event (SampleEvents' ids), not the verification's
		}
		return b && j
	})
	mu.Lock()
	got := append([]captured(nil), reqs...)
	mu.Unlock()
	var batch, jsonReq *captured
	for i := range got {
		switch {
		case strings.HasPrefix(got[i].name, "batch batch_"):
			batch = &got[i]
		case got[i].name == "json test_open":
			jsonReq = &got[i]
		}
	}
	if batch == nil || jsonReq == nil {
		t.Fatalf("captured %d requests, no batch or json among them", len(got))
	}
	tampered := *batch
	tampered.name = "tampered"
	tampered.body = append(bytes.Clone(batch.body[:len(batch.body)-3]), "%5D"...)
	tampered.body[20] ^= 1

	type in struct {
		Name    string            `json:"name"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	var input struct {
		Secret   string `json:"secret"`
		Requests []in   `json:"requests"`
	}
	input.Secret = testSecret
	for _, c := range []*captured{batch, jsonReq, &tampered} {
		input.Requests = append(input.Requests, in{c.name, c.headers, base64.StdEncoding.EncodeToString(c.body)})
	}
	stdin, _ := json.Marshal(input)
	cmd := exec.CommandContext(ctx, node, "verify.js")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node verify.js: %v\n%s", err, out)
	}
	type result struct {
		Name          string `json:"name"`
		Verified      bool   `json:"verified"`
		Error         string `json:"error"`
		DefaultVerify string `json:"defaultVerify"`
	}
	var res []result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		res = append(res, r)
	}
	if len(res) != 3 {
		t.Fatalf("node answered %d results: %s", len(res), out)
	}
	t.Logf("node: %s", out)
	if !res[0].Verified || res[0].DefaultVerify != "SyntaxError" {
		t.Errorf("batch: %+v; want verified with jsonParse false, and the default verify() throwing SyntaxError", res[0])
	}
	if !res[1].Verified || res[1].DefaultVerify != "parsed" {
		t.Errorf("json: %+v; want verified both ways", res[1])
	}
	if res[2].Verified || res[2].DefaultVerify != "WebhookVerificationError" {
		t.Errorf("tampered batch: %+v; want it refused", res[2])
	}
}
