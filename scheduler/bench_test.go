package scheduler

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// Benchmark knobs: test flags (go test ... -args -expiry.n 10000), whose
// defaults SESSIOND_BENCH_EXPIRY_N and SESSIOND_BENCH_EXPIRY_WINDOW change,
// so that a plain `go test -bench` can run a smaller benchmark.
var (
	benchN      = flag.Int("expiry.n", envOr("SESSIOND_BENCH_EXPIRY_N", 100_000, strconv.Atoi), "BenchmarkExpiryLag: pending sessions")
	benchWindow = flag.Duration("expiry.window", envOr("SESSIOND_BENCH_EXPIRY_WINDOW", 60*time.Second, time.ParseDuration), "BenchmarkExpiryLag: their expires_at spread over this window")
	benchLead   = flag.Duration("expiry.lead", 0, "BenchmarkExpiryLag: time to create them before the window opens (0: from -expiry.n)")
)

// envOr is the environment variable name parsed by parse, or def when it
// is unset or does not parse.
func envOr[T any](name string, def T, parse func(string) (T, error)) T {
	if v, err := parse(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// offsetClock is the wall clock moved forward by an offset, so the sweep
// phase can jump past the retention without waiting.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// BenchmarkExpiryLag creates -expiry.n pending sessions (no personal data)
// whose expires_at spread evenly over -expiry.window, lets one scheduler
// (its poller, woken by its alarm, as in production) expire them on the
// wall clock, all on one Redis, and reports:
//
//	lag-p50-ms, lag-p99-ms, lag-max-ms  expires_at to the committed status
//	                                     change (outbox event time)
//	early                                status changes before expires_at (must be 0)
//	B/session                            INFO used_memory growth per pending session
//	sweep-max-cmd-us                     longest Redis command (SLOWLOG) while two
//	                                     sweeps redact, then purge, them all
//	sweep-works/s                        those sweeps' throughput (Runs per second)
//
// Run it once: go test ./scheduler -run '^$' -bench ExpiryLag -benchtime 1x
// (SESSIOND_BENCH_EXPIRY_N=10000 SESSIOND_BENCH_EXPIRY_WINDOW=10s for a
// quick look).
func BenchmarkExpiryLag(b *testing.B) {
	for range b.N {
		benchExpiryLag(b, *benchN, *benchWindow)
	}
}

func benchExpiryLag(b *testing.B, n int, window time.Duration) {
	ctx := context.Background()
	srv := redistest.Start(b)
	// The scheduler's client has the daemon's default options; the load
	// (the creates, standing in for the admin API) has its own.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	loadRDB := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	defer loadRDB.Close()
	clock := &offsetClock{}
	// The production defaults, except that the outbox keeps events past
	// the sweep phase's jumps of the clock: otherwise the first XADD after
	// a jump trims thousands of entries at once, which measures the jump.
	const retention, recordRetention, eventsRetention = 720 * time.Hour, 2160 * time.Hour, 3000 * time.Hour
	lead := *benchLead
	if lead <= 0 {
		lead = 10*time.Second + time.Duration(n)*time.Second/2000
	}
	ttl := lead + window
	var logBuf strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// No cron sweep: the sweep phase below runs the sweep itself, one at a
	// time, so each jump of the clock finds the previous sweep done. (During
	// the expiry window a sweep finds nothing the poller has not taken.)
	alarm := NewAlarm()
	lcfg := lifecycle.Config{SessionTTL: ttl, Retention: retention, RecordRetention: recordRetention, EventsRetention: eventsRetention, Timer: alarm}
	lcfg.Now = clock.Now
	svc := lifecycle.New(rdb, lcfg)
	sched := New(rdb, svc, alarm, Config{SweepEvery: -1, Now: clock.Now, Logger: logger, Tasks: srv.Client()})
	if err := sched.Start(ctx); err != nil {
		b.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := sched.Shutdown(sctx); err != nil {
				b.Error(err)
			}
		}
	}
	defer stop()
	memBefore := usedMemory(b, rdb)

	// Create: each worker's service (the admin API of this replica: its
	// alarm is the scheduler's) has a clock it sets per session so that
	// expires_at lands where the plan puts it, in order.
	start := time.Now()
	open := start.Add(lead)
	dueOf := func(i int) time.Time { return open.Add(time.Duration(int64(window) * int64(i) / int64(n))) }
	due := make(map[string]int64, n)
	var dueMu sync.Mutex
	next := make(chan int, 1024)
	go func() {
		for i := range n {
			next <- i
		}
		close(next)
	}()
	var late atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var at time.Time
			wcfg := lcfg
			wcfg.Now = func() time.Time { return at }
			wsvc := lifecycle.New(loadRDB, wcfg)
			for i := range next {
				at = dueOf(i).Add(-ttl)
				c, err := wsvc.Create(ctx, lifecycle.CreateRequest{RefID: "bench-" + strconv.Itoa(i)})
				if err != nil {
					b.Error(err)
					return
				}
				if time.Now().After(c.ExpiresAt.Time) {
					late.Add(1)
				}
				dueMu.Lock()
				due[c.ID] = c.ExpiresAt.UnixMilli()
				dueMu.Unlock()
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	if late.Load() > 0 || time.Now().After(open) {
		b.Fatalf("creating %d sessions took %v, past the %v lead: raise -expiry.lead", n, created, lead)
	}
	memAfter := usedMemory(b, rdb)
	perSession := float64(memAfter-memBefore) / float64(n)
	b.Logf("created %d sessions in %v (%.0f/s); memory %.0f B/session", n, created.Round(time.Millisecond), float64(n)/created.Seconds(), perSession)
	// go test shows a benchmark's first 10 log lines (all with -v): the
	// summary lines come first, the details are logged last.
	var details []string
	detail := func(format string, args ...any) { details = append(details, fmt.Sprintf(format, args...)) }
	breakdownStart := time.Now()
	breakdown := memoryBreakdown(b, rdb, n)
	detail("memory breakdown took %v; the window opened %v later", time.Since(breakdownStart).Round(time.Millisecond), time.Until(open).Round(time.Millisecond))
	if time.Now().After(open) {
		b.Fatalf("setup ran into the expiry window: raise -expiry.lead")
	}

	// Redis notes its own stalls over 20ms (LATENCY LATEST, logged below).
	if err := rdb.ConfigSet(ctx, "latency-monitor-threshold", "20").Err(); err != nil {
		b.Fatal(err)
	}

	// How late this process's own timers fire during the window, and the
	// host's load: a busy host (Redis and this benchmark share its CPUs)
	// shows up here as well as in the lags.
	stall := make(chan time.Duration, 1)
	stallCtx, stopStall := context.WithCancel(ctx)
	go func() {
		var worst time.Duration
		for stallCtx.Err() == nil {
			t0 := time.Now()
			time.Sleep(5 * time.Millisecond)
			worst = max(worst, time.Since(t0)-5*time.Millisecond)
		}
		stall <- worst
	}()
	loadBefore := loadAvg()

	// Expire: wait until the window has passed and every shard's index is
	// empty.
	deadline := open.Add(window + 30*time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		left := pendingExpiries(b, rdb, svc)
		if left == 0 && time.Now().After(open.Add(window)) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d sessions still pending 30s after the window closed", left)
		}
	}
	stopStall()
	detail("during the window: load average %s -> %s; this process's 5ms sleeps overslept by up to %v",
		loadBefore, loadAvg(), (<-stall).Round(time.Millisecond))
	if lat, err := rdb.Do(ctx, "LATENCY", "LATEST").Result(); err == nil {
		detail("redis LATENCY LATEST (event, at, latest ms, max ms): %v", lat)
	}
	lags, early, dup, worst := expiryLags(b, rdb, svc.Keys(), due, open)
	detail("largest lags by second of the window:%s", worst)
	if len(lags) != n {
		b.Errorf("%d of %d sessions expired", len(lags), n)
	}
	if dup > 0 {
		b.Errorf("%d sessions expired more than once", dup)
	}
	pct := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))]) / float64(time.Millisecond) }
	b.Logf("expiry lag: p50 %.0f ms, p99 %.0f ms, max %.0f ms, early %d, of %d", pct(0.5), pct(0.99), pct(1), early, len(lags))

	// Sweep: jump past the retention, then past the record retention; one
	// sweep redacts, then one purges, every session. SLOWLOG keeps every
	// command over 100µs meanwhile.
	for _, kv := range [][2]string{{"slowlog-log-slower-than", "100"}, {"slowlog-max-len", "100000"}} {
		if err := rdb.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			b.Fatal(err)
		}
	}
	if err := rdb.Do(ctx, "SLOWLOG", "RESET").Err(); err != nil {
		b.Fatal(err)
	}
	sweepStart := time.Now()
	done := map[lifecycle.WorkKind]int{}
	for _, jump := range []time.Duration{retention, recordRetention} {
		clock.off.Store(int64(jump + time.Minute))
		d, err := sched.sweep(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for k, v := range d {
			done[k] += v
		}
	}
	sweepTook := time.Since(sweepStart)
	slow, err := rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		b.Fatal(err)
	}
	slow = slices.DeleteFunc(slow, func(e redis.SlowLog) bool { return strings.EqualFold(firstArg(e.Args), "slowlog") })
	slices.SortFunc(slow, func(x, y redis.SlowLog) int { return cmp.Compare(y.Duration, x.Duration) })
	var maxCmd redis.SlowLog
	if len(slow) > 0 {
		maxCmd = slow[0]
	}
	b.Logf("sweeps: redacted %d, purged %d in %v; %d commands over 100µs, longest %v: %s",
		done[lifecycle.WorkRedact], done[lifecycle.WorkPurge], sweepTook.Round(time.Millisecond), len(slow), maxCmd.Duration, strings.Join(truncArgs(maxCmd.Args), " "))
	for _, e := range slow[1:min(len(slow), 5)] {
		b.Logf("next slowest: %v %s", e.Duration, strings.Join(truncArgs(e.Args), " "))
	}
	if done[lifecycle.WorkRedact] != n || done[lifecycle.WorkPurge] != n {
		b.Errorf("sweeps redacted %d and purged %d, want %d each", done[lifecycle.WorkRedact], done[lifecycle.WorkPurge], n)
	}
	if left, err := rdb.DBSize(ctx).Result(); err == nil {
		detail("keys left after the purge: %d (Asynq's own, the outboxes and the shards' indexes)", left)
	}
	stop()
	if logBuf.Len() > 0 {
		detail("scheduler warnings:\n%s", firstLines(logBuf.String(), 10))
	}
	b.Log(strings.Join(append(details, breakdown), "\n"))

	b.ReportMetric(pct(0.50), "lag-p50-ms")
	b.ReportMetric(pct(0.99), "lag-p99-ms")
	b.ReportMetric(pct(1), "lag-max-ms")
	b.ReportMetric(float64(early), "early")
	b.ReportMetric(perSession, "B/session")
	b.ReportMetric(float64(maxCmd.Duration.Microseconds()), "sweep-max-cmd-us")
	b.ReportMetric(float64(2*n)/sweepTook.Seconds(), "sweep-works/s")
}

