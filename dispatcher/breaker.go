package dispatcher

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// breaker is one endpoint's circuit breaker, per process. Closed, it lets
// every attempt through. Once the endpoint has been failing for period,
// every attempt since one that began period ago unhealthy (no answer, 5xx
// or 429), with at least threshold of them, it opens: for the cool-down
// every delivery is deferred. Then it is half open: one probe goes through
// while the others keep waiting; a healthy probe closes it, an unhealthy
// one opens it again for twice as long (at most maxCooldownFactor
// cool-downs). A flaky endpoint that still succeeds now and then keeps it
// closed: retries handle it.
type breaker struct {
	threshold int
	period    time.Duration
	cooldown  time.Duration

	mu        sync.Mutex
	failures  int       // consecutive unhealthy attempts
	since     time.Time // when the first of them began
	openUntil time.Time // zero while closed
	opens     int       // consecutive opens, for the growing cool-down
	probing   bool      // a half-open probe is in flight
}

const maxCooldownFactor = 10

func newBreaker(threshold int, period, cooldown time.Duration) *breaker {
	return &breaker{threshold: threshold, period: period, cooldown: cooldown}
}

// allow reports whether an attempt may start now. When it may not, wait
// is how long the caller should defer it. A true allow must be followed
// by exactly one call of done or abandon.
func (b *breaker) allow(now time.Time) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openUntil.IsZero():
		return true, 0
	case now.Before(b.openUntil):
		// Spread the deferred deliveries over half a cool-down past the
		// opening, so they do not all come back at the same instant.
		return false, b.openUntil.Sub(now) + spread(b.cooldown/2)
	case !b.probing:
		b.probing = true
		return true, 0
	}
	return false, b.cooldown/4 + spread(b.cooldown/4)
}

// done records the outcome of an allowed attempt that began at started.
func (b *breaker) done(healthy bool, started, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.probing && healthy:
		b.failures, b.opens, b.openUntil, b.probing = 0, 0, time.Time{}, false
	case b.probing:
		b.probing = false
		b.open(now)
	case !b.openUntil.IsZero():
		// An attempt that was in flight when it opened changes nothing.
	case healthy:
		b.failures = 0
	default:
		if b.failures == 0 || started.Before(b.since) {
			b.since = started
		}
		b.failures++
		if b.failures >= b.threshold && now.Sub(b.since) >= b.period {
			b.open(now)
		}
	}
}

// open opens the breaker for a cool-down that doubles with each opening.
func (b *breaker) open(now time.Time) {
	b.opens++
	b.openUntil = now.Add(b.cooldown * time.Duration(min(1<<min(b.opens-1, 10), maxCooldownFactor)))
	b.failures = 0
}

// abandon releases an allowed attempt that did not happen.
func (b *breaker) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// isOpen reports whether the breaker is open or half open.
func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openUntil.IsZero()
}

