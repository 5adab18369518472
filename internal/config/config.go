// Package config reads leadpush.toml, the one file that leadpush-milter,
// leadpushd and leadpushctl share. The Go struct is the schema: every key
// has a field, every field a comment, and a key the struct does not know is
// an error that names it. contrib/leadpush.toml is the documented example.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/leadpush/leadpush/internal/units"
	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// DefaultPath is where the programs look without -config.
const DefaultPath = "/etc/leadpush/leadpush.toml"

// Config is the whole file.
type Config struct {
	// File is the file Load read, for a reload; not a key.
	File        string      `toml:"-"`
	Store       Store       `toml:"store"`
	Log         Log         `toml:"log"`
	Milter      Milter      `toml:"milter"`
	Tracking    Tracking    `toml:"tracking"`
	Bounce      Bounce      `toml:"bounce"`
	Suppression Suppression `toml:"suppression"`
	Tracker     Tracker     `toml:"tracker"`
	Admin       Admin       `toml:"admin"`
	Maillog     Maillog     `toml:"maillog"`
	Webhooks    Webhooks    `toml:"webhooks"`
	Retention   Retention   `toml:"retention"`
	// Webhook lists the endpoints events are posted to ([[webhook]]).
	Webhook []Webhook `toml:"webhook"`
	// API is leadpushd's HTTP send API ([api], off by default).
	API API `toml:"api"`
	// Stream lists the message streams ([[stream]]); see Stream.
	Stream []Stream `toml:"stream"`
}

// Maillog is the MTA log leadpushd follows for delivery status.
type Maillog struct {
	Path   string `toml:"path"`   // Postfix maillog_file or the syslog file (/var/log/mail.log); empty: off
	Format string `toml:"format"` // "postfix" (default), "sendmail", or "auto" (told apart line by line)
	// PendingMaxAge is how long a delivery line whose message is not yet
	// in the ledger waits for it: as long as the milter may hold records
	// in memory and store.spool_dir while the ledger cannot be written.
	// Default 24h.
	PendingMaxAge Duration `toml:"pending_max_age"`
}

// Webhooks are settings shared by all [[webhook]] endpoints.
type Webhooks struct {
	History Duration `toml:"history"` // keep delivered attempts this long; default 168h
	MaxAge  Duration `toml:"max_age"` // retry a failing batch this long before giving up; default 72h
	// Backoff is the pause before each retry of a failing batch, the last
	// repeating, with ±10% jitter; default 5s, 30s, 2m, 10m, 30m, 1h, 2h, 4h, 8h.
	Backoff []Duration `toml:"backoff"`
}

// BackoffTable is webhooks.backoff as durations (nil: the default).
func (w Webhooks) BackoffTable() []time.Duration {
	var out []time.Duration
	for _, d := range w.Backoff {
		out = append(out, time.Duration(d))
	}
	return out
}

// Retention is how long leadpushd keeps records in the ledger before
// pruning them (in small transactions, every Interval). "0" keeps them
// forever. Suppressions are never pruned by it; webhook attempt history
// follows webhooks.history.
type Retention struct {
	// Messages with every event about them, counted from the message's
	// creation; default 90d.
	Messages *Duration `toml:"messages"`
	// Inbound is returned mail as ingest received it (raw bounces and
	// complaints: personal data); default 30d.
	Inbound *Duration `toml:"inbound"`
	// Interval between pruning passes; default 10m.
	Interval Duration `toml:"interval"`
}

// Retention defaults.
const (
	DefaultRetainMessages = 90 * 24 * time.Hour
	DefaultRetainInbound  = 30 * 24 * time.Hour
	DefaultPruneInterval  = 10 * time.Minute
)

// RetainMessages is retention.messages with its default.
func (r Retention) RetainMessages() time.Duration {
	if r.Messages == nil {
		return DefaultRetainMessages
	}
	return time.Duration(*r.Messages)
}

// RetainInbound is retention.inbound with its default.
func (r Retention) RetainInbound() time.Duration {
	if r.Inbound == nil {
		return DefaultRetainInbound
	}
	return time.Duration(*r.Inbound)
}

// PruneInterval is retention.interval with its default.
func (r Retention) PruneInterval() time.Duration {
	if r.Interval <= 0 {
		return DefaultPruneInterval
	}
	return time.Duration(r.Interval)
}

// Store is the ledger.
type Store struct {
	Path string `toml:"path"` // SQLite file, WAL mode; default /var/lib/leadpush/leadpush.db
	// SpoolDir keeps records while the database cannot be written; they are
	// replayed when it can. Default: "spool" beside Path.
	SpoolDir string `toml:"spool_dir"`
}

