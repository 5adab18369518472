package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/notify/bounce"
)

// cmdBounce: "bounce classify [FILE...]" prints one JSON line a message, as
// ingest would classify it, without touching the ledger (stdin, or "-",
// when no file is named).
func cmdBounce(c *cli, args []string) error {
	if len(args) == 0 || args[0] != "classify" {
		return errUsage
	}
	files := args[1:]
	if len(files) == 0 {
		files = []string{"-"}
	}
	var failed []string
	for _, f := range files {
		r, name := c.in, f
		if f != "-" {
			fh, err := os.Open(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, "leadpushctl:", err)
				failed = append(failed, f)
				continue
			}
			r = fh
			defer fh.Close()
		}
		if err := bounce.WriteLine(c.out, name, r, "", bounce.Options{}); err != nil {
			fmt.Fprintf(os.Stderr, "leadpushctl: %s: %v\n", f, err)
			failed = append(failed, f)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not read %s", strings.Join(failed, ", "))
	}
	return nil
}

// whyJSON is what "suppressions why --json" prints.
type whyJSON struct {
	Address     string                   `json:"address"`
	Suppression *ledger.Suppression      `json:"suppression"`
	Event       *eventJSON               `json:"event,omitempty"`
	Message     *messageJSON             `json:"message,omitempty"`
	Inbound     []inboundJSON            `json:"inbound,omitempty"`
	SoftBounces []ledger.SoftBounceCount `json:"soft_bounces,omitempty"`
}

type inboundJSON struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	Kind       string    `json:"kind"`
	Reason     string    `json:"reason"`
	EnvelopeTo string    `json:"envelope_to"`
}

// suppressionWhy answers "why was this address suppressed?": the entry,
// the event behind it with its message, the returned mail that gave it,
// and for soft_bounce_limit the soft bounces counted.
func suppressionWhy(c *cli, addr string, asJSON bool) error {
	now := time.Now()
	sp, err := c.store.Suppressed(c.ctx, addr, now)
	if err != nil {
		if err == ledger.ErrNotFound {
			return fmt.Errorf("%s is not on the suppression list", ledger.NormalizeAddress(addr))
		}
		return err
	}
	out := whyJSON{Address: sp.Address, Suppression: sp}
	if sp.EventID != "" {
		if e, err := c.store.Event(c.ctx, sp.EventID); err == nil {
			ej := toEventJSON(e)
			out.Event = &ej
			if m, err := c.store.Message(c.ctx, e.MessageID); err == nil {
				mj := toMessageJSON(m)
				out.Message = &mj
			}
			if ins, err := c.store.InboundOf(c.ctx, e.MessageID); err == nil {
				for _, in := range ins {
					out.Inbound = append(out.Inbound, inboundJSON{ID: in.ID, ReceivedAt: in.ReceivedAt.UTC(), Kind: in.Kind, Reason: in.Reason, EnvelopeTo: in.EnvelopeTo})
				}
			}
		}
	}
	if sp.Reason == ledger.ReasonSoftBounceLimit {
		out.SoftBounces, _ = c.store.SoftBounces(c.ctx, sp.Address, now)
	}
	if asJSON {
		return json.NewEncoder(c.out).Encode(out)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "address:\t%s\n", sp.Address)
	fmt.Fprintf(tw, "reason:\t%s\n", sp.Reason)
	fmt.Fprintf(tw, "scope:\t%s\n", c.scopeLabel(sp.Stream))
	if sp.BounceReason != "" {
		fmt.Fprintf(tw, "bounce reason:\t%s\n", sp.BounceReason)
	}
	fmt.Fprintf(tw, "listed:\t%s (updated %s)\n", sp.CreatedAt.Format(time.DateTime), sp.UpdatedAt.Format(time.DateTime))
	if sp.ExpiresAt != nil {
		fmt.Fprintf(tw, "expires:\t%s\n", sp.ExpiresAt.Format(time.DateTime))
	}
	if e := out.Event; e != nil {
		d, _ := json.Marshal(e.Detail)
		fmt.Fprintf(tw, "event:\t%s %s %s %s\n", e.Time.Local().Format(time.DateTime), e.Type, e.ID, d)
	} else if sp.EventID == "" {
		fmt.Fprintf(tw, "event:\tnone (listed by an operator or imported)\n")
	} else {
		fmt.Fprintf(tw, "event:\t%s (no longer in the ledger: retention or forget)\n", sp.EventID)
	}
	if m := out.Message; m != nil {
		fmt.Fprintf(tw, "message:\t%s queue %s tag %q subject %q sent %s\n", m.ID, m.QueueID, m.Tag, oneLine(m.Subject), m.CreatedAt.Local().Format(time.DateTime))
	}
	for _, in := range out.Inbound {
		fmt.Fprintf(tw, "returned mail:\t#%d %s %s to %s: %s\n", in.ID, in.ReceivedAt.Local().Format(time.DateTime), in.Kind, in.EnvelopeTo, oneLine(in.Reason))
	}
	for _, sb := range out.SoftBounces {
		fmt.Fprintf(tw, "soft bounce:\t%s message %s %s\n", sb.Time.Local().Format(time.DateTime), sb.MessageID, sb.BounceReason)
	}
	return tw.Flush()
}

// cmdBounces counts the bounces of a period by receiving domain and
// reason: "blocked by outlook.com: 340 in the last hour". Policy
// rejections never suppress anyone; this is where they show.
func cmdBounces(c *cli, args []string) error {
	var asJSON bool
	var since string
	_, pos, err := flags("bounces", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "")
		fs.StringVar(&since, "since", "1h", "")
	})
	if err != nil || len(pos) > 0 {
		return errUsage
	}
	from, err := parseSince(since, time.Now())
	if err != nil {
		return fmt.Errorf("%w: --since %v", errUsage, err)
	}
	if err := c.openRead(); err != nil {
		return err
	}
	type key struct{ domain, typ, reason string }
	counts := map[key]int{}
	for _, typ := range []ledger.EventType{ledger.HardBounce, ledger.SoftBounce} {
		for after := int64(0); ; {
			evs, err := c.store.Events(c.ctx, ledger.Filter{Type: typ, Since: from, AfterSeq: after, Limit: 10000})
			if err != nil {
				return err
			}
			for _, e := range evs {
				after = e.Seq
				if e.Detail.Reason == "deferred" || e.Detail.Reason == "delayed" {
					continue // still being retried
				}
				_, domain, _ := strings.Cut(e.Recipient, "@")
				r := e.Detail.BounceReason
				if r == "" {
					r = "undefined"
				}
				counts[key{domain, string(e.Type), r}]++
			}
			if len(evs) < 10000 {
				break
			}
		}
	}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i].domain+keys[i].reason < keys[j].domain+keys[j].reason
	})
	if asJSON {
		enc := json.NewEncoder(c.out)
		for _, k := range keys {
			enc.Encode(map[string]any{"domain": k.domain, "type": k.typ, "bounce_reason": k.reason, "policy": bounce.Reason(k.reason).Policy(), "count": counts[k]})
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DOMAIN\tTYPE\tBOUNCE REASON\tCOUNT (since %s)\n", since)
	for _, k := range keys {
		note := ""
		if bounce.Reason(k.reason).Policy() {
			note = "  (policy: the sender's problem, nobody suppressed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d%s\n", k.domain, k.typ, k.reason, counts[k], note)
	}
	return tw.Flush()
}
