package dispatcher

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// Test keys. testSecret and testSecret2 are whsec_ secrets of 32 bytes;
// testPrivate is a whsk_ ed25519 key from a fixed seed, testPublic its
// public key.
var (
	testSecret  = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testSecret2 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	testSeed    = []byte("seed-seed-seed-seed-seed-seed-32")
	testPrivate = "whsk_" + base64.StdEncoding.EncodeToString(testSeed)
	testPublic  = ed25519.NewKeyFromSeed(testSeed).Public().(ed25519.PublicKey)
)

const testAPIKey = "integrator-key"

// loopback lets tests deliver to httptest servers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// testConfig is a Config with fast test timings; the test adds endpoints.
// Asynq keeps due times in whole seconds, so a retry comes up to a second
// after its delay whatever the schedule says.
func testConfig(eps ...Endpoint) Config {
	return Config{
		Endpoints:                eps,
		APIKey:                   testAPIKey,
		Timeout:                  2 * time.Second,
		RetrySchedule:            []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond},
		AllowNetworks:            loopback,
		Concurrency:              16,
		TaskCheckInterval:        50 * time.Millisecond,
		DelayedTaskCheckInterval: 50 * time.Millisecond,
		ClaimIdle:                400 * time.Millisecond,
	}
}

// env is one test's world on one Redis target: a lifecycle Service on a
// test clock, and a Dispatcher over it with clients of its own, built from
// the target's URL as cmd/sessiond builds them.
type env struct {
	t     testing.TB
	ctx   context.Context
	tg    redistest.Target
	rdb   redis.UniversalClient // the lifecycle's client; the tests read Redis through it
	keys  keyspace.Space
	clock *clocktest.Clock // the lifecycle's clock
	svc   *lifecycle.Service
	insp  *asynq.Inspector
	d     *Dispatcher // the first dispatcher
}