// Log is logging, on standard error.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// Milter is leadpush-milter.
type Milter struct {
	Listen          string     `toml:"listen"`           // unix:/path or inet:host:port; default unix:/var/spool/postfix/leadpush/milter.sock (inside Postfix's chroot)
	TrustedNetworks []string   `toml:"trusted_networks"` // CIDRs whose mail is recorded and tracked, besides SASL-authenticated clients
	RecordHeaders   []string   `toml:"record_headers"`   // custom headers recorded with the message (names or globs, case-insensitive)
	TempDir         string     `toml:"temp_dir"`         // where large bodies are spooled; default the system temp dir
	BodyMemory      units.Size `toml:"body_memory"`      // body bytes kept in memory before spooling to disk; default 1MiB
	MaxTrackSize    units.Size `toml:"max_track_size"`   // larger bodies pass untracked; default 10MiB
	MaxMessageSize  units.Size `toml:"max_message_size"` // a rewrite that would make the message larger leaves it untracked; default 10240000, Postfix's message_size_limit default
	SkipDKIMSigned  *bool      `toml:"skip_dkim_signed"` // leave bodies already DKIM-signed untouched; default true
	MetricsListen   string     `toml:"metrics_listen"`   // host:port for /metrics; default off
}

// Tracking is what the milter writes into messages.
type Tracking struct {
	BaseURL   string   `toml:"base_url"`   // where leadpushd's tracker is reachable, e.g. https://t.example.com
	Keys      []string `toml:"keys"`       // "ID:BASE64SECRET"; the first signs, all verify
	TextLinks bool     `toml:"text_links"` // also rewrite URLs in text/plain parts
}

// Bounce is the VERP return path and the unsubscribe mail address.
type Bounce struct {
	Domain string `toml:"domain"` // bounce+TOKEN@DOMAIN and unsub+TOKEN@DOMAIN; empty: no VERP, no mailto unsubscribe
}

// Suppression is the rejection blacklist.
type Suppression struct {
	Action string `toml:"action"` // "reject" (550 5.7.1 at RCPT, default) or "drop" (accept and remove the recipient)
	// Refresh is how often leadpush-milter reloads the list's changes into
	// memory (default 1s): recipients not on the list are answered from
	// memory, listed ones from the database. 0 looks every recipient up in
	// the database, so that a new entry takes effect at once.
	Refresh *Duration `toml:"refresh"`
	// SoftBounceLimit suppresses an address (reason soft_bounce_limit)
	// once it soft-bounced for a dead-looking reason (mailbox full,
	// expired, suspended, ...) on this many messages within
	// SoftBounceWindow; default 5, 0 never.
	SoftBounceLimit *int `toml:"soft_bounce_limit"`
	// SoftBounceWindow is that period; default 14d.
	SoftBounceWindow *Duration `toml:"soft_bounce_window"`
}

// Policy is the store's soft-bounce rule of [suppression].
func (s Suppression) Policy() ledger.Policy {
	p := ledger.Policy{SoftBounceLimit: ledger.DefaultSoftBounceLimit, SoftBounceWindow: ledger.DefaultSoftBounceWindow}
	if s.SoftBounceLimit != nil {
		p.SoftBounceLimit = *s.SoftBounceLimit
	}
	if s.SoftBounceWindow != nil {
		p.SoftBounceWindow = time.Duration(*s.SoftBounceWindow)
	}
	return p
}

// Policy is the store's whole rule: [suppression]'s soft-bounce limit and
// the scope each [[stream]]'s unsubscribes write.
func (c *Config) Policy() ledger.Policy {
	p := c.Suppression.Policy()
	p.UnsubscribeScopes = c.streamUnsubscribeScopes()
	return p
}

// SuppressionRefresh is suppression.refresh with its default.
func (c *Config) SuppressionRefresh() time.Duration {
	if c.Suppression.Refresh == nil {
		return time.Second
	}
	return time.Duration(*c.Suppression.Refresh)
}

// Tracker is leadpushd's HTTP side.
type Tracker struct {
	Listen         string   `toml:"listen"`          // default 127.0.0.1:8080; serve behind a TLS proxy
	TrustedProxies []string `toml:"trusted_proxies"` // CIDRs whose X-Forwarded-For is believed
	AnonymizeIP    bool     `toml:"anonymize_ip"`    // zero the host part of recorded client addresses
	// ConfirmFrom is the From address of the confirmation links the
	// unsubscribe page of a message with several recipients sends to the
	// address typed (when it is a recipient). Empty (default): that page
	// sends nothing and unsubscribes nobody.
	ConfirmFrom string `toml:"confirm_from"`
	// ConfirmSubmit is where those mails go: host:port of the local
	// Postfix; default 127.0.0.1:25.
	ConfirmSubmit string `toml:"confirm_submit"`
}

// DefaultConfirmSubmit is tracker.confirm_submit's default.
const DefaultConfirmSubmit = "127.0.0.1:25"

