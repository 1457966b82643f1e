package adminapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// Test clients: testKey signs with v2 and has two secrets (a rotation);
// otherKey signs with v2; legacyKey with the legacy scheme.
const (
	testKey      = "key-1"
	testSecret   = "secret-1-0123456789"
	testSecret2  = "secret-1-rotated-0123456789"
	otherKey     = "key-2"
	otherSecret  = "secret-2-0123456789"
	legacyKey    = "key-legacy"
	legacySecret = "secret-legacy-0123456789"
	testMaxBody  = 4096
)

// testStart is where every test clock starts: well before the wall clock,
// so that a TTL set as an absolute instant would show.
var testStart = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// env is one test's world: a redis-server, the lifecycle, a dispatcher
// (not started: it only reads deliveries) and the admin port over HTTP.
type env struct {
	t      testing.TB
	ctx    context.Context
	rdb    redis.UniversalClient
	tg     redistest.Target
	clock  *clocktest.Clock
	svc    *lifecycle.Service
	api    *API
	url    string
	client *http.Client
	nonces atomic.Int64
}

// setup is what newEnv builds; options change it.
type setup struct {
	api       Config
	disp      dispatcher.Config
	startDisp bool // start the dispatcher (it delivers)
}

type option func(*setup)

// apiConfig changes the admin port's configuration.
func apiConfig(f func(*Config)) option { return func(s *setup) { f(&s.api) } }

// withOperators mounts stand-ins for the operators' routes outside /v1.
func withOperators(s *setup) {
	s.api.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "# metrics\n") })
	s.api.UI = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html></html>") })
	s.api.Ready = func(context.Context) error { return nil }
}

// withEndpoint starts the dispatcher with one endpoint at url.
func withEndpoint(url string) option {
	return func(s *setup) {
		s.startDisp = true
		s.disp.Endpoints = []dispatcher.Endpoint{{ID: "default", URL: url, Secrets: []string{testWebhookSecret}}}
		s.disp.AllowNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
}

// testWebhookSecret signs the test endpoint's webhooks.
const testWebhookSecret = "whsec_b3BlbmFwaS10ZXN0LXdlYmhvb2sta2V5LTEyMzQ="

func newEnv(t testing.TB, opts ...option) *env {
	t.Helper()
	return newEnvOn(t, redistest.Open(t, "single"), opts...)
}

// forEachTopology runs f on a fresh env on every topology.
func forEachTopology(t *testing.T, f func(t *testing.T, e *env), opts ...option) {
	t.Helper()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) { f(t, newEnvOn(t, tg, opts...)) })
}

// newEnvOn returns an env on tg.
func newEnvOn(t testing.TB, tg redistest.Target, opts ...option) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), rdb: tg.Client, tg: tg, clock: clocktest.New(testStart)}
	e.svc = lifecycle.New(e.rdb, lifecycle.Config{Now: e.clock.Now, SessionTTL: time.Hour, TokenTTL: 10 * time.Minute, Namespace: tg.Namespace})
	var st setup
	st.api = Config{
		Clients: []Client{
			{Key: testKey, Secrets: []string{testSecret, testSecret2}},
			{Key: otherKey, Secrets: []string{otherSecret}},
			{Key: legacyKey, Secrets: []string{legacySecret}, Scheme: SchemeLegacy},
		},
		DeleteLimit:  []RateWindow{{Limit: 1000, Window: time.Hour}},
		MaxBodyBytes: testMaxBody,
		Namespace:    tg.Namespace,
		Now:          e.clock.Now,
	}
	st.disp.Now, st.disp.Namespace = e.clock.Now, tg.Namespace
	for _, o := range opts {
		o(&st)
	}
	disp, err := dispatcher.New(e.rdb, e.svc, st.disp)
	if err != nil {
		t.Fatal(err)
	}
	if st.startDisp {
		if err := disp.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = disp.Shutdown(context.Background()) })
	e.api, err = New(st.api, e.svc, disp, e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(e.api)
	t.Cleanup(hs.Close)
	e.url, e.client = hs.URL, hs.Client()
	return e
}

