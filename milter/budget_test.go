package milter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/leadpush/leadpush/token"
)

func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	a, ok := b.acquire(ctx, 60)
	if !ok || a != 60 {
		t.Fatal(a, ok)
	}
	// a second 60 waits; a timeout gives up without holding anything
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if n, ok := b.acquire(short, 60); ok || n != 0 {
		t.Fatalf("acquired %d over the budget", n)
	}
	cancel()
	// larger than the budget: takes all of it, once free; first come, first served
	got := make(chan int64, 2)
	go func() { n, _ := b.acquire(ctx, 500); got <- n; b.release(n) }()
	time.Sleep(20 * time.Millisecond)
	go func() { n, _ := b.acquire(ctx, 10); got <- n; b.release(n) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case n := <-got:
		t.Fatalf("acquired %d while the budget was held (FIFO: the small one waits behind the large)", n)
	default:
	}
	b.release(a)
	if n1, n2 := <-got, <-got; n1 != 100 || n2 != 10 {
		t.Errorf("granted %d then %d, want 100 then 10", n1, n2)
	}
	if u := b.inUse(); u != 0 {
		t.Errorf("%d in use at the end", u)
	}
}

// TestBudgetBusyPassesUntracked: a rewrite that cannot get its share of the
// memory budget within BudgetWait passes untracked, counted; once the
// budget is free, bodies are rewritten again.
func TestBudgetBusyPassesUntracked(t *testing.T) {
	keys, err := token.ParseKeyring([]string{token.NewKey("k1")})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "unix", func(c *Config) {
		c.Keyring, c.BaseURL = keys, "https://t.example.com"
		c.MemoryBudget, c.BudgetWait = 1<<20, 50*time.Millisecond
	})
	held, _ := h.srv.budget.acquire(context.Background(), 1<<20)
	m := msg{from: "a@example.com", rcpts: []string{"b@example.com"}, headers: [][2]string{{"Content-Type", "text/html"}},
		body: strings.Repeat(`<p><a href="https://www.example.com/">x</a></p>`+"\r\n", 10)}
	s := h.session(t, "127.0.0.1")
	if r := send(t, s, m); r.replaced || h.srv.Metrics().BudgetWaits.Load() != 1 {
		t.Errorf("budget held: replaced %v, budget timeouts %d", r.replaced, h.srv.Metrics().BudgetWaits.Load())
	}
	h.srv.budget.release(held)
	if r := send(t, s, m); !r.replaced {
		t.Error("budget free: body not rewritten")
	}
	if u := h.srv.budget.inUse(); u != 0 {
		t.Errorf("%d bytes of the budget still held", u)
	}
}
