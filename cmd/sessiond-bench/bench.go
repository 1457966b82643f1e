package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/signing"
)

// benchConfig is the load tool's settings (flags).
type benchConfig struct {
	JSON bool

	Rate          float64       // offered creates per second, open loop
	RateFor       time.Duration // for this long
	Workers       int           // closed-loop workers
	SaturateFor   time.Duration // closed-loop creates for this long
	Events        int           // decisions at saturation
	HalfEvents    int           // decisions at half the reached delivery rate
	BacklogEvents int           // decisions made while the receiver holds deliveries
	Expiries      int           // sessions that expire
	ExpiryWindow  time.Duration // created (and so due) over this window
	ExpiryTTL     time.Duration // SESSIOND_SESSION_TTL of the expiry daemon
	NoopTasks     int           // bare Asynq no-op tasks
	RawOps        int           // redis-benchmark -n
	Settle        time.Duration // longest wait for deliveries after a phase
	Phases        string        // comma-separated: idle,cost,create,webhook,backlog,expiry,ceilings
	IdleWarmup    time.Duration // the daemon runs this long before the idle sample
	IdleFor       time.Duration // idle sample
	CostSessions  int           // sessions driven to a decision in the cost phase

	Topology    string // single, sentinel or cluster
	MinReplicas int    // SESSIOND_REDIS_MIN_REPLICAS of the daemons
	DaemonBin   string // prebuilt sessiond; "" builds ./cmd/sessiond
	AOF         string // private Redis appendfsync: "" (no AOF), everysec, always
	Keep        bool   // keep the work directory

	// Targeting running processes instead of starting them.
	Target        string // admin base URL of a running sessiond (24h TTL)
	ExpiryTarget  string // admin base URL of a sessiond with a short TTL
	RedisAddr     string // its Redis: host:port or a SESSIOND_REDIS_URL (memory, INFO, ceilings)
	Key, Secret   string // its API client
	WebhookSecret string // its whsec_ secret for the receiver
	ReceiverAddr  string // where the receiver listens (its SESSIOND_WEBHOOK_URL host:port)
}

func parseBenchFlags(args []string, stderr io.Writer) (benchConfig, error) {
	var c benchConfig
	fs := flag.NewFlagSet("sessiond-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sessiond-bench [flags]          (the load tool)\n       sessiond-bench drill [flags]    (the reliability drill)\n\nflags:")
		fs.PrintDefaults()
	}
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON instead of a table")
	fs.Float64Var(&c.Rate, "rate", 500, "offered session creates per second (open loop)")
	fs.DurationVar(&c.RateFor, "rate-for", 10*time.Second, "duration of the open-loop create phase")
	fs.IntVar(&c.Workers, "workers", 16, "closed-loop workers (saturation)")
	fs.DurationVar(&c.SaturateFor, "saturate-for", 10*time.Second, "duration of the closed-loop create phase")
	fs.IntVar(&c.Events, "events", 10000, "decision webhooks measured at saturation")
	fs.IntVar(&c.HalfEvents, "half-events", 2000, "decision webhooks measured at half the reached rate")
	fs.IntVar(&c.BacklogEvents, "backlog-events", 10000, "decision webhooks delivered from a backlog (made while the receiver holds deliveries)")
	fs.IntVar(&c.Expiries, "expiries", 2000, "sessions that expire in the expiry phase")
	fs.DurationVar(&c.ExpiryWindow, "expiry-window", 5*time.Second, "the expiring sessions are due over this window")
	fs.DurationVar(&c.ExpiryTTL, "expiry-ttl", 5*time.Second, "SESSIOND_SESSION_TTL of the expiry phase's daemon")
	fs.IntVar(&c.NoopTasks, "noop-tasks", 20000, "bare Asynq no-op tasks (ceiling)")
	fs.IntVar(&c.RawOps, "raw-ops", 100000, "redis-benchmark -n (ceiling)")
	fs.DurationVar(&c.Settle, "settle", 60*time.Second, "longest wait for a phase's deliveries")
	fs.StringVar(&c.Phases, "phases", "idle,cost,create,webhook,backlog,expiry,ceilings", "phases to run")
	fs.DurationVar(&c.IdleWarmup, "idle-warmup", 3*time.Second, "idle phase: how long the daemon runs before the sample")
	fs.DurationVar(&c.IdleFor, "idle-for", 10*time.Second, "idle phase: how long Redis's commands and the daemon's CPU are sampled with no traffic")
	fs.IntVar(&c.CostSessions, "cost-sessions", 1000, "cost phase: sessions driven create → started → submitted → approved, their 4 webhooks delivered")
	fs.StringVar(&c.Topology, "topology", topologySingle, "Redis deployment: single, sentinel (a master, two replicas, three sentinels) or cluster (three masters)")
	fs.IntVar(&c.MinReplicas, "min-replicas", -1, "SESSIOND_REDIS_MIN_REPLICAS of the daemons (default 1 on sentinel, else 0)")
	fs.StringVar(&c.DaemonBin, "daemon-bin", "", "prebuilt sessiond binary (default: go build ./cmd/sessiond)")
	fs.StringVar(&c.AOF, "aof", "", `AOF of the private Redis data nodes: "" (off), "everysec" or "always"`)
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory (logs, AOF)")
	fs.StringVar(&c.Target, "target", "", "admin base URL of a running sessiond instead of a private one")
	fs.StringVar(&c.ExpiryTarget, "expiry-target", "", "with --target: admin base URL of a sessiond with a short SESSIOND_SESSION_TTL")
	fs.StringVar(&c.RedisAddr, "redis", "", "with --target: its Redis, host:port or a SESSIOND_REDIS_URL, for INFO, memory and the ceilings")
	fs.StringVar(&c.Key, "key", "", "with --target: API key")
	fs.StringVar(&c.Secret, "secret", "", "with --target: API secret")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "with --target: the daemon's whsec_ webhook secret")
	fs.StringVar(&c.ReceiverAddr, "receiver", "127.0.0.1:0", "receiver listen address (with --target: the host:port of the daemon's SESSIOND_WEBHOOK_URL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch c.AOF {
	case "", "everysec", "always":
	default:
		return c, fmt.Errorf("--aof: want everysec or always, got %q", c.AOF)
	}
	if c.Target != "" && (c.Key == "" || c.Secret == "" || c.WebhookSecret == "") {
		return c, errors.New("--target needs --key, --secret and --webhook-secret")
	}
	if c.Rate <= 0 || c.Workers <= 0 || c.Events <= 0 || c.HalfEvents <= 0 || c.BacklogEvents <= 0 || c.Expiries <= 0 || c.NoopTasks <= 0 || c.RawOps <= 0 || c.CostSessions <= 0 || c.IdleFor <= 0 {
		return c, errors.New("sizes must be positive")
	}
	if c.MinReplicas < 0 {
		c.MinReplicas = defaultMinReplicas(c.Topology)
	}
	if err := checkTopology(c.Topology, c.MinReplicas); err != nil {
		return c, err
	}
	return c, nil
}

