package scheduler

import (
	"context"
	"sync"
)

// pool bounds how many Runs are in flight.
type pool struct {
	sem chan struct{}
	wg  sync.WaitGroup
}

func newPool(n int) *pool { return &pool{sem: make(chan struct{}, n)} }

// acquire waits for one free slot, then takes up to max slots that are
// free at once; it returns how many it took.
func (p *pool) acquire(ctx context.Context, max int) (int, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	n := 1
	for n < max {
		select {
		case p.sem <- struct{}{}:
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// release gives back n unused slots.
func (p *pool) release(n int) {
	for range n {
		<-p.sem
	}
}

// goRun runs f on a slot already acquired and frees the slot after.
func (p *pool) goRun(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.sem }()
		f()
	}()
}

// wait returns when every f started by goRun has returned.
func (p *pool) wait() { p.wg.Wait() }
