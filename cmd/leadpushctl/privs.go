package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// dropToLedgerOwner makes a leadpushctl started as root act as the owner of
// the ledger's directory (the service user), so that no file it creates (the
// database, its -wal and -shm files, the spool) is root's: a root-owned
// ledger stops both daemons with "attempt to write a readonly database".
// Where the directory does not exist yet, root would create it: refused,
// since the daemons' units create it (StateDirectory) with the right owner.
// A directory root owns (tests, a host run as root) is used as it is.
func dropToLedgerOwner(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the ledger's directory %s does not exist: start leadpushd or leadpush-milter once (their units create it for the service user), "+
			"or create it owned by the service user (install -d -o leadpush -g leadpush -m 0750 %s); running as root, leadpushctl would make it root's", dir, dir)
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	// Linux applies setuid and setgid to every thread of a Go program.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("dropping root for the ledger's owner: %w", err)
	}
	if err := syscall.Setgid(int(st.Gid)); err != nil {
		return fmt.Errorf("dropping root for the ledger's owner: %w", err)
	}
	if err := syscall.Setuid(int(st.Uid)); err != nil {
		return fmt.Errorf("dropping root for the ledger's owner: %w", err)
	}
	return nil
}
