package lifecycle

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
)

// newClient returns a client of the env's Redis of its own (closed at the
// test's cleanup), with hooks.
func (e *env) newClient(hooks ...redis.Hook) redis.UniversalClient {
	e.t.Helper()
	var c redis.UniversalClient
	switch e.tg.Name {
	case "cluster":
		c = redistest.SharedCluster(e.t).Client()
	default:
		opt, err := redis.ParseURL(e.tg.URL)
		if err != nil {
			e.t.Fatal(err)
		}
		opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		c = redis.NewClient(opt)
		e.t.Cleanup(func() { _ = c.Close() })
	}
	for _, h := range hooks {
		c.AddHook(h)
	}
	return c
}

// probe is a go-redis hook that watches what a Service sends. Every write
// must be a call of the commit script; the only others allowed are a
// nonce spent in a read (SET NX, or the readref script) and the erasure of
// a stored response in another slot (SET XX KEEPTTL). Before a commit is
// sent, probe runs before (once) and rewrites its arguments with fault.
type probe struct {
	mu      sync.Mutex
	fault   func(args []any) []any
	before  func()
	outside []string // writes sent outside the commit script
	commits int
}

// writeCommands are the Redis commands that write.
var writeCommands = map[string]bool{
	"set": true, "setnx": true, "setex": true, "psetex": true, "getset": true, "getdel": true, "del": true, "unlink": true,
	"incr": true, "incrby": true, "hset": true, "hsetnx": true, "hdel": true, "hincrby": true, "zadd": true, "zrem": true,
	"zincrby": true, "zremrangebyscore": true, "zremrangebylex": true, "xadd": true, "xtrim": true, "xdel": true, "xack": true,
	"expire": true, "pexpire": true, "expireat": true, "pexpireat": true, "persist": true, "rename": true,
	"restore": true, "copy": true, "sadd": true, "srem": true, "lpush": true, "rpush": true, "fcall": true,
}

// scriptOf names the script an EVAL or EVALSHA runs: "commit", "readref"
// or "" for another.
func scriptOf(cmd redis.Cmder) (string, bool) {
	args := cmd.Args()
	switch cmd.Name() {
	case "evalsha", "evalsha_ro":
		switch args[1] {
		case commitScript.Hash():
			return "commit", true
		case readRefScript.Hash():
			return "readref", true
		}
		return "", true
	case "eval", "eval_ro":
		switch args[1] {
		case commitLua:
			return "commit", true
		case readRefLua:
			return "readref", true
		}
		return "", true
	}
	return "", false
}

func hasArg(cmd redis.Cmder, arg string) bool {
	return slices.ContainsFunc(cmd.Args()[1:], func(a any) bool { s, ok := a.(string); return ok && strings.EqualFold(s, arg) })
}

func (p *probe) note(cmd redis.Cmder) {
	name := cmd.Name()
	script, isScript := scriptOf(cmd)
	allowed := true
	switch {
	case isScript:
		allowed = script != ""
	case name == "set":
		allowed = hasArg(cmd, "nx") || (hasArg(cmd, "xx") && hasArg(cmd, "keepttl"))
	case writeCommands[name]:
		allowed = false
	}
	if !allowed {
		p.mu.Lock()
		p.outside = append(p.outside, cmd.String())
		p.mu.Unlock()
	}
}

func (p *probe) DialHook(next redis.DialHook) redis.DialHook { return next }

func (p *probe) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.note(cmd)
		if s, _ := scriptOf(cmd); s != "commit" {
			return next(ctx, cmd)
		}
		p.mu.Lock()
		p.commits++
		before, fault := p.before, p.fault
		p.before = nil
		p.mu.Unlock()
		if before != nil {
			before()
		}
		if fault == nil {
			return next(ctx, cmd)
		}
		c := redis.NewCmd(ctx, fault(slices.Clone(cmd.Args()))...)
		err := next(ctx, c)
		if rc, ok := cmd.(*redis.Cmd); ok {
			rc.SetVal(c.Val())
		}
		cmd.SetErr(c.Err())
		return err
	}
}

