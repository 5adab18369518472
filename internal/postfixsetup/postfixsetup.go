// Package postfixsetup plans and makes the changes Postfix needs to run
// Leadpush: leadpush-milter in smtpd_milters and non_smtpd_milters (added to
// what is there, before any DKIM signer), milter_default_action = tempfail,
// the bounce domain routed to the leadpush-ingest pipe(8) service through
// a transport map of its own, and the domain in relay_domains.
//
// It reads and writes Postfix's configuration only through the real
// postconf(1) and postmap(1) (with -c CONFIG_DIR when one is given), and
// never edits main.cf or master.cf as text. The changes come in an order
// that never leaves Postfix naming something missing: the map file is
// written and postmapped before transport_maps names it, the pipe service
// exists before the map routes mail to it, the map routes the domain before
// relay_domains accepts mail for it. A second run finds nothing to do.
//
// Where the milter's address is written depends on master.cf: smtpd(8)
// and cleanup(8) (which runs non_smtpd_milters) chrooted into the queue
// directory, as Debian ships them, reach a unix socket by its path inside
// the chroot (unix:/leadpush/milter.sock for
// /var/spool/postfix/leadpush/milter.sock); unchrooted, by its full path.
// A mix of the two cannot be served by one address and is refused.
package postfixsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Service is the master.cf name of the pipe service for returned mail.
const Service = "leadpush-ingest"

// MapName is the transport map's file name in Postfix's config directory.
const MapName = "leadpush_transport"

// ErrChrootMix is returned when smtpd and cleanup services disagree on the
// chroot column of master.cf.
var ErrChrootMix = errors.New("postfixsetup: smtpd and cleanup services are not all chrooted or all unchrooted")

// ErrOutsideChroot is returned when Postfix is chrooted and milter.listen
// is a unix socket outside its queue directory.
var ErrOutsideChroot = errors.New("postfixsetup: the milter socket is outside Postfix's chroot")

// Options say what to set up. MilterListen is required; BounceDomain and
// IngestCommand go together (empty BounceDomain: no returned-mail route).
type Options struct {
	// ConfigDir is Postfix's config_directory (postconf -c); empty: the
	// default (/etc/postfix).
	ConfigDir string
	// MilterListen is leadpush.toml's milter.listen: unix:/path or
	// inet:host:port.
	MilterListen string
	// BounceDomain is bounce.domain; empty skips the transport, relay_domains
	// and the pipe service.
	BounceDomain string
	// IngestCommand is the pipe's argv after "argv=", e.g.
	// "/usr/bin/leadpushctl ingest --recipient ${recipient}".
	IngestCommand string
	// User runs the pipe; empty: "leadpush".
	User string
	// Bin is where postconf and postmap are looked for when they are not
	// on PATH; empty: /usr/sbin.
	Bin string
}

// Kind is what a Change does.
type Kind int

const (
	WriteMap Kind = iota // write the transport map's source file
	Postmap              // postmap it
	Master               // postconf -M: add or replace a master.cf service
	Main                 // postconf -e: set a main.cf parameter
	Override             // postconf -P: set a master.cf service's -o parameter
)

// Change is one step of a Plan.
type Change struct {
	Kind Kind
	Name string // parameter, service/type, or file path
	Old  string // current value ("" when unset or absent)
	New  string // value, master.cf entry, file content or table
	Why  string // one line for the admin
}

// String is the change as the admin would type it.
func (c Change) String() string {
	switch c.Kind {
	case WriteMap:
		return fmt.Sprintf("write %s:\n      %s", c.Name, strings.ReplaceAll(strings.TrimRight(c.New, "\n"), "\n", "\n      "))
	case Postmap:
		return "postmap " + c.New
	case Master:
		return fmt.Sprintf("postconf -M %s='%s'", c.Name, c.New)
	case Override:
		return fmt.Sprintf("postconf -P '%s=%s'\n      (was: %s)", c.Name, c.New, c.Old)
	default:
		s := fmt.Sprintf("postconf -e '%s = %s'", c.Name, c.New)
		if c.Old != "" {
			s += "\n      (was: " + c.Old + ")"
		}
		return s
	}
}