// summary is the configuration for the report, without secrets.
func (c benchConfig) summary() map[string]any {
	return map[string]any{
		"rate": c.Rate, "rate_for": c.RateFor.String(), "workers": c.Workers,
		"saturate_for": c.SaturateFor.String(), "events": c.Events, "half_events": c.HalfEvents, "backlog_events": c.BacklogEvents,
		"expiries": c.Expiries, "expiry_window": c.ExpiryWindow.String(), "expiry_ttl": c.ExpiryTTL.String(),
		"noop_tasks": c.NoopTasks, "raw_ops": c.RawOps, "phases": c.Phases, "aof": c.AOF,
		"target": c.Target != "", "topology": c.Topology, "min_replicas": c.MinReplicas,
		"idle_for": c.IdleFor.String(), "cost_sessions": c.CostSessions,
	}
}

func (c benchConfig) phase(name string) bool {
	for _, p := range strings.Split(c.Phases, ",") {
		if strings.TrimSpace(p) == name {
			return true
		}
	}
	return false
}

// bench is one run of the load tool.
type bench struct {
	cfg    benchConfig
	logf   func(format string, args ...any)
	dir    string
	api    *apiClient
	rcv    *receiver
	conn   *redisconn.Conn       // the Redis the daemon uses; nil without one to inspect
	rdb    redis.UniversalClient // a client of it; nil without one
	dep    *deployment           // nil with --target
	bin    string
	whsec  string
	hook   atomic.Pointer[func(delivery)]
	runID  string
	sample []byte // a decided session as GET returns it

	produced atomic.Int64 // events our successful calls produced
	res      benchResult
}

// runBench runs the load tool and prints its report.
func runBench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) (err error) {
	b := &bench{cfg: cfg, runID: randomHex(4)}
	b.logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	b.dir, err = os.MkdirTemp("", "sessiond-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.Keep || err != nil {
			b.logf("work directory kept: %s", b.dir)
			return
		}
		os.RemoveAll(b.dir)
	}()

	key, secret := cfg.Key, cfg.Secret
	b.whsec = cfg.WebhookSecret
	if cfg.Target == "" {
		key, secret, b.whsec = "bench", randomHex(24), signing.GenerateSecret()
	}
	b.api = newAPIClient(key, secret, 4*cfg.Workers+256)
	b.rcv, err = startReceiver(cfg.ReceiverAddr, b.whsec, nil, func(d delivery) {
		if h := b.hook.Load(); h != nil {
			(*h)(d)
		}
	})
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	defer b.rcv.close()

	if cfg.Target == "" {
		b.logf("starting the %s Redis deployment", cfg.Topology)
		b.dep, err = startDeployment(ctx, cfg.Topology, b.dir, redistest.Options{AppendOnly: cfg.AOF != "", AppendFsync: cfg.AOF})
		if err != nil {
			return err
		}
		defer func() {
			if cerr := b.dep.close(); cerr != nil {
				b.logf("redis: %v", cerr)
			}
		}()
		b.logf("  %s", b.dep.describe())
		b.conn = b.dep.conn
		if b.bin = cfg.DaemonBin; b.bin == "" {
			b.logf("building sessiond")
			if b.bin, err = buildDaemon(ctx, b.dir); err != nil {
				return err
			}
		}
	} else if cfg.RedisAddr != "" {
		if b.conn, err = connFor(cfg.RedisAddr); err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
	}
	if b.conn != nil {
		b.rdb = b.conn.Client(redisconn.Pool{Name: "sessiond-bench", Size: 16})
		defer b.rdb.Close()
	}
	b.res.Machine = machineInfo(ctx, b.rdb)
	b.res.Config = cfg.summary()
	b.res.Topology, b.res.MinReplicas = cfg.Topology, cfg.MinReplicas
	if cfg.Target != "" {
		b.res.Topology = "target"
		if b.conn != nil {
			b.res.Topology = string(b.conn.Topology()) + " (target)"
		}
	}

	if b.dep != nil && cfg.phase("idle") {
		if err := b.backgroundPhase(ctx); err != nil {
			return err
		}
	}
	if cfg.phase("idle") || cfg.phase("cost") || cfg.phase("create") || cfg.phase("webhook") || cfg.phase("backlog") {
		if err := b.mainPhases(ctx); err != nil {
			return err
		}
	}
	if cfg.phase("expiry") {
		if err := b.expiryPhase(ctx); err != nil {
			return err
		}
	}
	if cfg.phase("ceilings") && b.conn != nil {
		if err := b.ceilingPhase(ctx); err != nil {
			return err
		}
	}
	b.res.figures()
	if cfg.JSON {
		return writeJSON(stdout, &b.res)
	}
	b.res.writeTable(stdout)
	return nil
}

