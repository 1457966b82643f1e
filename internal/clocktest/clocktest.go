// Package clocktest is the injected clock of the tests: time moves only
// when a test says so. It is safe for concurrent use.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock; pass its Now as a Config.Now.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock that reads start (in UTC, to the millisecond).
func New(start time.Time) *Clock {
	return &Clock{now: start.UTC().Truncate(time.Millisecond)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
