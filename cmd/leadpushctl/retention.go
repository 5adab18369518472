package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

// cmdForget erases a person from the ledger (GDPR art. 17): their
// messages, events, tracking data and returned mail; a suppression entry
// stays, so mail to them stays refused.
func cmdForget(c *cli, args []string) error {
	var asJSON bool
	_, pos, err := flags("forget", args, func(fs *flag.FlagSet) { fs.BoolVar(&asJSON, "json", false, "") })
	if err != nil || len(pos) == 0 {
		return errUsage
	}
	if err := c.open(); err != nil {
		return err
	}
	enc := json.NewEncoder(c.out)
	for _, a := range pos {
		rep, err := c.store.Forget(c.ctx, a)
		if err != nil {
			return err
		}
		if asJSON {
			enc.Encode(rep)
			continue
		}
		fmt.Fprintf(c.out, "%s: %d messages deleted, %d messages with the address taken out, %d events deleted, %d returned mails deleted",
			rep.Address, rep.MessagesDeleted, rep.MessagesEdited, rep.Events, rep.Inbound)
		if rep.Suppressed {
			fmt.Fprint(c.out, "; the suppression entry stays (leadpushctl suppressions remove to drop it)")
		}
		fmt.Fprintln(c.out)
	}
	return nil
}

// cmdBackup writes a consistent copy of the live ledger.
func cmdBackup(c *cli, args []string) error {
	_, pos, err := flags("backup", args, func(fs *flag.FlagSet) {})
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	if err := c.open(); err != nil {
		return err
	}
	start := time.Now()
	if err := c.store.Backup(c.ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "backed up %s to %s in %v\n", c.cfg.Store.Path, pos[0], time.Since(start).Round(time.Millisecond))
	return nil
}

// cmdPrune runs the retention of the config now, to the end.
func cmdPrune(c *cli, args []string) error {
	_, pos, err := flags("prune", args, func(fs *flag.FlagSet) {})
	if err != nil || len(pos) != 0 {
		return errUsage
	}
	if err := c.open(); err != nil {
		return err
	}
	r := ledger.Retention{Messages: c.cfg.Retention.RetainMessages(), Inbound: c.cfg.Retention.RetainInbound()}
	var total ledger.Pruned
	for {
		p, err := c.store.Prune(c.ctx, r, time.Now())
		if err != nil {
			return err
		}
		total.Messages, total.Events, total.Inbound = total.Messages+p.Messages, total.Events+p.Events, total.Inbound+p.Inbound
		if p == (ledger.Pruned{}) {
			break
		}
	}
	fmt.Fprintf(c.out, "pruned %d messages, %d events, %d returned mails\n", total.Messages, total.Events, total.Inbound)
	return nil
}
