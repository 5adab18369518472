package ledger

import (
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrentFirstOpen: the milter, leadpushd and a burst of
// leadpushctl ingest processes may open a new ledger at once; the schema
// migration runs in an immediate transaction, so exactly one applies it.
func TestConcurrentFirstOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := OpenSQLite(path)
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
