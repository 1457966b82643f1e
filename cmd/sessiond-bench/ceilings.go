package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// The ceilings: what the same Redis does with no sessiond logic in the
// way. Each sessiond figure is reported as a ratio to one of these.

// rawOps is a redis-benchmark style result for one command.
type rawOps struct {
	Tool    string  `json:"tool"` // "redis-benchmark" or "go-redis"
	Command string  `json:"command"`
	Clients int     `json:"clients"`
	Ops     int     `json:"ops"`
	PerSec  float64 `json:"per_sec"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
}

// measureRawOps runs `redis-benchmark -t set,get -n ops -c 50 --csv` on addr
// (with --cluster on a cluster, addr one of its nodes) when
// redis-benchmark is installed and addr is known, else the same load from
// Go through rdb: 50 connections, one command per round trip, no
// pipelining.
func measureRawOps(ctx context.Context, rdb redis.UniversalClient, addr string, cluster bool, ops int) (set, get rawOps, err error) {
	const clients = 50
	if bin, lerr := exec.LookPath("redis-benchmark"); lerr == nil && addr != "" {
		host, port, _ := net.SplitHostPort(addr)
		args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(clients), "-n", strconv.Itoa(ops), "-t", "set,get", "-q", "--csv"}
		if cluster {
			args = append(args, "--cluster")
		}
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		if err != nil {
			return set, get, fmt.Errorf("redis-benchmark: %w", err)
		}
		recs, err := csv.NewReader(bytes.NewReader(csvLines(out))).ReadAll()
		if err != nil {
			return set, get, fmt.Errorf("redis-benchmark output: %w", err)
		}
		for _, rec := range recs {
			if len(rec) < 7 || rec[0] == "test" {
				continue
			}
			num := func(s string) float64 { f, _ := strconv.ParseFloat(s, 64); return f }
			r := rawOps{Tool: "redis-benchmark", Command: rec[0], Clients: clients, Ops: ops, PerSec: num(rec[1]), P50: num(rec[4]), P99: num(rec[6])}
			switch rec[0] {
			case "SET":
				set = r
			case "GET":
				get = r
			}
		}
		if set.PerSec == 0 || get.PerSec == 0 {
			return set, get, fmt.Errorf("redis-benchmark output not understood: %q", out)
		}
		return set, get, nil
	}
	one := func(name string, op func(ctx context.Context, i int) error) (rawOps, error) {
		var rec recorder
		var firstErr atomic.Value
		closedLoop(ctx, clients, ops, time.Time{}, func(i int) {
			t := time.Now()
			if err := op(ctx, i); err != nil {
				firstErr.CompareAndSwap(nil, err)
				rec.fail()
				return
			}
			rec.add(t, time.Now())
		})
		if err, _ := firstErr.Load().(error); err != nil {
			return rawOps{}, fmt.Errorf("%s: %w", name, err)
		}
		s := rec.summary()
		return rawOps{Tool: "go-redis", Command: name, Clients: clients, Ops: ops, PerSec: rec.rate(), P50: s.P50, P99: s.P99}, nil
	}
	key := func(i int) string { return "sessiond-bench:raw:" + strconv.Itoa(i%100000) }
	if set, err = one("SET", func(ctx context.Context, i int) error { return rdb.Set(ctx, key(i), "xxx", 0).Err() }); err != nil {
		return set, get, err
	}
	get, err = one("GET", func(ctx context.Context, i int) error { return rdb.Get(ctx, key(i)).Err() })
	return set, get, err
}

// csvLines keeps the lines of redis-benchmark's --csv output that are
// CSV records (they start with a quote): with --cluster it first prints
// the masters it found, as plain text.
func csvLines(out []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(out) {
		if bytes.HasPrefix(line, []byte(`"`)) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

// asynqCeiling is what bare Asynq does on the same Redis.
type asynqCeiling struct {
	Tasks       int       `json:"tasks"`
	Concurrency int       `json:"concurrency"`
	EnqueuePS   float64   `json:"enqueue_per_sec"`   // Client.Enqueue, 16 goroutines
	ProcessPS   float64   `json:"processed_per_sec"` // no-op handler, backlog of Tasks
	Latency     latencies `json:"latency"`           // enqueue -> handler, open loop at LatencyRate
	LatencyRate float64   `json:"latency_rate"`
	SchedLag    latencies `json:"scheduled_lag"` // ProcessAt -> handler
	SchedEarly  int       `json:"scheduled_early"`
}

const noopQueue = "sessiond-bench-noop"

// measureAsynq enqueues tasks no-op tasks, then runs an asynq.Server with
// the dispatcher's worker settings (100 workers, 5 ms task check) and a
// no-op handler until all are processed. Then it measures the enqueue to
// handler latency at latencyRate per second, and the lag of scheduled
// tasks (ProcessAt) spread over a window, with the scheduler's Asynq
// setting (due tasks moved every second).
func measureAsynq(ctx context.Context, opt asynq.RedisConnOpt, tasks int, latencyRate float64, scheduled int, window time.Duration) (asynqCeiling, error) {
	res := asynqCeiling{Tasks: tasks, Concurrency: 100, LatencyRate: latencyRate}
	client := asynq.NewClient(opt)
	defer client.Close()

	var enq recorder
	var enqErr atomic.Value
	closedLoop(ctx, 16, tasks, time.Time{}, func(i int) {
		t := time.Now()
		if _, err := client.EnqueueContext(ctx, asynq.NewTask("noop", nil), asynq.Queue(noopQueue)); err != nil {
			enqErr.CompareAndSwap(nil, err)
			return
		}
		enq.add(t, time.Now())
	})
	if err, _ := enqErr.Load().(error); err != nil {
		return res, fmt.Errorf("asynq enqueue: %w", err)
	}
	res.EnqueuePS = enq.rate()

	var processed atomic.Int64
	allDone := make(chan struct{})
	var lat, lag recorder
	var early atomic.Int64
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if processed.Add(1) == int64(tasks) {
			close(allDone)
		}
		return nil
	})
	mux.HandleFunc("noop-latency", func(_ context.Context, t *asynq.Task) error {
		sent := time.Unix(0, int64(binary.BigEndian.Uint64(t.Payload())))
		lat.add(sent, time.Now())
		return nil
	})
	mux.HandleFunc("noop-scheduled", func(_ context.Context, t *asynq.Task) error {
		due := time.Unix(0, int64(binary.BigEndian.Uint64(t.Payload())))
		now := time.Now()
		if now.Before(due) {
			early.Add(1)
		}
		lag.add(due, now)
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:              res.Concurrency,
		Queues:                   map[string]int{noopQueue: 1},
		TaskCheckInterval:        5 * time.Millisecond,
		DelayedTaskCheckInterval: time.Second,
		LogLevel:                 asynq.FatalLevel,
	})
	start := time.Now()
	if err := srv.Start(mux); err != nil {
		return res, fmt.Errorf("asynq server: %w", err)
	}
	defer srv.Shutdown()
	select {
	case <-allDone:
	case <-time.After(2 * time.Minute):
		return res, errors.New("asynq no-op tasks not all processed within 2m")
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.ProcessPS = perSecond(tasks, time.Since(start))

	payload := func(t time.Time) []byte {
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, uint64(t.UnixNano()))
		return b
	}
	n := int(latencyRate * 2) // two seconds
	openLoop(ctx, latencyRate, n, func(int, time.Time) {
		_, _ = client.EnqueueContext(ctx, asynq.NewTask("noop-latency", payload(time.Now())), asynq.Queue(noopQueue))
	})
	if err := waitCount(ctx, lat.count, n, 30*time.Second); err != nil {
		return res, fmt.Errorf("asynq latency tasks: %w", err)
	}
	res.Latency = lat.summary()

	base := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for i := range scheduled {
		due := base.Add(time.Duration(i) * window / time.Duration(scheduled))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = client.EnqueueContext(ctx, asynq.NewTask("noop-scheduled", payload(due)), asynq.Queue(noopQueue), asynq.ProcessAt(due))
		}()
		if i%64 == 63 {
			wg.Wait()
		}
	}
	wg.Wait()
	if err := waitCount(ctx, lag.count, scheduled, window+30*time.Second); err != nil {
		return res, fmt.Errorf("asynq scheduled tasks: %w", err)
	}
	res.SchedLag = lag.summary()
	res.SchedEarly = int(early.Load())
	return res, nil
}

