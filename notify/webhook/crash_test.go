package webhook

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

const (
	crashDBEnv  = "LEADPUSH_WEBHOOK_CRASH_DB"
	crashURLEnv = "LEADPUSH_WEBHOOK_CRASH_URL"
)

// TestHelperNotifier is the child process of TestCrash: a notifier on the
// shared file, running until it is killed.
func TestHelperNotifier(t *testing.T) {
	path := os.Getenv(crashDBEnv)
	if path == "" {
		t.Skip("child process of TestCrash only")
	}
	s, err := ledger.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(s, []Endpoint{{Name: "crash", URL: os.Getenv(crashURLEnv), Secret: testSecret, BatchSize: 20}}, Options{
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond},
		Poll:    20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Run(context.Background()) // until SIGKILL
}

// TestCrash kills notifier processes with SIGKILL at random moments while
// 10 000 events flow to a receiver that fails a third of its requests:
// every event must arrive at least once.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes for several seconds")
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	s := openStore(t, path)
	t0 := time.Now()
	want := recordN(t, s, "e", 10000)
	t.Logf("recorded in %s", time.Since(t0))
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n%3 == 0 {
			return 500
		}
		return 200
	})
	got := map[string]int{}
	seen := 0 // hits already counted
	collect := func() int {
		hs := rc.accepted()
		for _, h := range hs[seen:] {
			for _, be := range batchOf(t, h, DefaultParam) {
				got[be.EventID]++
			}
		}
		seen = len(hs)
		return len(got)
	}
	run := func(d time.Duration) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNotifier$")
		cmd.Env = append(os.Environ(), crashDBEnv+"="+path, crashURLEnv+"="+rc.srv.URL)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.NewTimer(d)
		defer timer.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-timer.C:
				break wait
			case <-tick.C:
				if collect() == len(want) {
					break wait
				}
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait() // "signal: killed"
		t.Logf("child ran %s, %d events arrived", d, len(got))
	}
	kills := 0
	for ; kills < 40 && collect() < len(want); kills++ {
		run(time.Duration(200+rand.IntN(200)) * time.Millisecond)
	}
	if collect() < len(want) {
		run(90 * time.Second) // a last one, left to finish (it stops once all arrived)
	}
	var missing, twice int
	for _, id := range want {
		switch c := got[id]; {
		case c == 0:
			missing++
		case c > 1:
			twice++
		}
	}
	t.Logf("%d SIGKILLs; %d events, %d arrived more than once, %d requests accepted", kills, len(want), twice, len(rc.accepted()))
	if missing > 0 || len(got) != len(want) {
		t.Fatalf("%d events never arrived (%d distinct ids arrived)", missing, len(got))
	}
}
