package lifecycle

import (
	"strconv"
	"testing"
)

// The benchmarks run against a private redis-server on loopback, so they
// measure the store's round trips and encoding, not a network.

func BenchmarkCreate(b *testing.B) {
	e := newEnv(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := e.svc.Create(e.ctx, CreateRequest{RefID: "bench-" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	e := newEnv(b)
	id := e.create("bench").ID
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.svc.Get(e.ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTransition measures one allowed transition (created -> started)
// on sessions created beforehand, outside the timer.
func BenchmarkTransition(b *testing.B) {
	e := newEnv(b)
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = e.create("bench-" + strconv.Itoa(i)).ID
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.svc.Progress(e.ctx, ids[i], StatusStarted); err != nil {
			b.Fatal(err)
		}
	}
}