// with returns a copy of e that reports to t (a subtest).
func (e *env) with(t testing.TB) *env {
	c := &env{t: t, ctx: t.Context(), rdb: e.rdb, tg: e.tg, clock: e.clock, svc: e.svc, api: e.api, url: e.url, client: e.client}
	c.nonces.Store(e.nonces.Add(1_000_000))
	return c
}

// oracleV2 is the contract's v2 signature, computed here without the
// signing package.
func oracleV2(secret, method, target string, body []byte, ts int64, nonce string) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "v2\n%d\n%s\n%s\n%s\n%x", ts, nonce, method, target, sum)
	return "v2=" + hex.EncodeToString(m.Sum(nil))
}

// oracleLegacy is the legacy X-HMAC-SIGNATURE: lowercase hex HMAC of msg.
func oracleLegacy(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// signed describes how a request is signed; reqOpts change it.
type signed struct {
	key, secret string
	legacy      bool
	legacyMsg   *string // legacy: sign this instead of the contract's part
	ts          int64
	nonce       string
	sigOver     func(s *signed, method, target string, body []byte) string // v2: sign something else
}

type reqOpt func(*signed, *http.Request)

// as signs with another client's credentials (v2).
func as(key, secret string) reqOpt {
	return func(s *signed, _ *http.Request) { s.key, s.secret = key, secret }
}

// legacy signs with the legacy scheme as legacyKey.
func legacy() reqOpt {
	return func(s *signed, _ *http.Request) { s.key, s.secret, s.legacy = legacyKey, legacySecret, true }
}

// legacyOver signs msg with the legacy scheme as legacyKey.
func legacyOver(msg string) reqOpt {
	return func(s *signed, r *http.Request) { legacy()(s, r); s.legacyMsg = &msg }
}

// at signs with timestamp ts.
func at(ts time.Time) reqOpt { return func(s *signed, _ *http.Request) { s.ts = ts.Unix() } }

// nonce signs with nonce n.
func nonce(n string) reqOpt { return func(s *signed, _ *http.Request) { s.nonce = n } }

// signedAs signs another method, target or body than the one sent.
func signedAs(method, target, body string) reqOpt {
	return func(s *signed, _ *http.Request) {
		s.sigOver = func(s *signed, _, _ string, _ []byte) string {
			return oracleV2(s.secret, method, target, []byte(body), s.ts, s.nonce)
		}
	}
}

// header sets a header after signing ("" deletes it).
func header(k, v string) reqOpt {
	return func(_ *signed, r *http.Request) {
		if r == nil {
			return // before signing
		}
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// build makes a request signed as testKey with v2 (opts may change that).
func (e *env) build(method, target, body string, opts ...reqOpt) *http.Request {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.url+target, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	s := &signed{key: testKey, secret: testSecret, ts: e.clock.Now().Unix(), nonce: fmt.Sprintf("nonce-%016d", e.nonces.Add(1))}
	var after []reqOpt
	for _, o := range opts {
		o(s, nil)
		after = append(after, o)
	}
	req.Header.Set("X-AUTH-CLIENT", s.key)
	if s.legacy {
		msg := legacyPart(target, body)
		if s.legacyMsg != nil {
			msg = *s.legacyMsg
		}
		req.Header.Set("X-HMAC-SIGNATURE", oracleLegacy(s.secret, msg))
	} else {
		sig := oracleV2(s.secret, method, target, []byte(body), s.ts, s.nonce)
		if s.sigOver != nil {
			sig = s.sigOver(s, method, target, []byte(body))
		}
		req.Header.Set("X-TIMESTAMP", strconv.FormatInt(s.ts, 10))
		req.Header.Set("X-NONCE", s.nonce)
		req.Header.Set("X-HMAC-SIGNATURE", sig)
	}
	for _, o := range after {
		o(s, req)
	}
	return req
}

// legacyPart is what the legacy scheme signs: the body when there is
// one, else the {id} of /v1/<collection>/{id}..., else the raw query.
func legacyPart(target, body string) string {
	if body != "" {
		return body
	}
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	if parts := strings.Split(u.Path, "/"); len(parts) >= 4 && parts[1] == "v1" {
		return parts[3]
	}
	return u.RawQuery
}

// do sends a request signed as testKey; opts may change anything.
func (e *env) do(method, target, body string, opts ...reqOpt) response {
	e.t.Helper()
	return e.send(e.build(method, target, body, opts...))
}

// resend sends a copy of req, body included: a captured request replayed.
func (e *env) resend(req *http.Request) response {
	e.t.Helper()
	c := req.Clone(e.ctx)
	if req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			e.t.Fatal(err)
		}
		c.Body = b
	}
	return e.send(c)
}

func (e *env) send(req *http.Request) response {
	e.t.Helper()
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// ok checks the status and decodes the JSON body into a map.
func (r response) ok(t testing.TB, status int) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return m
}

// fail checks an error response: the status and exactly the contract's
// body {"status":"fail","code":N,"message":"..."}; it returns the message.
func (r response) fail(t testing.TB, status, code int) string {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d; body %s", r.status, status, r.body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"code", "message", "status"}) {
		t.Errorf("error body %s has fields %v, want exactly code, message, status", r.body, keys)
	}
	var b errorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	if b.Status != "fail" || b.Code != code || b.Message == "" {
		t.Errorf("error body %s, want status fail, code %d and a message", r.body, code)
	}
	return b.Message
}

