package dispatcher

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// BenchmarkDelivery measures, on one private redis-server, in one run:
//
//   - ceiling: bare Asynq no-op tasks per second, enqueued by concurrent
//     producers while one server (the dispatcher's Concurrency, a 10 ms
//     TaskCheckInterval) processes them: what a design that sent every
//     delivery through Asynq could reach at best;
//   - e2e: decisions (lifecycle Decide, concurrent producers) to
//     session.approved webhooks answered 2xx by a local receiver, first
//     attempts made in-process from the outbox relay: deliveries per
//     second, p50/p99 latency from the Decide call to the receiver, and
//     the share of the ceiling;
//   - paced: the same latency with decisions paced at half the e2e rate;
//   - drain: a backlog of decisions made while the dispatcher was stopped,
//     delivered by a fresh one (the dispatcher's own rate, no producers);
//   - asynq_tasks: the webhook tasks made meanwhile, 0 when every first
//     attempt succeeds.
//
// The CPU metrics (µs per item, this process and redis-server together)
// show the cost apart from the machine's other load.
//
// Run: go test -run='^$' -bench=BenchmarkDelivery -benchtime=1x ./dispatcher
// SESSIOND_BENCH_EVENTS sets the number of decisions (default 10000).
func BenchmarkDelivery(b *testing.B) {
	n := envCount("SESSIOND_BENCH_EVENTS", 10000)
	for b.Loop() {
		runDeliveryBench(b, n, min(n, 3000), min(n, 5000))
	}
}

const benchProducers = 32

// benchWorld is the benchmark's Redis, sessions and receiver.
type benchWorld struct {
	b        *testing.B
	conn     *redisconn.Conn
	rdb      redis.UniversalClient // the lifecycle's
	svc      *lifecycle.Service
	keys     keyspace.Space
	ids      []string         // sessions waiting for a decision
	index    map[string]int   // session id -> position in ids
	start    []int64          // when each decision was made, unix ns
	got      []atomic.Int64   // when the receiver had it, unix ns
	received atomic.Int64     // sessions whose webhook arrived
	rv       *httptest.Server // the receiver
}