// Plan is what Setup found and would change, in order.
type Plan struct {
	Chrooted   bool   // smtpd and cleanup run chrooted
	QueueDir   string // queue_directory (the chroot)
	MilterAddr string // the milter address as Postfix must write it
	Changes    []Change
	Notes      []string // what the admin must do by hand
}

// String prints the plan for the admin.
func (p *Plan) String() string {
	var b strings.Builder
	where := "not chrooted"
	if p.Chrooted {
		where = "chrooted in " + p.QueueDir
	}
	fmt.Fprintf(&b, "Postfix: smtpd and cleanup %s; milter address %s\n", where, p.MilterAddr)
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	if len(p.Changes) == 0 {
		b.WriteString("nothing to do\n")
		return b.String()
	}
	for i, c := range p.Changes {
		fmt.Fprintf(&b, "%2d. %s\n    %s\n", i+1, c.Why, c)
	}
	return b.String()
}

// postfix runs postconf and postmap for one config directory.
type postfix struct {
	dir, bin string
}

func (p postfix) cmd(ctx context.Context, name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		bin := p.bin
		if bin == "" {
			bin = "/usr/sbin"
		}
		path = filepath.Join(bin, name)
	}
	if p.dir != "" {
		args = append([]string{"-c", p.dir}, args...)
	}
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, path, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	// postconf warns on stderr (unmatched requests, unused parameters) and
	// still exits 0; the warnings are not errors here.
	return strings.TrimRight(stdout.String(), "\n"), nil
}

// param is postconf -h NAME: the value as written, or the default.
func (p postfix) param(ctx context.Context, name string) (string, error) {
	return p.cmd(ctx, "postconf", "-h", name)
}

// explicit is postconf -n -h NAME: the value when main.cf sets it, else "".
func (p postfix) explicit(ctx context.Context, name string) (string, error) {
	return p.cmd(ctx, "postconf", "-n", "-h", name)
}

