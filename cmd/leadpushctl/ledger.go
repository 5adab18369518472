package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/token"
)

// messageJSON is the --json form of a message: one object a line.
type messageJSON struct {
	ID           string            `json:"id"`
	QueueID      string            `json:"queue_id"`
	Tag          string            `json:"tag"`
	Stream       string            `json:"stream"`
	Tracking     string            `json:"tracking"`
	EnvelopeFrom string            `json:"envelope_from"`
	Recipients   []string          `json:"recipients"`
	From         string            `json:"from"`
	To           string            `json:"to"`
	Subject      string            `json:"subject"`
	MessageID    string            `json:"message_id"`
	Headers      map[string]string `json:"headers"`
	HeaderList   []ledger.Header   `json:"header_list"` // the same, in order, with repeats
	SASLUser     string            `json:"sasl_user"`
	ClientAddr   string            `json:"client_addr"`
	ReturnPath   string            `json:"return_path"`
	Links        []string          `json:"links"`
	Opens        int               `json:"opens"`
	Clicks       int               `json:"clicks"`
	CreatedAt    time.Time         `json:"created_at"`
}

func toMessageJSON(m *ledger.Message) messageJSON {
	h := map[string]string{}
	for _, x := range m.Headers {
		if _, ok := h[x.Name]; !ok {
			h[x.Name] = x.Value
		}
	}
	return messageJSON{ID: m.ID, QueueID: m.QueueID, Tag: m.Tag, Stream: m.Stream, Tracking: string(m.Tracking), EnvelopeFrom: m.EnvelopeFrom,
		Recipients: nonNil(m.Recipients), From: m.From, To: m.To, Subject: m.Subject, MessageID: m.MessageID, Headers: h,
		HeaderList: nonNil(m.Headers), SASLUser: m.SASLUser, ClientAddr: m.ClientAddr, ReturnPath: m.ReturnPath,
		Links: nonNil(m.Links), Opens: m.Opens, Clicks: m.Clicks, CreatedAt: m.CreatedAt.UTC()}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// eventJSON is the --json form of an event.
type eventJSON struct {
	ID        string        `json:"id"`
	Seq       int64         `json:"seq"`
	Type      string        `json:"type"`
	MessageID string        `json:"message_id"`
	Recipient string        `json:"recipient"`
	Time      time.Time     `json:"time"`
	Detail    ledger.Detail `json:"detail"`
}

func toEventJSON(e *ledger.Event) eventJSON {
	return eventJSON{ID: e.ID, Seq: e.Seq, Type: string(e.Type), MessageID: e.MessageID, Recipient: e.Recipient, Time: e.Time.UTC(), Detail: e.Detail}
}

// sinceFlag is a --since value: a duration back from now, in Go's form
// (90m, 36h) or with days and weeks (1d, 7d12h, 2w), or a time (RFC 3339,
// or a date YYYY-MM-DD in UTC).
type sinceFlag struct {
	t time.Time
	s string
}

func (f *sinceFlag) String() string { return f.s }

func (f *sinceFlag) Set(v string) error {
	t, err := parseSince(v, time.Now())
	if err != nil {
		return err
	}
	f.t, f.s = t, v
	return nil
}

func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	d, err := parseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%q: want a duration back from now such as 90m, 36h, 1d or 2w, or a time such as 2026-12-01 or 2026-12-01T08:00:00Z", v)
	}
	return now.Add(-d), nil
}

// parseDuration is time.ParseDuration with leading weeks (w) and days (d).
func parseDuration(v string) (time.Duration, error) {
	var total time.Duration
	rest := v
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		i := strings.Index(rest, u.suffix)
		if i <= 0 {
			continue
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad number of %s in %q", u.suffix, v)
		}
		total += time.Duration(n) * u.d
		rest = rest[i+1:]
	}
	if rest == "" {
		if total == 0 {
			return 0, fmt.Errorf("empty duration")
		}
		return total, nil
	}
	d, err := time.ParseDuration(rest)
	return total + d, err
}

func cmdMessages(c *cli, args []string) error {
	var asJSON bool
	var tag, stream string
	var from sinceFlag
	var lim int
	_, pos, err := flags("messages", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "")
		fs.StringVar(&tag, "tag", "", "")
		fs.StringVar(&stream, "stream", "", "")
		fs.Var(&from, "since", "")
		fs.IntVar(&lim, "limit", 100, "")
	})
	if err := wantArgs(err, pos, 0); err != nil {
		return err
	}
	if err := c.openRead(); err != nil {
		return err
	}
	ms, err := c.store.Messages(c.ctx, ledger.Filter{Tag: tag, Stream: stream, Since: from.t, Limit: lim})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(c.out)
		for _, m := range ms {
			if err := enc.Encode(toMessageJSON(m)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUEUE ID\tCREATED\tSTREAM\tTAG\tTRACKING\tTO\tSUBJECT")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.QueueID, m.CreatedAt.Format(time.DateTime), c.streamLabel(m.Stream),
			m.Tag, m.Tracking, strings.Join(m.Recipients, ","), oneLine(m.Subject))
	}
	return tw.Flush()
}

