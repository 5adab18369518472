package e2e

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/leadpush/leadpush/internal/postfixlab"
)

// The tests in this file prove the milter order of ARCHITECTURE.md: with
// Debian's opendkim after leadpush-milter, the signature covers the tracked
// body and the List-Unsubscribe headers, and verifies at the recipient;
// with the order reversed it does not.

// opendkimTool finds an opendkim program (Debian puts them in /usr/sbin). It
// skips the test when the program is missing, or fails it under CI=true
// (scripts/deps.sh installs opendkim and opendkim-tools).
func opendkimTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: run scripts/deps.sh", name)
	}
	t.Skipf("%s not installed (apt-get install opendkim opendkim-tools)", name)
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// dkimSignHeaders is opendkim's SignHeaders: the usual set plus the two
// headers leadpush-milter adds, which must be covered for RFC 8058.
const dkimSignHeaders = "From,To,Cc,Subject,Date,Message-ID,MIME-Version,Content-Type,Content-Transfer-Encoding,List-Unsubscribe,List-Unsubscribe-Post"

// dkimSigner is an opendkim process signing for example.com, selector lab.
type dkimSigner struct {
	addr   string         // Postfix notation: inet:127.0.0.1:PORT
	pubKey *rsa.PublicKey // from lab.txt, as DNS would publish it
	record string         // the TXT record of lab._domainkey.example.com
	dir    string
}