// spread is a random duration in [0, d).
func spread(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// limiter caps one endpoint's attempts in flight. A first attempt that
// finds it full waits in the endpoint's line, in memory, if the line has
// room: the attempt that frees a slot hands it over (release), so a busy
// endpoint's backlog drains at its own pace without a round trip through
// Asynq. The relay stops reading the outbox while every endpoint's line is
// long (saturated), so a backlog waits there rather than in memory. A
// delivery that finds both full is deferred rather than queued behind the
// others, so a slow endpoint never holds more than its share of workers.
// The deferral is as long as the deliveries already deferred need to get
// through at the endpoint's pace: its recent attempt duration, or the age
// of the oldest attempt in flight when that is longer (a hanging
// endpoint).
//
// A retry that finds every slot taken waits for one too, briefly and ahead
// of the line (acquireRetry), so that a long line cannot keep retries out.
//
// Invariant: a first attempt or a retry waits only while every slot is
// taken, so a slot's release always finds the waiter it must hand over to.
type limiter struct {
	slots   int
	lineCap int // first attempts that may wait for a slot

	mu       sync.Mutex
	inflight []time.Time      // start times of the attempts in flight
	line     []*job           // first attempts waiting for a slot, oldest first
	retries  []chan time.Time // retries waiting for a slot, served before the line
	latency  time.Duration    // moving average of attempt durations
	deferred dueHeap          // due times of deliveries deferred as busy
}

// Bounds of a busy deferral.
const (
	minBusyDefer = 20 * time.Millisecond
	maxBusyDefer = 5 * time.Second
	maxDeferred  = 1 << 16 // due times remembered
)

// newLimiter returns a limiter of n slots whose line holds up to lineCap
// first attempts (none when lineCap is 0).
func newLimiter(n, lineCap int) *limiter {
	return &limiter{slots: n, lineCap: lineCap, inflight: make([]time.Time, 0, n)}
}

// take takes a slot for an attempt starting now, if one is free; l.mu is
// held.
func (l *limiter) take(now time.Time) bool {
	if len(l.inflight) >= l.slots {
		return false
	}
	l.inflight = append(l.inflight, now)
	return true
}

// acquireOrWait takes a slot for j's first attempt, starting now. When
// every slot is taken it puts j in the line, if there is room: j then
// gets a slot from release. It returns false, false when j got neither.
func (l *limiter) acquireOrWait(now time.Time, j *job) (acquired, waiting bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.take(now) {
		return true, false
	}
	if len(l.line) < l.lineCap {
		l.line = append(l.line, j)
		return false, true
	}
	return false, false
}

// acquireRetry takes a slot for a retry's attempt, starting now, waiting
// up to wait for one when every slot is taken. A waiting retry is served
// before the line's first attempts, so that a backlog of those cannot keep
// retries out for long; at most as many retries wait as there are slots.
// It returns the slot's start.
func (l *limiter) acquireRetry(ctx context.Context, now time.Time, wait time.Duration) (time.Time, bool) {
	l.mu.Lock()
	if l.take(now) {
		l.mu.Unlock()
		return now, true
	}
	if len(l.retries) >= l.slots {
		l.mu.Unlock()
		return time.Time{}, false
	}
	slot := make(chan time.Time, 1)
	l.retries = append(l.retries, slot)
	l.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case start := <-slot:
		return start, true
	case <-t.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := slices.Index(l.retries, slot); i >= 0 {
		l.retries = slices.Delete(l.retries, i, i+1)
		return time.Time{}, false
	}
	return <-slot, true // handed over just now
}

// release frees the slot of the attempt that started at start and took d
// (0: no attempt was made). When a retry waits for a slot (acquireRetry),
// the slot passes to it; else, when a first attempt waits in the line, the
// slot passes to it instead: release returns it and its slot's start,
// now, and the caller makes it.
func (l *limiter) release(start time.Time, d time.Duration, now time.Time) (*job, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.inflight, start.Equal)
	switch {
	case d <= 0:
	case l.latency == 0:
		l.latency = d
	default:
		l.latency += (d - l.latency) / 8
	}
	if len(l.retries) > 0 && i >= 0 {
		l.inflight[i] = now
		l.retries[0] <- now // buffered: the waiting retry takes it
		l.retries = l.retries[1:]
		return nil, time.Time{}
	}
	if len(l.line) > 0 && i >= 0 {
		next := l.line[0]
		l.line[0] = nil
		l.line = l.line[1:]
		l.inflight[i] = now
		return next, now
	}
	if i >= 0 {
		l.inflight = slices.Delete(l.inflight, i, i+1)
	}
	return nil, time.Time{}
}

// drop empties the line and returns what waited in it.
func (l *limiter) drop() []*job {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.line
	l.line = nil
	return out
}

// saturated reports whether the line is long enough that reading more of
// the outbox for this endpoint would only defer it: it holds at least as
// many first attempts as there are slots. The line's cap leaves room above
// that for what the relays read at once.
func (l *limiter) saturated() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.line) >= l.slots
}

// busyDelay returns how long to defer a delivery that found the limiter
// full, and remembers it among the deferred ones.
func (l *limiter) busyDelay(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.deferred) > 0 && l.deferred[0] <= now.UnixNano() {
		heap.Pop(&l.deferred)
	}
	pace := max(l.latency, minBusyDefer)
	for _, start := range l.inflight {
		pace = max(pace, now.Sub(start))
	}
	ahead := time.Duration(len(l.deferred)/l.slots + 1)
	d := min(pace*ahead, maxBusyDefer)
	d += spread(d / 2)
	if len(l.deferred) < maxDeferred {
		heap.Push(&l.deferred, now.Add(d).UnixNano())
	}
	return d
}

// dueHeap is a min-heap of unix nanosecond times.
type dueHeap []int64

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
