package dispatcher

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// Test keys. testSecret and testSecret2 are whsec_ secrets of 32 bytes;
// testPrivate is a whsk_ ed25519 key from a fixed seed, testPublic its whpk_.
var (
	testSecret  = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testSecret2 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	testSeed    = []byte("seed-seed-seed-seed-seed-seed-32")
	testPrivate = "whsk_" + base64.StdEncoding.EncodeToString(testSeed)
	testPublic  = "whpk_" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(testSeed).Public().(ed25519.PublicKey))
)

const testAPIKey = "integrator-key"

// loopback lets tests deliver to httptest servers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// env is one test's world: its own redis-server, a lifecycle Service and a
// Dispatcher over it.
type env struct {
	t   testing.TB
	ctx context.Context
	srv *redistest.Server
	rdb *redis.Client
	svc *lifecycle.Service
	d   *Dispatcher
}

// testConfig is a Config with fast test timings; endpoints are added by
// the test.
func testConfig(eps ...Endpoint) Config {
	return Config{
		Endpoints:                eps,
		APIKey:                   testAPIKey,
		Timeout:                  2 * time.Second,
		RetrySchedule:            []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond},
		AllowNetworks:            loopback,
		Concurrency:              16,
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		ClaimIdle:                200 * time.Millisecond,
	}
}

// newEnv starts redis-server, a Service and a started Dispatcher with cfg.
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	srv := redistest.Start(t)
	e := &env{t: t, ctx: t.Context(), srv: srv, rdb: srv.Client()}
	e.svc = lifecycle.New(e.rdb, lifecycle.Config{})
	e.d = e.start(cfg)
	return e
}

// start makes and starts another Dispatcher on e's Redis (a replica), shut
// down when the test ends.
func (e *env) start(cfg Config) *Dispatcher {
	e.t.Helper()
	d, err := New(e.rdb, cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	if err := d.Start(e.ctx); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
	})
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

// events returns the outbox's events of a session, oldest first.
func (e *env) events(sessionID string) []*lifecycle.Event {
	e.t.Helper()
	msgs, err := e.rdb.XRange(e.ctx, lifecycle.OutboxKey, "-", "+").Result()
	if err != nil {
		e.t.Fatalf("read outbox: %v", err)
	}
	var out []*lifecycle.Event
	for _, m := range msgs {
		ev, err := lifecycle.ParseEvent(m)
		if err != nil {
			e.t.Fatalf("parse outbox entry: %v", err)
		}
		if ev.SessionID == sessionID {
			out = append(out, ev)
		}
	}
	return out
}

// deliveries reads a session's deliveries from the store.
func (e *env) deliveries(sessionID string) []Delivery {
	e.t.Helper()
	ds, err := e.d.store.list(e.ctx, sessionID)
	if err != nil {
		e.t.Fatalf("list deliveries: %v", err)
	}
	return ds
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
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
	answerCode int
}

// receiver is a webhook endpoint for tests. answer decides each response
// from the receipt and how many requests with the same webhook-id came
// before (0 on the first).
type receiver struct {
	t       testing.TB
	srv     *httptest.Server
	secrets [][]byte
	public  ed25519.PublicKey

	mu     sync.Mutex
	got    []*receipt
	answer func(w http.ResponseWriter, r *http.Request, rc *receipt, seen int) int
}

// newReceiver starts a receiver that verifies with the given whsec_
// secrets and answers 204 unless told otherwise.
func newReceiver(t testing.TB, secrets ...string) *receiver {
	t.Helper()
	rv := &receiver{t: t}
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

func (rv *receiver) url() string { return rv.srv.URL + "/hook" }

// setAnswer replaces the receiver's behaviour.
func (rv *receiver) setAnswer(f func(w http.ResponseWriter, r *http.Request, rc *receipt, seen int) int) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	rv.answer = f
}

func (rv *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc := &receipt{at: time.Now(), path: r.URL.Path, header: r.Header.Clone(), body: body, id: r.Header.Get("webhook-id")}
	rc.attempt, _ = strconv.Atoi(r.Header.Get("webhook-attempt"))
	ts := r.Header.Get("webhook-timestamp")
	for _, entry := range strings.Fields(r.Header.Get("webhook-signature")) {
		version, sig, _ := strings.Cut(entry, ",")
		switch version {
		case "v1":
			rc.v1Entries++
			for _, s := range rv.secrets {
				if ownHMACBase64(s, rc.id+"."+ts+"."+string(body)) == sig {
					rc.v1Valid++
				}
			}
		case "v1a":
			raw, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && rv.public != nil && ed25519.Verify(rv.public, []byte(rc.id+"."+ts+"."+string(body)), raw) {
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
	rv.mu.Unlock()
	code := http.StatusNoContent
	if answer != nil {
		code = answer(w, r, rc, seen)
	} else {
		w.WriteHeader(code)
	}
	rv.mu.Lock()
	rc.answerCode = code
	rv.mu.Unlock()
}

// receipts returns what the receiver got so far.
func (rv *receiver) receipts() []*receipt {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	return append([]*receipt(nil), rv.got...)
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

// waitN waits until the receiver got n requests with webhook-id id.
func (rv *receiver) waitN(id string, n int, limit time.Duration) []*receipt {
	rv.t.Helper()
	waitFor(rv.t, limit, fmt.Sprintf("%d requests for %s", n, id), func() bool { return len(rv.byID(id)) >= n })
	return rv.byID(id)
}

// ownHMACBase64 is the test's own Standard Webhooks v1 computation.
func ownHMACBase64(key []byte, content string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(content))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// endpoint returns an Endpoint for the receiver.
func (rv *receiver) endpoint(id string, secrets ...string) Endpoint {
	if len(secrets) == 0 {
		secrets = []string{testSecret}
	}
	return Endpoint{ID: id, URL: rv.url(), Secrets: secrets}
}

// answerJSON writes code with a JSON body.
func answerJSON(w http.ResponseWriter, code int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
	return code
}