// startDaemon starts a private sessiond with the given session TTL and
// returns it, its base URL and a stop function.
func (b *bench) startDaemon(ctx context.Context, name string, ttl time.Duration) (*daemon, string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", nil, err
	}
	d := newDaemon(b.bin, name, filepath.Join(b.dir, name+".log"), map[string]string{
		"SESSIOND_REDIS_URL":              b.dep.url(),
		"SESSIOND_REDIS_MIN_REPLICAS":     strconv.Itoa(b.cfg.MinReplicas),
		"SESSIOND_ADMIN_ADDR":             addr,
		"SESSIOND_API_KEY":                b.api.key,
		"SESSIOND_API_SECRET":             b.api.secret,
		"SESSIOND_WEBHOOK_URL":            b.rcv.url(),
		"SESSIOND_WEBHOOK_SECRET":         b.whsec,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
		"SESSIOND_SESSION_TTL":            ttl.String(),
		"SESSIOND_LOG_LEVEL":              "warn",
	})
	if err := d.startReady(ctx, 30*time.Second); err != nil {
		d.kill()
		return nil, "", nil, err
	}
	stop := func() {
		if err := d.term(30 * time.Second); err != nil {
			b.logf("stop %s: %v", name, err)
		}
		for _, e := range d.exits() {
			b.logf("%s", e)
			b.res.Notes = append(b.res.Notes, e)
		}
	}
	return d, "http://" + addr, stop, nil
}

// settle waits until every event our calls produced was delivered, and
// records a note when it gives up.
func (b *bench) settle(ctx context.Context, phase string) {
	want := b.produced.Load()
	t := time.Now()
	if err := b.rcv.waitUnique(ctx, want, b.cfg.Settle, 20*time.Second); err != nil {
		note := fmt.Sprintf("%s: %d of %d webhooks delivered after %s", phase, b.rcv.unique.Load(), want, time.Since(t).Round(time.Millisecond))
		b.logf("%s", note)
		b.res.Notes = append(b.res.Notes, note)
		return
	}
	b.logf("%s: all %d webhooks so far delivered (settled in %s)", phase, want, time.Since(t).Round(time.Millisecond))
}

// memory is used_memory summed over the masters (0 without a Redis to
// inspect).
func (b *bench) memory(ctx context.Context) int64 {
	if b.rdb == nil {
		return 0
	}
	m, err := readMasters(ctx, b.rdb)
	if err != nil {
		b.logf("memory: %v", err)
		return 0
	}
	return m.sum().Memory
}

// sampled is what Redis (every master) and the daemon did over a span.
type sampled struct {
	took    time.Duration
	masters masters       // growth per master
	daemon  time.Duration // CPU the daemon used; 0 without one
}

