package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/postfixsetup"
	"github.com/leadpush/leadpush/ledger"
)

// doctor collects findings: one line each, with the fix.
type doctor struct {
	out      io.Writer
	problems int
}

func (d *doctor) ok(format string, args ...any) { fmt.Fprintf(d.out, "ok    "+format+"\n", args...) }

func (d *doctor) fail(fix, format string, args ...any) {
	d.problems++
	fmt.Fprintf(d.out, "FAIL  "+format+"\n      fix: %s\n", append(args, fix)...)
}

func (d *doctor) skip(format string, args ...any) { fmt.Fprintf(d.out, "skip  "+format+"\n", args...) }

// cmdDoctor checks, as the service user would meet them, the things a
// sysadmin gets wrong when installing: the config, the ledger's owner, the
// milter socket and Postfix's view of it, the transport and pipe for
// returned mail, the mail log's permissions, the tracker, the webhooks.
// Each finding is one line with its fix; the exit status is 1 when there
// is a problem.
func cmdDoctor(c *cli, args []string) error {
	var pfDir, svc, self, smCF, smMT string
	_, pos, err := flags("doctor", args, func(fs *flag.FlagSet) {
		fs.StringVar(&pfDir, "c", "", "Postfix config directory (postconf -c)")
		fs.StringVar(&svc, "user", "leadpush", "the user the daemons run as")
		fs.StringVar(&self, "leadpushctl", "", "leadpushctl's path in the pipe service")
		fs.StringVar(&smCF, "sendmail-cf", "/etc/mail/sendmail.cf", "Sendmail's generated configuration")
		fs.StringVar(&smMT, "mailertable", "/etc/mail/mailertable", "Sendmail's mailertable source")
	})
	if err != nil || len(pos) > 0 {
		return errUsage
	}
	d := &doctor{out: c.out}
	cfg, err := config.Load(c.cfgPath)
	if err != nil {
		d.fail("correct the file; leadpushctl -check-config validates it", "config %s: %v", c.cfgPath, err)
		return exitCode(1)
	}
	d.ok("config %s is valid", c.cfgPath)
	u, uerr := user.Lookup(svc)
	if uerr != nil {
		d.fail("install the package (it creates the user) or pass --user", "service user %q: %v", svc, uerr)
	}
	d.checkLedger(cfg, u)
	d.checkMilterSocket(cfg)
	if cfg.Maillog.Format == config.MaillogSendmail {
		d.skip("Postfix checks: maillog.format is sendmail")
		d.checkSendmail(cfg, smCF, smMT)
	} else {
		opt, err := postfixOptions(c, cfg, pfDir, self)
		if err == nil {
			d.checkPostfix(c.ctx, opt)
			d.checkSizeLimit(cfg, pfDir)
		}
	}
	d.checkMaillog(cfg, u)
	d.checkTracker(cfg)
	d.checkWebhooks(c, cfg)
	if d.problems > 0 {
		fmt.Fprintf(c.out, "%d problem(s)\n", d.problems)
		return exitCode(1)
	}
	fmt.Fprintln(c.out, "all OK")
	return nil
}

func ids(fi os.FileInfo) (uid, gid int) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1
	}
	return int(st.Uid), int(st.Gid)
}

// userIDs returns a user's uid and every group it is in.
func userIDs(u *user.User) (uid int, gids []int) {
	uid, _ = strconv.Atoi(u.Uid)
	groups, _ := u.GroupIds()
	for _, g := range append(groups, u.Gid) {
		if n, err := strconv.Atoi(g); err == nil && !slices.Contains(gids, n) {
			gids = append(gids, n)
		}
	}
	return uid, gids
}

// may reports whether the user may access fi with the permission bits of
// mask (4 read, 2 write, 1 execute), as the kernel decides for a
// non-root user.
func may(u *user.User, fi os.FileInfo, mask os.FileMode) bool {
	uid, gids := userIDs(u)
	if uid == 0 {
		return true
	}
	fu, fg := ids(fi)
	perm := fi.Mode().Perm()
	switch {
	case fu == uid:
		return perm>>6&mask == mask
	case slices.Contains(gids, fg):
		return perm>>3&mask == mask
	}
	return perm&mask == mask
}