// newEnv returns an env on tg with a started Dispatcher.
func newEnv(t testing.TB, tg redistest.Target, cfg Config) *env {
	t.Helper()
	e := bareEnv(t, tg, cfg)
	if err := e.d.Start(e.ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return e
}

// bareEnv returns an env whose Dispatcher is made but not started, for
// tests that set up a crash's leftovers first.
func bareEnv(t testing.TB, tg redistest.Target, cfg Config, mods ...func(*lifecycle.Config)) *env {
	t.Helper()
	e := &env{
		t:     t,
		ctx:   t.Context(),
		tg:    tg,
		rdb:   tg.Client,
		keys:  keyspace.New(tg.Namespace),
		clock: clocktest.New(time.Now()),
		insp:  asynq.NewInspectorFromRedisClient(tg.Client),
	}
	lc := lifecycle.Config{Namespace: tg.Namespace, Now: e.clock.Now}
	for _, m := range mods {
		m(&lc)
	}
	e.svc = lifecycle.New(tg.Client, lc)
	e.d = e.dispatcher(cfg)
	return e
}

// dispatcher makes a Dispatcher (a replica) on e's Redis, with its own
// clients, shut down and closed when the test ends. It is not started.
func (e *env) dispatcher(cfg Config) *Dispatcher {
	e.t.Helper()
	conn, err := redisconn.Parse(e.tg.URL, redisconn.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	rdb := conn.Client(redisconn.Pool{Name: "dispatcher-test", Size: 48})
	queue := conn.Client(redisconn.Pool{Name: "dispatcher-test-queue", Size: 16})
	e.t.Cleanup(func() { _ = rdb.Close(); _ = queue.Close() })
	cfg.Namespace = e.tg.Namespace
	cfg.QueueRedis = queue
	d, err := New(rdb, e.svc, cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
	})
	return d
}

// start makes and starts another Dispatcher on e's Redis.
func (e *env) start(cfg Config) *Dispatcher {
	e.t.Helper()
	d := e.dispatcher(cfg)
	if err := d.Start(e.ctx); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	return d
}

// create makes a session and returns its id.
func (e *env) create(ref string) string {
	e.t.Helper()
	c, err := e.svc.Create(e.ctx, lifecycle.CreateRequest{RefID: ref})
	if err != nil {
		e.t.Fatalf("Create(%q): %v", ref, err)
	}
	return c.ID
}

// shard is the shard of a session.
func (e *env) shard(sessionID string) keyspace.Shard {
	e.t.Helper()
	sh, ok := lifecycle.ShardOfSession(sessionID)
	if !ok {
		e.t.Fatalf("session id %q names no shard", sessionID)
	}
	return sh
}

// events returns the session's outbox entries, oldest first.
func (e *env) events(sessionID string) []*lifecycle.Event {
	e.t.Helper()
	sh := e.shard(sessionID)
	msgs, err := e.rdb.XRange(e.ctx, e.keys.Outbox(sh), "-", "+").Result()
	if err != nil {
		e.t.Fatalf("read outbox: %v", err)
	}
	var out []*lifecycle.Event
	for _, m := range msgs {
		ev, err := lifecycle.ParseEvent(sh, m)
		if err != nil {
			e.t.Fatalf("parse outbox entry: %v", err)
		}
		if ev.SessionID == sessionID {
			out = append(out, ev)
		}
	}
	return out
}

// event returns the session's event of type typ.
func (e *env) event(sessionID, typ string) *lifecycle.Event {
	e.t.Helper()
	for _, ev := range e.events(sessionID) {
		if ev.Type == typ {
			return ev
		}
	}
	e.t.Fatalf("session %s has no %s event", sessionID, typ)
	return nil
}

// body is an event's webhook body as the lifecycle puts it together.
func (e *env) body(ev *lifecycle.Event) []byte {
	e.t.Helper()
	data, full, err := e.svc.EventDetails(e.ctx, []*lifecycle.Event{ev})
	if err != nil || !full[0] {
		e.t.Fatalf("EventDetails(%s) = full %v, %v", ev.ID, full, err)
	}
	b, err := ev.WebhookBody(data[0])
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// deliveries returns a session's deliveries.
func (e *env) deliveries(sessionID string) []Delivery {
	e.t.Helper()
	ds, err := e.d.Deliveries(e.ctx, sessionID)
	if err != nil {
		e.t.Fatalf("Deliveries: %v", err)
	}
	return ds
}

// delivery returns one delivery of a session; ok is false while there is
// none with that id.
func (e *env) delivery(sessionID, id string) (Delivery, bool) {
	e.t.Helper()
	for _, d := range e.deliveries(sessionID) {
		if d.ID == id {
			return d, true
		}
	}
	return Delivery{}, false
}

// waitStatus waits until a delivery has status and at least n attempts,
// and returns it.
func (e *env) waitStatus(sessionID, id, status string, n int) Delivery {
	e.t.Helper()
	var d Delivery
	waitFor(e.t, 10*time.Second, fmt.Sprintf("delivery %s %s with %d attempts", id, status, n), func() bool {
		var ok bool
		d, ok = e.delivery(sessionID, id)
		return ok && d.Status == status && len(d.Attempts) >= n
	})
	return d
}

// queue is the webhook queue of a session's deliveries.
func (e *env) queue(sessionID string) string {
	return keyspace.WebhookQueue(e.keys.WebhookQueues(), e.shard(sessionID))
}

// task returns a delivery task's state in its queue.
func (e *env) task(sessionID, taskID string) (*asynq.TaskInfo, error) {
	return e.insp.GetTaskInfo(e.queue(sessionID), taskID)
}

// taskGone reports whether a task is in none of the webhook queues.
func (e *env) taskGone(taskID string) bool {
	e.t.Helper()
	for _, q := range e.keys.WebhookQueues() {
		_, err := e.insp.GetTaskInfo(q, taskID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		case err != nil:
			e.t.Fatalf("GetTaskInfo(%s, %s): %v", q, taskID, err)
		default:
			return false
		}
	}
	return true
}

// asynqKeys lists every key of the webhook queues: none exists until a
// task is made.
func (e *env) asynqKeys() []string {
	e.t.Helper()
	var out []string
	for _, q := range e.keys.WebhookQueues() {
		ks, err := redistest.Keys(e.ctx, e.rdb, "asynq:{"+q+"}:*")
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ks...)
	}
	return out
}

// pending is the number of a shard's outbox entries read but not
// acknowledged.
func (e *env) pending(sh keyspace.Shard) int64 {
	e.t.Helper()
	p, err := e.rdb.XPending(e.ctx, e.keys.Outbox(sh), relayGroup).Result()
	if err != nil {
		e.t.Fatalf("XPENDING: %v", err)
	}
	return p.Count
}

// waitRelayed waits until the relay has read and acknowledged every entry
// of a session's shard up to the session's last event.
func (e *env) waitRelayed(sessionID string) {
	e.t.Helper()
	evs := e.events(sessionID)
	last := evs[len(evs)-1].Cursor
	sh := e.shard(sessionID)
	waitFor(e.t, 10*time.Second, "the relay to acknowledge "+last, func() bool {
		gs, err := e.rdb.XInfoGroups(e.ctx, e.keys.Outbox(sh)).Result()
		if err != nil || len(gs) != 1 {
			return false
		}
		return !streamIDLess(gs[0].LastDeliveredID, last) && e.pending(sh) == 0
	})
}

// streamIDLess compares two stream ids, "ms-seq".
func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ami, _ := strconv.ParseUint(am, 10, 64)
	bmi, _ := strconv.ParseUint(bm, 10, 64)
	asi, _ := strconv.ParseUint(as, 10, 64)
	bsi, _ := strconv.ParseUint(bs, 10, 64)
	return ami < bmi || ami == bmi && asi < bsi
}