// sampler starts a sample: it reads INFO of every master and the daemon's
// CPU (pid 0: none) now, and returns a function that reads them again and
// returns the growth.
func (b *bench) sampler(ctx context.Context, pid int) (func() (sampled, error), error) {
	m0, err := readMasters(ctx, b.rdb)
	if err != nil {
		return nil, err
	}
	var c0 time.Duration
	if pid > 0 {
		if c0, err = processCPU(pid); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	return func() (sampled, error) {
		var s sampled
		var c1 time.Duration
		if pid > 0 {
			if c1, err = processCPU(pid); err != nil {
				return s, err
			}
		}
		m1, err := readMasters(ctx, b.rdb)
		if err != nil {
			return s, err
		}
		s.took = time.Since(t0)
		if s.masters, err = m1.since(m0); err != nil {
			return s, err
		}
		// The first INFO of each master is counted in the growth: it is
		// the tool's, not the daemon's.
		for i := range s.masters {
			m := &s.masters[i]
			m.Commands = max(m.Commands-1, 0)
			m.Reads = max(m.Reads-1, 0)
			if m.PerCommand["info"] > 0 {
				m.PerCommand["info"]--
			}
		}
		s.daemon = c1 - c0
		return s, nil
	}, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backgroundPhase samples the deployment with no daemon at all: what its
// own processes send (replication, sentinels' pings and hellos), so the
// idle figure can be told apart from it.
func (b *bench) backgroundPhase(ctx context.Context) error {
	span := min(b.cfg.IdleFor, 5*time.Second)
	b.logf("background: Redis with no daemon, %s", span)
	done, err := b.sampler(ctx, 0)
	if err != nil {
		return fmt.Errorf("background: %w", err)
	}
	if err := sleep(ctx, span); err != nil {
		return err
	}
	s, err := done()
	if err != nil {
		return fmt.Errorf("background: %w", err)
	}
	sum := s.masters.sum()
	b.res.Idle.BackgroundPS = round(float64(sum.Commands)/s.took.Seconds(), 1)
	b.logf("  %.1f commands/s on the masters", b.res.Idle.BackgroundPS)
	return nil
}

// idlePhase lets the daemon d run with no traffic and samples Redis's
// commands (every master, those inside scripts included) and the daemon's
// CPU.
func (b *bench) idlePhase(ctx context.Context, d *daemon) error {
	b.logf("idle: %s of warm-up, then %s sampled with no traffic", b.cfg.IdleWarmup, b.cfg.IdleFor)
	if err := sleep(ctx, b.cfg.IdleWarmup); err != nil {
		return err
	}
	done, err := b.sampler(ctx, d.pid())
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	if err := sleep(ctx, b.cfg.IdleFor); err != nil {
		return err
	}
	s, err := done()
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	secs := s.took.Seconds()
	sum := s.masters.sum()
	r := &b.res.Idle
	r.Seconds = round(secs, 2)
	r.CommandsPS = round(float64(sum.Commands)/secs, 1)
	r.ReadsPS = round(float64(sum.Reads)/secs, 1)
	r.DaemonPS = round(max(r.CommandsPS-r.BackgroundPS, 0), 1)
	r.DaemonCores = round(s.daemon.Seconds()/secs, 4)
	r.Masters = s.masters
	b.logf("  %.1f commands/s (%.1f background), %.1f reads/s; daemon %.4f cores", r.CommandsPS, r.BackgroundPS, r.ReadsPS, r.DaemonCores)
	return nil
}

// costPhase drives CostSessions sessions create → started → submitted →
// approved, closed loop, waits for their 4 webhooks each, and divides
// what Redis (per master) and the daemon spent over that span by the
// sessions.
func (b *bench) costPhase(ctx context.Context, base string, d *daemon) error {
	n := b.cfg.CostSessions
	b.settle(ctx, "before the cost phase")
	b.logf("cost: %d sessions create → started → submitted → approved, %d workers, until their %d webhooks are delivered", n, b.cfg.Workers, 4*n)
	pid := 0 // a --target daemon: its CPU is not read
	if d != nil {
		pid = d.pid()
	}
	done, err := b.sampler(ctx, pid)
	if err != nil {
		return fmt.Errorf("cost: %w", err)
	}
	t0 := time.Now()
	var firstErr atomic.Value
	var failed atomic.Int64
	closedLoop(ctx, b.cfg.Workers, n, time.Time{}, func(i int) {
		s, err := b.create(ctx, base, b.ref("cost", i))
		if err == nil {
			err = b.submit(ctx, base, s.ID)
		}
		if err == nil {
			err = b.post(ctx, base, s.ID, "decision", approve)
		}
		if err != nil {
			firstErr.CompareAndSwap(nil, err)
			failed.Add(1)
		}
	})
	driven := time.Now()
	if err := b.rcv.waitUnique(ctx, b.produced.Load(), b.cfg.Settle, 20*time.Second); err != nil {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("cost phase: %d of %d webhooks delivered", b.rcv.unique.Load(), b.produced.Load()))
	}
	s, err := done()
	if err != nil {
		return fmt.Errorf("cost: %w", err)
	}
	if f := failed.Load(); f > 0 {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("cost phase: %d of %d sessions failed: %v", f, n, firstErr.Load()))
	}
	ok := float64(n - int(failed.Load()))
	if ok <= 0 {
		return fmt.Errorf("cost: no session went through: %v", firstErr.Load())
	}
	sum := s.masters.sum()
	c := &b.res.Cost
	c.Sessions = int(ok)
	c.Seconds = round(s.took.Seconds(), 2)
	c.PerSec = perSecond(int(ok), driven.Sub(t0))
	c.RoundTrips = round(float64(sum.Reads)/ok, 2)
	c.Commands = round(float64(sum.Commands)/ok, 2)
	c.ScriptRuns = round(float64(sum.Calls)/ok, 2)
	c.DaemonCPUus = round(float64(s.daemon.Microseconds())/ok, 1)
	c.RedisCPUus = round(sum.CPU*1e6/ok, 1)
	c.ByCommand = byCommand(sum.PerCommand, ok, 12)
	for _, m := range s.masters {
		c.PerMaster = append(c.PerMaster, masterCost{Addr: m.Addr, CPUus: round(m.CPU*1e6/ok, 1),
			Commands: round(float64(m.Commands)/ok, 2), RoundTrips: round(float64(m.Reads)/ok, 2)})
	}
	b.logf("  per session: %.2f round trips, %.2f commands, %.2f script runs; Redis %.0f µs, daemon %.0f µs CPU (%.1f s)",
		c.RoundTrips, c.Commands, c.ScriptRuns, c.RedisCPUus, c.DaemonCPUus, c.Seconds)
	return nil
}

// create makes one session; ref must be new.
func (b *bench) create(ctx context.Context, base, ref string) (session, error) {
	body := []byte(`{"ref_id":"` + ref + `","person":{"first_name":"Ada","last_name":"Lovelace","date_of_birth":"1815-12-10"}}`)
	resp, err := b.api.do(ctx, base, http.MethodPost, "/v1/sessions", body, auth{})
	if err != nil {
		return session{}, err
	}
	if resp.status != http.StatusCreated {
		return session{}, fmt.Errorf("create: %d %.200s", resp.status, resp.body)
	}
	b.produced.Add(1)
	return decodeSession(resp.body)
}

// post sends a signed POST with a JSON body to a session sub-resource and
// counts the event it produces.
func (b *bench) post(ctx context.Context, base, id, sub, body string) error {
	resp, err := b.api.do(ctx, base, http.MethodPost, "/v1/sessions/"+id+"/"+sub, []byte(body), auth{})
	if err != nil {
		return err
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("%s: %d %.200s", sub, resp.status, resp.body)
	}
	b.produced.Add(1)
	return nil
}

// submit moves a created session to started, then submitted.
func (b *bench) submit(ctx context.Context, base, id string) error {
	for _, st := range []string{"started", "submitted"} {
		if err := b.post(ctx, base, id, "status", `{"status":"`+st+`"}`); err != nil {
			return err
		}
	}
	return nil
}

// mainPhases runs the idle and cost phases, then measures creates (open
// loop and saturation), webhooks (saturation, half rate, from a backlog)
// and memory per session, all on one daemon.
func (b *bench) mainPhases(ctx context.Context) error {
	base := b.cfg.Target
	var d *daemon
	if base == "" {
		var stop func()
		var err error
		b.logf("starting sessiond (SESSIOND_SESSION_TTL=24h, SESSIOND_REDIS_MIN_REPLICAS=%d)", b.cfg.MinReplicas)
		d, base, stop, err = b.startDaemon(ctx, "sessiond-main", 24*time.Hour)
		if err != nil {
			return err
		}
		defer stop()
	}
	if b.cfg.phase("idle") || b.cfg.phase("cost") {
		switch {
		case b.rdb == nil:
			b.res.Notes = append(b.res.Notes, "idle and cost phases skipped: no Redis to read INFO from (--redis)")
		case d == nil && b.cfg.phase("idle"):
			b.res.Notes = append(b.res.Notes, "idle phase skipped: a --target daemon's CPU cannot be read")
		case b.cfg.phase("idle"):
			if err := b.idlePhase(ctx, d); err != nil {
				return err
			}
		}
		if b.rdb != nil && b.cfg.phase("cost") {
			if err := b.costPhase(ctx, base, d); err != nil {
				return err
			}
		}
	}
	if b.cfg.phase("create") || b.cfg.phase("webhook") {
		if err := b.loadPhases(ctx, base); err != nil {
			return err
		}
	}
	if b.cfg.phase("backlog") {
		if err := b.backlogPhase(ctx, base); err != nil {
			return err
		}
	}
	b.totals(ctx, base)
	return nil
}