// pendingExpiries is how many ids are left in the shards' expire indexes.
func pendingExpiries(b *testing.B, rdb *redis.Client, svc *lifecycle.Service) int64 {
	var left int64
	for sh := range keyspace.Shards {
		n, err := rdb.ZCard(context.Background(), svc.DueKey(keyspace.Shard(sh), lifecycle.WorkExpire)).Result()
		if err != nil {
			b.Fatal(err)
		}
		left += n
	}
	return left
}

// expiryLags reads every shard's session.expired events and returns the
// lags from expires_at, sorted, with how many were early, how many
// sessions had more than one, and the five seconds of the window with the
// largest lags.
func expiryLags(b *testing.B, rdb *redis.Client, ks keyspace.Space, due map[string]int64, open time.Time) (lags []time.Duration, early, dup int, worstSeconds string) {
	seen := make(map[string]bool, len(due))
	worst := map[int64]time.Duration{} // by second of the window: the largest lag
	for sh := range keyspace.Shards {
		l, e, d := shardExpiryLags(b, rdb, ks, keyspace.Shard(sh), due, open, seen, worst)
		lags, early, dup = append(lags, l...), early+e, dup+d
	}
	slices.Sort(lags)
	secs := slices.Collect(maps.Keys(worst))
	slices.SortFunc(secs, func(x, y int64) int { return cmp.Compare(worst[y], worst[x]) })
	var sb strings.Builder
	for _, sec := range secs[:min(5, len(secs))] {
		fmt.Fprintf(&sb, " second %d: %v;", sec, worst[sec])
	}
	return lags, early, dup, sb.String()
}

