package milter

import (
	"context"
	"sync"
)

// budget bounds the memory that rewrites hold at once, process-wide: a
// rewrite holds its leaf, the rewritten copy and their encodings in memory,
// several times the body's size, while bodies themselves wait on disk past
// body_memory. A rewrite reserves its share first and waits, first come
// first served, while others hold the budget; one larger than the whole
// budget takes all of it, alone.
type budget struct {
	mu      sync.Mutex
	size    int64
	used    int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newBudget(size int64) *budget { return &budget{size: size} }

// tryAcquire reserves n bytes (at most the whole budget) if they are free
// now, and nobody waits.
func (b *budget) tryAcquire(n int64) (int64, bool) {
	n = min(n, b.size)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) == 0 && b.used+n <= b.size {
		b.used += n
		return n, true
	}
	return 0, false
}

// acquire reserves n bytes (at most the whole budget), waiting until they
// are free or ctx is done. It returns what was reserved, for release, and
// false when ctx ended first.
func (b *budget) acquire(ctx context.Context, n int64) (int64, bool) {
	n = min(n, b.size)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.size {
		b.used += n
		b.mu.Unlock()
		return n, true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return n, true
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready:
			return n, true // granted meanwhile: keep it
		default:
		}
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
		b.grant() // the next in line may fit now that this one left
		return 0, false
	}
}

// release returns n bytes reserved by acquire.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.grant()
	b.mu.Unlock()
}

// grant wakes the waiters at the head of the line that fit; b.mu is held.
func (b *budget) grant() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.size {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.used += w.n
		close(w.ready)
	}
}

// inUse reports the bytes reserved now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