// loadPhases measures creates (open loop and saturation), webhooks
// (saturation and half rate) and memory per session.
func (b *bench) loadPhases(ctx context.Context, base string) error {
	var firstErr atomic.Value
	noteErr := func(err error) { firstErr.CompareAndSwap(nil, err) }
	var mu sync.Mutex
	var created []string
	keep := func(id string) { mu.Lock(); created = append(created, id); mu.Unlock() }

	m0 := b.memory(ctx)
	if b.cfg.phase("create") {
		// One second at the offered rate first, not measured: connections,
		// Redis and the daemon's pools warm up.
		openLoop(ctx, b.cfg.Rate, int(b.cfg.Rate), func(i int, _ time.Time) {
			if s, err := b.create(ctx, base, b.ref("warm", i)); err == nil {
				keep(s.ID)
			}
		})
		n := int(b.cfg.Rate * b.cfg.RateFor.Seconds())
		b.logf("create, open loop: %d at %.0f/s", n, b.cfg.Rate)
		var rec recorder
		openLoop(ctx, b.cfg.Rate, n, func(i int, t time.Time) {
			s, err := b.create(ctx, base, b.ref("open", i))
			if err != nil {
				noteErr(err)
				rec.fail()
				return
			}
			rec.add(t, time.Now())
			keep(s.ID)
		})
		b.res.CreateOpen = loadResult{Offered: b.cfg.Rate, Calls: n, OK: rec.count(), Errors: rec.errs, PerSec: rec.rate(), Latency: rec.summary()}
		b.logf("  %.0f/s, p50 %.2f ms, p99 %.2f ms, %d errors", b.res.CreateOpen.PerSec, b.res.CreateOpen.Latency.P50, b.res.CreateOpen.Latency.P99, rec.errs)

		b.logf("create, closed loop: %d workers for %s", b.cfg.Workers, b.cfg.SaturateFor)
		var sat recorder
		closedLoop(ctx, b.cfg.Workers, 0, time.Now().Add(b.cfg.SaturateFor), func(i int) {
			t := time.Now()
			s, err := b.create(ctx, base, b.ref("sat", i))
			if err != nil {
				noteErr(err)
				sat.fail()
				return
			}
			sat.add(t, time.Now())
			keep(s.ID)
		})
		b.res.CreateSat = loadResult{Workers: b.cfg.Workers, Calls: sat.count() + sat.errs, OK: sat.count(), Errors: sat.errs, PerSec: sat.rate(), Latency: sat.summary()}
		b.logf("  %.0f/s, p50 %.2f ms, p99 %.2f ms, %d errors", b.res.CreateSat.PerSec, b.res.CreateSat.Latency.P50, b.res.CreateSat.Latency.P99, sat.errs)
	}
	if err, _ := firstErr.Load().(error); err != nil {
		b.logf("first create error: %v", err)
	}
	if !b.cfg.phase("webhook") {
		b.settle(ctx, "creates")
		if m1 := b.memory(ctx); len(created) > 0 && m1 > 0 {
			b.res.MemCreated = round(float64(m1-m0)/float64(len(created)), 1)
		}
		return nil
	}

	need := b.cfg.Events + b.cfg.HalfEvents
	if len(created) < need {
		more := need - len(created)
		b.logf("creating %d more sessions for the webhook phase", more)
		closedLoop(ctx, b.cfg.Workers, more, time.Time{}, func(i int) {
			s, err := b.create(ctx, base, b.ref("extra", i))
			if err != nil {
				noteErr(err)
				return
			}
			keep(s.ID)
		})
		if len(created) < need {
			return fmt.Errorf("only %d of %d sessions created: %v", len(created), need, firstErr.Load())
		}
	}
	b.settle(ctx, "creates")
	m1 := b.memory(ctx)
	if m0 > 0 {
		b.res.MemCreated = round(float64(m1-m0)/float64(len(created)), 1)
	}
	ids := created[:need]

	b.logf("webhooks: progressing %d sessions to submitted", need)
	var progErrs atomic.Int64
	closedLoop(ctx, b.cfg.Workers, need, time.Time{}, func(i int) {
		if err := b.submit(ctx, base, ids[i]); err != nil {
			noteErr(err)
			progErrs.Add(1)
		}
	})
	if n := progErrs.Load(); n > 0 {
		return fmt.Errorf("%d sessions could not be progressed: %v", n, firstErr.Load())
	}
	b.settle(ctx, "progress")

	// Decisions: start[i] is when session i's decision was sent (unix ns),
	// lat[i] its delivery's latency, both written by several goroutines.
	idxOf := make(map[string]int, need)
	for i, id := range ids {
		idxOf[id] = i
	}
	start := make([]atomic.Int64, need)
	lat := make([]atomic.Int64, need)
	var delivered atomic.Int64
	var lastRecv atomic.Int64
	hook := func(d delivery) {
		if d.Type != "session.approved" {
			return
		}
		i, ok := idxOf[d.SessionID]
		if !ok {
			return
		}
		st := start[i].Load()
		if st == 0 {
			return
		}
		r := d.Received.UnixNano()
		lat[i].Store(r - st)
		delivered.Add(1)
		storeMax(&lastRecv, r)
	}
	b.hook.Store(&hook)
	defer b.hook.Store(nil)
	decide := func(i int) error {
		return b.post(ctx, base, ids[i], "decision", approve)
	}
	collect := func(from, to int) []time.Duration {
		var ds []time.Duration
		for i := from; i < to; i++ {
			if v := lat[i].Load(); v > 0 {
				ds = append(ds, time.Duration(v))
			}
		}
		return ds
	}

	b.logf("webhooks: %d decisions, closed loop with %d workers", b.cfg.Events, b.cfg.Workers)
	var api recorder
	var decOK atomic.Int64
	closedLoop(ctx, b.cfg.Workers, b.cfg.Events, time.Time{}, func(i int) {
		t := time.Now()
		start[i].Store(t.UnixNano())
		if err := decide(i); err != nil {
			noteErr(err)
			api.fail()
			return
		}
		api.add(t, time.Now())
		decOK.Add(1)
	})
	if err := waitCount(ctx, func() int { return int(delivered.Load()) }, int(decOK.Load()), b.cfg.Settle); err != nil {
		b.res.Notes = append(b.res.Notes, "decision webhooks at saturation: "+err.Error())
	}
	api.mu.Lock()
	first := api.first
	api.mu.Unlock()
	reached := perSecond(int(delivered.Load()), time.Unix(0, lastRecv.Load()).Sub(first))
	b.res.WebhookSat = webhookResult{Events: b.cfg.Events, Delivered: int(delivered.Load()), PerSec: reached, Latency: summarise(collect(0, b.cfg.Events)),
		DecisionAPI: loadResult{Workers: b.cfg.Workers, Calls: b.cfg.Events, OK: api.count(), Errors: api.errs, PerSec: api.rate(), Latency: api.summary()}}
	b.logf("  %.0f deliveries/s, decision→2xx p50 %.1f ms, p99 %.1f ms (decisions %.0f/s)", reached, b.res.WebhookSat.Latency.P50, b.res.WebhookSat.Latency.P99, b.res.WebhookSat.DecisionAPI.PerSec)
	if api := b.res.WebhookSat.DecisionAPI.PerSec; api > 0 && reached >= 0.95*api {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("webhooks at saturation: the deliveries (%.0f/s) kept pace with the decisions the API accepted (%.0f/s), "+
			"so that figure is bounded by the decision API and the CPUs it shares with Redis, the receiver and the load, not by the delivery path", reached, api))
	}
	b.settle(ctx, "decisions at saturation")

	half := max(reached/2, 1)
	b.logf("webhooks: %d decisions, open loop at %.0f/s (half the reached rate)", b.cfg.HalfEvents, half)
	var halfOK atomic.Int64
	var halfAPI recorder
	before := delivered.Load()
	openLoop(ctx, half, b.cfg.HalfEvents, func(j int, t time.Time) {
		i := b.cfg.Events + j
		start[i].Store(t.UnixNano())
		if err := decide(i); err != nil {
			noteErr(err)
			halfAPI.fail()
			return
		}
		halfAPI.add(t, time.Now())
		halfOK.Add(1)
	})
	if err := waitCount(ctx, func() int { return int(delivered.Load() - before) }, int(halfOK.Load()), b.cfg.Settle); err != nil {
		b.res.Notes = append(b.res.Notes, "decision webhooks at half rate: "+err.Error())
	}
	b.res.WebhookHalf = webhookResult{Events: b.cfg.HalfEvents, Delivered: int(delivered.Load() - before), Offered: round(half, 1), Latency: summarise(collect(b.cfg.Events, need)),
		DecisionAPI: loadResult{Offered: round(half, 1), Calls: b.cfg.HalfEvents, OK: halfAPI.count(), Errors: halfAPI.errs, PerSec: halfAPI.rate(), Latency: halfAPI.summary()}}
	b.logf("  decision→2xx p50 %.1f ms, p99 %.1f ms; decision API p50 %.2f ms, p99 %.2f ms",
		b.res.WebhookHalf.Latency.P50, b.res.WebhookHalf.Latency.P99, b.res.WebhookHalf.DecisionAPI.Latency.P50, b.res.WebhookHalf.DecisionAPI.Latency.P99)
	b.settle(ctx, "decisions at half rate")
	if m3 := b.memory(ctx); m0 > 0 {
		b.res.MemDecided = round(b.res.MemCreated+float64(m3-m1)/float64(need), 1)
		b.res.MemSessions = len(created)
	}
	if resp, err := b.api.do(ctx, base, http.MethodGet, "/v1/sessions/"+ids[0], nil, auth{}); err == nil && resp.status == http.StatusOK {
		b.sample = resp.body
	}
	return nil
}

