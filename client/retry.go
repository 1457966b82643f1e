package client

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryPolicy bounds how a request is sent again. Zero fields mean the
// defaults.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included; default
	// 3. 1 turns retries off.
	MaxAttempts int
	// MinBackoff is the wait before the first retry, doubled before each
	// next one up to MaxBackoff; each wait is drawn at random from its
	// upper half. Defaults 200ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits out; a
	// longer one ends the retries and the caller gets the answer, with
	// Error.RetryAfter set. Default 30s.
	MaxRetryAfter time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = 200 * time.Millisecond
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = 5 * time.Second
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = 30 * time.Second
	}
	return p
}

// next reports whether attempt (1 for the first) may be followed by
// another, and after how long. safe says that sending the request twice
// cannot apply it twice (GET, HEAD, Idempotency-Key). resp is the answer,
// nil when none came; err is its *Error or the transport's error.
func (p RetryPolicy) next(attempt int, safe bool, resp *Response, err error) (time.Duration, bool) {
	if attempt >= p.MaxAttempts {
		return 0, false
	}
	if resp == nil {
		switch {
		case errors.Is(err, errTooLarge):
			return 0, false
		case notSent(err) || safe:
			return p.backoff(attempt), true
		}
		return 0, false // it may have been applied: the caller decides
	}
	var e *Error
	if !errors.As(err, &e) {
		return 0, false
	}
	if e.RetryAfter > p.MaxRetryAfter {
		return 0, false
	}
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		// The daemon refuses a request it has too many of before doing
		// anything with it, so any method may be sent again.
		if e.RetryAfter > 0 {
			return e.RetryAfter, true
		}
		return p.backoff(attempt), true
	case safe && (resp.StatusCode == http.StatusInternalServerError || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout):
		return max(e.RetryAfter, p.backoff(attempt)), true
	}
	return 0, false // 429 included: its Retry-After can be an hour
}

// backoff is the jittered wait before retry number n (1 for the first).
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// notSent reports whether err means the request never left: the
// connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date (from now). 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(365*24*time.Hour/time.Second) {
			n = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
