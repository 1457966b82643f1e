package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// The shared cluster (redistest.SharedCluster) is stopped by Wrap before
// goleak looks for leaked goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Wrap(m)) }

// testStart is where every injected clock starts: well before the wall
// clock, so a TTL sent as an absolute instant would end at once (the
// lifecycle sends them relative to its clock).
var testStart = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// noSweep turns the cron sweep off, and noPoll the poller, so that a test
// sees one path only.
const (
	noSweep = -1
	noPoll  = -1
)

// env is one test's Redis (a server of its own, or the package's shared
// cluster under a namespace of its own) and clock.
type env struct {
	t     *testing.T
	ctx   context.Context
	tg    redistest.Target
	rdb   redis.UniversalClient
	ks    keyspace.Space
	clock *clocktest.Clock
	// now is the clock of the nodes built from now on: clock.Now, unless
	// a test follows the wall clock.
	now func() time.Time
}

func newEnv(t *testing.T, tg redistest.Target) *env {
	t.Helper()
	clock := clocktest.New(testStart)
	return &env{t: t, ctx: t.Context(), tg: tg, rdb: tg.Client, ks: keyspace.New(tg.Namespace), clock: clock, now: clock.Now}
}

// forEachTopology runs f, in parallel, on a fresh env on a redis-server of
// its own and on the shared cluster (SESSIOND_TEST_TOPOLOGIES=single
// limits it to the first).
func forEachTopology(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		f(t, newEnv(t, tg))
	})
}

// onOneServer returns an env on a redis-server of its own, for what does
// not depend on the topology.
func onOneServer(t *testing.T) *env {
	t.Helper()
	return newEnv(t, redistest.Open(t, "single"))
}

// node is one replica: an Alarm, the lifecycle service whose Timer it is,
// and a scheduler over both.
type node struct {
	sched *Scheduler
	svc   *lifecycle.Service
	alarm *Alarm
}

// node builds a replica on the env's Redis, namespace and clock, wired as
// cmd/sessiond wires it. Set the scheduler's hooks before start; the
// scheduler is shut down when the test ends (Shutdown also releases one
// that never started).
func (e *env) node(cfg Config, lcfg lifecycle.Config) *node {
	e.t.Helper()
	alarm := NewAlarm()
	lcfg.Timer = alarm
	svc := e.service(lcfg)
	cfg.Now = e.now
	cfg.Queue = e.ks.MaintenanceQueue()
	s := New(e.rdb, svc, alarm, cfg)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			e.t.Errorf("Shutdown: %v", err)
		}
	})
	return &node{sched: s, svc: svc, alarm: alarm}
}

// service builds a lifecycle service on the env's Redis, namespace and
// clock. Alone (no Timer), it is another replica's admin API: its changes
// wake no scheduler of this process.
func (e *env) service(lcfg lifecycle.Config) *lifecycle.Service {
	lcfg.Now = e.now
	lcfg.Namespace = e.tg.Namespace
	return lifecycle.New(e.rdb, lcfg)
}

// start starts n's scheduler.
func (e *env) start(n *node) {
	e.t.Helper()
	if err := n.sched.Start(e.ctx); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}

// poll polls cond until it holds (true) or the deadline passes (false).
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
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

// events returns the outbox events of type typ in every shard, by
// session id.
func (e *env) events(typ string) map[string][]*lifecycle.Event {
	e.t.Helper()
	cmds := make([]*redis.XMessageSliceCmd, keyspace.Shards)
	_, err := e.rdb.Pipelined(e.ctx, func(p redis.Pipeliner) error {
		for sh := range cmds {
			cmds[sh] = p.XRange(e.ctx, e.ks.Outbox(keyspace.Shard(sh)), "-", "+")
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("read the outboxes: %v", err)
	}
	out := map[string][]*lifecycle.Event{}
	for sh, cmd := range cmds {
		for _, m := range cmd.Val() {
			ev, err := lifecycle.ParseEvent(keyspace.Shard(sh), m)
			if err != nil {
				e.t.Fatalf("parse event: %v", err)
			}
			if ev.Type == typ {
				out[ev.SessionID] = append(out[ev.SessionID], ev)
			}
		}
	}
	return out
}

// waitEvents waits until n sessions have an event of type typ.
func (e *env) waitEvents(typ string, n int) map[string][]*lifecycle.Event {
	e.t.Helper()
	var got map[string][]*lifecycle.Event
	waitFor(e.t, 15*time.Second, fmt.Sprintf("%d sessions with %s events", n, typ), func() bool {
		got = e.events(typ)
		return len(got) >= n
	})
	return got
}

// stored renders every key of the env's namespace but the outbox streams
// (which keep reduced events by design) with its value, one key a line.
func (e *env) stored() string {
	e.t.Helper()
	all, err := redistest.Contents(e.ctx, e.rdb, e.ks.Prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(all, "\n") {
		if key, _, _ := strings.Cut(line, " ="); !strings.HasSuffix(key, "}:outbox") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// keysNaming returns the keys of the env's namespace whose name holds one
// of subs.
func (e *env) keysNaming(subs ...string) []string {
	e.t.Helper()
	keys, err := redistest.Keys(e.ctx, e.rdb, e.ks.Prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		for _, s := range subs {
			if strings.Contains(k, s) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// refsInShards returns per refs for each shard: refs[sh] all live in
// shard sh.
func refsInShards(prefix string, per int) [keyspace.Shards][]string {
	var refs [keyspace.Shards][]string
	for i, left := 0, keyspace.Shards*per; left > 0; i++ {
		ref := fmt.Sprintf("%s-%d", prefix, i)
		if sh := keyspace.ShardOf(ref); len(refs[sh]) < per {
			refs[sh] = append(refs[sh], ref)
			left--
		}
	}
	return refs
}

// personal is the personal data tests create sessions with.
const (
	personJSON = `{"first_name":"Ada","last_name":"Lovelace"}`
	personName = "Lovelace"
)

// create makes a session for ref, with personal data if personal.
func create(t *testing.T, svc *lifecycle.Service, ref string, personal bool) *lifecycle.Created {
	t.Helper()
	req := lifecycle.CreateRequest{RefID: ref}
	if personal {
		req.Person = []byte(personJSON)
		req.Metadata = []byte(`{"note":"personal"}`)
	}
	c, err := svc.Create(t.Context(), req)
	if err != nil {
		t.Fatalf("create %s: %v", ref, err)
	}
	return c
}

// ranLog records the Runs (hook ran) that changed something.
type ranLog struct {
	mu      sync.Mutex
	changed map[string][]string // session id -> "source/kind", in order
}

func newRanLog() *ranLog { return &ranLog{changed: map[string][]string{}} }

func (r *ranLog) hook(src string, k lifecycle.WorkKind, id string, changed bool) {
	if changed {
		r.mu.Lock()
		r.changed[id] = append(r.changed[id], src+"/"+string(k))
		r.mu.Unlock()
	}
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
	var got string
	if !poll(15*time.Second, func() bool { got = r.sources(id); return got == want }) {
		t.Fatalf("session %s changed by %q, want %q", id, got, want)
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