// totals compares the events feed with what the load's calls produced and
// the receiver got.
func (b *bench) totals(ctx context.Context, base string) {
	if n, err := b.countFeed(ctx, base); err == nil {
		b.res.FeedEvents = n
		if int64(n) != b.produced.Load() {
			b.res.Notes = append(b.res.Notes, fmt.Sprintf("events feed holds %d events, the load's calls account for %d", n, b.produced.Load()))
		}
	}
	b.res.Delivered = int(b.rcv.unique.Load())
	b.res.Duplicates = int(b.rcv.oks.Load() - b.rcv.unique.Load())
}

// backlogPhase measures deliveries from a backlog, as the bare Asynq
// ceiling drains one: the receiver holds every delivery while
// BacklogEvents decisions are made, so their events wait in the outbox
// (and in the busy endpoint's line in the daemon's memory, see the
// dispatcher's limiter), then lets them all through. The
// deliveries per second from the release to the last one are the
// delivery path's own, whereas at saturation the decision API bounds
// them. The hold must stay well under SESSIOND_WEBHOOK_TIMEOUT (15 s by
// default), or the held attempts time out and are retried later.
func (b *bench) backlogPhase(ctx context.Context, base string) error {
	n := b.cfg.BacklogEvents
	b.logf("webhooks from a backlog: %d sessions to submitted", n)
	ids := make([]string, n)
	var firstErr atomic.Value
	var failed atomic.Int64
	closedLoop(ctx, b.cfg.Workers, n, time.Time{}, func(i int) {
		s, err := b.create(ctx, base, b.ref("backlog", i))
		if err == nil {
			ids[i] = s.ID
			err = b.submit(ctx, base, s.ID)
		}
		if err != nil {
			firstErr.CompareAndSwap(nil, err)
			failed.Add(1)
		}
	})
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("backlog: %d of %d sessions not submitted: %v", f, n, firstErr.Load())
	}
	b.settle(ctx, "before the backlog")

	wanted := make(map[string]bool, n)
	for _, id := range ids {
		wanted[id] = true
	}
	var delivered, last atomic.Int64
	hook := func(d delivery) {
		if d.Type == "session.approved" && wanted[d.SessionID] {
			delivered.Add(1)
			storeMax(&last, d.Received.UnixNano())
		}
	}
	b.hook.Store(&hook)
	defer b.hook.Store(nil)

	b.logf("webhooks from a backlog: %d decisions while the receiver holds every delivery", n)
	inAsynq := b.asynqTasks(ctx, base) // the scheduler's own tasks, say
	b.rcv.hold()
	held := time.Now()
	var decided atomic.Int64
	closedLoop(ctx, b.cfg.Workers, n, time.Time{}, func(i int) {
		if err := b.post(ctx, base, ids[i], "decision", approve); err != nil {
			firstErr.CompareAndSwap(nil, err)
			return
		}
		decided.Add(1)
	})
	r := &b.res.WebhookBacklog
	r.InAsynq = -1
	if n := b.asynqTasks(ctx, base); n >= 0 && inAsynq >= 0 {
		r.InAsynq = max(n-inAsynq, 0)
	}
	released := time.Now()
	b.rcv.release()
	r.Events, r.HeldFor = n, round(released.Sub(held).Seconds(), 2)
	if r.HeldFor > 10 {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("backlog: the receiver held deliveries for %.1f s: attempts held past the webhook timeout were retried, and the figure counts their retries", r.HeldFor))
	}
	if err := waitCount(ctx, func() int { return int(delivered.Load()) }, int(decided.Load()), b.cfg.Settle); err != nil {
		b.res.Notes = append(b.res.Notes, "webhooks from a backlog: "+err.Error())
	}
	r.Delivered = int(delivered.Load())
	r.PerSec = perSecond(r.Delivered, time.Unix(0, last.Load()).Sub(released))
	b.logf("  %d decisions in %.1f s (%d tasks in Asynq then), then %d delivered at %.0f/s", decided.Load(), r.HeldFor, r.InAsynq, r.Delivered, r.PerSec)
	if r.InAsynq > 0 {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("backlog: when the receiver let the deliveries through, the daemon had moved %d of them to Asynq (asynq_queue_size): "+
			"they were deferred while the endpoint was busy, and the figure counts them coming back at Asynq's pace", r.InAsynq))
	}
	if err, _ := firstErr.Load().(error); err != nil {
		b.res.Notes = append(b.res.Notes, fmt.Sprintf("backlog: %d of %d decisions failed: %v", int64(n)-decided.Load(), n, err))
	}
	b.settle(ctx, "backlog")
	return nil
}