// startOpenDKIM generates a 2048-bit key and runs opendkim in the
// foreground on a loopback port until the test ends. The configuration goes
// in on standard input: opendkim refuses a configuration file under a
// directory others can write to, as /tmp is.
func startOpenDKIM(t *testing.T) *dkimSigner {
	t.Helper()
	od, gen := opendkimTool(t, "opendkim"), opendkimTool(t, "opendkim-genkey")
	dir := t.TempDir()
	if out, err := exec.Command(gen, "-b", "2048", "-d", "example.com", "-s", "lab", "-D", dir).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v: %s", err, out)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "lab.txt"))
	if err != nil {
		t.Fatal(err)
	}
	pub, record, err := parseDKIMRecord(string(txt))
	if err != nil {
		t.Fatalf("lab.txt: %v", err)
	}
	hostPort := freeAddr(t)
	host, port, _ := strings.Cut(hostPort, ":")
	conf := strings.Join([]string{
		"Syslog no",
		"Mode sv",
		"Domain example.com",
		"Selector lab",
		"KeyFile " + filepath.Join(dir, "lab.private"),
		"RequireSafeKeys no", // the key is in a t.TempDir under /tmp
		"Canonicalization relaxed/relaxed",
		"SignatureAlgorithm rsa-sha256",
		"SignHeaders " + dkimSignHeaders,
		"InternalHosts 127.0.0.1",
		"Nameservers 127.0.0.1", // never ask a real resolver
		"Socket inet:" + port + "@" + host,
	}, "\n") + "\n"
	logf, err := os.Create(filepath.Join(dir, "opendkim.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(od, "-f", "-x", "/dev/stdin")
	cmd.Stdin = strings.NewReader(conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("opendkim: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// If opendkim exits at start, waitMilter fails and its output is logged.
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("opendkim output:\n%s", tail(string(b), 40))
		}
	})
	addr := "inet:" + hostPort
	waitMilter(t, addr)
	return &dkimSigner{addr: addr, pubKey: pub, record: record, dir: dir}
}

// setMilters changes the lab's smtpd_milters (non_smtpd_milters follows it)
// and reloads Postfix: new smtpd processes use the new list.
func setMilters(t *testing.T, lab *postfixlab.Lab, milters ...string) {
	t.Helper()
	lab.Postconf(t, "-e", "smtpd_milters="+strings.Join(milters, " "))
	lab.Reload(t)
}

var quoted = regexp.MustCompile(`"([^"]*)"`)

// parseDKIMRecord returns the RSA key of a zone file TXT record as
// opendkim-genkey writes it.
func parseDKIMRecord(zone string) (*rsa.PublicKey, string, error) {
	var rec strings.Builder
	for _, m := range quoted.FindAllStringSubmatch(zone, -1) {
		rec.WriteString(m[1])
	}
	tags := dkimTags(rec.String())
	if tags["v"] != "DKIM1" || (tags["k"] != "" && tags["k"] != "rsa") {
		return nil, "", fmt.Errorf("not an RSA DKIM1 record: %q", rec.String())
	}
	der, err := base64.StdEncoding.DecodeString(tags["p"])
	if err != nil {
		return nil, "", fmt.Errorf("p=: %w", err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, "", fmt.Errorf("p=: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("p= is a %T", k)
	}
	return rk, rec.String(), nil
}

// dkimTags parses a tag=value list (RFC 6376 section 3.2); folding
// whitespace is removed from the values.
func dkimTags(s string) map[string]string {
	tags := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
	}
	return tags
}

// rawHeader is one header field as it appears in the message, folding
// included, without its final CRLF.
type rawHeader struct{ name, raw string }

// rawHeaders splits the header block of a CRLF message into fields.
func rawHeaders(msg []byte) ([]rawHeader, []byte, error) {
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		return nil, nil, errors.New("no end of header")
	}
	var hs []rawHeader
	for _, line := range strings.Split(string(head), "\r\n") {
		if line != "" && (line[0] == ' ' || line[0] == '\t') {
			if len(hs) == 0 {
				return nil, nil, errors.New("continuation line first")
			}
			hs[len(hs)-1].raw += "\r\n" + line
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, fmt.Errorf("header line without colon: %q", line)
		}
		hs = append(hs, rawHeader{name: strings.TrimRight(name, " \t"), raw: line})
	}
	return hs, body, nil
}

var wsp = regexp.MustCompile(`[ \t]+`)

// relaxedHeader is the relaxed header canonicalization of RFC 6376 section
// 3.4.2, without the final CRLF.
func relaxedHeader(raw string) string {
	name, value, _ := strings.Cut(raw, ":")
	value = strings.NewReplacer("\r\n", "").Replace(value)
	value = strings.TrimSpace(wsp.ReplaceAllString(value, " "))
	return strings.ToLower(strings.TrimSpace(name)) + ":" + value
}

// relaxedBody is the relaxed body canonicalization of RFC 6376 section
// 3.4.4.
func relaxedBody(body []byte) []byte {
	lines := strings.Split(string(body), "\r\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(wsp.ReplaceAllString(l, " "), " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return nil
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

var bTag = regexp.MustCompile(`(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*`)

// dkimResult is what verifyDKIM found about the first DKIM-Signature.
type dkimResult struct {
	tags         map[string]string
	signed       []string // h=, lower-cased
	bodyHashOK   bool
	signatureErr error // nil: the signature verifies
}

// verifyDKIM checks the first DKIM-Signature of msg (CRLF line ends) with
// pub: rsa-sha256, relaxed/relaxed only, as opendkim was configured. It is
// the check a receiving server does, with the key from lab.txt instead of
// DNS.
func verifyDKIM(msg []byte, pub *rsa.PublicKey) (*dkimResult, error) {
	hs, body, err := rawHeaders(msg)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(hs, func(h rawHeader) bool { return strings.EqualFold(h.name, "DKIM-Signature") })
	if i < 0 {
		return nil, errors.New("no DKIM-Signature header")
	}
	sigHdr := hs[i]
	_, value, _ := strings.Cut(sigHdr.raw, ":")
	tags := dkimTags(value)
	if tags["v"] != "1" || tags["a"] != "rsa-sha256" || tags["c"] != "relaxed/relaxed" {
		return nil, fmt.Errorf("unsupported signature v=%s a=%s c=%s", tags["v"], tags["a"], tags["c"])
	}
	if tags["l"] != "" {
		return nil, errors.New("l= not supported")
	}
	res := &dkimResult{tags: tags}
	for _, n := range strings.Split(tags["h"], ":") {
		res.signed = append(res.signed, strings.ToLower(n))
	}
	// Body hash.
	sum := sha256.Sum256(relaxedBody(body))
	res.bodyHashOK = base64.StdEncoding.EncodeToString(sum[:]) == tags["bh"]
	// Header hash: for each h= name the last instance not used yet
	// (section 5.4.2), then the signature header with b= emptied.
	used := make([]bool, len(hs))
	h := sha256.New()
	for _, n := range res.signed {
		for j := len(hs) - 1; j >= 0; j-- {
			if !used[j] && strings.EqualFold(hs[j].name, n) {
				used[j] = true
				h.Write([]byte(relaxedHeader(hs[j].raw) + "\r\n"))
				break
			}
		}
	}
	h.Write([]byte(relaxedHeader(bTag.ReplaceAllString(sigHdr.raw, "$1$2"))))
	sig, err := base64.StdEncoding.DecodeString(tags["b"])
	if err != nil {
		return nil, fmt.Errorf("b=: %w", err)
	}
	res.signatureErr = rsa.VerifyPKCS1v15(pub, crypto.SHA256, h.Sum(nil), sig)
	return res, nil
}

// opendkimVerify is a second opinion: opendkim's own test mode (-t) checks
// the message, with the key given by TestPublicKeys instead of DNS. It
// returns opendkim's output and whether it reported the signature valid.
func (d *dkimSigner) opendkimVerify(t *testing.T, msg []byte) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("lab._domainkey.example.com "+d.record+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(f, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(opendkimTool(t, "opendkim"), "-x", "/dev/stdin", "-vvv", "-t", f)
	cmd.Stdin = strings.NewReader("Syslog no\nMode v\nTestPublicKeys " + keys + "\nNameservers 127.0.0.1\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim -t: %v\n%s", err, out)
	}
	return string(out), strings.Contains(string(out), "dkim=pass")
}

func (r *dkimResult) valid() bool { return r.bodyHashOK && r.signatureErr == nil }

func TestDKIMAfterLeadpush(t *testing.T) {
	e := newEnv(t, envOptions{})
	dkim := startOpenDKIM(t)
	k := trackKeys(t)
	setMilters(t, e.lab, e.milterAddr, dkim.addr) // the documented order

	sends := []struct {
		name string
		send func(t *testing.T) (postfixlab.Received, string)
	}{
		{"seed-clicks", func(t *testing.T) (postfixlab.Received, string) { return e.delivered(t, e.seedSwaks("clicks")...) }},
		{"html-all", func(t *testing.T) (postfixlab.Received, string) {
			return e.sendData(t, "app@example.com", "customer@example.com", htmlMessage("", ""))
		}},
	}
	for _, s := range sends {
		t.Run(s.name, func(t *testing.T) {
			got, qid := s.send(t)
			rec := e.record(t, qid)
			h, body := splitMsg(t, got.Data)
			if targets, _ := clickTargets(t, k, e.baseURL, rec.ID, string(body)); len(targets) == 0 {
				t.Fatalf("the delivered body is not the tracked one:\n%s", body)
			}
			checkListUnsub(t, k, e.baseURL, h, rec.ID, "customer@example.com")
			r, err := verifyDKIM(got.Data, dkim.pubKey)
			if err != nil {
				t.Fatalf("%v\n%s", err, headerBlock(got.Data))
			}
			if !r.valid() {
				t.Errorf("DKIM signature does not verify: body hash ok %v, signature %v\n%s", r.bodyHashOK, r.signatureErr, headerBlock(got.Data))
			}
			if r.tags["d"] != "example.com" || r.tags["s"] != "lab" {
				t.Errorf("signed as d=%s s=%s", r.tags["d"], r.tags["s"])
			}
			for _, n := range []string{"from", "subject", "list-unsubscribe", "list-unsubscribe-post"} {
				if !slices.Contains(r.signed, n) {
					t.Errorf("h= %q lacks %s", r.tags["h"], n)
				}
			}
			if out, ok := dkim.opendkimVerify(t, got.Data); !ok {
				t.Errorf("opendkim -t does not report dkim=pass:\n%s", tail(out, 8))
			}
			// The verifier is not vacuous: a changed body or a changed
			// signed header fails it.
			tampered := bytes.Replace(got.Data, []byte("/c/"), []byte("/C/"), 1)
			if r, err := verifyDKIM(tampered, dkim.pubKey); err != nil || r.bodyHashOK {
				t.Errorf("a changed link still matches the body hash (%v)", err)
			}
			tampered = bytes.Replace(got.Data, []byte("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), []byte("List-Unsubscribe-Post: List-Unsubscribe=Two-Click"), 1)
			if r, err := verifyDKIM(tampered, dkim.pubKey); err != nil || r.signatureErr == nil {
				t.Errorf("a changed List-Unsubscribe-Post still verifies (%v)", err)
			}
		})
	}
}

// secondMilter starts another leadpush-milter for the env's lab, with its
// own socket and ledger, and its config changed by edit (the env's config
// text in, the new one out). The returned env shares e.lab; Postfix uses the
// new milter only once setMilters names its milterAddr.
func (e *env) secondMilter(t *testing.T, edit func(string) string) *env {
	t.Helper()
	b, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e2 := &env{dir: t.TempDir(), baseURL: e.baseURL, lab: e.lab,
		milterAddr: "unix:" + filepath.Join(postfixlab.SocketDir(t), "milter.sock")}
	e2.cfg = filepath.Join(e2.dir, "leadpush.toml")
	conf := strings.Replace(string(b), fmt.Sprintf("listen = %q", e.milterAddr), fmt.Sprintf("listen = %q", e2.milterAddr), 1)
	conf = strings.Replace(conf, fmt.Sprintf("path = %q", filepath.Join(e.dir, "leadpush.db")), fmt.Sprintf("path = %q", filepath.Join(e2.dir, "leadpush.db")), 1)
	// Its own metrics listener: the first milter holds the first's.
	metricsAddr := freeAddr(t)
	conf = regexp.MustCompile(`(?m)^metrics_listen = .*$`).ReplaceAllString(conf, fmt.Sprintf("metrics_listen = %q", metricsAddr))
	e2.metricsURL = "http://" + metricsAddr + "/metrics"
	conf = edit(conf)
	if conf == string(b) || !strings.Contains(conf, e2.milterAddr) {
		t.Fatalf("second milter config not changed as intended:\n%s", conf)
	}
	if err := os.WriteFile(e2.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e2.startDaemon(t, "leadpush-milter")
	waitMilter(t, e2.milterAddr)
	return e2
}

// With opendkim first, the signature is made before leadpush-milter adds
// List-Unsubscribe and rewrites the body. By default (skip_dkim_signed)
// leadpush-milter then sees the DKIM-Signature and leaves the body alone, so
// the signature survives but tracking is lost and List-Unsubscribe and
// List-Unsubscribe-Post are not signed (RFC 8058 section 4 requires them to
// be); with skip_dkim_signed = false the rewrite breaks the signature.
func TestDKIMBeforeLeadpushBreaks(t *testing.T) {
	e := newEnv(t, envOptions{})
	dkim := startOpenDKIM(t)
	noSkip := e.secondMilter(t, func(conf string) string {
		return strings.Replace(conf, "[milter]\n", "[milter]\nskip_dkim_signed = false\n", 1)
	})

	t.Run("skip_dkim_signed", func(t *testing.T) {
		setMilters(t, e.lab, dkim.addr, e.milterAddr) // the wrong order
		got, qid := e.delivered(t, e.seedSwaks("clicks")...)
		rec := e.record(t, qid)
		if len(rec.Links) != 0 || bytes.Contains(got.Data, []byte(e.baseURL+"/c/")) {
			t.Errorf("a body signed before the milter was rewritten: ledger links %q", rec.Links)
		}
		r, err := verifyDKIM(got.Data, dkim.pubKey)
		if err != nil {
			t.Fatalf("%v\n%s", err, headerBlock(got.Data))
		}
		if out, ok := dkim.opendkimVerify(t, got.Data); !ok {
			t.Errorf("opendkim -t does not report dkim=pass:\n%s", tail(out, 8))
		}
		if !r.valid() {
			t.Errorf("signature of an untouched body does not verify: body hash ok %v, signature %v", r.bodyHashOK, r.signatureErr)
		}
		h, _ := splitMsg(t, got.Data)
		if len(h["List-Unsubscribe"]) != 1 {
			t.Fatalf("List-Unsubscribe not added: %q", h["List-Unsubscribe"])
		}
		for _, n := range []string{"list-unsubscribe", "list-unsubscribe-post"} {
			if slices.Contains(r.signed, n) {
				t.Errorf("h= %q covers %s, which was added after signing", r.tags["h"], n)
			}
		}
	})
	t.Run("rewrite_anyway", func(t *testing.T) {
		setMilters(t, e.lab, dkim.addr, noSkip.milterAddr)
		got, qid := e.delivered(t, e.seedSwaks("clicks")...)
		rec := noSkip.record(t, qid)
		if len(rec.Links) == 0 {
			t.Fatalf("message not tracked with skip_dkim_signed = false: ledger %+v", rec)
		}
		r, err := verifyDKIM(got.Data, dkim.pubKey)
		if err != nil {
			t.Fatalf("%v\n%s", err, headerBlock(got.Data))
		}
		if r.valid() || r.bodyHashOK {
			t.Errorf("a signature made before the rewrite verifies (body hash ok %v); the order test proves nothing\n%s", r.bodyHashOK, got.Data)
		}
		if out, ok := dkim.opendkimVerify(t, got.Data); ok || !strings.Contains(out, "dkim=fail") {
			t.Errorf("opendkim -t does not report dkim=fail:\n%s", tail(out, 8))
		}
	})
}

// TestDKIMExampleConfig checks that contrib/postfix/main.cf.dkim-example is
// a main.cf Postfix reads without complaint, with leadpush-milter before
// opendkim for SMTP and non-SMTP mail alike.
func TestDKIMExampleConfig(t *testing.T) {
	postconf, err := exec.LookPath("postconf")
	if err != nil {
		postconf = "/usr/sbin/postconf"
		if !fileExists(postconf) {
			postfixlab.Require(t) // skips, or fails under CI=true
		}
	}
	b, err := os.ReadFile("../../contrib/postfix/main.cf.dkim-example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"main.cf": b, "master.cf": nil} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(postconf, "-c", dir, "-x", "-h", "smtpd_milters", "non_smtpd_milters", "milter_default_action")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("postconf: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"inet:127.0.0.1:8895, inet:127.0.0.1:8891", "inet:127.0.0.1:8895, inet:127.0.0.1:8891", "tempfail"}
	if !slices.Equal(lines, want) {
		t.Errorf("postconf -x -h smtpd_milters non_smtpd_milters milter_default_action:\n%q\nwant %q", lines, want)
	}
	// The ports named in the comments are the ones in the lists.
	for _, s := range []string{`listen = "inet:127.0.0.1:8895"`, "Socket inet:8891@localhost", "List-Unsubscribe,List-Unsubscribe-Post"} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("the example's comments lack %s", s)
		}
	}
}