func (d *doctor) checkLedger(cfg *config.Config, u *user.User) {
	path := cfg.Store.Path
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		d.fail("start leadpushd or leadpush-milter once (their units create it), or install -d -o leadpush -g leadpush -m 0750 "+dir,
			"ledger directory %s: %v", dir, err)
		return
	}
	if u != nil && !may(u, fi, 3) {
		d.fail(fmt.Sprintf("chown -R %s:%s %s", u.Username, u.Username, dir), "ledger directory %s is not writable by %s", dir, u.Username)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		d.fail("start leadpush-milter or leadpushd once: they create and migrate it", "no ledger at %s", path)
		return
	}
	bad := false
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if u != nil && !may(u, fi, 6) {
			bad = true
			fuid, _ := ids(fi)
			d.fail(fmt.Sprintf("chown %s:%s %s", u.Username, u.Username, p), "%s (owner uid %d, mode %v) is not writable by %s: the daemons fail with \"attempt to write a readonly database\"",
				p, fuid, fi.Mode().Perm(), u.Username)
		}
	}
	s, err := ledger.OpenSQLiteReadOnly(path)
	if err != nil {
		d.fail("start leadpush-milter or leadpushd once to migrate it", "ledger %s: %v", path, err)
		return
	}
	s.Close()
	if !bad {
		d.ok("ledger %s is migrated and writable by the service user", path)
	}
}

func (d *doctor) checkMilterSocket(cfg *config.Config) {
	network, addr := "tcp", strings.TrimPrefix(strings.TrimPrefix(cfg.Milter.Listen, "inet:"), "inet6:")
	if p, ok := strings.CutPrefix(cfg.Milter.Listen, "unix:"); ok {
		network, addr = "unix", p
		fi, err := os.Stat(p)
		if err != nil {
			d.fail("start leadpush-milter (systemctl start leadpush-milter); check its log with journalctl -u leadpush-milter",
				"milter socket %s: %v", p, err)
			return
		}
		if fi.Mode()&os.ModeSocket == 0 {
			d.fail("remove the file and restart leadpush-milter", "%s is not a socket", p)
			return
		}
	} else if h, port, err := net.SplitHostPort(addr); err == nil && strings.HasPrefix(cfg.Milter.Listen, "inet:") {
		addr = net.JoinHostPort(h, port)
	}
	conn, err := net.DialTimeout(network, addr, 3*time.Second)
	if err != nil {
		d.fail("start leadpush-milter (systemctl start leadpush-milter)", "milter %s does not answer: %v", cfg.Milter.Listen, err)
		return
	}
	conn.Close()
	d.ok("leadpush-milter answers at %s", cfg.Milter.Listen)
}

func (d *doctor) checkPostfix(ctx context.Context, opt postfixsetup.Options) {
	plan, err := postfixsetup.Setup(ctx, opt)
	if err != nil {
		d.fail("change leadpush.toml or master.cf as the message says, then leadpushctl postfix setup --apply", "postfix: %v", err)
		return
	}
	if len(plan.Changes) == 0 {
		d.ok("postfix: smtpd reaches the milter at %s (chrooted: %v); transport, pipe service and relay_domains for returned mail are in place",
			plan.MilterAddr, plan.Chrooted)
		return
	}
	for _, ch := range plan.Changes {
		d.fail("leadpushctl postfix setup --apply (then systemctl reload postfix)", "postfix: %s", ch.Why)
	}
}