// asynqTasks is the sum of the asynq_queue_size gauges on the daemon's
// /metrics: the tasks in its Asynq queues, in any state (0 before any
// queue exists: Asynq registers a queue with its first task). It is -1
// when they cannot be read.
func (b *bench) asynqTasks(ctx context.Context, base string) int {
	resp, err := b.api.do(ctx, base, http.MethodGet, "/metrics", nil, auth{})
	if err != nil || resp.status != http.StatusOK {
		return -1
	}
	return max(sumGauge(string(resp.body), "asynq_queue_size"), 0)
}

// sumGauge adds up the samples of the metric name in a Prometheus text
// exposition (-1 when there is none).
func sumGauge(text, name string) int {
	sum, seen := 0.0, false
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum, seen = sum+v, true
		}
	}
	if !seen {
		return -1
	}
	return int(sum)
}

// approve is the body of the decisions the bench makes.
const approve = `{"status":"approved","reason":"bench"}`

// storeMax raises v to x if x is larger.
func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// countFeed counts the events in GET /v1/events.
func (b *bench) countFeed(ctx context.Context, base string) (int, error) {
	n := 0
	err := readFeed(ctx, b.api, func() string { return base }, "", func(p *feedPage) { n += len(p.Events) })
	return n, err
}

// readFeed pages through GET /v1/events after cursor, calling page for
// each page, and returns when a page comes back empty.
func readFeed(ctx context.Context, api *apiClient, base func() string, cursor string, page func(*feedPage)) error {
	return readFeedFrom(ctx, api, base, &cursor, page)
}

// readFeedFrom is readFeed that leaves *cursor where the feed ended, so a
// later call reads only what is new.
func readFeedFrom(ctx context.Context, api *apiClient, base func() string, cursor *string, page func(*feedPage)) error {
	for {
		q := "limit=1000"
		if *cursor != "" {
			q = "after=" + *cursor + "&limit=1000"
		}
		resp, err := api.do(ctx, base(), http.MethodGet, "/v1/events?"+q, nil, auth{})
		if err != nil {
			return fmt.Errorf("events feed: %w", err)
		}
		if resp.status != http.StatusOK {
			return fmt.Errorf("events feed: %d %.200s", resp.status, resp.body)
		}
		var p feedPage
		if err := json.Unmarshal(resp.body, &p); err != nil {
			return fmt.Errorf("events feed: %w", err)
		}
		if len(p.Events) == 0 {
			return nil
		}
		page(&p)
		*cursor = p.NextCursor
	}
}

