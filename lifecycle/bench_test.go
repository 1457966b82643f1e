package lifecycle

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

// The benchmarks run against a private redis-server on loopback, so they
// measure the store's round trips and encoding, not a network. Each
// reports its round trips per operation (a command, or a pipeline, sent
// and answered) and the operations per second.

// roundTrips counts the round trips a client makes: one per command, one
// per pipeline, leaving out a new connection's handshake (HELLO, CLIENT
// SETINFO), which depends on the pool, not on the operation.
type roundTrips struct{ n atomic.Int64 }

func handshake(cmd redis.Cmder) bool { return cmd.Name() == "hello" || cmd.Name() == "client" }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return !handshake(c) }) {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// benchEnv is an env whose client counts its round trips.
func benchEnv(b *testing.B) (*env, *roundTrips) {
	e := newEnv(b)
	rt := &roundTrips{}
	e.rdb.AddHook(rt)
	return e, rt
}

// report adds round trips per operation, counted since start, and
// operations per second.
func report(b *testing.B, rt *roundTrips, start int64) {
	b.ReportMetric(float64(rt.n.Load()-start)/float64(b.N), "roundtrips/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkCreate(b *testing.B) {
	e, rt := benchEnv(b)
	e.create("warm-up") // loads the commit script
	start := rt.n.Load()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := e.svc.Create(e.ctx, CreateRequest{RefID: "bench-" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	report(b, rt, start)
}

func BenchmarkGet(b *testing.B) {
	e, rt := benchEnv(b)
	id := e.create("bench").ID
	start := rt.n.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.svc.Get(e.ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	report(b, rt, start)
}

// BenchmarkTransition measures one allowed transition (created -> started)
// on sessions created beforehand, outside the timer.
func BenchmarkTransition(b *testing.B) {
	e, rt := benchEnv(b)
	sessions := make([]string, b.N)
	for i := range sessions {
		sessions[i] = e.create("bench-" + strconv.Itoa(i)).ID
	}
	start := rt.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.svc.Progress(e.ctx, sessions[i], StatusStarted); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	report(b, rt, start)
}
