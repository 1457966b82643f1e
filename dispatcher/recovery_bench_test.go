package dispatcher

import (
	"cmp"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// BenchmarkRecovery measures a recovery over a feed of n events (default
// 100000; SESSIOND_BENCH_RECOVERY sets it), on one private redis-server:
// n sessions are created while an endpoint of the API is disabled (it
// misses their session.created events), the endpoint is enabled and a
// recovery started over the whole window. It reports the walk's duration
// (walk_s: until every delivery is scheduled), the time until every
// delivery has ended (deliver_s), and the longest Redis command of the
// recovery, from SLOWLOG (max_cmd_ms; commands over 1 ms are logged).
//
// Run: go test -run='^$' -bench=BenchmarkRecovery -benchtime=1x ./dispatcher
func BenchmarkRecovery(b *testing.B) {
	n := envCount("SESSIOND_BENCH_RECOVERY", 100000)
	for b.Loop() {
		runRecoveryBench(b, n)
	}
}

func runRecoveryBench(b *testing.B, n int) {
	ctx := b.Context()
	srv := redistest.Start(b)
	conn, err := redisconn.Parse(srv.URL(), redisconn.Options{})
	if err != nil {
		b.Fatal(err)
	}
	w := &benchWorld{b: b, conn: conn, keys: keyspace.New("")}
	w.rdb = w.client("bench-store", 256)
	w.svc = lifecycle.New(w.rdb, lifecycle.Config{})
	var received atomic.Int64
	rv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		received.Add(1)
		rw.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(rv.Close)
	d, err := New(w.client("bench-dispatcher", defaultConcurrency+32), w.svc, Config{
		APIKey:        testAPIKey,
		AllowNetworks: loopback,
		QueueRedis:    w.client("bench-webhooks", 32),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.stop(d) })
	ep, err := d.CreateEndpoint(ctx, EndpointSpec{URL: rv.URL, Events: []string{"session.created"}})
	if err != nil {
		b.Fatal(err)
	}
	off, on := true, false
	if _, err := d.UpdateEndpoint(ctx, ep.ID, EndpointPatch{Disabled: &off}); err != nil {
		b.Fatal(err)
	}
	since := time.Now().Add(-time.Second)
	parallel(n, benchProducers, func(i int) {
		if _, err := w.svc.Create(ctx, lifecycle.CreateRequest{RefID: "recover-" + strconv.Itoa(i)}); err != nil {
			b.Error(err)
		}
	})
	if b.Failed() {
		b.FailNow()
	}
	time.Sleep(500 * time.Millisecond) // the relay skips the last ones
	if received.Load() != 0 {
		b.Fatalf("the disabled endpoint got %d webhooks", received.Load())
	}
	if _, err := d.UpdateEndpoint(ctx, ep.ID, EndpointPatch{Disabled: &on}); err != nil {
		b.Fatal(err)
	}

	admin := w.client("bench-admin", 2)
	for _, args := range [][]any{{"config", "set", "slowlog-log-slower-than", "1000"}, {"config", "set", "slowlog-max-len", "1024"}, {"slowlog", "reset"}} {
		if err := admin.Do(ctx, args...).Err(); err != nil {
			b.Fatal(err)
		}
	}
	t0 := time.Now()
	rec, err := d.Recover(ctx, ep.ID, since, time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	var walked time.Duration
	waitFor(b, 10*time.Minute, "the recovery done", func() bool {
		r, err := d.Recovery(ctx, rec.ID)
		if err != nil {
			b.Fatal(err)
		}
		if walked == 0 && r.Status != RecoveryRunning {
			walked = time.Since(t0)
		}
		rec = r
		return r.Status == RecoveryDone || r.Status == RecoveryFailed
	})
	delivered := time.Since(t0)
	if rec.Status != RecoveryDone || rec.Scanned < int64(n) || rec.Scheduled != int64(n) || received.Load() < int64(n) {
		b.Fatalf("recovery %+v, %d webhooks received; want %d scheduled and received", rec, received.Load(), n)
	}
	slow, err := admin.SlowLogGet(ctx, 1024).Result()
	if err != nil {
		b.Fatal(err)
	}
	var worst redis.SlowLog
	for _, s := range slow {
		if s.Duration > worst.Duration {
			worst = s
		}
	}
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(walked.Seconds(), "walk_s")
	b.ReportMetric(delivered.Seconds(), "deliver_s")
	b.ReportMetric(float64(worst.Duration.Microseconds())/1000, "max_cmd_ms")
	b.ReportMetric(float64(len(slow)), "cmds_over_1ms")
	names := map[string]string{recoveryScript.Hash(): "recovery.lua", recordScript.Hash(): "record.lua",
		replayScript.Hash(): "replay.lua", requeueScript.Hash(): "requeue.lua"}
	slices.SortFunc(slow, func(a, b redis.SlowLog) int { return int(b.Duration - a.Duration) })
	for _, s := range slow[:min(3, len(slow))] {
		what := fmt.Sprint(s.Args)
		if len(s.Args) > 1 {
			sha := fmt.Sprint(s.Args[1])
			what = fmt.Sprint(s.Args[0]) + " " + cmp.Or(names[sha], "an Asynq script "+sha)
		}
		b.Logf("slow command: %s (%v)", what, s.Duration)
	}
}