// expiryPhase creates sessions with a short time limit over a window and
// measures when each one's expiry is committed (the session.expired
// event's timestamp) and delivered, against the expires_at its create
// returned.
func (b *bench) expiryPhase(ctx context.Context) error {
	base := b.cfg.ExpiryTarget
	if base == "" {
		if b.cfg.Target != "" {
			b.logf("expiry phase skipped: --target without --expiry-target")
			return nil
		}
		var stop func()
		var err error
		b.logf("starting sessiond (SESSIOND_SESSION_TTL=%s)", b.cfg.ExpiryTTL)
		_, base, stop, err = b.startDaemon(ctx, "sessiond-expiry", b.cfg.ExpiryTTL)
		if err != nil {
			return err
		}
		defer stop()
	}
	n := b.cfg.Expiries
	expires := make([]atomic.Int64, n)
	committed := make([]atomic.Int64, n)
	received := make([]atomic.Int64, n)
	var idx sync.Map // session id -> index
	var expired atomic.Int64
	hook := func(d delivery) {
		if d.Type != "session.expired" {
			return
		}
		v, ok := idx.Load(d.SessionID)
		if !ok {
			return
		}
		i := v.(int)
		committed[i].Store(d.EventTime.UnixNano())
		received[i].Store(d.Received.UnixNano())
		expired.Add(1)
	}
	b.hook.Store(&hook)
	defer b.hook.Store(nil)

	rate := float64(n) / b.cfg.ExpiryWindow.Seconds()
	b.logf("expiry: %d sessions created at %.0f/s, each due %s later", n, rate, b.cfg.ExpiryTTL)
	var ok atomic.Int64
	var firstErr atomic.Value
	openLoop(ctx, rate, n, func(i int, _ time.Time) {
		s, err := b.create(ctx, base, b.ref("exp", i))
		if err != nil || s.ExpiresAt == nil {
			firstErr.CompareAndSwap(nil, fmt.Errorf("create: %v (expires_at %v)", err, s.ExpiresAt))
			return
		}
		expires[i].Store(s.ExpiresAt.UnixNano())
		idx.Store(s.ID, i)
		ok.Add(1)
	})
	if err, _ := firstErr.Load().(error); err != nil {
		b.logf("first create error: %v", err)
	}
	limit := b.cfg.ExpiryTTL + b.cfg.Settle
	if err := waitCount(ctx, func() int { return int(expired.Load()) }, int(ok.Load()), limit); err != nil {
		b.res.Notes = append(b.res.Notes, "session.expired webhooks: "+err.Error())
	}
	var lag, recvLag []time.Duration
	early := 0
	for i := range n {
		e, c, r := expires[i].Load(), committed[i].Load(), received[i].Load()
		if e == 0 || c == 0 {
			continue
		}
		if c < e {
			early++
		}
		lag = append(lag, time.Duration(c-e))
		recvLag = append(recvLag, time.Duration(r-e))
	}
	b.res.Expiry = expiryResult{Sessions: n, Created: int(ok.Load()), Expired: len(lag), Early: early, TTL: b.cfg.ExpiryTTL.String(), Window: b.cfg.ExpiryWindow.String(),
		Lag: summarise(lag), ReceiptLag: summarise(recvLag)}
	b.logf("  expiry lag p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d early; webhook receipt p99 %.1f ms",
		b.res.Expiry.Lag.P50, b.res.Expiry.Lag.P99, b.res.Expiry.Lag.Max, early, b.res.Expiry.ReceiptLag.P99)
	b.settle(ctx, "expiries")
	return nil
}

// ceilingPhase measures the ceilings on the same Redis deployment, with
// no sessiond running (the private daemons are stopped by now): raw
// SET/GET, and bare Asynq through the deployment's Asynq connection, as
// the daemon's (on a cluster, asynq.RedisClusterClientOpt's equivalent).
func (b *bench) ceilingPhase(ctx context.Context) error {
	addr := ""
	if b.dep != nil {
		var err error
		if addr, err = b.dep.masterAddr(ctx); err != nil {
			return err
		}
	} else if b.conn.Topology() == redisconn.Single {
		addr = strings.TrimPrefix(strings.TrimPrefix(b.cfg.RedisAddr, "redis://"), "rediss://")
		addr, _, _ = strings.Cut(addr, "/")
		if _, a, ok := strings.Cut(addr, "@"); ok {
			addr = a
		}
	}
	b.logf("ceiling: raw SET/GET, %d ops each", b.cfg.RawOps)
	set, get, err := measureRawOps(ctx, b.rdb, addr, b.conn.Topology() == redisconn.Cluster, b.cfg.RawOps)
	if err != nil {
		return err
	}
	b.res.RawSet, b.res.RawGet = set, get
	b.logf("  SET %.0f/s p50 %.3f ms; GET %.0f/s (%s)", set.PerSec, set.P50, get.PerSec, set.Tool)

	latRate := b.res.WebhookHalf.Offered
	if latRate <= 0 {
		latRate = 500
	}
	b.logf("ceiling: bare Asynq, %d no-op tasks", b.cfg.NoopTasks)
	a, err := measureAsynq(ctx, b.conn.Asynq(redisconn.Pool{Name: "sessiond-bench-asynq", Size: 64}), b.cfg.NoopTasks, latRate, 1000, 3*time.Second)
	if err != nil {
		return err
	}
	b.res.Asynq = a
	b.logf("  processed %.0f/s, enqueue %.0f/s, latency p99 %.2f ms at %.0f/s, scheduled lag p99 %.0f ms", a.ProcessPS, a.EnqueuePS, a.Latency.P99, latRate, a.SchedLag.P99)

	value := b.sample
	if len(value) == 0 {
		value = []byte(strings.Repeat("x", 600))
	}
	if b.res.KeyMem, err = measureKeyMemory(ctx, b.rdb, value, 10000); err != nil {
		return err
	}
	b.res.KeyMemValue = len(value)
	return nil
}

func (b *bench) ref(phase string, i int) string {
	return fmt.Sprintf("bench-%s-%s-%d", b.runID, phase, i)
}

func randomHex(n int) string {
	p := make([]byte, n)
	_, _ = rand.Read(p)
	return hex.EncodeToString(p)
}
