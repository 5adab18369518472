package packaging

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNginxSnippet runs the real nginx with contrib/nginx/leadpush-tracker.conf
// (its ports, certificate and upstream pointed at the test's) in front of
// a stand-in tracker: /o/, /c/ and /u/ reach it over TLS with
// X-Forwarded-For; /metrics, /healthz and anything else are 404 from nginx
// and never reach it; plain HTTP redirects to HTTPS.
func TestNginxSnippet(t *testing.T) {
	nginx := need(t, "nginx")
	if os.Geteuid() != 0 {
		t.Skip("nginx needs root here (its default temp and log paths)")
	}
	var mu sync.Mutex
	var seen []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		fmt.Fprintf(w, "tracker %s xff=%s proto=%s", r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"))
	}))
	defer upstream.Close()

	dir := t.TempDir()
	cert, key := selfSigned(t, dir, "t.example.com")
	httpAddr, httpsAddr := freeAddr(t), freeAddr(t)
	b, err := os.ReadFile("../contrib/nginx/leadpush-tracker.conf")
	if err != nil {
		t.Fatal(err)
	}
	site := string(b)
	for old, new := range map[string]string{
		"    listen 80;\n":                                  "    listen " + httpAddr + ";\n",
		"    listen [::]:80;\n":                             "",
		"    listen 443 ssl http2;\n":                       "    listen " + httpsAddr + " ssl http2;\n",
		"    listen [::]:443 ssl http2;\n":                  "",
		"/etc/letsencrypt/live/t.example.com/fullchain.pem": cert,
		"/etc/letsencrypt/live/t.example.com/privkey.pem":   key,
		"server 127.0.0.1:8080;":                            "server " + strings.TrimPrefix(upstream.URL, "http://") + ";",
	} {
		if strings.Count(site, old) != 1 {
			t.Fatalf("the snippet no longer has exactly one %q", old)
		}
		site = strings.Replace(site, old, new, 1)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, site)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(nginx, "-t", "-q", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	cmd := exec.Command(nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", httpsAddr); err == nil {
			c.Close()
			break
		}
		if i == 200 {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx does not listen on %s:\n%s", httpsAddr, b)
		}
		time.Sleep(25 * time.Millisecond)
	}

	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "t.example.com"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, tc := range []struct {
		method, url string
		status      int
		reached     bool
	}{
		{"GET", "https://" + httpsAddr + "/o/abc", 200, true},
		{"GET", "https://" + httpsAddr + "/c/abc", 200, true},
		{"GET", "https://" + httpsAddr + "/u/abc", 200, true},
		{"POST", "https://" + httpsAddr + "/u/abc", 200, true}, // RFC 8058 one-click
		{"DELETE", "https://" + httpsAddr + "/u/abc", 403, false},
		{"GET", "https://" + httpsAddr + "/metrics", 404, false},
		{"GET", "https://" + httpsAddr + "/healthz", 404, false},
		{"GET", "https://" + httpsAddr + "/", 404, false},
		{"GET", "https://" + httpsAddr + "/ox/abc", 404, false},
		{"GET", "http://" + httpAddr + "/o/abc", 301, false},
	} {
		mu.Lock()
		seen = nil
		mu.Unlock()
		req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(""))
		req.Host = "t.example.com"
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.url, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		reached := len(seen) > 0
		mu.Unlock()
		if resp.StatusCode != tc.status || reached != tc.reached {
			t.Errorf("%s %s: %d (tracker reached: %v), want %d (%v): %s", tc.method, tc.url, resp.StatusCode, reached, tc.status, tc.reached, body)
		}
		if tc.reached && !strings.Contains(string(body), "xff=127.0.0.1 proto=https") {
			t.Errorf("%s %s: the tracker got %q, want X-Forwarded-For and -Proto", tc.method, tc.url, body)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// selfSigned writes a certificate and key for name into dir.
func selfSigned(t *testing.T, dir, name string) (certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