// shardExpiryLags does expiryLags' work for one shard's outbox.
func shardExpiryLags(b *testing.B, rdb *redis.Client, ks keyspace.Space, sh keyspace.Shard, due map[string]int64, open time.Time,
	seen map[string]bool, worst map[int64]time.Duration) (lags []time.Duration, early, dup int) {
	start := "-"
	for {
		msgs, err := rdb.XRangeN(context.Background(), ks.Outbox(sh), start, "+", 10_000).Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			ev, err := lifecycle.ParseEvent(sh, m)
			if err != nil {
				b.Fatal(err)
			}
			if ev.Type != "session.expired" {
				continue
			}
			if seen[ev.SessionID] {
				dup++
				continue
			}
			seen[ev.SessionID] = true
			lag := time.Duration(ev.Timestamp.UnixMilli()-due[ev.SessionID]) * time.Millisecond
			if lag < 0 {
				early++
			}
			sec := (due[ev.SessionID] - open.UnixMilli()) / 1000
			worst[sec] = max(worst[sec], lag)
			lags = append(lags, lag)
		}
		if len(msgs) < 10_000 {
			break
		}
		start = "(" + msgs[len(msgs)-1].ID
	}
	return lags, early, dup
}

// loadAvg is the host's 1-minute load average, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

var (
	tagRE  = regexp.MustCompile(`\{[0-9]+-[0-9]+\}`)
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	hashRE = regexp.MustCompile(`[0-9a-f]{64}`)
	refRE  = regexp.MustCompile(`bench-[0-9]+`)
)