func (p *probe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			p.note(c)
		}
		return next(ctx, cmds)
	}
}

func (p *probe) set(fault func([]any) []any, before func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.before = fault, before
}

func (p *probe) writesOutside() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.outside)
}

// appendBadWrite adds a write no command implements after a commit's
// writes: a commit that failed half way would leave the others applied.
func appendBadWrite(args []any) []any { return append(args, "0", "NO-SUCH-COMMAND", "1") }

// sessionIDs returns the ids of every session record in the env.
func (e *env) sessionIDs() []string {
	e.t.Helper()
	var out []string
	for _, k := range e.keys("*:s:*") {
		out = append(out, k[strings.LastIndex(k, ":s:")+3:])
	}
	return out
}

// TestTransactionsAreAtomic checks, for every kind of change, that it is
// one commit script call whose writes land together or not at all: with a
// write that fails after the others (a bad command, or a key of the wrong
// type), the operation fails and Redis is exactly as before; then the same
// operation succeeds. No write of the store goes outside the script.
func TestTransactionsAreAtomic(t *testing.T) {
	t.Parallel()
	type prep func(e *env) string // returns the session id to work on
	created := func(e *env) string {
		return e.createWith(CreateRequest{RefID: "r", Person: json.RawMessage(`{"n":1}`)}).ID
	}
	inStatus := func(steps ...string) prep {
		return func(e *env) string {
			id := created(e)
			for _, s := range steps {
				if err := machineOp(s).do(e.ctx, e.svc, id); err != nil {
					e.t.Fatalf("setup %s: %v", s, err)
				}
			}
			return id
		}
	}
	later := func(p prep, d time.Duration) prep {
		return func(e *env) string { id := p(e); e.clock.Advance(d); return id }
	}
	run := func(kind WorkKind) func(ctx context.Context, s *Service, id string) error {
		return func(ctx context.Context, s *Service, id string) error { _, err := s.Run(ctx, kind, id); return err }
	}
	cases := []struct {
		name string
		prep prep
		do   func(ctx context.Context, s *Service, id string) error
	}{
		{"create", func(e *env) string { return "" }, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r", Metadata: json.RawMessage(`{"m":1}`)})
			return err
		}},
		{"create_existing", created, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r"})
			return err
		}},
		{"create_forced", created, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r", ForceCreation: true})
			return err
		}},
		{"create_overdue", later(created, testSessionTTL), func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r"})
			return err
		}},
		{"progress", created, machineOp("progress_started").do},
		{"decide", inStatus("progress_submitted"), machineOp("decide_approved").do},
		{"cancel", created, machineOp("cancel").do},
		{"expire", inStatus("progress_started"), machineOp("expire").do},
		{"resume", inStatus("expire"), machineOp("resume").do},
		{"resume_displacing", func(e *env) string {
			id := inStatus("expire")(e)
			e.create("r")
			e.clock.Advance(testSessionTTL)
			return id
		}, machineOp("resume").do},
		{"delete", created, machineOp("delete").do},
		{"redact", inStatus("progress_submitted", "decide_declined"), machineOp("redact").do},
		{"update", created, func(ctx context.Context, s *Service, id string) error {
			_, err := s.Update(ctx, id, UpdateRequest{Metadata: json.RawMessage(`{"k":"v"}`), Tags: &[]string{"t"}})
			return err
		}},
		{"lazy_expiry", later(created, testSessionTTL), func(ctx context.Context, s *Service, id string) error { _, err := s.Get(ctx, id); return err }},
		{"expire_due", later(created, testSessionTTL), run(WorkExpire)},
		{"redact_due", later(inStatus("cancel"), testRetention), run(WorkRedact)},
		{"purge", later(inStatus("delete"), testPurgeAfter), run(WorkPurge)},
		{"purge_record", later(inStatus("cancel"), testRecordRetention), run(WorkPurge)},
		{"purge_not_due", func(e *env) string {
			id := inStatus("delete")(e)
			e.rdb.ZAdd(e.ctx, e.svc.DueKey(e.shardOf(id), WorkPurge), redis.Z{Score: 1, Member: id}) // claimed early
			return id
		}, run(WorkPurge)},
		{"drop_due", func(e *env) string {
			id := created(e)
			e.rdb.Del(e.ctx, e.ks.Session(e.shardOf(id), id)) // its TTL ran out
			return id
		}, run(WorkExpire)},
	}
	// lastWrite is the due index each commit writes last: expire but for
	// these.
	lastWrite := map[string]WorkKind{"purge_not_due": WorkPurge}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachTopology(t, func(t *testing.T, e *env) {
				id := tc.prep(e)
				sh := ShardOfRef("r")
				p := &probe{}
				svc := New(e.newClient(p), e.svc.Config())

				p.set(appendBadWrite, nil)
				before := e.snapshot()
				if err := tc.do(e.ctx, svc, id); err == nil {
					t.Fatalf("%s succeeded with a bad write in its commit", tc.name)
				}
				assertSameSnapshot(t, before, e.snapshot())

				// A key of the wrong type where the commit writes last: a
				// due index of the shard.
				p.set(nil, nil)
				due := e.svc.DueKey(sh, cmp.Or(lastWrite[tc.name], WorkExpire))
				saved, err := e.rdb.Dump(e.ctx, due).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					t.Fatal(err)
				}
				e.rdb.Del(e.ctx, due)
				e.rdb.Set(e.ctx, due, "not a sorted set", 0)
				before = e.snapshot()
				if err := tc.do(e.ctx, svc, id); err == nil {
					t.Fatalf("%s succeeded with a key of the wrong type", tc.name)
				}
				assertSameSnapshot(t, before, e.snapshot())
				e.rdb.Del(e.ctx, due)
				if saved != "" {
					if err := e.rdb.Restore(e.ctx, due, 0, saved).Err(); err != nil {
						t.Fatal(err)
					}
				}

				if err := tc.do(e.ctx, svc, id); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if w := p.writesOutside(); len(w) > 0 {
					t.Errorf("%s wrote outside the commit script: %v", tc.name, w)
				}
				for _, id := range e.sessionIDs() {
					e.checkSession(id)
				}
			})
		})
	}
}