func cmdMessage(c *cli, args []string) error {
	var asJSON bool
	_, pos, err := flags("message", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
	if err := wantArgs(err, pos, 1); err != nil {
		return err
	}
	if err := c.openRead(); err != nil {
		return err
	}
	m, err := c.store.Message(c.ctx, pos[0])
	if errors.Is(err, ledger.ErrNotFound) {
		if m, err = c.store.MessageByQueueID(c.ctx, pos[0]); errors.Is(err, ledger.ErrNotFound) {
			return fmt.Errorf("no message with id or queue id %q", pos[0])
		}
	}
	if err != nil {
		return err
	}
	evs, err := c.store.Events(c.ctx, ledger.Filter{MessageID: m.ID})
	if err != nil {
		return err
	}
	if asJSON {
		out := struct {
			messageJSON
			Events []eventJSON `json:"events"`
		}{messageJSON: toMessageJSON(m), Events: []eventJSON{}}
		for _, e := range evs {
			out.Events = append(out.Events, toEventJSON(e))
		}
		return json.NewEncoder(c.out).Encode(out)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{{"id", m.ID}, {"queue id", m.QueueID}, {"created", m.CreatedAt.Format(time.RFC3339)},
		{"envelope from", m.EnvelopeFrom}, {"return path", m.ReturnPath}, {"recipients", strings.Join(m.Recipients, ", ")},
		{"from", m.From}, {"to", m.To}, {"subject", m.Subject}, {"message-id", m.MessageID}, {"tag", m.Tag}, {"stream", c.streamLabel(m.Stream)},
		{"tracking", string(m.Tracking)}, {"sasl user", m.SASLUser}, {"client", m.ClientAddr},
		{"opens/clicks", fmt.Sprintf("%d/%d", m.Opens, m.Clicks)}} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], oneLine(kv[1]))
	}
	for _, h := range m.Headers {
		fmt.Fprintf(tw, "header:\t%s: %s\n", h.Name, oneLine(h.Value))
	}
	for _, l := range m.Links {
		fmt.Fprintf(tw, "link:\t%s\n", l)
	}
	tw.Flush()
	fmt.Fprintln(c.out)
	return printEvents(c.out, evs)
}

func printEvents(w io.Writer, evs []*ledger.Event) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tRECIPIENT\tMESSAGE\tDETAIL")
	for _, e := range evs {
		d, _ := json.Marshal(e.Detail)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.DateTime), e.Type, e.Recipient, e.MessageID, d)
	}
	return tw.Flush()
}

// cmdEvents lists events, the newest first (the newest --limit of them);
// with --follow, the newest --limit oldest first, then each new event as
// it is recorded, until interrupted.
func cmdEvents(c *cli, args []string) error {
	var asJSON, follow bool
	var msg, typ string
	var from sinceFlag
	var lim int
	_, pos, err := flags("events", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "")
		fs.BoolVar(&follow, "follow", false, "")
		fs.StringVar(&msg, "message", "", "")
		fs.StringVar(&typ, "type", "", "")
		fs.Var(&from, "since", "")
		fs.IntVar(&lim, "limit", 1000, "")
	})
	if err := wantArgs(err, pos, 0); err != nil {
		return err
	}
	if typ != "" && !ledger.ValidEventType(typ) {
		return fmt.Errorf("unknown event type %q (one of %s)", typ, joinNames(ledger.EventTypes))
	}
	if lim <= 0 {
		return fmt.Errorf("%w: --limit %d: want a positive number", errUsage, lim)
	}
	if err := c.openRead(); err != nil {
		return err
	}
	f := ledger.Filter{MessageID: msg, Type: ledger.EventType(typ), Since: from.t, Limit: lim, Newest: true}
	evs, err := c.store.Events(c.ctx, f)
	if err != nil {
		return err
	}
	if follow {
		slices.Reverse(evs) // as tail -f: oldest first, new ones below
	}
	print := func(evs []*ledger.Event) error {
		if !asJSON {
			return printEvents(c.out, evs)
		}
		enc := json.NewEncoder(c.out)
		for _, e := range evs {
			if err := enc.Encode(toEventJSON(e)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := print(evs); err != nil || !follow {
		return err
	}
	last, err := c.store.LastSeq(c.ctx)
	if err != nil {
		return err
	}
	for _, e := range evs {
		last = max(last, e.Seq)
	}
	f.Newest, f.Limit = false, 1000
	for {
		t := time.NewTimer(c.followPoll())
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		f.AfterSeq = last
		evs, err := c.store.Events(c.ctx, f)
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(evs) == 0 {
			continue
		}
		last = evs[len(evs)-1].Seq
		if asJSON {
			err = print(evs)
		} else {
			err = printEventRows(c.out, evs)
		}
		if err != nil {
			return err
		}
		if fl, ok := c.out.(interface{ Sync() error }); ok {
			fl.Sync()
		}
	}
}

// printEventRows prints events without the header line (--follow).
func printEventRows(w io.Writer, evs []*ledger.Event) error {
	for _, e := range evs {
		d, _ := json.Marshal(e.Detail)
		if _, err := fmt.Fprintf(w, "%s  %s  %s  %s  %s\n", e.Time.Format(time.DateTime), e.Type, e.Recipient, e.MessageID, d); err != nil {
			return err
		}
	}
	return nil
}

func cmdKeygen(c *cli, args []string) error {
	id := time.Now().UTC().Format("2006") + "a"
	if len(args) > 1 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, args[1])
	}
	if len(args) == 1 {
		id = args[0]
	}
	spec := token.NewKey(id)
	if _, err := token.ParseKeyring([]string{spec}); err != nil {
		return err
	}
	fmt.Fprintln(c.out, spec)
	return nil
}

