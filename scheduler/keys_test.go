package scheduler

import (
	"errors"
	"testing"
	"time"

	"github.com/sessiond/sessiond/lifecycle"
)

func TestWorkTaskIDRoundTrip(t *testing.T) {
	const id = "0b6f1f6e-3f2a-4c55-9d43-0a9f3f1f6c11"
	for _, k := range kinds {
		tid := workTaskID(k, id, 7)
		gotK, gotID, gotV, ok := parseWorkTaskID(tid)
		if !ok || gotK != k || gotID != id || gotV != 7 {
			t.Errorf("parseWorkTaskID(%q) = %q, %q, %d, %v; want %q, %q, 7, true", tid, gotK, gotID, gotV, ok, k, id)
		}
	}
	for _, bad := range []string{"", "expire", "expire:" + id, "expire::3", "expire:" + id + ":x", "sweep:1700000000000"} {
		if _, _, _, ok := parseWorkTaskID(bad); ok {
			t.Errorf("parseWorkTaskID(%q) ok, want refused", bad)
		}
	}
}

func TestAlignedTicksAgreeAcrossReplicas(t *testing.T) {
	every := aligned{time.Minute}
	base := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	tests := []struct {
		now, want time.Time
	}{
		{base, base.Add(time.Minute)},
		{base.Add(time.Millisecond), base.Add(time.Minute)},
		{base.Add(59*time.Second + 999*time.Millisecond), base.Add(time.Minute)},
	}
	for _, tt := range tests {
		if got := every.Next(tt.now); !got.Equal(tt.want) {
			t.Errorf("Next(%v) = %v, want %v", tt.now, got, tt.want)
		}
	}
	// A replica that fires a little late still names the same tick.
	if a, b := sweepTaskID(base.Round(time.Minute)), sweepTaskID(base.Add(40*time.Millisecond).Round(time.Minute)); a != b {
		t.Errorf("tick ids differ: %s vs %s", a, b)
	}
}

func TestEarlyTaskRetryDelay(t *testing.T) {
	tests := []struct {
		err  error
		want time.Duration
	}{
		{&notDueError{wait: 300 * time.Millisecond}, 1300 * time.Millisecond},
		{&notDueError{wait: 2 * time.Second}, 3 * time.Second},
	}
	for _, tt := range tests {
		if got := retryDelay(0, tt.err, nil); got != tt.want {
			t.Errorf("retryDelay(%v) = %v, want %v", tt.err, got, tt.want)
		}
		if isFailure(tt.err) {
			t.Errorf("isFailure(%v) = true, want false", tt.err)
		}
	}
	if !isFailure(errors.New("boom")) {
		t.Error("isFailure(boom) = false, want true")
	}
	if got := dueKey(lifecycle.WorkExpire); got != lifecycle.ExpireDueKey {
		t.Errorf("dueKey(expire) = %q", got)
	}
}