// Defaults that a package also applies to its zero values (milter.New,
// the tracker), written once here.
const (
	DefaultStorePath         = "/var/lib/leadpush/leadpush.db"
	DefaultMilterListen      = "unix:/var/spool/postfix/leadpush/milter.sock"
	DefaultBodyMemory        = 1 << 20
	DefaultMaxTrackSize      = 10 << 20
	DefaultMaxMessageSize    = 10240000 // Postfix's message_size_limit default
	DefaultTrackerListen     = "127.0.0.1:8080"
	DefaultAdminListen       = "127.0.0.1:8081"
	SuppressionReject        = "reject" // suppression.action: 550 5.7.1 at RCPT
	SuppressionDrop          = "drop"   // suppression.action: accept, remove at end of message
	DefaultSuppressionAction = SuppressionReject
	MaillogPostfix           = "postfix"
	MaillogSendmail          = "sendmail"
	MaillogAuto              = "auto" // either, told apart line by line
)

// Admin is leadpushd's listener for operators: /healthz and /metrics,
// never published through the tracking domain.
type Admin struct {
	Listen string `toml:"listen"` // default 127.0.0.1:8081; "" turns it off
}

// Default returns the configuration used for keys the file leaves out.
func Default() Config {
	return Config{
		Store:       Store{Path: DefaultStorePath},
		Log:         Log{Level: "info", Format: "text"},
		Milter:      Milter{Listen: DefaultMilterListen, TrustedNetworks: []string{"127.0.0.0/8", "::1/128"}, BodyMemory: DefaultBodyMemory, MaxTrackSize: DefaultMaxTrackSize, MaxMessageSize: DefaultMaxMessageSize},
		Suppression: Suppression{Action: DefaultSuppressionAction},
		Tracker:     Tracker{Listen: DefaultTrackerListen},
		Admin:       Admin{Listen: DefaultAdminListen},
		Maillog:     Maillog{Format: MaillogPostfix},
	}
}

// Load reads and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.File = path
	return c, nil
}

// Parse reads and validates configuration text.
func Parse(text string) (*Config, error) {
	c := Default()
	md, err := toml.Decode(text, &c)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every value and fills derived defaults.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, fmt.Errorf(key+": "+format, args...)) }
	if c.Store.Path == "" {
		bad("store.path", "must be set")
	}
	if c.Store.SpoolDir == "" && c.Store.Path != "" {
		c.Store.SpoolDir = filepath.Join(filepath.Dir(c.Store.Path), "spool")
	}
	if _, err := c.Log.Handler(os.Stderr); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(c.Milter.Listen, "unix:") && !strings.HasPrefix(c.Milter.Listen, "inet:") && !strings.HasPrefix(c.Milter.Listen, "inet6:") {
		bad("milter.listen", "%q: want unix:/path or inet:host:port", c.Milter.Listen)
	}
	if _, err := c.TrustedNetworks(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.TrustedProxies(); err != nil {
		errs = append(errs, err)
	}
	if a := c.Admin.Listen; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("admin.listen", "%q: want host:port, e.g. 127.0.0.1:8081", a)
		} else if a == c.Tracker.Listen {
			bad("admin.listen", "%q is tracker.listen: /metrics would be public", a)
		}
	}
	if c.Milter.BodyMemory <= 0 || c.Milter.MaxTrackSize <= 0 {
		bad("milter", "body_memory and max_track_size must be positive")
	}
	if c.Milter.MaxMessageSize < 0 {
		bad("milter.max_message_size", "must not be negative")
	}
	if c.Tracking.BaseURL != "" {
		u, err := url.Parse(c.Tracking.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("tracking.base_url", "%q: want an absolute http(s) URL such as https://t.example.com", c.Tracking.BaseURL)
		}
		c.Tracking.BaseURL = strings.TrimRight(c.Tracking.BaseURL, "/")
		if len(c.Tracking.Keys) == 0 {
			bad("tracking.keys", "needed when tracking.base_url is set (leadpushctl keygen prints one)")
		}
	}
	if len(c.Tracking.Keys) > 0 {
		if _, err := token.ParseKeyring(c.Tracking.Keys); err != nil {
			bad("tracking.keys", "%v", err)
		}
	}
	if d := c.Bounce.Domain; d != "" && (strings.ContainsAny(d, "@ /:<>") || !strings.Contains(d, ".")) {
		bad("bounce.domain", "%q is not a domain name", d)
	}
	if a := c.Tracker.ConfirmFrom; a != "" && (strings.Count(a, "@") != 1 || strings.ContainsAny(a, " <>\r\n")) {
		bad("tracker.confirm_from", "%q is not an email address", a)
	}
	if c.Tracker.ConfirmSubmit == "" {
		c.Tracker.ConfirmSubmit = DefaultConfirmSubmit
	} else if _, _, err := net.SplitHostPort(c.Tracker.ConfirmSubmit); err != nil {
		bad("tracker.confirm_submit", "%q: want host:port, e.g. 127.0.0.1:25", c.Tracker.ConfirmSubmit)
	}
	if c.Bounce.Domain != "" && len(c.Tracking.Keys) == 0 {
		bad("bounce.domain", "needs tracking.keys to sign the VERP address")
	}
	switch c.Suppression.Action {
	case SuppressionReject, SuppressionDrop:
	default:
		bad("suppression.action", "%q: want \"reject\" or \"drop\"", c.Suppression.Action)
	}
	if r := c.SuppressionRefresh(); r < 0 || (r > 0 && r < 10*time.Millisecond) || r > time.Hour {
		bad("suppression.refresh", "%v: want 0 (no cache) or 10ms to 1h", r)
	}
	if p := c.Suppression.Policy(); p.SoftBounceLimit < 0 || (p.SoftBounceLimit > 0 && p.SoftBounceWindow < time.Hour) {
		bad("suppression.soft_bounce_limit", "%d over %v: want 0 (never) or a positive count over at least 1h", p.SoftBounceLimit, p.SoftBounceWindow)
	}
	for key, d := range map[string]time.Duration{"retention.messages": c.Retention.RetainMessages(), "retention.inbound": c.Retention.RetainInbound()} {
		if d < 0 || (d > 0 && d < time.Hour) {
			bad(key, "%v: want 0 (keep forever) or at least 1h", d)
		}
	}
	if d := time.Duration(c.Maillog.PendingMaxAge); d < 0 || (d > 0 && d < time.Second) {
		bad("maillog.pending_max_age", "%v: want at least 1s (default 24h)", d)
	}
	switch c.Maillog.Format {
	case MaillogPostfix, MaillogSendmail, MaillogAuto:
	default:
		bad("maillog.format", "%q: want \"postfix\", \"sendmail\" or \"auto\"", c.Maillog.Format)
	}
	for i := range c.Webhook {
		if err := c.Webhook[i].Validate(); err != nil {
			errs = append(errs, fmt.Errorf("webhook %d: %w", i+1, err))
		}
	}
	if err := c.API.Validate(); err != nil {
		errs = append(errs, err)
	}
	c.validateStreams(bad)
	return errors.Join(errs...)
}

