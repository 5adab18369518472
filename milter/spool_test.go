package milter

import (
	"bytes"
	"io"
	"testing"
)

// TestSpoolMemoryShared: the body bytes held in memory are taken from one
// process-wide budget; when it is spent, the next body goes to disk at
// once, and a closed spool gives its share back.
func TestSpoolMemoryShared(t *testing.T) {
	mem := newBudget(1 << 20)
	dir := t.TempDir()
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	fill := func(s *spool, n int) {
		for range n {
			if _, err := s.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := newSpool(dir, 1<<20, 10<<20, mem)
	fill(a, 16) // 1 MiB: all of it in memory
	if !a.InMemory() || mem.inUse() != 1<<20 {
		t.Fatalf("first body: in memory %v, budget used %d", a.InMemory(), mem.inUse())
	}
	b := newSpool(dir, 1<<20, 10<<20, mem)
	fill(b, 1)
	if b.InMemory() {
		t.Error("second body kept in memory although the budget is spent")
	}
	a.Close()
	if mem.inUse() != 0 {
		t.Errorf("budget used %d after Close", mem.inUse())
	}
	c := newSpool(dir, 1<<20, 10<<20, mem)
	fill(c, 20) // past body_memory: to disk, and the memory it held is given back
	if c.InMemory() || mem.inUse() != 0 {
		t.Errorf("third body: in memory %v, budget used %d", c.InMemory(), mem.inUse())
	}
	r, err := c.Reader()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); len(got) != 20*len(chunk) {
		t.Errorf("read back %d bytes", len(got))
	}
	b.Close()
	c.Close()
}