func (d *doctor) checkMaillog(cfg *config.Config, u *user.User) {
	if cfg.Maillog.Path == "" {
		d.skip("mail log: maillog.path is empty, so no delivery status is recorded")
		return
	}
	fi, err := os.Stat(cfg.Maillog.Path)
	if err != nil {
		d.fail("set maillog.path to Postfix's log (postconf -h maillog_file, or /var/log/mail.log with rsyslog)", "mail log %s: %v", cfg.Maillog.Path, err)
		return
	}
	if u != nil && !may(u, fi, 4) {
		_, gid := ids(fi)
		d.fail(fmt.Sprintf("make it readable by group adm (chgrp adm %s; chmod g+r %s; for Postfix's own maillog_file set it in a logrotate postrotate) or add %s to group %d",
			cfg.Maillog.Path, cfg.Maillog.Path, u.Username, gid),
			"mail log %s (mode %v) is not readable by %s", cfg.Maillog.Path, fi.Mode().Perm(), u.Username)
		return
	}
	d.ok("mail log %s is readable by the service user", cfg.Maillog.Path)
}

func (d *doctor) checkTracker(cfg *config.Config) {
	if cfg.Tracking.BaseURL == "" {
		d.skip("tracker: tracking.base_url is empty, so mail is not tracked")
		return
	}
	// The public side serves only /o/ /c/ /u/ (and a proxy in front of it
	// may pass only those): a pixel with a bad token must get leadpushd's
	// own 404.
	cl := &http.Client{Timeout: 5 * time.Second}
	r, err := cl.Get(cfg.Tracking.BaseURL + "/o/leadpushctl-doctor.gif")
	if err != nil {
		d.fail("start leadpushd and point the tracking domain (DNS, the TLS proxy: contrib/nginx) at tracker.listen",
			"tracker at %s does not answer: %v", cfg.Tracking.BaseURL, err)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 512))
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound || string(body) != "not found\n" {
		d.fail("make the proxy at tracking.base_url pass /o/, /c/ and /u/ to leadpushd's tracker.listen (contrib/nginx)",
			"%s/o/... is not leadpushd's tracker (status %d)", cfg.Tracking.BaseURL, r.StatusCode)
		return
	}
	d.ok("tracker answers at %s", cfg.Tracking.BaseURL)
}

func (d *doctor) checkWebhooks(c *cli, cfg *config.Config) {
	if len(cfg.Webhook) == 0 {
		return
	}
	s, err := ledger.OpenSQLiteReadOnly(cfg.Store.Path)
	if err != nil {
		return // reported by checkLedger
	}
	defer s.Close()
	for _, w := range cfg.Webhook {
		name := w.WithDefaults().Name
		st, err := s.Endpoint(c.ctx, name)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			d.fail("start leadpushd: it verifies new endpoints", "webhook %s: never run", name)
		case err != nil:
			d.fail("see the error", "webhook %s: %v", name, err)
		case st.Paused:
			d.fail("leadpushctl webhooks resume "+name, "webhook %s is paused (%s)", name, st.LastError)
		case !st.Verified:
			d.fail("make the receiver answer a HEAD with 200 or accept the signed test request (README, Webhooks)",
				"webhook %s is not verified; its events wait (last: status %d %s)", name, st.LastStatus, st.LastError)
		default:
			d.ok("webhook %s is verified", name)
		}
	}
}

// checkSizeLimit compares milter.max_message_size with Postfix's
// message_size_limit: a tracked message that grows past Postfix's limit is
// refused with a permanent 552, so the milter must stop tracking before.
func (d *doctor) checkSizeLimit(cfg *config.Config, pfDir string) {
	args := []string{"-h", "message_size_limit"}
	if pfDir != "" {
		args = append([]string{"-c", pfDir}, args...)
	}
	postconf := "/usr/sbin/postconf"
	if p, err := exec.LookPath("postconf"); err == nil {
		postconf = p
	}
	out, err := exec.Command(postconf, args...).Output()
	if err != nil {
		d.fail("install Postfix or pass -c", "postfix: postconf -h message_size_limit: %v", err)
		return
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		d.fail("set a number: postconf -e message_size_limit=10240000", "postfix: message_size_limit %q", strings.TrimSpace(string(out)))
		return
	}
	have := int64(cfg.Milter.MaxMessageSize)
	if limit > 0 && have > limit {
		d.fail(fmt.Sprintf("set [milter] max_message_size = %d in leadpush.toml", limit),
			"milter.max_message_size %d is above Postfix's message_size_limit %d: a message tracking makes larger gets a permanent 552", have, limit)
		return
	}
	d.ok("milter.max_message_size %d fits Postfix's message_size_limit %d", have, limit)
}