// TestConflictReadsAgain checks the commit's guards: a change committed
// between an operation's read and its commit makes the commit write
// nothing, and the operation decides again on what is there now, so
// neither change is lost.
func TestConflictReadsAgain(t *testing.T) {
	forEachTopology(t, func(t *testing.T, e *env) {
		p := &probe{}
		svc := New(e.newClient(p), e.svc.Config())

		// A transition and an update.
		c := e.create("ref")
		p.set(nil, func() {
			if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"concurrent"}}); err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		})
		s, err := svc.Progress(e.ctx, c.ID, StatusStarted)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != StatusStarted || !slices.Equal(s.Tags, []string{"concurrent"}) {
			t.Errorf("after the conflict: %+v, want started with the concurrent tag", s)
		}
		if got := e.record(c.ID); got.Status != StatusStarted || !slices.Equal(got.Tags, []string{"concurrent"}) || got.Version != 3 {
			t.Errorf("stored: %s %v version %d, want started, the concurrent tag, version 3", got.Status, got.Tags, got.Version)
		}
		if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.started"}) {
			t.Errorf("events %v", got)
		}
		e.checkSession(c.ID)

		// A redaction and an update that adds personal data: the
		// redaction removes it too.
		p.set(nil, func() {
			if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`{"late":"Late-Secret"}`)}); err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		})
		if _, err := svc.Redact(e.ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(e.contents(), "Late-Secret") {
			t.Errorf("metadata written during the redaction survived it")
		}
		e.checkSession(c.ID)

		// Two creates for one ref_id: the second returns the first's
		// session.
		var other *Created
		p.set(nil, func() {
			var err error
			if other, err = e.svc.Create(e.ctx, CreateRequest{RefID: "race"}); err != nil {
				t.Errorf("concurrent create: %v", err)
			}
		})
		mine, err := svc.Create(e.ctx, CreateRequest{RefID: "race"})
		if err != nil {
			t.Fatal(err)
		}
		if other == nil || mine.ID != other.ID || mine.New || !other.New {
			t.Errorf("racing creates: mine %+v, other %+v; want the other's session back", mine, other)
		}
		if n := e.rdb.ZCard(e.ctx, e.ks.IndexRef(ShardOfRef("race"), "race")).Val(); n != 1 {
			t.Errorf("%d sessions for the ref_id, want 1", n)
		}
		e.checkSession(mine.ID)
		if p.commits < 6 { // two per operation: the conflict and the retry
			t.Errorf("%d commits sent; each conflict must cost one more", p.commits)
		}
	})
}

