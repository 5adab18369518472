package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadpush/leadpush/ledger"
)

func writeConfig(t *testing.T, db string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "leadpush.toml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("[store]\npath = %q\n", db)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := Main(args, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("leadpushctl %v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

// TestBackupRestoreForgetWhileMailFlows: backup and forget through the
// command while another process records messages; the backup, put in
// place of a ledger (the README's restore), reads back.
func TestBackupRestoreForgetWhileMailFlows(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "leadpush.db")
	cfg := writeConfig(t, db)
	mta, err := ledger.OpenSQLite(db)
	if err != nil {
		t.Fatal(err)
	}
	defer mta.Close()
	ctx := context.Background()
	person := &ledger.Message{ID: "msg-person", Recipients: []string{"gone@example.com"}, To: "gone@example.com", Tag: "welcome",
		Tracking: ledger.TrackAll, CreatedAt: time.Now()}
	if err := mta.Record(ctx, []*ledger.Message{person}, []*ledger.Event{{ID: ledger.NewID(), Type: ledger.Open,
		MessageID: person.ID, Recipient: "gone@example.com", Time: time.Now(), Detail: ledger.Detail{IP: "198.51.100.7"}}}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var flowed int
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := &ledger.Message{ID: fmt.Sprint("flow-", i), Recipients: []string{"r@example.com"}, Tag: "newsletter", CreatedAt: time.Now()}
			if err := mta.Record(ctx, []*ledger.Message{m}, []*ledger.Event{{ID: ledger.NewID(), Type: ledger.Processed, MessageID: m.ID, Time: time.Now()}}); err != nil {
				t.Error(err)
				return
			}
			flowed++
			time.Sleep(time.Millisecond)
		}
	})
	time.Sleep(50 * time.Millisecond)
	backup := filepath.Join(dir, "backup.db")
	out := run(t, "-config", cfg, "backup", backup)
	if !strings.Contains(out, "backed up") {
		t.Errorf("backup said %q", out)
	}
	var rep ledger.ForgetReport
	if err := json.Unmarshal([]byte(run(t, "-config", cfg, "forget", "--json", "gone@example.com")), &rep); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if rep.MessagesDeleted != 1 || rep.Events != 1 {
		t.Errorf("forget: %+v", rep)
	}
	if _, err := mta.Message(ctx, person.ID); err == nil {
		t.Error("the person's message is still in the live ledger")
	}
	// Restore: the backup in place of the ledger.
	restored := filepath.Join(dir, "restored.db")
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(restored, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rcfg := writeConfig(t, restored)
	var m struct {
		ID  string `json:"id"`
		Tag string `json:"tag"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(run(t, "-config", rcfg, "message", "--json", person.ID), "\n", 2)[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != person.ID || m.Tag != "welcome" {
		t.Errorf("restored message %+v", m)
	}
	if msgs := run(t, "-config", rcfg, "messages", "--tag", "newsletter", "--json"); flowed > 0 && !strings.Contains(msgs, "flow-0") {
		t.Errorf("restored ledger lacks the mail recorded before the backup (%d flowed)", flowed)
	}
}