func runDeliveryBench(b *testing.B, n, paced, drain int) {
	srv := redistest.Start(b)
	conn, err := redisconn.Parse(srv.URL(), redisconn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	w := &benchWorld{b: b, conn: conn, keys: keyspace.New("")}
	w.rdb = w.client("bench-store", 256)
	defaults := Config{}
	defaults.setDefaults()

	m := w.meter()
	ceiling := benchNoop(b, w.client("bench-noop", 256), n, defaults)
	noopCPU := m.perItem(n)

	w.prepare(n + paced + drain)
	d := w.dispatcher()
	w.waitRelayed()

	// e2e: full speed.
	m = w.meter()
	t0 := time.Now()
	parallel(n, benchProducers, w.decide)
	waitFor(b, 2*time.Minute, "every decision delivered", func() bool { return w.received.Load() >= int64(n) })
	rate := float64(n) / time.Unix(0, w.last(0, n)).Sub(t0).Seconds()
	e2eCPU := m.perItem(n)
	p50, p99 := w.latency(0, n)

	// paced: half that rate.
	interval := time.Duration(float64(time.Second) / (rate / 2))
	work := make(chan int)
	var wg sync.WaitGroup
	for range benchProducers {
		wg.Go(func() {
			for i := range work {
				w.decide(i)
			}
		})
	}
	t1 := time.Now()
	for k := range paced {
		time.Sleep(time.Until(t1.Add(time.Duration(k) * interval))) // pacing the producer, not waiting for work
		work <- n + k
	}
	close(work)
	wg.Wait()
	waitFor(b, 2*time.Minute, "every paced decision delivered", func() bool { return w.received.Load() >= int64(n+paced) })
	pp50, pp99 := w.latency(n, n+paced)
	stats := d.Stats()
	w.stop(d)

	// drain: a backlog, then a fresh dispatcher.
	parallel(drain, benchProducers, func(i int) { w.decide(n + paced + i) })
	m = w.meter()
	t2 := time.Now()
	d = w.dispatcher()
	waitFor(b, 2*time.Minute, "the backlog delivered", func() bool { return w.received.Load() >= int64(n+paced+drain) })
	drainRate := float64(drain) / time.Unix(0, w.last(n+paced, n+paced+drain)).Sub(t2).Seconds()
	drainCPU := m.perItem(drain)
	w.stop(d)
	tasks := w.webhookTasks()

	b.ReportMetric(ceiling, "noop_tasks/s")
	b.ReportMetric(rate, "e2e_deliveries/s")
	b.ReportMetric(100*rate/ceiling, "e2e_%_of_ceiling")
	b.ReportMetric(p50, "e2e_p50_ms")
	b.ReportMetric(p99, "e2e_p99_ms")
	b.ReportMetric(rate/2, "paced_per_s")
	b.ReportMetric(pp50, "paced_p50_ms")
	b.ReportMetric(pp99, "paced_p99_ms")
	b.ReportMetric(drainRate, "drain_deliveries/s")
	b.ReportMetric(100*drainRate/ceiling, "drain_%_of_ceiling")
	b.ReportMetric(noopCPU, "noop_cpu_us/task")
	b.ReportMetric(e2eCPU, "e2e_cpu_us/delivery")
	b.ReportMetric(drainCPU, "drain_cpu_us/delivery")
	b.ReportMetric(float64(tasks), "asynq_tasks")
	b.Logf("first dispatcher: %+v", stats)
}

// client is a new client of the benchmark's Redis, closed at the end.
func (w *benchWorld) client(name string, size int) redis.UniversalClient {
	c := w.conn.Client(redisconn.Pool{Name: name, Size: size})
	w.b.Cleanup(func() { _ = c.Close() })
	return c
}

// prepare makes count sessions in status submitted and the receiver; the
// earlier events are not delivered (the endpoint takes decisions only).
func (w *benchWorld) prepare(count int) {
	ctx := w.b.Context()
	w.svc = lifecycle.New(w.rdb, lifecycle.Config{})
	w.ids = make([]string, count)
	parallel(count, benchProducers, func(i int) {
		c, err := w.svc.Create(ctx, lifecycle.CreateRequest{RefID: "bench-" + strconv.Itoa(i)})
		if err != nil {
			w.b.Error(err)
			return
		}
		if _, err := w.svc.Progress(ctx, c.ID, lifecycle.StatusSubmitted); err != nil {
			w.b.Error(err)
		}
		w.ids[i] = c.ID
	})
	if w.b.Failed() {
		w.b.FailNow()
	}
	w.index = make(map[string]int, count)
	for i, id := range w.ids {
		w.index[id] = i
	}
	w.start = make([]int64, count)
	w.got = make([]atomic.Int64, count)
	w.rv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		at := time.Now().UnixNano()
		body, _ := io.ReadAll(r.Body)
		var m struct {
			Data struct{ ID string } `json:"data"`
		}
		_ = json.Unmarshal(body, &m)
		if i, ok := w.index[m.Data.ID]; ok && w.got[i].CompareAndSwap(0, at) {
			w.received.Add(1)
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
	w.b.Cleanup(w.rv.Close)
}

// dispatcher starts a Dispatcher with the production defaults and clients
// sized as cmd/sessiond sizes them.
func (w *benchWorld) dispatcher() *Dispatcher {
	d, err := New(w.client("bench-dispatcher", defaultConcurrency+32), w.svc, Config{
		Endpoints:     []Endpoint{{ID: "bench", URL: w.rv.URL, Secrets: []string{testSecret}, Events: []string{"session.approved"}}},
		APIKey:        testAPIKey,
		AllowNetworks: loopback,
		QueueRedis:    w.client("bench-webhooks", 32),
	})
	if err != nil {
		w.b.Fatal(err)
	}
	if err := d.Start(w.b.Context()); err != nil {
		w.b.Fatal(err)
	}
	return d
}

func (w *benchWorld) stop(d *Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		w.b.Fatal(err)
	}
}

// decide approves session i.
func (w *benchWorld) decide(i int) {
	w.start[i] = time.Now().UnixNano()
	if _, err := w.svc.Decide(w.b.Context(), w.ids[i], lifecycle.DecisionRequest{Status: lifecycle.StatusApproved}); err != nil {
		w.b.Error(err)
	}
}

// last is the latest receipt of sessions [from, to).
func (w *benchWorld) last(from, to int) int64 {
	var last int64
	for i := from; i < to; i++ {
		last = max(last, w.got[i].Load())
	}
	return last
}

// latency returns the p50 and p99 from decision to receipt, in ms.
func (w *benchWorld) latency(from, to int) (p50, p99 float64) {
	ds := make([]float64, 0, to-from)
	for i := from; i < to; i++ {
		ds = append(ds, float64(w.got[i].Load()-w.start[i])/1e6)
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99)
}

// waitRelayed waits until the relays have read and acknowledged every
// entry of every shard's outbox.
func (w *benchWorld) waitRelayed() {
	ctx := w.b.Context()
	waitFor(w.b, 2*time.Minute, "the relays to catch up", func() bool {
		for sh := range keyspace.Shards {
			stream := w.keys.Outbox(keyspace.Shard(sh))
			last, err := w.rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
			if err != nil || len(last) == 0 {
				continue
			}
			gs, err := w.rdb.XInfoGroups(ctx, stream).Result()
			if err != nil || len(gs) == 0 || gs[0].LastDeliveredID != last[0].ID {
				return false
			}
			if p, err := w.rdb.XPending(ctx, stream, relayGroup).Result(); err != nil || p.Count != 0 {
				return false
			}
		}
		return true
	})
}

// webhookTasks counts the tasks the webhook queues hold or processed.
func (w *benchWorld) webhookTasks() int {
	insp := asynq.NewInspectorFromRedisClient(w.rdb)
	total := 0
	for _, q := range w.keys.WebhookQueues() {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			continue // never made: no task
		}
		total += info.Size + info.ProcessedTotal
	}
	return total
}