// waitFor polls cond until it holds or the deadline passes: for state in
// Redis, which sends no signal.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receipt is one request a receiver got, checked with the test's own
// signature code (not the signing package).
type receipt struct {
	at         time.Time
	path       string
	header     http.Header
	body       []byte
	id         string
	attempt    int
	v1Valid    int  // v1 entries that verify with one of the receiver's secrets
	v1Entries  int  // v1 entries in webhook-signature
	v1aValid   bool // a v1a entry verifies with the receiver's public key
	hmacValid  bool // X-HMAC-SIGNATURE verifies with the first secret
	answerCode int  // 0 until answered
}

// receiver is a webhook endpoint for tests. answer decides each response
// from the request and how many requests with the same webhook-id came
// before (0 on the first). Waiting on it waits for its signal, not a poll.
type receiver struct {
	t       testing.TB
	srv     *httptest.Server
	secrets [][]byte
	public  ed25519.PublicKey

	mu      sync.Mutex
	got     []*receipt
	answer  func(w http.ResponseWriter, r *http.Request, seen int) int
	changed chan struct{} // closed and replaced at each request and answer
}

// newReceiver starts a receiver that verifies with the given whsec_
// secrets and answers 204 unless told otherwise.
func newReceiver(t testing.TB, secrets ...string) *receiver {
	t.Helper()
	rv := &receiver{t: t, changed: make(chan struct{})}
	for _, s := range secrets {
		b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			t.Fatalf("test secret: %v", err)
		}
		rv.secrets = append(rv.secrets, b)
	}
	rv.srv = httptest.NewServer(http.HandlerFunc(rv.serve))
	t.Cleanup(rv.srv.Close)
	return rv
}

// holdingReceiver is a receiver that holds every request until release
// is called (or the test ends), then answers 204.
func holdingReceiver(t testing.TB, secrets ...string) (rv *receiver, release func()) {
	t.Helper()
	rv = newReceiver(t, secrets...)
	released, release := releaser(t)
	rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
		if !held(r, released) {
			return 0
		}
		return answerCode(w, http.StatusNoContent)
	})
	return rv, release
}

// releaser returns a channel that release closes, at the latest when the
// test ends (release may be called more than once).
func releaser(t testing.TB) (released <-chan struct{}, release func()) {
	c := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(c) }) }
	t.Cleanup(release)
	return c, release
}

// held holds a request until release is closed, and reports false if the
// client gave up first.
func held(r *http.Request, release <-chan struct{}) bool {
	select {
	case <-r.Context().Done():
		return false
	case <-release:
		return true
	}
}

func (rv *receiver) url() string { return rv.srv.URL + "/hook" }

// lastAnswered reports whether the last request for each of the events
// was answered code.
func (rv *receiver) lastAnswered(eventIDs []string, code int) bool {
	for _, id := range eventIDs {
		got := rv.byID(id)
		if len(got) == 0 || got[len(got)-1].answerCode != code {
			return false
		}
	}
	return true
}

// setAnswer replaces the receiver's behaviour.
func (rv *receiver) setAnswer(f func(w http.ResponseWriter, r *http.Request, seen int) int) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.answer = f
}

// signal wakes the waiters; rv.mu is held.
func (rv *receiver) signal() {
	close(rv.changed)
	rv.changed = make(chan struct{})
}