// Setup reads Postfix's configuration and returns the plan; it changes
// nothing.
func Setup(ctx context.Context, opt Options) (*Plan, error) {
	pf := postfix{dir: opt.ConfigDir, bin: opt.Bin}
	if opt.User == "" {
		opt.User = "leadpush"
	}
	plan := &Plan{}
	var err error
	if plan.QueueDir, err = pf.cmd(ctx, "postconf", "-x", "-h", "queue_directory"); err != nil {
		return nil, err
	}
	if plan.Chrooted, err = chrooted(ctx, pf); err != nil {
		return nil, err
	}
	if plan.MilterAddr, err = milterAddr(opt.MilterListen, plan.Chrooted, plan.QueueDir); err != nil {
		return nil, err
	}
	add := func(c Change) { plan.Changes = append(plan.Changes, c) }

	if opt.BounceDomain != "" {
		if err := planIngest(ctx, pf, opt, add); err != nil {
			return nil, err
		}
	}

	if v, err := pf.param(ctx, "milter_default_action"); err != nil {
		return nil, err
	} else if v != "tempfail" {
		add(Change{Kind: Main, Name: "milter_default_action", Old: v, New: "tempfail",
			Why: "hold mail (451) while leadpush-milter is down, instead of delivering it with its control headers"})
	}
	smtpd, err := pf.explicit(ctx, "smtpd_milters")
	if err != nil {
		return nil, err
	}
	if nv, changed := withMilter(smtpd, plan.MilterAddr); changed {
		add(Change{Kind: Main, Name: "smtpd_milters", Old: smtpd, New: nv,
			Why: "leadpush-milter for mail received over SMTP, before any DKIM signer"})
	}
	nonSMTPD, err := pf.explicit(ctx, "non_smtpd_milters")
	if err != nil {
		return nil, err
	}
	if !refersTo(nonSMTPD, "smtpd_milters") {
		if nv, changed := withMilter(nonSMTPD, plan.MilterAddr); changed {
			add(Change{Kind: Main, Name: "non_smtpd_milters", Old: nonSMTPD, New: nv,
				Why: "leadpush-milter for mail submitted with sendmail(1), before any DKIM signer"})
		}
	}
	if err := planOverrides(ctx, pf, plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// planOverrides adds the milter to master.cf services that set their own
// smtpd_milters or non_smtpd_milters with -o (a submission service with
// its own signer, say), unless the value names the main.cf parameter.
// postconf -P takes no white space in a value: such lists are joined with
// commas, and a { ... } group is left to the admin (a note).
func planOverrides(ctx context.Context, pf postfix, plan *Plan) error {
	out, err := pf.cmd(ctx, "postconf", "-P")
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(out, "\n") {
		key, val, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(key, '/')
		if i < 0 {
			continue
		}
		svc, param := key[:i], key[i+1:]
		if param != "smtpd_milters" && param != "non_smtpd_milters" ||
			refersTo(val, "smtpd_milters") || refersTo(val, "non_smtpd_milters") {
			continue
		}
		nv, changed := withMilter(val, plan.MilterAddr)
		if !changed {
			continue
		}
		if strings.Contains(val, "{") {
			plan.Notes = append(plan.Notes, fmt.Sprintf("master.cf service %s sets -o %s with a { ... } group, which postconf -P cannot write: add %s there yourself, before any DKIM signer", svc, param, plan.MilterAddr))
			continue
		}
		nv = strings.Join(splitList(nv), ",")
		plan.Changes = append(plan.Changes, Change{Kind: Override, Name: key, Old: val, New: nv,
			Why: "leadpush-milter in " + svc + "'s own " + param + " (-o), before any DKIM signer"})
	}
	return nil
}

// planIngest plans the returned-mail route: map file, postmap, pipe
// service, its recipient limit, transport_maps, relay_domains.
func planIngest(ctx context.Context, pf postfix, opt Options, add func(Change)) error {
	if opt.IngestCommand == "" {
		return errors.New("postfixsetup: IngestCommand is needed with BounceDomain")
	}
	cfgDir, err := pf.cmd(ctx, "postconf", "-x", "-h", "config_directory")
	if err != nil {
		return err
	}
	dbType, err := pf.cmd(ctx, "postconf", "-x", "-h", "default_database_type")
	if err != nil {
		return err
	}
	mapPath := filepath.Join(cfgDir, MapName)
	table := dbType + ":" + mapPath
	const nexthop = Service + ":"
	content := fmt.Sprintf("# Written by leadpushctl postfix setup: returned mail for the bounce domain\n# goes to leadpushctl ingest (master.cf service %s).\n%s %s\n", Service, opt.BounceDomain, nexthop)
	// The map is current when its source says what we would write and
	// postmap -q answers from the built table.
	// (postmap -q on a missing table logs a fatal error: only ask when the
	// source is already right.)
	src, _ := os.ReadFile(mapPath)
	current := string(src) == content
	if current {
		got, err := pf.cmd(ctx, "postmap", "-q", opt.BounceDomain, table)
		current = err == nil && got == nexthop
	}
	if !current {
		add(Change{Kind: WriteMap, Name: mapPath, Old: string(src), New: content,
			Why: "the transport map routing " + opt.BounceDomain + " to " + Service})
		add(Change{Kind: Postmap, Name: mapPath, New: table, Why: "build it before any parameter names it"})
	}

	entry := fmt.Sprintf("%s unix - n n - 4 pipe flags=Rq user=%s argv=%s", Service, opt.User, opt.IngestCommand)
	cur, err := pf.cmd(ctx, "postconf", "-M", Service+"/unix")
	if err != nil {
		return err
	}
	if strings.Join(strings.Fields(cur), " ") != entry {
		add(Change{Kind: Master, Name: Service + "/unix", Old: cur, New: entry,
			Why: "the pipe(8) service that hands returned mail to leadpushctl ingest as user " + opt.User})
	}
	limit := Service + "_destination_recipient_limit"
	if v, err := pf.explicit(ctx, limit); err != nil {
		return err
	} else if v != "1" {
		add(Change{Kind: Main, Name: limit, Old: v, New: "1", Why: "one recipient per ingest run (the VERP address is the recipient)"})
	}

	tm, err := pf.explicit(ctx, "transport_maps")
	if err != nil {
		return err
	}
	if !slices.Contains(splitList(tm), table) {
		nv := table
		if tm != "" {
			nv += ", " + tm
		}
		add(Change{Kind: Main, Name: "transport_maps", Old: tm, New: nv,
			Why: "route " + opt.BounceDomain + " through the map (first, so it wins)"})
	}

	rd, err := pf.explicit(ctx, "relay_domains")
	if err != nil {
		return err
	}
	base := rd
	if rd == "" {
		// Unset: the default is $mydestination below compatibility level 2,
		// empty above; keep what it means.
		if x, err := pf.cmd(ctx, "postconf", "-x", "-h", "relay_domains"); err != nil {
			return err
		} else if x != "" {
			base = "$mydestination"
		}
	}
	expanded, err := pf.cmd(ctx, "postconf", "-x", "-h", "relay_domains")
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(splitList(expanded), func(s string) bool { return strings.EqualFold(s, opt.BounceDomain) }) {
		nv := opt.BounceDomain
		if base != "" {
			nv = base + ", " + opt.BounceDomain
		}
		add(Change{Kind: Main, Name: "relay_domains", Old: rd, New: nv,
			Why: "accept mail for " + opt.BounceDomain + " (after the transport routes it)"})
	}
	return nil
}

// chrooted reports whether every smtpd and cleanup service of master.cf is
// chrooted; ErrChrootMix when some are and some are not.
func chrooted(ctx context.Context, pf postfix) (bool, error) {
	out, err := pf.cmd(ctx, "postconf", "-F")
	if err != nil {
		return false, err
	}
	cmds, chroot := map[string]string{}, map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		key, val, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		i := strings.LastIndexByte(key, '/')
		if i < 0 {
			continue
		}
		svc, field := key[:i], key[i+1:]
		switch field {
		case "command":
			cmds[svc] = strings.Fields(val + " x")[0]
		case "chroot":
			chroot[svc] = val
		}
	}
	var yes, no []string
	for svc, c := range cmds {
		if c != "smtpd" && c != "cleanup" {
			continue
		}
		// "-" is the built-in default, n since Postfix 3.0.
		if chroot[svc] == "y" {
			yes = append(yes, svc)
		} else {
			no = append(no, svc)
		}
	}
	slices.Sort(yes)
	slices.Sort(no)
	if len(yes) > 0 && len(no) > 0 {
		return false, fmt.Errorf("%w: chrooted: %s; not chrooted: %s. One milter address cannot serve both: set the chroot column (5th) of these master.cf services alike (y, as Debian ships them, or n), then run this again",
			ErrChrootMix, strings.Join(yes, ", "), strings.Join(no, ", "))
	}
	if len(yes)+len(no) == 0 {
		return false, errors.New("postfixsetup: master.cf has no smtpd or cleanup service")
	}
	return len(yes) > 0, nil
}

// milterAddr is milter.listen as Postfix must write it.
func milterAddr(listen string, chrooted bool, queueDir string) (string, error) {
	network, addr, ok := strings.Cut(listen, ":")
	if !ok || addr == "" {
		return "", fmt.Errorf("postfixsetup: milter.listen %q: want unix:/path or inet:host:port", listen)
	}
	switch network {
	case "inet", "inet6":
		return listen, nil
	case "unix", "local":
	default:
		return "", fmt.Errorf("postfixsetup: milter.listen %q: want unix:/path or inet:host:port", listen)
	}
	path := filepath.Clean(addr)
	if !chrooted {
		return "unix:" + path, nil
	}
	q := filepath.Clean(queueDir)
	rel, err := filepath.Rel(q, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("%w: smtpd and cleanup run chrooted in %s and cannot reach %s; set [milter] listen = \"unix:%s\" in leadpush.toml (or inet:127.0.0.1:PORT)",
			ErrOutsideChroot, q, path, filepath.Join(q, "leadpush", "milter.sock"))
	}
	return "unix:/" + rel, nil
}

// splitList splits a Postfix list value on commas and white space, keeping
// { ... } groups (per-milter settings) whole.
func splitList(v string) []string {
	var out []string
	var cur strings.Builder
	depth := 0
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for _, r := range v {
		switch {
		case r == '{':
			depth++
			cur.WriteRune(r)
		case r == '}':
			depth--
			cur.WriteRune(r)
			if depth == 0 {
				flush()
			}
		case depth == 0 && (r == ',' || r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

// milterOf is the address of a list element: the element, or the first
// word of a { address, name = value ... } group.
func milterOf(elem string) string {
	if s, ok := strings.CutPrefix(elem, "{"); ok {
		s = strings.TrimSuffix(s, "}")
		if f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }); len(f) > 0 {
			return f[0]
		}
	}
	return elem
}

// dkimSigner reports whether a milter address looks like a DKIM signer:
// opendkim's or dkimpy-milter's socket or port, or rspamd's proxy.
func dkimSigner(addr string) bool {
	a := strings.ToLower(addr)
	if strings.Contains(a, "dkim") {
		return true
	}
	for _, port := range []string{":8891", ":8892", ":11332"} {
		if strings.HasSuffix(a, port) {
			return true
		}
	}
	return false
}

// withMilter returns the list with addr placed before the first DKIM
// signer (or last), and whether that differs from the list. Other milters
// keep their order; a misplaced addr (after a signer) is moved.
func withMilter(list, addr string) (string, bool) {
	elems := splitList(list)
	var rest []string
	for _, e := range elems {
		if milterOf(e) != addr {
			rest = append(rest, e)
		}
	}
	i := slices.IndexFunc(rest, func(e string) bool { return dkimSigner(milterOf(e)) })
	if i < 0 {
		i = len(rest)
	}
	// Keep our own element as written (it may carry { ... } settings).
	ours := addr
	for _, e := range elems {
		if milterOf(e) == addr {
			ours = e
			break
		}
	}
	out := slices.Insert(slices.Clone(rest), i, ours)
	if slices.Equal(out, elems) {
		return list, false
	}
	return strings.Join(out, ", "), true
}

// refersTo reports whether a value names $param (or ${param}, $(param)).
func refersTo(v, param string) bool {
	for _, f := range []string{"$" + param, "${" + param + "}", "$(" + param + ")"} {
		if i := strings.Index(v, f); i >= 0 {
			end := i + len(f)
			if f[len(f)-1] == '}' || f[len(f)-1] == ')' || end == len(v) || !isNameByte(v[end]) {
				return true
			}
		}
	}
	return false
}

func isNameByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// Apply makes the plan's changes in order, stopping at the first failure
// (what was done before it is consistent: see the package doc).
func Apply(ctx context.Context, opt Options, p *Plan) error {
	pf := postfix{dir: opt.ConfigDir, bin: opt.Bin}
	for _, c := range p.Changes {
		var err error
		switch c.Kind {
		case WriteMap:
			err = writeFile(c.Name, c.New)
		case Postmap:
			_, err = pf.cmd(ctx, "postmap", c.New)
		case Master:
			_, err = pf.cmd(ctx, "postconf", "-M", c.Name+"="+c.New)
		case Override:
			_, err = pf.cmd(ctx, "postconf", "-P", c.Name+"="+c.New)
		case Main:
			_, err = pf.cmd(ctx, "postconf", "-e", c.Name+" = "+c.New)
		}
		if err != nil {
			return fmt.Errorf("postfixsetup: %s: %w", c, err)
		}
	}
	return nil
}

// writeFile replaces path atomically (0644, like Postfix's other maps).
func writeFile(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
