package ledger_test

import (
	"path/filepath"
	"testing"

	"github.com/leadpush/leadpush/ledger"
	"github.com/leadpush/leadpush/ledger/ledgertest"
)

// TestContract runs the contract suite on SQLite: handles opened on one
// file, as the milter, leadpushd and leadpushctl do.
func TestContract(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) func() ledger.Store {
		path := filepath.Join(t.TempDir(), "ledger.db")
		return func() ledger.Store {
			s, err := ledger.OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}, func(path string) (ledger.Store, error) { return ledger.OpenSQLite(path) })
}
