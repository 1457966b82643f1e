package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

func TestScheduleDelay(t *testing.T) {
	s := newSchedule(DefaultRetrySchedule, 0.1)
	for failures := 1; failures <= 9; failures++ {
		want := DefaultRetrySchedule[min(failures, len(DefaultRetrySchedule))-1]
		for range 50 {
			got := s.delay(failures)
			lo, hi := time.Duration(float64(want)*0.9), time.Duration(float64(want)*1.1)
			if got < lo || got > hi {
				t.Fatalf("delay(%d) = %v, want %v ±10%%", failures, got, want)
			}
		}
	}
	if got := newSchedule(DefaultRetrySchedule, 0).delay(2); got != 5*time.Minute {
		t.Errorf("delay without jitter = %v, want 5m", got)
	}
	if s.retries() != 7 {
		t.Errorf("retries = %d, want 7", s.retries())
	}
	tests := []struct{ in, want time.Duration }{
		{0, 5 * time.Second},
		{time.Second, 5 * time.Second},
		{time.Minute, time.Minute},
		{100 * time.Hour, 10 * time.Hour},
	}
	for _, tt := range tests {
		if got := s.clamp(tt.in); got != tt.want {
			t.Errorf("clamp(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// notEarlier's delay, truncated to whole seconds as Asynq keeps it, never
// comes before the delay asked for.
func TestNotEarlier(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, offset := range []time.Duration{0, time.Millisecond, 400 * time.Millisecond, 999 * time.Millisecond} {
		for _, d := range []time.Duration{0, 10 * time.Millisecond, time.Second, 1500 * time.Millisecond, time.Hour} {
			now := base.Add(offset)
			got := notEarlier(d, now)
			due := time.Unix(now.Add(got).Unix(), 0)
			if due.Before(now.Add(d)) {
				t.Errorf("now+%v, delay %v: due %v, before %v", offset, d, due, now.Add(d))
			}
			if got > d+time.Second+time.Millisecond {
				t.Errorf("now+%v, delay %v: %v is more than a second late", offset, d, got)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{"0000000005", 5 * time.Second, true}, // leading zeros do not count towards the bound
		{"000", 0, true},
		{"99999999999999999999", 999999999 * time.Second, true},
		{now.Add(90 * time.Second).Format(http1123), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http1123), 0, true},
		{"Sunday, 01-Jun-25 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

// Only real attempts use up the schedule.
func TestIsFailureAndRetryDelay(t *testing.T) {
	d, err := New(nil, nil, Config{RetrySchedule: []time.Duration{time.Minute, time.Hour, 2 * time.Hour}, Jitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	task := func(failed int) *asynq.Task {
		b, err := (&taskPayload{Delivery: "s~e~p", Cursor: "1-0", Base: failed, Failed: failed}).encode()
		if err != nil {
			t.Fatal(err)
		}
		return asynq.NewTask(taskType, b)
	}
	const late = time.Second + time.Millisecond // notEarlier's rounding up to Asynq's whole seconds
	tests := []struct {
		name     string
		err      error
		failed   int // failed attempts before the task (its payload)
		retried  int // the task's failures so far (Asynq's count)
		failure  bool
		min, max time.Duration
	}{
		{"deferral", &deferError{reason: "busy", delay: 3 * time.Second}, 1, 0, false, 3 * time.Second, 3 * time.Second},
		{"wrapped deferral", fmt.Errorf("x: %w", &deferError{delay: time.Second}), 0, 0, false, time.Second, time.Second},
		{"lease expired", asynq.ErrLeaseExpired, 1, 0, false, 0, 0},
		{"deferred first attempt failed", &attemptError{msg: "HTTP 500"}, 0, 0, true, time.Minute, time.Minute + late},
		{"first retry failed", &attemptError{msg: "HTTP 500"}, 1, 0, true, time.Hour, time.Hour + late},
		{"second retry failed", &attemptError{msg: "HTTP 500"}, 1, 1, true, 2 * time.Hour, 2*time.Hour + late},
		{"retry-after clamped", &attemptError{msg: "HTTP 429", retryAfter: 10 * time.Hour}, 1, 0, true, 2 * time.Hour, 2*time.Hour + late},
		{"retry-after short", &attemptError{msg: "HTTP 429", retryAfter: time.Second}, 1, 0, true, time.Minute, time.Minute + late},
		{"canceled, not shutting down", context.Canceled, 1, 0, true, time.Hour, time.Hour + late},
	}
	for _, tt := range tests {
		if got := d.isFailure(tt.err); got != tt.failure {
			t.Errorf("%s: isFailure = %v, want %v", tt.name, got, tt.failure)
		}
		if got := d.retryDelay(tt.retried, tt.err, task(tt.failed)); got < tt.min || got > tt.max {
			t.Errorf("%s: retryDelay = %v, want %v to %v", tt.name, got, tt.min, tt.max)
		}
	}
	d.cutting.Store(true)
	if d.isFailure(context.Canceled) || d.retryDelay(0, context.Canceled, task(1)) != 0 {
		t.Error("a delivery cut off by shutdown must be put back at once without a failure")
	}
	if !d.isFailure(errors.New("other")) {
		t.Error("other errors are failures")
	}
}

func TestBreaker(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	attempt := func(b *breaker, healthy bool, when time.Time) {
		t.Helper()
		if ok, _ := b.allow(when); !ok {
			t.Fatalf("breaker refused an attempt at %v", when.Sub(t0))
		}
		b.done(healthy, when, when)
	}

	// A flaky endpoint that fails most attempts but succeeds now and then
	// keeps it closed.
	b := newBreaker(3, 10*time.Second, time.Second)
	for i := range 100 {
		attempt(b, i%5 == 4, at(time.Duration(i)*time.Second))
	}
	if b.isOpen() {
		t.Fatal("a flaky endpoint opened the breaker")
	}

	// Failing for the period with at least threshold attempts opens it.
	b = newBreaker(3, 10*time.Second, time.Second)
	attempt(b, false, at(0))
	attempt(b, false, at(time.Second))
	attempt(b, false, at(2*time.Second)) // threshold reached, period not
	if b.isOpen() {
		t.Fatal("opened before failing for the period")
	}
	attempt(b, false, at(10*time.Second))
	now := at(10 * time.Second)
	ok, wait := b.allow(now)
	if ok || wait < time.Second || wait > 1500*time.Millisecond {
		t.Fatalf("after failing 10s: allow = %v, %v; want deferred about a second", ok, wait)
	}
	b.done(false, now, now) // a straggler does not extend it
	if ok, wait := b.allow(now.Add(999 * time.Millisecond)); ok || wait > 600*time.Millisecond {
		t.Errorf("straggler extended the open breaker: %v %v", ok, wait)
	}
	// Half open: one probe, the others wait.
	later := now.Add(time.Second)
	if ok, _ := b.allow(later); !ok {
		t.Fatal("no probe after the cool-down")
	}
	if ok, _ := b.allow(later); ok {
		t.Fatal("a second probe went through")
	}
	// A failed probe opens it for twice as long.
	b.done(false, later, later)
	if ok, wait := b.allow(later); ok || wait < 2*time.Second {
		t.Errorf("after a failed probe allow = %v, %v; want 2s", ok, wait)
	}
	// An abandoned probe lets another one through; a good one closes it.
	probe := later.Add(2 * time.Second)
	if ok, _ := b.allow(probe); !ok {
		t.Fatal("no probe")
	}
	b.abandon()
	if ok, _ := b.allow(probe); !ok {
		t.Fatal("no probe after an abandoned one")
	}
	b.done(true, probe, probe)
	if b.isOpen() {
		t.Fatal("a good probe did not close the breaker")
	}
	// A hanging endpoint: attempts that began 15s ago time out now.
	b = newBreaker(3, 10*time.Second, time.Second)
	for range 3 {
		b.allow(at(0))
	}
	for range 3 {
		b.done(false, at(0), at(15*time.Second))
	}
	if !b.isOpen() {
		t.Error("timeouts of attempts that began 15s ago did not open it")
	}
}

// tryAcquire takes a slot for an attempt starting now, if one is free.
func (l *limiter) tryAcquire(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.take(now)
}

// waiting is the length of the line.
func (l *limiter) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.line)
}

func TestLimiterBusyDelay(t *testing.T) {
	now := time.Now()
	l := newLimiter(2, 0)
	a, b, c := l.tryAcquire(now), l.tryAcquire(now), l.tryAcquire(now)
	if !a || !b || c {
		t.Fatal("limiter of 2 did not hold exactly 2")
	}
	l.release(now, 100*time.Millisecond, now)
	l.release(now, 100*time.Millisecond, now)
	first := l.busyDelay(now)
	if first < 100*time.Millisecond || first > 150*time.Millisecond {
		t.Errorf("first busy delay = %v, want the endpoint's latency", first)
	}
	var last time.Duration
	for range 10 {
		last = l.busyDelay(now)
	}
	// 11 deferred for 2 slots: the last waits for about 6 rounds.
	if last < 500*time.Millisecond {
		t.Errorf("busy delay with a backlog = %v, want it to grow with the backlog", last)
	}
	later := now.Add(time.Hour)
	if d := l.busyDelay(later); d > 150*time.Millisecond {
		t.Errorf("busy delay once the backlog is due = %v", d)
	}
	// A hanging attempt: the pace is at least its age.
	l = newLimiter(1, 0)
	l.tryAcquire(now)
	if d := l.busyDelay(now.Add(3 * time.Second)); d < 3*time.Second {
		t.Errorf("busy delay behind a 3s-old attempt = %v", d)
	}
	l.release(now, 0, now)
	if !l.tryAcquire(now) {
		t.Error("slot not freed")
	}
}

// TestLimiterLine: a first attempt that finds every slot taken waits in
// the line while it has room; a release hands the slot to the oldest
// waiting one instead of freeing it; saturation begins at as many waiting
// as there are slots.
func TestLimiterLine(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := newLimiter(2, 3)
	jobs := make([]*job, 6)
	for i := range jobs {
		jobs[i] = &job{}
	}
	for i, want := range []struct{ acquired, waiting bool }{
		{true, false}, {true, false}, // the two slots
		{false, true}, {false, true}, {false, true}, // the line of 3
		{false, false}, // neither: deferred
	} {
		acquired, waiting := l.acquireOrWait(at(i), jobs[i])
		if acquired != want.acquired || waiting != want.waiting {
			t.Fatalf("job %d: acquired %v, waiting %v; want %v, %v", i, acquired, waiting, want.acquired, want.waiting)
		}
	}
	if !l.saturated() || l.waiting() != 3 {
		t.Fatalf("3 waiting for 2 slots: saturated %v, waiting %d", l.saturated(), l.waiting())
	}
	if l.tryAcquire(at(10)) {
		t.Fatal("a retry took a slot that the line is owed")
	}
	// The first slot's release goes to job 2, then the same slot to job 3.
	next, start := l.release(at(0), 5*time.Millisecond, at(20))
	if next != jobs[2] || !start.Equal(at(20)) {
		t.Fatalf("release handed over %p at %v, want job 2 at %v", next, start, at(20))
	}
	if !l.saturated() {
		t.Error("2 waiting for 2 slots: not saturated")
	}
	if next, _ = l.release(at(20), 5*time.Millisecond, at(30)); next != jobs[3] {
		t.Fatalf("second hand-over = %p, want job 3", next)
	}
	if l.saturated() {
		t.Error("1 waiting for 2 slots: saturated")
	}
	if next, _ = l.release(at(1), 5*time.Millisecond, at(31)); next != jobs[4] {
		t.Fatalf("third hand-over = %p, want job 4", next)
	}
	// The line is empty: releases free the slots.
	if next, _ = l.release(at(30), 5*time.Millisecond, at(40)); next != nil {
		t.Fatalf("release with an empty line handed over %p", next)
	}
	if next, _ = l.release(at(31), 5*time.Millisecond, at(40)); next != nil {
		t.Fatalf("release with an empty line handed over %p", next)
	}
	if a, b, c := l.tryAcquire(at(50)), l.tryAcquire(at(51)), l.tryAcquire(at(52)); !a || !b || c {
		t.Error("both slots should be free again, and only two")
	}
	// A limiter without a line defers at once.
	l = newLimiter(1, 0)
	l.tryAcquire(at(0))
	if acquired, waiting := l.acquireOrWait(at(1), jobs[0]); acquired || waiting {
		t.Error("a limiter without a line let a job wait")
	}
}

// TestLimiterRetryWaits: a retry that finds every slot taken waits for
// one, ahead of the line's first attempts, and gives up after its wait
// without leaving a trace.
func TestLimiterRetryWaits(t *testing.T) {
	t0 := time.Now()
	l := newLimiter(1, 4)
	l.tryAcquire(t0)
	if acquired, waiting := l.acquireOrWait(t0, &job{}); acquired || !waiting {
		t.Fatal("a first attempt did not wait in the line")
	}
	// Nobody frees the slot: the retry gives up after its wait.
	if _, ok := l.acquireRetry(context.Background(), t0, 10*time.Millisecond); ok {
		t.Fatal("a retry got a slot nobody freed")
	}
	if len(l.retries) != 0 {
		t.Fatalf("%d retries still waiting after giving up", len(l.retries))
	}
	// The slot is freed while the retry waits: the retry gets it, before
	// the line's first attempt.
	got := make(chan time.Time, 1)
	go func() {
		start, ok := l.acquireRetry(context.Background(), t0, 10*time.Second)
		if !ok {
			start = time.Time{}
		}
		got <- start
	}()
	waitFor(t, 5*time.Second, "the retry waiting", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.retries) == 1
	})
	freed := t0.Add(time.Second)
	if next, _ := l.release(t0, time.Millisecond, freed); next != nil {
		t.Fatal("the slot went to the line's first attempt, not the waiting retry")
	}
	if start := <-got; !start.Equal(freed) {
		t.Fatalf("the retry's slot starts at %v, want %v", start, freed)
	}
	if l.waiting() != 1 {
		t.Errorf("the first attempt left the line: %d waiting", l.waiting())
	}
	// The retry's release goes to the line.
	if next, _ := l.release(freed, time.Millisecond, freed.Add(time.Second)); next == nil {
		t.Error("the retry's slot did not go to the waiting first attempt")
	}
}

func TestDeliveryID(t *testing.T) {
	id := deliveryID("6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11", "evt_0123abcd", "my-endpoint_2")
	if id != "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123abcd~my-endpoint_2" {
		t.Fatalf("deliveryID = %q", id)
	}
	s, e, ep, ok := parseDeliveryID(id)
	if !ok || s != "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11" || e != "evt_0123abcd" || ep != "my-endpoint_2" {
		t.Errorf("parseDeliveryID = %q %q %q %v", s, e, ep, ok)
	}
	for _, bad := range []string{"", "a~b", "a~b~c~d", "a~~c", "a/b~c~d", "a~b~c d", "a~b~c%20"} {
		if _, _, _, ok := parseDeliveryID(bad); ok {
			t.Errorf("parseDeliveryID(%q) ok", bad)
		}
	}
	if deliveryID("a.b", "e", "p") != "" {
		t.Error("deliveryID accepted a part with a dot")
	}
}

func TestTaskPayloadRoundTrip(t *testing.T) {
	p := &taskPayload{Delivery: "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123~default", Cursor: "1718000000000-3", Base: 3, Failed: 1, Replay: true}
	b, err := p.encode()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"d":"6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11~evt_0123~default","c":"1718000000000-3","n":3,"f":1,"r":true}`; string(b) != want {
		t.Errorf("encoded = %s, want %s", b, want)
	}
	got, err := decodePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *p {
		t.Errorf("round trip = %+v, want %+v", got, p)
	}
	for _, bad := range []string{
		"", "{}", "null",
		`{"d":"s~e~p"}`,                   // no cursor
		`{"d":"s~e","c":"1-0"}`,           // two parts
		`{"d":"s~e~p","c":"1"}`,           // cursor without a sequence
		`{"d":"s~e~p","c":"1-x"}`,         // cursor not a number
		`{"d":"s~e~p","c":"1-0","n":-1}`,  // negative base
		`{"d":"s~e~p","c":"1-0","f":-1}`,  // negative failures
		`{"d":"s~e~p","c":"1-0"} {}`,      // trailing data
		`{"d":"s~e~p","c":"1-0","n":1.5}`, // not an integer
	} {
		if _, err := decodePayload([]byte(bad)); err == nil {
			t.Errorf("decodePayload(%q) = nil error", bad)
		}
	}
}
