package scheduler

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's Redis and clock.
type env struct {
	t     *testing.T
	srv   *redistest.Server
	rdb   *redis.Client
	clock *clocktest.Clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := redistest.Start(t)
	return &env{t: t, srv: srv, rdb: srv.Client(), clock: clocktest.New(time.Now())}
}

// node is one scheduler with its lifecycle service, as one replica runs
// them. Set hooks before start.
type node struct {
	sched *Scheduler
	svc   *lifecycle.Service
}

// node builds a scheduler and its service on the env's Redis and clock;
// withTimer false leaves the service without a Timer (no tasks).
func (e *env) node(cfg Config, lcfg lifecycle.Config, withTimer bool) *node {
	cfg.Now, lcfg.Now = e.clock.Now, e.clock.Now
	cfg.Tasks = e.srv.Client() // Asynq's own pool, as the daemon gives it
	s := New(e.rdb, cfg)
	if withTimer {
		lcfg.Timer = s
	}
	svc := lifecycle.New(e.rdb, lcfg)
	s.Drive(svc)
	// Shutdown also releases a scheduler that never started.
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			e.t.Errorf("Shutdown: %v", err)
		}
	})
	return &node{sched: s, svc: svc}
}

// start starts n.sched; node shuts it down when the test ends.
func (e *env) start(n *node) {
	e.t.Helper()
	if err := n.sched.Start(context.Background()); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		<-tick.C
	}
}

// signal counts hook calls so a test can wait for the next few.
type signal struct{ ch chan struct{} }

func newSignal() *signal { return &signal{ch: make(chan struct{}, 1<<16)} }

func (s *signal) fire() {
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// waitNext drains what has fired so far, then waits for n more.
func (s *signal) waitNext(t *testing.T, n int, what string) {
	t.Helper()
	for len(s.ch) > 0 {
		<-s.ch
	}
	s.wait(t, n, what)
}

// wait waits for n firings, counting those not yet waited for.
func (s *signal) wait(t *testing.T, n int, what string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case <-s.ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// events returns the outbox events of type typ by session id.
func (e *env) events(typ string) map[string][]*lifecycle.Event {
	e.t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), lifecycle.OutboxKey, "-", "+").Result()
	if err != nil {
		e.t.Fatalf("read outbox: %v", err)
	}
	out := map[string][]*lifecycle.Event{}
	for _, m := range msgs {
		ev, err := lifecycle.ParseEvent(m)
		if err != nil {
			e.t.Fatalf("parse event: %v", err)
		}
		if ev.Type == typ {
			out[ev.SessionID] = append(out[ev.SessionID], ev)
		}
	}
	return out
}

// waitEvents waits until n sessions have an event of type typ.
func (e *env) waitEvents(typ string, n int) map[string][]*lifecycle.Event {
	e.t.Helper()
	var got map[string][]*lifecycle.Event
	waitFor(e.t, 15*time.Second, typ+" events", func() bool {
		got = e.events(typ)
		return len(got) >= n
	})
	return got
}

// keysOf returns every key in Redis whose name holds id.
func (e *env) keysOf(id string) []string {
	e.t.Helper()
	var keys []string
	iter := e.rdb.Scan(context.Background(), 0, "*"+id+"*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		e.t.Fatalf("scan: %v", err)
	}
	return keys
}

// create makes a session for ref with optional personal data.
func create(t *testing.T, svc *lifecycle.Service, ref string, personal bool) *lifecycle.Created {
	t.Helper()
	req := lifecycle.CreateRequest{RefID: ref}
	if personal {
		req.Person = []byte(`{"first_name":"Ada","last_name":"Lovelace"}`)
		req.Metadata = []byte(`{"note":"personal"}`)
	}
	c, err := svc.Create(context.Background(), req)
	if err != nil {
		t.Fatalf("create %s: %v", ref, err)
	}
	return c
}

// ranLog records the hook's Runs that changed something.
type ranLog struct {
	mu      sync.Mutex
	changed map[string][]string // session id -> sources
	sig     *signal
}

func newRanLog() *ranLog { return &ranLog{changed: map[string][]string{}, sig: newSignal()} }

func (r *ranLog) hook(src string, k lifecycle.WorkKind, id string, changed bool) {
	if changed {
		r.mu.Lock()
		r.changed[id] = append(r.changed[id], src+"/"+string(k))
		r.mu.Unlock()
	}
	r.sig.fire()
}

func (r *ranLog) sources(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.changed[id], ",")
}

// waitSources waits until id was changed by exactly want (the hook runs
// just after the commit a test may already see).
func (r *ranLog) waitSources(t *testing.T, id, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.sources(id) != want {
		if time.Now().After(deadline) {
			t.Fatalf("session %s changed by %q, want %q", id, r.sources(id), want)
		}
		r.sig.wait(t, 1, "a Run")
	}
}

func (r *ranLog) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.changed {
		n += len(s)
	}
	return n
}
