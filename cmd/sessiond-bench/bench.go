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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/signing"
)

// benchConfig is the load tool's settings (flags).
type benchConfig struct {
	JSON bool

	Rate         float64       // offered creates per second, open loop
	RateFor      time.Duration // for this long
	Workers      int           // closed-loop workers
	SaturateFor  time.Duration // closed-loop creates for this long
	Events       int           // decisions at saturation
	HalfEvents   int           // decisions at half the reached delivery rate
	Expiries     int           // sessions that expire
	ExpiryWindow time.Duration // created (and so due) over this window
	ExpiryTTL    time.Duration // SESSIOND_SESSION_TTL of the expiry daemon
	NoopTasks    int           // bare Asynq no-op tasks
	RawOps       int           // redis-benchmark -n
	Settle       time.Duration // longest wait for deliveries after a phase
	Phases       string        // comma-separated: create,webhook,expiry,ceilings

	DaemonBin string // prebuilt sessiond; "" builds ./cmd/sessiond
	AOF       string // private Redis appendfsync: "" (no AOF), everysec, always
	Keep      bool   // keep the work directory

	// Targeting running processes instead of starting them.
	Target        string // admin base URL of a running sessiond (24h TTL)
	ExpiryTarget  string // admin base URL of a sessiond with a short TTL
	RedisAddr     string // its Redis host:port (memory and ceilings)
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
	fs.IntVar(&c.Expiries, "expiries", 2000, "sessions that expire in the expiry phase")
	fs.DurationVar(&c.ExpiryWindow, "expiry-window", 5*time.Second, "the expiring sessions are due over this window")
	fs.DurationVar(&c.ExpiryTTL, "expiry-ttl", 5*time.Second, "SESSIOND_SESSION_TTL of the expiry phase's daemon")
	fs.IntVar(&c.NoopTasks, "noop-tasks", 20000, "bare Asynq no-op tasks (ceiling)")
	fs.IntVar(&c.RawOps, "raw-ops", 100000, "redis-benchmark -n (ceiling)")
	fs.DurationVar(&c.Settle, "settle", 60*time.Second, "longest wait for a phase's deliveries")
	fs.StringVar(&c.Phases, "phases", "create,webhook,expiry,ceilings", "phases to run")
	fs.StringVar(&c.DaemonBin, "daemon-bin", "", "prebuilt sessiond binary (default: go build ./cmd/sessiond)")
	fs.StringVar(&c.AOF, "aof", "", `private Redis AOF: "" (off), "everysec" or "always"`)
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory (logs, AOF)")
	fs.StringVar(&c.Target, "target", "", "admin base URL of a running sessiond instead of a private one")
	fs.StringVar(&c.ExpiryTarget, "expiry-target", "", "with --target: admin base URL of a sessiond with a short SESSIOND_SESSION_TTL")
	fs.StringVar(&c.RedisAddr, "redis", "", "with --target: its Redis host:port, for memory and the ceilings")
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
	if c.Rate <= 0 || c.Workers <= 0 || c.Events <= 0 || c.HalfEvents <= 0 || c.Expiries <= 0 || c.NoopTasks <= 0 || c.RawOps <= 0 {
		return c, errors.New("sizes must be positive")
	}
	return c, nil
}