// TestMinReplicas checks Config.MinReplicas against a real replica: a
// change waits until it holds the change; with the replica stopped, a
// change returns ErrNotDurable within about WaitTimeout, and is committed
// all the same.
func TestMinReplicas(t *testing.T) {
	t.Parallel()
	const wait = 300 * time.Millisecond
	master := redistest.Start(t)
	replica := redistest.Start(t)
	host, port, _ := net.SplitHostPort(master.Addr)
	rc := replica.Client()
	if err := rc.Do(t.Context(), "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	mc := master.Client()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(rc.Info(t.Context(), "replication").Val(), "master_link_status:up") ||
		!strings.Contains(mc.Info(t.Context(), "replication").Val(), "state=online") {
		if time.Now().After(deadline) {
			t.Fatal("the replica does not sync")
		}
		time.Sleep(10 * time.Millisecond) // polling the replication link, not waiting for work
	}
	// A live replica acknowledges at once; the generous timeout only
	// keeps a loaded test machine from failing the test.
	e := newEnvOn(t, redistest.Target{Name: "single", Client: mc, URL: master.URL()}, func(c *Config) {
		c.MinReplicas = 1
		c.WaitTimeout = 10 * time.Second
	})

	c := e.create("ref")
	if _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted); err != nil {
		t.Fatalf("progress with a live replica: %v", err)
	}
	// WAIT returned: the replica holds the change.
	key := e.ks.Session(e.shardOf(c.ID), c.ID)
	if got, want := rc.Get(e.ctx, key).Val(), e.rdb.Get(e.ctx, key).Val(); got != want {
		t.Errorf("replica holds record %q, master %q", got, want)
	}

	pid := replica.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	cfg := e.svc.Config()
	cfg.WaitTimeout = wait
	svc := New(e.rdb, cfg)
	began := time.Now()
	_, err := svc.Progress(e.ctx, c.ID, StatusSubmitted)
	took := time.Since(began)
	if !errors.Is(err, ErrNotDurable) {
		t.Fatalf("progress with the replica stopped: %v, want ErrNotDurable", err)
	}
	if took < wait || took > wait+2*time.Second {
		t.Errorf("ErrNotDurable after %v, want about %v", took, wait)
	}
	if got := e.get(c.ID).Status; got != StatusSubmitted {
		t.Errorf("status %s, want the change committed", got)
	}
	d, err := svc.Create(e.ctx, CreateRequest{RefID: "other"})
	if !errors.Is(err, ErrNotDurable) || d == nil {
		t.Fatalf("create with the replica stopped: %v, %v; want the session and ErrNotDurable", d, err)
	}
	e.checkSession(d.ID)
	e.checkSession(c.ID)
}

