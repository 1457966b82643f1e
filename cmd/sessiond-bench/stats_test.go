package main

import (
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	ds := make([]time.Duration, 0, 100)
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarise(ds)
	want := latencies{N: 100, P50: 50, P99: 99, Max: 100, Min: 1}
	if got != want {
		t.Errorf("summarise(1..100 ms) = %+v, want %+v", got, want)
	}
	if got := summarise(nil); got != (latencies{}) {
		t.Errorf("summarise(nil) = %+v, want zero", got)
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct{ a, b, want float64 }{
		{500, 1000, 0.5},
		{3, 0, 0},
		{3, -1, 0},
	} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		x    float64
		want string
	}{
		{14557, "14557"}, {38.04, "38.0"}, {0.97, "0.97"}, {0.1, "0.10"}, {0, "0.00"}, {0.004, "0.004"}, {0.0123, "0.012"}, {-0.004, "-0.004"},
	} {
		if got := human(tc.x); got != tc.want {
			t.Errorf("human(%v) = %q, want %q", tc.x, got, tc.want)
		}
	}
}
