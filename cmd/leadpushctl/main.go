// Command leadpushctl is Leadpush's admin command line: messages, events,
// the suppression list, and the intake of returned mail.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/leadpush/leadpush/internal/config"
	"github.com/leadpush/leadpush/internal/version"
	"github.com/leadpush/leadpush/ledger"
)

// command is one subcommand: its flags are parsed after the name.
type command struct {
	usage string
	run   func(c *cli, args []string) error
}

var commands = map[string]command{
	"messages":     {"messages [--json] [--tag T] [--since DUR|TIME] [--limit N]", cmdMessages},
	"message":      {"message ID [--json]", cmdMessage},
	"events":       {"events [--json] [--follow] [--message ID] [--type T] [--since DUR|TIME] [--limit N]   newest first", cmdEvents},
	"suppressions": {"suppressions list|add|remove|import|export|why [...]", cmdSuppressions},
	"keygen":       {"keygen [ID]   print a new tracking key for tracking.keys", cmdKeygen},
	"api-key":      {"api-key new NAME   print a new send API key and its [[api.key]] entry", cmdAPIKey},
	"ingest":       {"ingest [--recipient ADDR] < MESSAGE   (Postfix pipe transport for the bounce domain)", cmdIngest},
	"inbound":      {"inbound [--json] [--kind K] [--limit N]   returned mail kept by ingest", cmdInbound},
	"webhooks":     {"webhooks [list [--json]] | test NAME | replay NAME --since DUR|TIME | pause NAME | resume NAME", cmdWebhooks},
	"bounce":       {"bounce classify [FILE...]   classify returned mail as ingest would, one JSON line each, the ledger untouched", cmdBounce},
	"bounces":      {"bounces [--since 1h] [--json]   bounces by receiving domain and reason", cmdBounces},
	"doctor":       {"doctor [-c POSTFIX_DIR] [--user leadpush]   check the install, one line a finding with its fix", cmdDoctor},
	"forget":       {"forget [--json] ADDRESS...   erase a person's messages, events and returned mail", cmdForget},
	"backup":       {"backup FILE   a consistent copy of the live ledger", cmdBackup},
	"prune":        {"prune   apply [retention] now", cmdPrune},
	"postfix":      {"postfix setup [-c CONFIG_DIR] [--apply]   the main.cf and master.cf changes Leadpush needs", cmdPostfix},
}

// cli carries what every subcommand shares.
type cli struct {
	cfgPath string
	cfg     *config.Config
	store   ledger.Store
	out     io.Writer
	in      io.Reader
	ctx     context.Context
	poll    time.Duration // --follow's pause; tests shorten it
}

// open loads the config and opens the ledger for reading and writing;
// openRead opens it read-only, for the commands that only list.
func (c *cli) open() error     { return c.openStore(false) }
func (c *cli) openRead() error { return c.openStore(true) }

func (c *cli) openStore(readOnly bool) error {
	if c.store != nil {
		return nil
	}
	cfg, err := config.Load(c.cfgPath)
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	c.cfg = cfg
	if err := dropToLedgerOwner(cfg.Store.Path); err != nil {
		return err
	}
	open := ledger.OpenSQLite
	if readOnly {
		open = ledger.OpenSQLiteReadOnly
	}
	store, err := open(cfg.Store.Path)
	if err != nil {
		return err
	}
	store.SetPolicy(cfg.Policy())
	c.store = store
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: leadpushctl [-config PATH] COMMAND [ARGS]\n\ncommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintln(w, "  "+commands[n].usage)
	}
}

func main() {
	os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Main runs leadpushctl and returns its exit code (sysexits.h codes where
// the pipe transport cares).
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("leadpushctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &cli{out: stdout, in: stdin, ctx: ctx}
	fs.StringVar(&c.cfgPath, "config", config.DefaultPath, "configuration file")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	version.Flag(fs, "leadpushctl", stdout)
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		if slices.Contains(args, "ingest") {
			return exTempFail // the pipe transport keeps the mail (see cmdIngest)
		}
		return 64 // EX_USAGE
	}
	if *check {
		if _, err := config.Load(c.cfgPath); err != nil {
			fmt.Fprintln(stderr, "leadpushctl:", err)
			return 78 // EX_CONFIG
		}
		fmt.Fprintln(stdout, "configuration ok")
		return 0
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return 64
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(stderr, "leadpushctl: unknown command %q\n", fs.Arg(0))
		usage(stderr)
		return 64
	}
	defer func() {
		if c.store != nil {
			c.store.Close()
		}
	}()
	if err := cmd.run(c, fs.Args()[1:]); err != nil {
		fmt.Fprintln(stderr, "leadpushctl:", err)
		if fs.Arg(0) == "ingest" {
			// Postfix bounces returned mail on any other non-zero status,
			// and a bounced bounce is lost: nothing that fails here is
			// the message's fault (a message ingest cannot read is kept
			// as unknown with status 0), so every failure is temporary.
			return exTempFail
		}
		var ec exitCode
		if errors.As(err, &ec) {
			return int(ec)
		}
		if errors.Is(err, errConfig) {
			return exConfig
		}
		if errors.Is(err, errUsage) {
			fmt.Fprintln(stderr, "usage: leadpushctl", cmd.usage)
			return 64
		}
		return 1
	}
	return 0
}

var (
	errUsage  = errors.New("bad arguments")
	errConfig = errors.New("configuration")
)

// exitCode is an error that carries its own exit status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// flags parses a subcommand's flags, which may come before or after its
// positional arguments ("message ID --json").
func flags(name string, args []string, def func(fs *flag.FlagSet)) (*flag.FlagSet, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	def(fs)
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	return fs, pos, nil
}

// wantArgs turns a flag error, or a wrong number of positional
// arguments, into a usage error that says what is wrong.
func wantArgs(err error, pos []string, n int) error {
	switch {
	case err != nil:
		return err
	case len(pos) > n:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[n])
	case len(pos) < n:
		return fmt.Errorf("%w: missing argument", errUsage)
	}
	return nil
}

// followPoll is how often --follow looks for new events.
func (c *cli) followPoll() time.Duration {
	if c.poll > 0 {
		return c.poll
	}
	return time.Second
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