func prefixes(key string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR or address", key, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// TrustedNetworks parses milter.trusted_networks.
func (c *Config) TrustedNetworks() ([]netip.Prefix, error) {
	return prefixes("milter.trusted_networks", c.Milter.TrustedNetworks)
}

// TrustedProxies parses tracker.trusted_proxies.
func (c *Config) TrustedProxies() ([]netip.Prefix, error) {
	return prefixes("tracker.trusted_proxies", c.Tracker.TrustedProxies)
}

// Keyring returns the tracking keyring, or nil when no keys are set.
func (c *Config) Keyring() *token.Keyring {
	if len(c.Tracking.Keys) == 0 {
		return nil
	}
	k, _ := token.ParseKeyring(c.Tracking.Keys) // checked by Validate
	return k
}

// SkipDKIMSigned is milter.skip_dkim_signed with its default.
func (c *Config) SkipDKIMSigned() bool {
	return c.Milter.SkipDKIMSigned == nil || *c.Milter.SkipDKIMSigned
}

// Handler builds the slog handler log.level and log.format ask for.
func (l Log) Handler(w *os.File) (slog.Handler, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q: want debug, info, warn or error", l.Level)
	}
	o := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text", "":
		return slog.NewTextHandler(w, o), nil
	case "json":
		return slog.NewJSONHandler(w, o), nil
	}
	return nil, fmt.Errorf("log.format: %q: want text or json", l.Format)
}

// Logger returns the logger the config asks for.
func (c *Config) Logger() *slog.Logger {
	h, err := c.Log.Handler(os.Stderr)
	if err != nil {
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(h)
}

// Duration is a time.Duration written as "10s", "72h".
type Duration time.Duration

// MarshalText writes the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. Besides Go's units
// ("10s", "72h") it takes whole days ("90d").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads "10s", "72h", "1h30m" as time.ParseDuration does,
// and whole days: "90d".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 && n <= 100*365 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (want e.g. \"10s\", \"72h\", \"90d\")", s)
	}
	return v, nil
}

// FromFlags is the start of a daemon's main: it parses -config and
// -check-config, loads the file, and exits with status 2 and the error on
// a bad configuration, or with 0 after -check-config.
func FromFlags(prog string) *Config {
	path := flag.String("config", DefaultPath, "configuration file")
	check := flag.Bool("check-config", false, "validate the configuration and exit")
	flag.Parse()
	c, err := Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(2)
	}
	if *check {
		fmt.Println("configuration ok")
		os.Exit(0)
	}
	return c
}