// TestMinReplicasCluster checks the cluster's path of MinReplicas (WAIT on
// the master of the session's slot): the shared cluster has no replicas,
// so every change commits and returns ErrNotDurable.
func TestMinReplicasCluster(t *testing.T) {
	if !slices.Contains(redistest.Topologies(), "cluster") {
		t.Skip("the cluster topology is not selected")
	}
	t.Parallel()
	e := newEnvOn(t, redistest.Open(t, "cluster"), func(c *Config) {
		c.MinReplicas = 1
		c.WaitTimeout = 50 * time.Millisecond
	})
	c, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref"})
	if !errors.Is(err, ErrNotDurable) || c == nil {
		t.Fatalf("create: %v, %v; want the session and ErrNotDurable", c, err)
	}
	if _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("progress: %v, want ErrNotDurable", err)
	}
	if got := e.get(c.ID).Status; got != StatusStarted {
		t.Errorf("status %s, want the change committed", got)
	}
	e.checkSession(c.ID)
}

// TestCommitChecksWrites checks the commit script's own check of its
// writes, which keeps a commit from failing half way.
func TestCommitChecksWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sh := keyspace.Shard(0)
	k := func(name string) string { return e.ks.Session(sh, name) }
	e.rdb.Set(e.ctx, k("str"), "x", 0)
	for _, tc := range []struct {
		name string
		ops  func(t *tx)
	}{
		{"unknown command", func(t *tx) { t.op("FLUSHALL", k("a")) }},
		{"arguments missing", func(t *tx) { t.ops = append(t.ops, 5, "SET", t.key(k("a")), "v") }},
		{"key index out of range", func(t *tx) { t.ops = append(t.ops, 0, "DEL", 99) }},
		{"wrong type", func(t *tx) { t.op("ZADD", k("str"), 1, "m") }},
		{"wrong type made by an earlier write", func(t *tx) { t.op("HSET", k("a"), "f", "v"); t.op("XADD", k("a"), "*", "f", "v") }},
	} {
		tx := newTx()
		tx.op("SET", k("first"), "written")
		tc.ops(tx)
		before := e.snapshot()
		if err := e.svc.commit(e.ctx, tx); err == nil || errors.Is(err, errConflict) {
			t.Errorf("%s: commit = %v, want an error", tc.name, err)
		}
		assertSameSnapshot(t, before, e.snapshot())
	}
	tx := newTx()
	tx.op("SET", k("first"), "written")
	tx.op("DEL", k("str"))
	tx.op("ZADD", k("str"), 1, "m")
	if err := e.svc.commit(e.ctx, tx); err != nil {
		t.Fatalf("a key deleted, then made a sorted set: %v", err)
	}
}

// storedForm is the record key's value as the format says: the version
// (decimal, no sign, no leading zero), a space, the JSON.
var storedForm = regexp.MustCompile(`(?s)^([1-9][0-9]*) (.*)$`)

// FuzzStoredRecord checks the record key's value format: whatever the
// JSON, "<version> <json>" splits back into the same version and JSON;
// and a value that is not of that form (written apart from encodeStored,
// with strconv) is refused, never mistaken for another version.
func FuzzStoredRecord(f *testing.F) {
	f.Add(int64(1), `{"status":"created"}`, "1 {}")
	f.Add(int64(12), "", "12x {}")
	f.Add(int64(1<<62), " leading space", " 1 {}")
	f.Fuzz(func(t *testing.T, version int64, body, raw string) {
		if version > 0 {
			v, got, err := splitStored(encodeStored(version, []byte(body)))
			if err != nil || v != version || got != body {
				t.Fatalf("split(encode(%d, %q)) = %d, %q, %v", version, body, v, got, err)
			}
		}
		v, rest, err := splitStored(raw)
		m := storedForm.FindStringSubmatch(raw)
		if err != nil {
			if m != nil && len(m[1]) < 19 {
				t.Fatalf("split(%q) refused a well-formed value: %v", raw, err)
			}
			return
		}
		// Accepted: raw must be a positive decimal without a leading
		// zero or sign, a space, then the rest.
		if m == nil || m[2] != rest || m[1] != fmt.Sprint(v) {
			t.Fatalf("split(%q) = %d, %q: not the value's own version", raw, v, rest)
		}
	})
}