func cmdSuppressions(c *cli, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	sub, args := args[0], args[1:]
	var asJSON bool
	var reason string
	var expires time.Duration
	var stream scopeFlag
	_, pos, err := flags("suppressions", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "")
		fs.Var(&stream, "stream", "")
		fs.StringVar(&reason, "reason", string(ledger.ReasonManual), "")
		fs.DurationVar(&expires, "expires", 0, "")
	})
	if err != nil {
		return err
	}
	if err := c.openStore(sub == "list" || sub == "export" || sub == "why"); err != nil {
		return err
	}
	switch sub {
	case "why":
		if len(pos) != 1 {
			return errUsage
		}
		return suppressionWhy(c, pos[0], asJSON)
	case "list", "export":
		list, err := c.store.Suppressions(c.ctx)
		if err != nil {
			return err
		}
		if stream.set {
			list = slices.DeleteFunc(list, func(sp *ledger.Suppression) bool { return sp.Stream != stream.scope })
		}
		if asJSON {
			enc := json.NewEncoder(c.out)
			for _, s := range list {
				enc.Encode(s)
			}
			return nil
		}
		if sub == "export" {
			w := csv.NewWriter(c.out)
			w.Write([]string{"address", "reason", "created_at", "expires_at", "stream"})
			for _, s := range list {
				exp := ""
				if s.ExpiresAt != nil {
					exp = s.ExpiresAt.UTC().Format(time.RFC3339)
				}
				w.Write([]string{s.Address, string(s.Reason), s.CreatedAt.UTC().Format(time.RFC3339), exp, scopeText(s.Stream)})
			}
			w.Flush()
			return w.Error()
		}
		tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tSCOPE\tREASON\tCREATED\tEXPIRES")
		for _, s := range list {
			exp := "-"
			if s.ExpiresAt != nil {
				exp = s.ExpiresAt.Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Address, c.scopeLabel(s.Stream), s.Reason, s.CreatedAt.Format(time.DateTime), exp)
		}
		return tw.Flush()
	case "add":
		if len(pos) == 0 {
			return fmt.Errorf("%w: no address given", errUsage)
		}
		if !ledger.ValidSuppressionReason(reason) {
			return fmt.Errorf("reason %q: want %s", reason, joinNames(ledger.SuppressionReasons))
		}
		if err := c.checkScope(stream.scope); err != nil {
			return err
		}
		for _, a := range pos {
			if !strings.Contains(a, "@") {
				return fmt.Errorf("%q is not an email address", a)
			}
			sp := ledger.Suppression{Address: a, Stream: stream.scope, Reason: ledger.SuppressionReason(reason), CreatedAt: time.Now()}
			if expires > 0 {
				t := time.Now().Add(expires)
				sp.ExpiresAt = &t
			}
			if err := c.store.Suppress(c.ctx, sp); err != nil {
				return err
			}
		}
		return nil
	case "remove":
		if len(pos) == 0 {
			return fmt.Errorf("%w: no address given", errUsage)
		}
		for _, a := range pos {
			var scopes []string // every scope
			if stream.set {
				scopes = []string{stream.scope}
			}
			ok, err := c.store.Unsuppress(c.ctx, a, scopes...)
			if err != nil {
				return err
			}
			if !ok && stream.set {
				return fmt.Errorf("%s is not on the suppression list for %s", a, c.scopeLabel(stream.scope))
			}
			if !ok {
				return fmt.Errorf("%s is not on the suppression list", a)
			}
		}
		return nil
	case "import":
		if err := c.checkScope(stream.scope); err != nil {
			return err
		}
		return importSuppressions(c, stream.scope)
	}
	return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
}