// create makes a session through the lifecycle (not the API).
func (e *env) create(ref string) *lifecycle.Created {
	e.t.Helper()
	c, err := e.svc.Create(e.ctx, lifecycle.CreateRequest{RefID: ref})
	if err != nil {
		e.t.Fatalf("Create(%q): %v", ref, err)
	}
	return c
}

// get reads a session through the lifecycle.
func (e *env) get(id string) *lifecycle.Session {
	e.t.Helper()
	s, err := e.svc.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

// snapshot is every key but the nonces with its DUMP value.
func (e *env) snapshot() map[string]string {
	e.t.Helper()
	snap, err := redistest.Snapshot(e.ctx, e.rdb, e.prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	for k := range snap {
		if strings.Contains(k, ":nonce:") {
			delete(snap, k)
		}
	}
	return snap
}

// contents is every key and value of Redis as text.
func (e *env) contents() string {
	e.t.Helper()
	s, err := redistest.Contents(e.ctx, e.rdb, e.prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// keys lists the keys matching pattern.
func (e *env) keys(pattern string) []string {
	e.t.Helper()
	ks, err := redistest.Keys(e.ctx, e.rdb, e.prefix()+pattern)
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

// assertSameSnapshot fails when before and after differ, naming the keys.
func assertSameSnapshot(t testing.TB, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if w, ok := after[k]; !ok {
			t.Errorf("key %s disappeared", k)
		} else if w != v {
			t.Errorf("key %s changed", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("key %s appeared", k)
		}
	}
}

// listByRef selects a ref_id's sessions.
func listByRef(ref string) lifecycle.ListQuery { return lifecycle.ListQuery{RefID: ref} }

// call makes a signed request with body encoded as JSON (nil: none) and
// returns the status and the body.
func (e *env) call(method, path, _ string, body any) (int, []byte) {
	e.t.Helper()
	var raw string
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		raw = string(b)
	}
	r := e.do(method, path, raw)
	return r.status, r.body
}

// getPath makes an unauthenticated GET.
func (e *env) getPath(path string) (int, []byte) {
	e.t.Helper()
	r := e.send(mustRequest(e.t, http.MethodGet, e.url+path))
	return r.status, r.body
}

// prefix starts every key of the env's namespace.
func (e *env) prefix() string { return keyspace.New(e.tg.Namespace).Prefix() }