// waitCount polls count until it reaches n or limit passes.
func waitCount(ctx context.Context, count func() int, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for count() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d after %s", count(), n, limit)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// measureKeyMemory stores n copies of value as plain string keys and
// returns used_memory's growth (summed over the masters) per key: the
// least Redis can spend to keep a session. The keys are deleted
// afterwards.
func measureKeyMemory(ctx context.Context, rdb redis.UniversalClient, value []byte, n int) (float64, error) {
	usedMemory := func() (int64, error) {
		m, err := readMasters(ctx, rdb)
		return m.sum().Memory, err
	}
	before, err := usedMemory()
	if err != nil {
		return 0, err
	}
	key := func(i int) string { return "sessiond-bench:mem:{" + strconv.Itoa(i) + "}" }
	for i := 0; i < n; i += 500 {
		p := rdb.Pipeline()
		for j := i; j < min(i+500, n); j++ {
			p.Set(ctx, key(j), value, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			return 0, fmt.Errorf("store keys: %w", err)
		}
	}
	after, err := usedMemory()
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i += 500 {
		p := rdb.Pipeline() // one key per UNLINK: the keys are in different slots
		for j := i; j < min(i+500, n); j++ {
			p.Unlink(ctx, key(j))
		}
		_, _ = p.Exec(ctx)
	}
	return round(float64(after-before)/float64(n), 1), nil
}

// redisVersion is INFO server's redis_version.
func redisVersion(ctx context.Context, rdb redis.UniversalClient) string {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return ""
}