// checkSendmail reads the generated sendmail.cf and the mailertable: the
// milter defined on milter.listen with F=T and in InputMailFilters, and
// the bounce domain routed to the leadpush mailer.
func (d *doctor) checkSendmail(cfg *config.Config, cfPath, mtPath string) {
	dir := filepath.Dir(cfPath)
	cf, err := os.ReadFile(cfPath)
	if err != nil {
		d.fail("install Sendmail's configuration, or pass --sendmail-cf", "sendmail: %v", err)
		return
	}
	want := ""
	if p, ok := strings.CutPrefix(cfg.Milter.Listen, "unix:"); ok {
		want = "S=local:" + p
	} else if h, port, err := net.SplitHostPort(strings.TrimPrefix(cfg.Milter.Listen, "inet:")); err == nil {
		want = "S=inet:" + port + "@" + h
	}
	var def string
	listed := false
	for _, l := range strings.Split(string(cf), "\n") {
		if strings.HasPrefix(l, "Xleadpush,") {
			def = l
		}
		if v, ok := strings.CutPrefix(l, "O InputMailFilters="); ok && slices.Contains(strings.Split(strings.ReplaceAll(v, " ", ""), ","), "leadpush") {
			listed = true
		}
	}
	switch {
	case def == "":
		d.fail("add contrib/sendmail/leadpush.mc's lines to sendmail.mc, then make -C "+dir, "sendmail: no leadpush milter in %s", cfPath)
	case !strings.Contains(def, want):
		d.fail(fmt.Sprintf("set %s in leadpush.mc's INPUT_MAIL_FILTER (milter.listen is %s), then make -C %s", want, cfg.Milter.Listen, dir),
			"sendmail: the leadpush milter is %q, not on milter.listen", def)
	case !strings.Contains(def, "F=T"):
		d.fail("add F=T to leadpush.mc's INPUT_MAIL_FILTER: mail waits (451) while the milter is down instead of leaving untracked",
			"sendmail: the leadpush milter has no F=T")
	case !listed:
		d.fail("INPUT_MAIL_FILTER (not MAIL_FILTER) in sendmail.mc lists it in InputMailFilters", "sendmail: the leadpush milter is defined but not in InputMailFilters")
	default:
		d.ok("sendmail: the leadpush milter is on %s with F=T", cfg.Milter.Listen)
	}
	if cfg.Bounce.Domain == "" {
		return
	}
	mt, err := os.ReadFile(mtPath)
	routed := false
	for _, l := range strings.Split(string(mt), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && strings.EqualFold(f[0], cfg.Bounce.Domain) && strings.HasPrefix(f[1], "leadpush:") {
			routed = true
		}
	}
	if err != nil || !routed {
		d.fail("add contrib/sendmail/mailertable's line to "+mtPath+" and leadpush-ingest.mc's lines to sendmail.mc, then make -C "+dir,
			"sendmail: %s is not routed to the leadpush mailer in %s", cfg.Bounce.Domain, mtPath)
		return
	}
	if !strings.Contains(string(cf), "Mleadpush,") {
		d.fail("add contrib/sendmail/leadpush-ingest.mc's lines to sendmail.mc, then make -C "+dir, "sendmail: no leadpush mailer in sendmail.cf")
		return
	}
	d.ok("sendmail: %s goes to the leadpush mailer (leadpushctl ingest)", cfg.Bounce.Domain)
}
