package main

import (
	"fmt"

	"github.com/leadpush/leadpush/api"
)

// cmdAPIKey prints a new send API key, for the application, and the
// [[api.key]] entry holding only its hash, for leadpush.toml.
func cmdAPIKey(c *cli, args []string) error {
	if len(args) != 2 || args[0] != "new" || args[1] == "" {
		return errUsage
	}
	key, sum := api.NewKey()
	fmt.Fprintf(c.out, "# API key for %s (shown once; give it to the application):\n# %s\n\n", args[1], key)
	fmt.Fprintf(c.out, "[[api.key]]\nname = %q\nsha256 = %q\nsender_domains = []   # e.g. [\"example.com\"]; empty: any sender\n", args[1], sum)
	return nil
}
