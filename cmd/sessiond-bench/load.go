package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// openLoop calls fn n times at a fixed rate per second, each call on its
// own goroutine at its intended time, whether or not earlier calls have
// returned (an open-loop load: a slow server does not slow the offered
// load). fn measures from intended, so queueing in this process counts
// against the server rather than being hidden (no coordinated omission).
// At most maxInFlight calls run at once. It returns when every call has
// returned.
func openLoop(ctx context.Context, rate float64, n int, fn func(i int, intended time.Time)) {
	const maxInFlight = 2048
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		t := start.Add(time.Duration(i) * interval)
		if d := time.Until(t); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i, t)
		}()
	}
	wg.Wait()
}

// closedLoop runs workers goroutines that each call fn again as soon as it
// returns (a closed-loop load: it finds the server's saturation). Calls
// are numbered from 0; it stops issuing when n calls were issued (n <= 0:
// no limit) or deadline passed (zero: none), and returns when every worker
// has stopped.
func closedLoop(ctx context.Context, workers, n int, deadline time.Time, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				i := int(next.Add(1) - 1)
				if n > 0 && i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// recorder collects durations from many goroutines.
type recorder struct {
	mu    sync.Mutex
	ds    []time.Duration
	first time.Time // earliest start passed to add
	last  time.Time // latest end passed to add
	errs  int
}

// add records one successful call that started at start and ended at end.
func (r *recorder) add(start, end time.Time) {
	r.mu.Lock()
	r.ds = append(r.ds, end.Sub(start))
	if r.first.IsZero() || start.Before(r.first) {
		r.first = start
	}
	if end.After(r.last) {
		r.last = end
	}
	r.mu.Unlock()
}

func (r *recorder) fail() {
	r.mu.Lock()
	r.errs++
	r.mu.Unlock()
}

// rate is the successful calls per second from the first start to the
// last end.
func (r *recorder) rate() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return perSecond(len(r.ds), r.last.Sub(r.first))
}

func (r *recorder) summary() latencies {
	r.mu.Lock()
	defer r.mu.Unlock()
	return summarise(r.ds)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ds)
}