func (rv *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body)) // for answer
	rc := &receipt{at: time.Now(), path: r.URL.Path, header: r.Header.Clone(), body: body, id: r.Header.Get("webhook-id")}
	rc.attempt, _ = strconv.Atoi(r.Header.Get("webhook-attempt"))
	ts := r.Header.Get("webhook-timestamp")
	signed := rc.id + "." + ts + "." + string(body)
	for _, entry := range strings.Fields(r.Header.Get("webhook-signature")) {
		version, sig, _ := strings.Cut(entry, ",")
		switch version {
		case "v1":
			rc.v1Entries++
			for _, s := range rv.secrets {
				if ownHMACBase64(s, signed) == sig {
					rc.v1Valid++
				}
			}
		case "v1a":
			raw, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && rv.public != nil && ed25519.Verify(rv.public, []byte(signed), raw) {
				rc.v1aValid = true
			}
		}
	}
	if len(rv.secrets) > 0 {
		m := hmac.New(sha256.New, rv.secrets[0])
		m.Write(body)
		rc.hmacValid = hex.EncodeToString(m.Sum(nil)) == r.Header.Get("X-HMAC-SIGNATURE")
	}
	rv.mu.Lock()
	seen := 0
	for _, g := range rv.got {
		if g.id == rc.id && g.path == rc.path {
			seen++
		}
	}
	rv.got = append(rv.got, rc)
	answer := rv.answer
	rv.signal()
	rv.mu.Unlock()
	code := http.StatusNoContent
	if answer != nil {
		code = answer(w, r, seen)
	} else {
		w.WriteHeader(code)
	}
	rv.mu.Lock()
	rc.answerCode = code
	rv.signal()
	rv.mu.Unlock()
}

// receipts returns copies of what the receiver got so far (serve still
// writes a receipt's answerCode once the answer is sent).
func (rv *receiver) receipts() []*receipt {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	out := make([]*receipt, len(rv.got))
	for i, r := range rv.got {
		c := *r
		out[i] = &c
	}
	return out
}

// byID returns the receipts with a webhook-id, in arrival order.
func (rv *receiver) byID(id string) []*receipt {
	var out []*receipt
	for _, r := range rv.receipts() {
		if r.id == id {
			out = append(out, r)
		}
	}
	return out
}

// waitUntil waits until cond holds over the receipts, re-checking at each
// request and answer.
func (rv *receiver) waitUntil(limit time.Duration, what string, cond func() bool) {
	rv.t.Helper()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		rv.mu.Lock()
		ch := rv.changed
		rv.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timeout.C:
			rv.t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
	}
}

// waitN waits until the receiver got n requests with webhook-id id.
func (rv *receiver) waitN(id string, n int, limit time.Duration) []*receipt {
	rv.t.Helper()
	rv.waitUntil(limit, fmt.Sprintf("%d requests for %s", n, id), func() bool { return len(rv.byID(id)) >= n })
	return rv.byID(id)
}

// ownHMACBase64 is the test's own Standard Webhooks v1 computation.
func ownHMACBase64(key []byte, content string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(content))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// endpoint returns an Endpoint for the receiver, with testSecret unless
// told otherwise.
func (rv *receiver) endpoint(id string, secrets ...string) Endpoint {
	if len(secrets) == 0 {
		secrets = []string{testSecret}
	}
	return Endpoint{ID: id, URL: rv.url(), Secrets: secrets}
}

// answerCode answers code with an empty body.
func answerCode(w http.ResponseWriter, code int) int {
	w.WriteHeader(code)
	return code
}

// answerJSON answers code with a JSON body.
func answerJSON(w http.ResponseWriter, code int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
	return code
}

// createAndTime creates n sessions and waits up to limit each for their
// session.created webhook at rv; it returns the events' ids and the
// longest time from a create to its webhook.
func (e *env) createAndTime(rv *receiver, n int, limit time.Duration) (eventIDs []string, worst time.Duration) {
	e.t.Helper()
	start := make(map[string]time.Time, n)
	for i := range n {
		t0 := time.Now()
		ev := e.events(e.create(fmt.Sprintf("user-%d", i)))[0]
		start[ev.ID] = t0
		eventIDs = append(eventIDs, ev.ID)
	}
	for _, id := range eventIDs {
		r := rv.waitN(id, 1, limit)[0]
		worst = max(worst, r.at.Sub(start[id]))
	}
	return eventIDs, worst
}
