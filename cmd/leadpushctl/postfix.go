package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/postfixsetup"
)

// cmdPostfix is "postfix setup [-c CONFIG_DIR] [--apply]": it prints the
// changes Postfix needs for this leadpush.toml (internal/postfixsetup) and,
// with --apply, makes them through postconf. It never reloads Postfix.
func cmdPostfix(c *cli, args []string) error {
	var dir, self string
	var apply bool
	_, pos, err := flags("postfix", args, func(fs *flag.FlagSet) {
		fs.StringVar(&dir, "c", "", "Postfix config directory (postconf -c)")
		fs.BoolVar(&apply, "apply", false, "make the changes")
		fs.StringVar(&self, "leadpushctl", "", "leadpushctl's path for the pipe service")
	})
	if err != nil || len(pos) != 1 || pos[0] != "setup" {
		return errUsage
	}
	cfg, err := config.Load(c.cfgPath)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	opt, err := postfixOptions(c, cfg, dir, self)
	if err != nil {
		return err
	}
	plan, err := postfixsetup.Setup(c.ctx, opt)
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, plan)
	if cfg.Bounce.Domain == "" {
		fmt.Fprintln(c.out, "bounce.domain is empty: no route for returned mail")
	}
	if len(plan.Changes) == 0 {
		return nil
	}
	if !apply {
		fmt.Fprintln(c.out, "run again with --apply to make these changes")
		return nil
	}
	if err := postfixsetup.Apply(c.ctx, opt, plan); err != nil {
		return err
	}
	fmt.Fprintln(c.out, "done; start leadpush-milter, then reload Postfix (systemctl reload postfix)")
	return nil
}

// postfixOptions are postfix setup's options for this config: the Postfix
// config directory, and the pipe's command (this leadpushctl, with -config
// unless it is the default).
func postfixOptions(c *cli, cfg *config.Config, dir, self string) (postfixsetup.Options, error) {
	if self == "" {
		var err error
		if self, err = os.Executable(); err != nil {
			return postfixsetup.Options{}, err
		}
		if p, err := filepath.EvalSymlinks(self); err == nil {
			self = p
		}
	}
	argv := self
	if c.cfgPath != config.DefaultPath {
		abs, err := filepath.Abs(c.cfgPath)
		if err != nil {
			return postfixsetup.Options{}, err
		}
		argv += " -config " + abs
	}
	return postfixsetup.Options{
		ConfigDir: dir, MilterListen: cfg.Milter.Listen, BounceDomain: cfg.Bounce.Domain,
		IngestCommand: argv + " ingest --recipient ${recipient}",
	}, nil
}