// cpuMeter measures the CPU this process and redis-server use.
type cpuMeter struct {
	w            *benchWorld
	goCPU, redis time.Duration
}

func (w *benchWorld) meter() cpuMeter {
	return cpuMeter{w: w, goCPU: processCPU(), redis: redisCPU(w.b, w.rdb)}
}

// perItem is the CPU used since the meter started, per item, in µs.
func (m cpuMeter) perItem(n int) float64 {
	used := processCPU() - m.goCPU + redisCPU(m.w.b, m.w.rdb) - m.redis
	return float64(used.Microseconds()) / float64(n)
}

// benchNoop returns bare Asynq's rate: n no-op tasks enqueued by
// concurrent producers while a server with the dispatcher's concurrency
// processes them.
func benchNoop(b *testing.B, rdb redis.UniversalClient, n int, cfg Config) float64 {
	const queue = "bench:noop"
	var done atomic.Int64
	finished := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       cfg.Concurrency,
		TaskCheckInterval: 10 * time.Millisecond,
		Queues:            map[string]int{queue: 1},
		LogLevel:          asynq.WarnLevel,
	})
	err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(finished)
		}
		return nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(rdb)
	t0 := time.Now()
	parallel(n, benchProducers, func(i int) {
		if _, err := client.Enqueue(asynq.NewTask("noop", nil), asynq.Queue(queue)); err != nil {
			b.Error(err)
		}
	})
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		b.Fatal("no-op tasks not done")
	}
	return float64(n) / time.Since(t0).Seconds()
}

// parallel runs f(0..n-1) on workers goroutines.
func parallel(n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// redisCPU is the CPU time redis-server has used.
func redisCPU(b *testing.B, rdb redis.UniversalClient) time.Duration {
	info := rdb.Info(b.Context(), "cpu").Val()
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// envCount is the positive number in environment variable name, else def.
func envCount(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
