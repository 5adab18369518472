package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/leadpush/leadpush/notify/intake"
	"github.com/leadpush/leadpush/notify/webhook"
	"github.com/leadpush/leadpush/token"
)

// sysexits.h codes the pipe transport acts on: EX_TEMPFAIL keeps the
// message queued for a retry; anything else non-zero bounces it.
const (
	exTempFail = 75
	exConfig   = 78
)

// addressTokens adapts the keyring to intake's verifier.
type addressTokens struct{ k *token.Keyring }

func (a addressTokens) Return(t string) (string, error) { return a.k.VerifyAddress(token.Return, t) }
func (a addressTokens) Unsub(t string) (string, error)  { return a.k.VerifyAddress(token.UnsubMail, t) }

// cmdIngest reads one returned message on stdin, for a Postfix pipe
// transport: leadpushctl ingest --recipient ${recipient}. Every message is
// stored, whatever it holds (exit 0); every failure (the config unreadable
// or invalid, the ledger missing, locked or not writable, bad arguments)
// gives EX_TEMPFAIL, so Postfix keeps the mail and retries, and nothing is
// lost to a fault of ours.
func cmdIngest(c *cli, args []string) error {
	var rcpt string
	_, pos, err := flags("ingest", args, func(fs *flag.FlagSet) {
		fs.StringVar(&rcpt, "recipient", "", "")
		fs.String("sender", "", "") // accepted for the master.cf line's sake; not needed
	})
	if err := wantArgs(err, pos, 0); err != nil {
		return err
	}
	if rcpt == "" {
		rcpt = os.Getenv("RECIPIENT") // set by Postfix's local(8) for .forward pipes
	}
	if err := c.open(); err != nil {
		return err // EX_TEMPFAIL, as every failure of ingest (Main)
	}
	in := &intake.Ingester{Store: c.store, Logger: c.cfg.Logger()}
	if k := c.cfg.Keyring(); k != nil {
		in.Tokens = addressTokens{k}
	}
	res, err := in.Ingest(c.ctx, c.in, rcpt)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "%s message=%s events=%d (%s)\n", res.Kind, res.MessageID, len(res.Events), res.Reason)
	return nil
}

// cmdInbound lists the returned mail ingest kept.
func cmdInbound(c *cli, args []string) error {
	var kind string
	var lim int
	var asJSON bool
	_, pos, err := flags("inbound", args, func(fs *flag.FlagSet) {
		fs.StringVar(&kind, "kind", "", "")
		fs.IntVar(&lim, "limit", 50, "")
		fs.BoolVar(&asJSON, "json", false, "")
	})
	if err := wantArgs(err, pos, 0); err != nil {
		return err
	}
	if err := c.openRead(); err != nil {
		return err
	}
	list, err := c.store.InboundList(c.ctx, kind, lim)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(c.out)
		for _, in := range list {
			if err := enc.Encode(in); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tKIND\tMESSAGE\tEVENTS\tTO\tREASON")
	for _, in := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", in.ID, in.ReceivedAt.Format(time.DateTime), in.Kind, in.MessageID, in.Events, in.EnvelopeTo, oneLine(in.Reason))
	}
	return tw.Flush()
}

// cmdWebhooks manages webhook endpoints; state lives in the ledger, so a
// running leadpushd sees pause, resume and replay at once.
func cmdWebhooks(c *cli, args []string) error {
	sub := "list"
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	var from sinceFlag
	var asJSON bool
	_, pos, err := flags("webhooks", args, func(fs *flag.FlagSet) {
		fs.Var(&from, "since", "")
		fs.BoolVar(&asJSON, "json", false, "")
	})
	if err != nil {
		return err
	}
	if err := c.open(); err != nil {
		return err
	}
	// A new endpoint starts where its start key says, as leadpushd would
	// start it, not where the notifier's default would.
	for _, h := range c.cfg.Webhook {
		if t, err := h.StartTime(time.Now()); err == nil {
			if err := c.store.EnsureEndpoints(c.ctx, []string{h.WithDefaults().Name}, t); err != nil {
				return err
			}
		}
	}
	n, err := webhook.New(c.store, c.cfg.Webhook, webhook.Options{Logger: c.cfg.Logger()})
	if err != nil {
		return err
	}
	name := ""
	if sub != "list" {
		if err := wantArgs(nil, pos, 1); err != nil {
			return fmt.Errorf("%w (webhooks %s NAME)", err, sub)
		}
		name = pos[0]
	}
	switch sub {
	case "list":
		st, err := n.Status(c.ctx)
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(c.out)
			for _, s := range st {
				if err := enc.Encode(webhookJSON{s.Name, s.URL, s.Format, s.Verified, s.Paused, s.Cursor, s.Backlog, s.Attempts,
					s.DeadLetters, s.LastStatus, s.LastError, timeOrNil(s.LastAttempt), timeOrNil(s.NextAttempt)}); err != nil {
					return err
				}
			}
			return nil
		}
		return writeWebhooks(c.out, st)
	case "test":
		if err := n.Test(c.ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "sent a sample of each event type to %s\n", name)
	case "replay":
		if from.t.IsZero() {
			return fmt.Errorf("%w: replay needs --since DURATION or TIME", errUsage)
		}
		k, err := n.Replay(c.ctx, name, from.t)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "re-queued %d events for %s\n", k, name)
	case "pause":
		return n.Pause(c.ctx, name)
	case "resume":
		return n.Resume(c.ctx, name)
	default:
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, sub)
	}
	return nil
}

// webhookJSON is the --json form of an endpoint's state.
type webhookJSON struct {
	Name        string     `json:"name"`
	URL         string     `json:"url"`
	Format      string     `json:"format"`
	Verified    bool       `json:"verified"`
	Paused      bool       `json:"paused"`
	Cursor      int64      `json:"cursor"`
	Backlog     int64      `json:"backlog"`
	Attempts    int        `json:"attempts"`
	DeadLetters int64      `json:"dead_letters"`
	LastStatus  int        `json:"last_status"`
	LastError   string     `json:"last_error"`
	LastAttempt *time.Time `json:"last_attempt"`
	NextAttempt *time.Time `json:"next_attempt"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// writeWebhooks prints the endpoints' table, then a line for each
// unverified endpoint with the reason and the next attempt: its events
// wait until it verifies.
func writeWebhooks(out io.Writer, st []webhook.EndpointStatus) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tFORMAT\tVERIFIED\tPAUSED\tBACKLOG\tDEAD\tLAST STATUS\tLAST ERROR\tNEXT ATTEMPT\tURL")
	for _, s := range st {
		next := "-"
		if !s.NextAttempt.IsZero() {
			next = s.NextAttempt.Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Name, s.Format, s.Verified, s.Paused, s.Backlog,
			s.DeadLetters, s.LastStatus, oneLine(s.LastError), next, s.URL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range st {
		if s.Verified {
			continue
		}
		reason, next := s.VerifyReason, "when leadpushd starts or reloads"
		if reason == "" {
			reason = "not verified yet"
		}
		if !s.NextVerify.IsZero() {
			next = s.NextVerify.Format(time.DateTime)
		}
		fmt.Fprintf(out, "%s: unverified, %d events wait: %s; next attempt %s\n", s.Name, s.Backlog, oneLine(reason), next)
	}
	return nil
}
