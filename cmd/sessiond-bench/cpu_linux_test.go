package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestProcessCPU reads this process's own /proc stat around a busy loop:
// the CPU time must grow as getrusage(2) says it did (an independent
// count), whatever share of a CPU the loop got on a loaded machine.
func TestProcessCPU(t *testing.T) {
	rusage := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ruBefore := rusage()
	x := 0
	for rusage()-ruBefore < 300*time.Millisecond {
		x++
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	grew, ruGrew := after-before, rusage()-ruBefore
	// /proc counts in clock ticks (10 ms); other goroutines of the test
	// binary add a little to both.
	if d := grew - ruGrew; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("CPU grew by %v in /proc, by %v as getrusage says (%d turns)", grew, ruGrew, x)
	}
	if _, err := processCPU(0); err == nil {
		t.Error("processCPU(0) succeeded")
	}
}
