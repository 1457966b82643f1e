package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// receiver is the local webhook endpoint. It verifies every delivery's
// Standard Webhooks signature (and the Veriff-style X-HMAC-SIGNATURE), and
// remembers the first successful delivery of each webhook-id. In the drill
// it is flaky on purpose.
type receiver struct {
	keys  []signing.Key
	flaky *flakiness // nil: always 204
	// onFirst, if set, hears of the first 2xx delivery of each webhook-id;
	// it runs on the request's goroutine and must be quick.
	onFirst func(d delivery)

	mu   sync.Mutex
	seen map[string]*delivery // webhook-id -> first 2xx delivery

	unique     atomic.Int64 // webhook-ids answered 2xx
	oks        atomic.Int64 // 2xx answers, duplicates included
	badSig     atomic.Int64 // deliveries whose signature did not verify
	badBody    atomic.Int64 // deliveries whose body was not an event
	failed     atomic.Int64 // answered 500 on purpose
	throttled  atomic.Int64 // answered 429 on purpose
	timedOut   atomic.Int64 // held past the sender's timeout on purpose
	lastUnique atomic.Int64 // unix nanoseconds of the last new webhook-id

	gate atomic.Pointer[chan struct{}] // set: deliveries wait until it is closed (hold)

	srv  *http.Server
	addr string
}

// delivery is a webhook as received.
type delivery struct {
	ID        string    // webhook-id
	Type      string    // body.type
	SessionID string    // body.data.id
	EventTime time.Time // body.timestamp: when the change was committed
	Received  time.Time
	Attempt   int // webhook-attempt
}

// flakiness makes the receiver fail some deliveries: 500s, 429s with
// Retry-After: 1, and answers held longer than the sender's timeout. It
// never fails more than maxStreak deliveries in a row, so the sender's
// circuit breaker (5 consecutive failures) stays closed and the drill's
// duration stays bounded; the breaker has its own tests.
type flakiness struct {
	p500, p429, pTimeout float64
	hold                 time.Duration // how long a "timeout" is held
	maxStreak            int

	mu     sync.Mutex
	streak int
}

type verdict int

const (
	verdictOK verdict = iota
	verdict500
	verdict429
	verdictTimeout
)

func (f *flakiness) pick() verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := verdictOK
	if f.streak < f.maxStreak {
		switch r := rand.Float64(); {
		case r < f.p500:
			v = verdict500
		case r < f.p500+f.p429:
			v = verdict429
		case r < f.p500+f.p429+f.pTimeout:
			v = verdictTimeout
		}
	}
	if v == verdictOK {
		f.streak = 0
	} else {
		f.streak++
	}
	return v
}

// startReceiver listens on addr (127.0.0.1:0 for a free port). secret is
// the whsec_ secret the daemon signs with.
func startReceiver(addr, secret string, flaky *flakiness, onFirst func(delivery)) (*receiver, error) {
	k, err := signing.ParseKey(secret)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &receiver{keys: []signing.Key{k}, flaky: flaky, onFirst: onFirst, seen: make(map[string]*delivery, 1<<14)}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) url() string { return "http://" + r.addr + "/webhooks" }

func (r *receiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

type eventBody struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		ID string `json:"id"`
	} `json:"data"`
}

// hold makes every delivery wait, unanswered, until release.
func (r *receiver) hold() {
	ch := make(chan struct{})
	r.gate.Store(&ch)
}

// release lets the held deliveries through and stops holding.
func (r *receiver) release() {
	if ch := r.gate.Swap(nil); ch != nil {
		close(*ch)
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if g := r.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-req.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	if signing.Verify(req.Header, body, now, r.keys...) != nil || signing.VerifyHMACHeader(req.Header, body, r.keys...) != nil {
		r.badSig.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ev eventBody
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type == "" || ev.Data.ID == "" {
		r.badBody.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.flaky != nil {
		switch r.flaky.pick() {
		case verdict500:
			r.failed.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return
		case verdict429:
			r.throttled.Add(1)
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		case verdictTimeout:
			r.timedOut.Add(1)
			t := time.NewTimer(r.flaky.hold)
			select {
			case <-req.Context().Done():
			case <-t.C:
			}
			t.Stop()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
	id := req.Header.Get(signing.HeaderID)
	attempt, _ := strconv.Atoi(req.Header.Get("webhook-attempt"))
	d := delivery{ID: id, Type: ev.Type, SessionID: ev.Data.ID, EventTime: ev.Timestamp, Received: now, Attempt: attempt}
	r.mu.Lock()
	_, dup := r.seen[id]
	if !dup {
		r.seen[id] = &d
	}
	r.mu.Unlock()
	r.oks.Add(1)
	if !dup {
		r.unique.Add(1)
		r.lastUnique.Store(now.UnixNano())
		if r.onFirst != nil {
			r.onFirst(d)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// has reports whether webhook-id id was answered 2xx.
func (r *receiver) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[id]
	return ok
}

// ids returns every webhook-id answered 2xx.
func (r *receiver) ids() map[string]delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]delivery, len(r.seen))
	for k, v := range r.seen {
		m[k] = *v
	}
	return m
}

var errSettle = errors.New("deliveries did not settle")

// waitUnique waits until at least n webhook-ids were answered 2xx. It
// gives up when limit passes, or when nothing new arrived for quiet
// (quiet 0: never), and returns errSettle then.
func (r *receiver) waitUnique(ctx context.Context, n int64, limit, quiet time.Duration) error {
	deadline := time.Now().Add(limit)
	start := time.Now()
	for r.unique.Load() < n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := time.Now()
		last := time.Unix(0, r.lastUnique.Load())
		if last.Before(start) {
			last = start
		}
		if now.After(deadline) || (quiet > 0 && now.Sub(last) > quiet) {
			return errSettle
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