// summary is the configuration for the report, without secrets.
func (c benchConfig) summary() map[string]any {
	return map[string]any{
		"rate": c.Rate, "rate_for": c.RateFor.String(), "workers": c.Workers,
		"saturate_for": c.SaturateFor.String(), "events": c.Events, "half_events": c.HalfEvents,
		"expiries": c.Expiries, "expiry_window": c.ExpiryWindow.String(), "expiry_ttl": c.ExpiryTTL.String(),
		"noop_tasks": c.NoopTasks, "raw_ops": c.RawOps, "phases": c.Phases, "aof": c.AOF,
		"target": c.Target != "",
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
	rdb    *redis.Client // nil without a Redis to inspect
	redis  *redisServer  // nil with --redis
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

	redisAddr := cfg.RedisAddr
	if cfg.Target == "" {
		b.redis, err = startRedis(ctx, b.dir, cfg.AOF)
		if err != nil {
			return err
		}
		defer b.redis.kill()
		redisAddr = b.redis.addr
		if b.bin = cfg.DaemonBin; b.bin == "" {
			b.logf("building sessiond")
			if b.bin, err = buildDaemon(ctx, b.dir); err != nil {
				return err
			}
		}
	}
	if redisAddr != "" {
		b.rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
		defer b.rdb.Close()
	}
	b.res.Machine = machineInfo(ctx, b.rdb)
	b.res.Config = cfg.summary()

	if cfg.phase("create") || cfg.phase("webhook") {
		if err := b.mainPhases(ctx); err != nil {
			return err
		}
	}
	if cfg.phase("expiry") {
		if err := b.expiryPhase(ctx); err != nil {
			return err
		}
	}
	if cfg.phase("ceilings") && redisAddr != "" {
		if err := b.ceilingPhase(ctx, redisAddr); err != nil {
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
// returns its base URL and a stop function.
func (b *bench) startDaemon(ctx context.Context, name string, ttl time.Duration) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	d := newDaemon(b.bin, name, filepath.Join(b.dir, name+".log"), map[string]string{
		"SESSIOND_REDIS_URL":              b.redis.url(),
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
		return "", nil, err
	}
	stop := func() {
		if err := d.term(30 * time.Second); err != nil {
			b.logf("stop %s: %v", name, err)
		}
		for _, e := range d.exits() {
			b.logf("%s", e)
		}
	}
	return "http://" + addr, stop, nil
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

func (b *bench) memory(ctx context.Context) int64 {
	if b.rdb == nil {
		return 0
	}
	m, err := usedMemory(ctx, b.rdb)
	if err != nil {
		b.logf("%v", err)
	}
	return m
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

// mainPhases measures creates (open loop and saturation), webhooks
// (saturation and half rate) and memory per session on one daemon.
func (b *bench) mainPhases(ctx context.Context) error {
	base := b.cfg.Target
	if base == "" {
		var stop func()
		var err error
		b.logf("starting sessiond (SESSIOND_SESSION_TTL=24h)")
		base, stop, err = b.startDaemon(ctx, "sessiond-main", 24*time.Hour)
		if err != nil {
			return err
		}
		defer stop()
	}
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
		for _, st := range []string{"started", "submitted"} {
			if err := b.post(ctx, base, ids[i], "status", `{"status":"`+st+`"}`); err != nil {
				noteErr(err)
				progErrs.Add(1)
				return
			}
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
		for {
			old := lastRecv.Load()
			if r <= old || lastRecv.CompareAndSwap(old, r) {
				break
			}
		}
	}
	b.hook.Store(&hook)
	defer b.hook.Store(nil)
	decide := func(i int) error {
		return b.post(ctx, base, ids[i], "decision", `{"status":"approved","reason":"bench"}`)
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
	b.settle(ctx, "decisions at saturation")

	half := max(reached/2, 1)
	b.logf("webhooks: %d decisions, open loop at %.0f/s (half the reached rate)", b.cfg.HalfEvents, half)
	var halfOK atomic.Int64
	before := delivered.Load()
	openLoop(ctx, half, b.cfg.HalfEvents, func(j int, t time.Time) {
		i := b.cfg.Events + j
		start[i].Store(t.UnixNano())
		if err := decide(i); err != nil {
			noteErr(err)
			return
		}
		halfOK.Add(1)
	})
	if err := waitCount(ctx, func() int { return int(delivered.Load() - before) }, int(halfOK.Load()), b.cfg.Settle); err != nil {
		b.res.Notes = append(b.res.Notes, "decision webhooks at half rate: "+err.Error())
	}
	b.res.WebhookHalf = webhookResult{Events: b.cfg.HalfEvents, Delivered: int(delivered.Load() - before), Offered: round(half, 1), Latency: summarise(collect(b.cfg.Events, need))}
	b.logf("  decision→2xx p50 %.1f ms, p99 %.1f ms", b.res.WebhookHalf.Latency.P50, b.res.WebhookHalf.Latency.P99)
	b.settle(ctx, "decisions at half rate")
	if m3 := b.memory(ctx); m0 > 0 {
		b.res.MemDecided = round(b.res.MemCreated+float64(m3-m1)/float64(need), 1)
		b.res.MemSessions = len(created)
	}
	if resp, err := b.api.do(ctx, base, http.MethodGet, "/v1/sessions/"+ids[0], nil, auth{}); err == nil && resp.status == http.StatusOK {
		b.sample = resp.body
	}
	if n, err := b.countFeed(ctx, base); err == nil {
		b.res.FeedEvents = n
		if int64(n) != b.produced.Load() {
			b.res.Notes = append(b.res.Notes, fmt.Sprintf("events feed holds %d events, the load's calls account for %d", n, b.produced.Load()))
		}
	}
	b.res.Delivered = int(b.rcv.unique.Load())
	b.res.Duplicates = int(b.rcv.oks.Load() - b.rcv.unique.Load())
	return nil
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
		base, stop, err = b.startDaemon(ctx, "sessiond-expiry", b.cfg.ExpiryTTL)
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

// ceilingPhase measures the ceilings on the same Redis, with no sessiond
// running (the private daemons are stopped by now).
func (b *bench) ceilingPhase(ctx context.Context, addr string) error {
	b.logf("ceiling: raw SET/GET, %d ops each", b.cfg.RawOps)
	set, get, err := measureRawOps(ctx, addr, b.cfg.RawOps)
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
	a, err := measureAsynq(ctx, addr, b.cfg.NoopTasks, latRate, 1000, 3*time.Second)
	if err != nil {
		return err
	}
	b.res.Asynq = a
	b.logf("  processed %.0f/s, enqueue %.0f/s, latency p99 %.2f ms at %.0f/s, scheduled lag p99 %.0f ms", a.ProcessPS, a.EnqueuePS, a.Latency.P99, latRate, a.SchedLag.P99)

	if b.rdb != nil {
		value := b.sample
		if len(value) == 0 {
			value = []byte(strings.Repeat("x", 600))
		}
		if b.res.KeyMem, err = measureKeyMemory(ctx, b.rdb, value, 10000); err != nil {
			return err
		}
		b.res.KeyMemValue = len(value)
	}
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