// joinNames lists a typed vocabulary for an error message.
func joinNames[T ~string](vs []T) string {
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}

// importSuppressions reads CSV on stdin:
// address[,reason[,created_at[,expires_at[,stream]]]], with an optional
// header line (what export writes); a line without a stream gets scope.
// Every line is checked before any is stored.
func importSuppressions(c *cli, scope string) error {
	r := csv.NewReader(c.in)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	var list []ledger.Suppression
	for i, rec := range recs {
		if i == 0 && len(rec) > 0 && strings.EqualFold(rec[0], "address") {
			continue
		}
		if len(rec) == 0 || !strings.Contains(rec[0], "@") {
			return fmt.Errorf("import: line %d: %q is not an email address", i+1, strings.Join(rec, ","))
		}
		sp := ledger.Suppression{Address: rec[0], Stream: scope, Reason: ledger.ReasonManual, CreatedAt: time.Now()}
		if len(rec) > 1 && rec[1] != "" {
			if !ledger.ValidSuppressionReason(rec[1]) {
				return fmt.Errorf("import: line %d: reason %q: want %s", i+1, rec[1], joinNames(ledger.SuppressionReasons))
			}
			sp.Reason = ledger.SuppressionReason(rec[1])
		}
		if len(rec) > 2 && rec[2] != "" {
			t, err := time.Parse(time.RFC3339, rec[2])
			if err != nil {
				return fmt.Errorf("import: line %d: created_at: %w", i+1, err)
			}
			sp.CreatedAt = t
		}
		if len(rec) > 3 && rec[3] != "" {
			t, err := time.Parse(time.RFC3339, rec[3])
			if err != nil {
				return fmt.Errorf("import: line %d: expires_at: %w", i+1, err)
			}
			sp.ExpiresAt = &t
		}
		if len(rec) > 4 && rec[4] != "" {
			var f scopeFlag
			if err := f.Set(rec[4]); err != nil {
				return fmt.Errorf("import: line %d: stream: %w", i+1, err)
			}
			// kept as written, as export wrote it: a stream since removed
			// from the configuration stays an entry of that stream
			if c.checkScope(f.scope) != nil {
				fmt.Fprintf(c.out, "line %d: stream %q is not in the configuration (kept as it is)\n", i+1, f.scope)
			}
			sp.Stream = f.scope
		}
		list = append(list, sp)
	}
	for _, sp := range list {
		if err := c.store.Suppress(c.ctx, sp); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.out, "imported %d addresses\n", len(list))
	return nil
}

// scopeFlag is a --stream value of the suppressions commands: a stream's
// name, "@broadcast" (every broadcast stream) or "*" (every stream, the
// scope of entries made without --stream).
type scopeFlag struct {
	scope string
	set   bool
}

func (f *scopeFlag) String() string { return scopeText(f.scope) }

func (f *scopeFlag) Set(v string) error {
	v = strings.ToLower(strings.TrimSpace(v))
	switch {
	case v == "*" || v == "":
		f.scope = ledger.ScopeAll
	case v == ledger.ScopeBroadcast || streamNameRE.MatchString(v):
		f.scope = v
	default:
		return fmt.Errorf("%q: want a stream name, @broadcast or *", v)
	}
	f.set = true
	return nil
}

var streamNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// scopeText is a scope as export writes it.
func scopeText(scope string) string {
	if scope == ledger.ScopeAll {
		return "*"
	}
	return scope
}

// knownStream reports whether the configuration names the stream.
func (c *cli) knownStream(name string) bool {
	if c.cfg == nil {
		return true
	}
	for _, s := range c.cfg.Streams() {
		if s.Name == name {
			return true
		}
	}
	return false
}

// streamLabel is a message's stream as the listings show it: a stream
// removed from the configuration is kept and marked unknown.
func (c *cli) streamLabel(name string) string {
	switch {
	case name == "":
		return "-"
	case !c.knownStream(name):
		return name + " (unknown)"
	}
	return name
}

// scopeLabel is a suppression scope as the listings show it.
func (c *cli) scopeLabel(scope string) string {
	switch scope {
	case ledger.ScopeAll:
		return "all streams"
	case ledger.ScopeBroadcast:
		return "broadcast streams"
	}
	return "stream " + c.streamLabel(scope)
}

// checkScope refuses a new entry for a stream the configuration does not
// name (a typo would suppress nothing).
func (c *cli) checkScope(scope string) error {
	if scope != ledger.ScopeAll && scope != ledger.ScopeBroadcast && !c.knownStream(scope) {
		return fmt.Errorf("--stream %q: no such [[stream]] in the configuration", scope)
	}
	return nil
}
