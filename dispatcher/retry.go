package dispatcher

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// schedule is the retry schedule with its jitter.
type schedule struct {
	delays   []time.Duration
	jitter   float64
	min, max time.Duration
}

func newSchedule(delays []time.Duration, jitter float64) schedule {
	return schedule{delays: delays, jitter: jitter, min: slices.Min(delays), max: slices.Max(delays)}
}

// retries is how many retries follow the first attempt.
func (s schedule) retries() int { return len(s.delays) }

// delay is the wait before the next attempt after failures failed
// attempts (1 or more): the schedule's entry spread by the jitter, as
// cenkalti/backoff randomizes an interval.
func (s schedule) delay(failures int) time.Duration {
	d := s.delays[min(max(failures, 1), len(s.delays))-1]
	if s.jitter == 0 {
		return d
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(d),
		backoff.WithMaxInterval(d),
		backoff.WithMultiplier(1),
		backoff.WithRandomizationFactor(s.jitter),
		backoff.WithMaxElapsedTime(0),
	)
	return b.NextBackOff()
}

// clamp bounds a receiver's Retry-After to the schedule's shortest and
// longest delay.
func (s schedule) clamp(d time.Duration) time.Duration {
	return min(max(d, s.min), s.max)
}

// maxRetryAfterDigits bounds a delta-seconds Retry-After so that it fits a
// time.Duration; longer values are clamped anyway.
const maxRetryAfterDigits = 9

// parseRetryAfter parses a Retry-After header value: delta-seconds or an
// HTTP date, which counts from now (a past date is 0). ok is false for
// anything else.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if digits(v) {
		// Leading zeros are allowed (RFC 9110 delta-seconds is 1*DIGIT)
		// and must not count towards the length bound.
		if v = strings.TrimLeft(v, "0"); v == "" {
			return 0, true
		}
		if len(v) > maxRetryAfterDigits {
			v = strings.Repeat("9", maxRetryAfterDigits)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// attemptError is a failed attempt. Asynq retries it after the schedule's
// next delay, or after retryAfter (clamped) when the receiver asked.
type attemptError struct {
	msg        string
	retryAfter time.Duration
}

func (e *attemptError) Error() string { return e.msg }

// deferError puts a delivery back for later without using up an attempt:
// the Asynq server's IsFailure is false for it, and its RetryDelayFunc
// returns delay.
type deferError struct {
	reason string
	delay  time.Duration
}

func (e *deferError) Error() string { return "deferred: " + e.reason }