// memoryBreakdown is MEMORY USAGE summed by key pattern, per session:
// what a pending session costs, and where.
func memoryBreakdown(b *testing.B, rdb *redis.Client, n int) string {
	ctx := context.Background()
	type group struct {
		keys  int
		bytes int64
	}
	groups := map[string]*group{}
	iter := rdb.Scan(ctx, 0, "*", 5000).Iterator()
	var batch []string
	flush := func() {
		cmds := make([]*redis.IntCmd, len(batch))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				cmds[i] = p.MemoryUsage(ctx, k, 0)
			}
			return nil
		})
		if err != nil && err != redis.Nil {
			b.Fatal(err)
		}
		for i, k := range batch {
			pat := tagRE.ReplaceAllString(refRE.ReplaceAllString(hashRE.ReplaceAllString(uuidRE.ReplaceAllString(k, "<id>"), "<hash>"), "<ref>"), "{<shard>}")
			g := groups[pat]
			if g == nil {
				g = &group{}
				groups[pat] = g
			}
			g.keys++
			g.bytes += cmds[i].Val()
		}
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			flush()
		}
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	flush()
	type row struct {
		pat string
		g   *group
	}
	var rows []row
	var total int64
	for p, g := range groups {
		rows = append(rows, row{p, g})
		total += g.bytes
	}
	slices.SortFunc(rows, func(x, y row) int { return cmp.Compare(y.g.bytes, x.g.bytes) })
	var sb strings.Builder
	fmt.Fprintf(&sb, "MEMORY USAGE by key pattern, per session (sum %.0f B):\n", float64(total)/float64(n))
	for _, r := range rows {
		if per := float64(r.g.bytes) / float64(n); per >= 1 {
			fmt.Fprintf(&sb, "  %7.0f B  %7d keys  %s\n", per, r.g.keys, r.pat)
		}
	}
	return sb.String()
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

func truncArgs(args []string) []string {
	var out []string
	for i, a := range args {
		if i == 6 {
			out = append(out, "...")
			break
		}
		if len(a) > 40 {
			a = a[:40] + "..."
		}
		out = append(out, a)
	}
	return out
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
