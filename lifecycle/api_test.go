package lifecycle

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testKey     = "key-1"
	testSecret  = "secret-1"
	otherKey    = "key-2"
	otherSecret = "secret-2"
	testMaxBody = 4096
)

// apiEnv is an env with the admin API served over HTTP.
type apiEnv struct {
	*env
	url    string
	client *http.Client
}

func newAPIEnv(t testing.TB, mods ...func(*APIConfig)) *apiEnv {
	t.Helper()
	e := newEnv(t)
	cfg := APIConfig{
		Clients:      map[string]string{testKey: testSecret, otherKey: otherSecret},
		DeleteLimit:  []RateWindow{{Limit: 1000, Window: time.Hour}},
		MaxBodyBytes: testMaxBody,
	}
	for _, m := range mods {
		m(&cfg)
	}
	srv := httptest.NewServer(NewAPI(e.svc, cfg))
	t.Cleanup(srv.Close)
	return &apiEnv{env: e, url: srv.URL, client: srv.Client()}
}

// hexHMAC is the contract's X-HMAC-SIGNATURE, computed here without the
// signing package.
func hexHMAC(secret, msg string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(msg))
	return hex.EncodeToString(mac.Sum(nil))
}

// signedPart is what the contract signs: the body when there is one, else
// the {id} of /v1/sessions/{id}..., else the raw query.
func signedPart(target, body string) string {
	if body != "" {
		return body
	}
	u, err := url.Parse(target)
	if err != nil {
		panic(err)
	}
	if parts := strings.Split(u.Path, "/"); len(parts) >= 4 && parts[1] == "v1" && parts[2] == "sessions" {
		return parts[3]
	}
	return u.RawQuery
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// reqOpt adjusts a request after it is signed.
type reqOpt func(*http.Request)

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func as(key, secret string) reqOpt {
	return func(r *http.Request) {
		r.Header.Set("X-AUTH-CLIENT", key)
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.Header.Set("X-HMAC-SIGNATURE", hexHMAC(secret, signedPart(r.URL.String(), string(body))))
	}
}

func signedOver(msg string) reqOpt {
	return func(r *http.Request) { r.Header.Set("X-HMAC-SIGNATURE", hexHMAC(testSecret, msg)) }
}

// do sends a request signed as testKey; opts may change anything after.
func (a *apiEnv) do(method, target, body string, opts ...reqOpt) response {
	a.t.Helper()
	req, err := http.NewRequestWithContext(a.ctx, method, a.url+target, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("X-AUTH-CLIENT", testKey)
	req.Header.Set("X-HMAC-SIGNATURE", hexHMAC(testSecret, signedPart(target, body)))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	res, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
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
// body {"status":"fail","code":N,"message":"..."}.
func (r response) fail(t testing.TB, status, code int) string {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d; body %s", r.status, status, r.body)
	}
	checkErrorBody(t, r.body, code)
	var b errorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Message
}

func checkErrorBody(t testing.TB, body []byte, code int) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, []string{"code", "message", "status"}) {
		t.Errorf("error body %s has fields %v, want exactly code, message, status", body, keys)
	}
	var b struct {
		Status  string `json:"status"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if b.Status != "fail" || b.Code != code || b.Message == "" {
		t.Errorf("error body %s, want status fail, code %d and a message", body, code)
	}
}

var timeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func checkTimes(t testing.TB, m map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if s, _ := m[f].(string); !timeRE.MatchString(s) {
			t.Errorf("%s = %v, want RFC 3339 UTC with milliseconds", f, m[f])
		}
	}
}

// TestAPIEndpoints walks every session endpoint's success.
func TestAPIEndpoints(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t)

	m := a.do("POST", "/v1/sessions", `{"ref_id":"r1","flow_id":"f","person":{"name":"A"},"metadata":{"m":1}}`).ok(t, 201)
	id, _ := m["id"].(string)
	token, _ := m["token"].(string)
	if m["status"] != "created" || m["ref_id"] != "r1" || token == "" || len(id) != 36 {
		t.Fatalf("create: %v", m)
	}
	checkTimes(t, m, "created_at", "updated_at", "expires_at", "token_expires_at")

	m = a.do("POST", "/v1/sessions", `{"ref_id":"r1"}`).ok(t, 200)
	if m["id"] != id || m["token"] == token || m["token"] == "" {
		t.Errorf("second create: %v", m)
	}

	r := a.do("GET", "/v1/sessions/"+id, "")
	m = r.ok(t, 200)
	if _, has := m["token"]; has || bytes.Contains(r.body, []byte("vst_")) {
		t.Errorf("get shows a token: %s", r.body)
	}
	if m["id"] != id || m["person"].(map[string]any)["name"] != "A" {
		t.Errorf("get: %v", m)
	}

	m = a.do("GET", "/v1/sessions?ref_id=r1&status=created&limit=5", "").ok(t, 200)
	if ss, _ := m["sessions"].([]any); len(ss) != 1 || m["next_cursor"] != nil {
		t.Errorf("list: %v", m)
	}

	m = a.do("PATCH", "/v1/sessions/"+id, `{"tags":["a","b"],"metadata":{"m":2}}`).ok(t, 200)
	if tags, _ := m["tags"].([]any); len(tags) != 2 || m["metadata"].(map[string]any)["m"] != 2.0 {
		t.Errorf("patch: %v", m)
	}
	if m = a.do("POST", "/v1/sessions/"+id+"/status", `{"status":"started"}`).ok(t, 200); m["status"] != "started" {
		t.Errorf("status: %v", m)
	}
	if m = a.do("POST", "/v1/sessions/"+id+"/expire", "").ok(t, 200); m["status"] != "abandoned" {
		t.Errorf("expire: %v", m)
	}
	m = a.do("POST", "/v1/sessions/"+id+"/resume", "").ok(t, 200)
	if m["status"] != "started" || m["token"] == "" || m["token"] == nil {
		t.Errorf("resume: %v", m)
	}
	checkTimes(t, m, "expires_at", "token_expires_at")
	a.do("POST", "/v1/sessions/"+id+"/status", `{"status":"submitted"}`).ok(t, 200)
	m = a.do("POST", "/v1/sessions/"+id+"/decision", `{"status":"approved","reason":"fine","reason_code":9001}`).ok(t, 200)
	dec, _ := m["decision"].(map[string]any)
	if m["status"] != "approved" || dec["status"] != "approved" || dec["reason"] != "fine" || dec["reason_code"] != 9001.0 {
		t.Errorf("decision: %v", m)
	}
	checkTimes(t, dec, "decided_at")
	m = a.do("POST", "/v1/sessions/"+id+"/redact", "").ok(t, 200)
	if _, has := m["person"]; has || m["redacted_at"] == nil {
		t.Errorf("redact: %v", m)
	}
	m = a.do("DELETE", "/v1/sessions/"+id, "").ok(t, 200)
	if m["status"] != "success" || m["id"] != id {
		t.Errorf("delete: %v", m)
	}
	a.do("GET", "/v1/sessions/"+id, "").fail(t, 404, CodeNotFound)

	other := a.do("POST", "/v1/sessions", `{"ref_id":"r2"}`).ok(t, 201)["id"].(string)
	if m = a.do("POST", "/v1/sessions/"+other+"/cancel", "").ok(t, 200); m["status"] != "canceled" {
		t.Errorf("cancel: %v", m)
	}

	m = a.do("GET", "/v1/events?limit=3", "").ok(t, 200)
	evs, _ := m["events"].([]any)
	if len(evs) != 3 {
		t.Fatalf("events: %v", m)
	}
	first := evs[0].(map[string]any)
	if first["type"] != "session.created" || first["data"].(map[string]any)["sequence"] != 1.0 {
		t.Errorf("first event: %v", first)
	}
	var types []string
	after := m["next_cursor"].(string)
	for _, ev := range evs {
		types = append(types, ev.(map[string]any)["type"].(string))
	}
	for {
		m = a.do("GET", "/v1/events?after="+url.QueryEscape(after), "").ok(t, 200)
		evs, _ = m["events"].([]any)
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			types = append(types, ev.(map[string]any)["type"].(string))
		}
		after = m["next_cursor"].(string)
	}
	want := []string{"session.created", "session.started", "session.abandoned", "session.resumed", "session.submitted",
		"session.approved", "session.redacted", "session.deleted", "session.created", "session.canceled"}
	if !slices.Equal(types, want) {
		t.Errorf("events feed %v, want %v", types, want)
	}
}

// badStatusSession stores a session whose status is outside the model, as
// a record from a newer or broken writer would be: only 1305 fits it.
func (a *apiEnv) badStatusSession() string {
	a.t.Helper()
	c := a.create("odd")
	rec := a.record(c.ID)
	rec.Status = "inflow_completed"
	b, _ := json.Marshal(rec)
	if err := a.rdb.Set(a.ctx, sessionKey(c.ID), b, time.Hour).Err(); err != nil {
		a.t.Fatal(err)
	}
	return c.ID
}

// TestAPIErrors sends one bad request for every error of the contract and
// checks the status, the code, the body and that Redis did not change.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t)
	created := a.create("created").ID
	submitted := a.create("submitted").ID
	if _, err := a.svc.Progress(a.ctx, submitted, StatusSubmitted); err != nil {
		t.Fatal(err)
	}
	canceled := a.create("canceled").ID
	if _, err := a.svc.Cancel(a.ctx, canceled); err != nil {
		t.Fatal(err)
	}
	expired := a.create("busy").ID
	if _, err := a.svc.Expire(a.ctx, expired); err != nil {
		t.Fatal(err)
	}
	a.create("busy")
	odd := a.badStatusSession()
	unknown := "2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
	big := `{"ref_id":"` + strings.Repeat("x", testMaxBody) + `"}`

	cases := []struct {
		name         string
		method, path string
		body         string
		opts         []reqOpt
		status, code int
		allow        string
		message      string
	}{
		{name: "malformed json", method: "POST", path: "/v1/sessions", body: `{"ref_id":`, status: 400, code: 1001},
		{name: "not an object", method: "POST", path: "/v1/sessions", body: `["ref_id"]`, status: 400, code: 1001},
		{name: "unknown field", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","colour":"red"}`, status: 400, code: 1001},
		{name: "trailing brace", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a"}}`, status: 400, code: 1001},
		{name: "trailing bracket", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a"}]`, status: 400, code: 1001},
		{name: "second object", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a"} {}`, status: 400, code: 1001},
		{name: "no body", method: "POST", path: "/v1/sessions", body: ``, status: 400, code: 1001},
		{name: "missing ref_id", method: "POST", path: "/v1/sessions", body: `{"flow_id":"f"}`, status: 400, code: 1001},
		{name: "ref_id wrong type", method: "POST", path: "/v1/sessions", body: `{"ref_id":5}`, status: 400, code: 1001},
		{name: "ref_id control char", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a\u0007"}`, status: 400, code: 1001},
		{name: "ref_id too long", method: "POST", path: "/v1/sessions", body: `{"ref_id":"` + strings.Repeat("r", 256) + `"}`, status: 400, code: 1001},
		{name: "person not object", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","person":"Ann"}`, status: 400, code: 1001},
		{name: "metadata not object", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","metadata":[1]}`, status: 400, code: 1001},
		{name: "force not bool", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","force_creation":"yes"}`, status: 400, code: 1001},
		{name: "unknown progress status", method: "POST", path: "/v1/sessions/" + created + "/status", body: `{"status":"finished"}`, status: 400, code: 1001},
		{name: "decision as progress", method: "POST", path: "/v1/sessions/" + created + "/status", body: `{"status":"approved"}`, status: 400, code: 1001},
		{name: "progress as decision", method: "POST", path: "/v1/sessions/" + submitted + "/decision", body: `{"status":"review"}`, status: 400, code: 1001},
		{name: "progress without body", method: "POST", path: "/v1/sessions/" + created + "/status", status: 400, code: 1001},
		{name: "empty patch", method: "PATCH", path: "/v1/sessions/" + created, body: `{}`, status: 400, code: 1001},
		{name: "bad tags", method: "PATCH", path: "/v1/sessions/" + created, body: `{"tags":[""]}`, status: 400, code: 1001},
		{name: "list unknown status", method: "GET", path: "/v1/sessions?status=done", status: 400, code: 1001},
		{name: "list limit text", method: "GET", path: "/v1/sessions?limit=ten", status: 400, code: 1001},
		{name: "list limit negative", method: "GET", path: "/v1/sessions?limit=-1", status: 400, code: 1001},
		{name: "list limit too big", method: "GET", path: "/v1/sessions?limit=101", status: 400, code: 1001},
		{name: "list bad cursor", method: "GET", path: "/v1/sessions?cursor=abc", status: 400, code: 1001},
		{name: "events limit too big", method: "GET", path: "/v1/events?limit=1001", status: 400, code: 1001},
		{name: "events bad cursor", method: "GET", path: "/v1/events?after=x", status: 400, code: 1001},
		{name: "wrong method collection", method: "PUT", path: "/v1/sessions", body: `{}`, status: 405, code: 1001, allow: "GET, POST"},
		{name: "wrong method session", method: "POST", path: "/v1/sessions/" + created, body: `{}`, status: 405, code: 1001, allow: "GET, PATCH, DELETE"},
		{name: "wrong method action", method: "GET", path: "/v1/sessions/" + created + "/cancel", status: 405, code: 1001, allow: "POST"},
		{name: "wrong method events", method: "DELETE", path: "/v1/events", status: 405, code: 1001, allow: "GET"},
		{name: "body too large", method: "POST", path: "/v1/sessions", body: big, status: 413, code: 1001},
		{name: "idempotency key too long", method: "POST", path: "/v1/sessions", body: `{"ref_id":"n"}`,
			opts: []reqOpt{header("Idempotency-Key", strings.Repeat("k", 256))}, status: 400, code: 1001},
		{name: "idempotency key and bad body", method: "POST", path: "/v1/sessions", body: `{"ref_id":1}`,
			opts: []reqOpt{header("Idempotency-Key", "k1")}, status: 400, code: 1001},

		{name: "missing key", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-AUTH-CLIENT", "")}, status: 401, code: 1101},
		{name: "missing key on create", method: "POST", path: "/v1/sessions", body: `{"ref_id":"n"}`, opts: []reqOpt{header("X-AUTH-CLIENT", "")}, status: 401, code: 1101},
		{name: "unknown key", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as("key-3", testSecret)}, status: 401, code: 1101},
		{name: "no signature", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", "")}, status: 401, code: 1102},
		{name: "other client's secret", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as(testKey, otherSecret)}, status: 401, code: 1102},
		{name: "body signed wrong", method: "POST", path: "/v1/sessions", body: `{"ref_id":"n"}`, opts: []reqOpt{signedOver(`{"ref_id":"m"}`)}, status: 401, code: 1102},
		{name: "body signed over id", method: "PATCH", path: "/v1/sessions/" + created, body: `{"tags":["t"]}`, opts: []reqOpt{signedOver(created)}, status: 401, code: 1102},
		{name: "body signed over nothing", method: "POST", path: "/v1/sessions", body: `{"ref_id":"n"}`, opts: []reqOpt{signedOver("")}, status: 401, code: 1102},
		{name: "id signed wrong", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{signedOver(submitted)}, status: 401, code: 1102},
		{name: "id signed as query", method: "POST", path: "/v1/sessions/" + created + "/cancel?x=1", opts: []reqOpt{signedOver("x=1")}, status: 401, code: 1102},
		{name: "id signed over path", method: "DELETE", path: "/v1/sessions/" + created, opts: []reqOpt{signedOver("/v1/sessions/" + created)}, status: 401, code: 1102},
		{name: "query signed wrong", method: "GET", path: "/v1/sessions?ref_id=created", opts: []reqOpt{signedOver("ref_id=other")}, status: 401, code: 1102},
		{name: "query signed over nothing", method: "GET", path: "/v1/sessions?ref_id=created", opts: []reqOpt{signedOver("")}, status: 401, code: 1102},
		{name: "no query signed over something", method: "GET", path: "/v1/events", opts: []reqOpt{signedOver("limit=1")}, status: 401, code: 1102},
		{name: "signature not hex", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", strings.Repeat("z", 64))}, status: 401, code: 1102},
		{name: "signature short", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", hexHMAC(testSecret, created)[:62])}, status: 401, code: 1102},

		{name: "unknown session", method: "GET", path: "/v1/sessions/" + unknown, status: 404, code: 1104},
		{name: "malformed id", method: "GET", path: "/v1/sessions/not-a-uuid", status: 404, code: 1104},
		{name: "uppercase id", method: "GET", path: "/v1/sessions/" + strings.ToUpper(created), status: 404, code: 1104},
		{name: "cancel unknown", method: "POST", path: "/v1/sessions/" + unknown + "/cancel", status: 404, code: 1104},
		{name: "decide unknown", method: "POST", path: "/v1/sessions/" + unknown + "/decision", body: `{"status":"approved"}`, status: 404, code: 1104},
		{name: "unknown path", method: "GET", path: "/v1/nothing", status: 404, code: 1104},
		{name: "outside v1", method: "GET", path: "/v2/sessions", status: 404, code: 1104},

		{name: "delete submitted", method: "DELETE", path: "/v1/sessions/" + submitted, status: 400, code: 1306, message: "Session in progress."},
		{name: "delete odd status", method: "DELETE", path: "/v1/sessions/" + odd, status: 400, code: 1305, message: "Session is not in a completed status."},

		{name: "cancel canceled", method: "POST", path: "/v1/sessions/" + canceled + "/cancel", status: 409, code: 1401},
		{name: "decide created", method: "POST", path: "/v1/sessions/" + created + "/decision", body: `{"status":"approved"}`, status: 409, code: 1401},
		{name: "resume created", method: "POST", path: "/v1/sessions/" + created + "/resume", status: 409, code: 1401},
		{name: "expire submitted", method: "POST", path: "/v1/sessions/" + submitted + "/expire", status: 409, code: 1401},
		{name: "resume beside active", method: "POST", path: "/v1/sessions/" + expired + "/resume", status: 409, code: 1401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &apiEnv{env: a.with(t), url: a.url, client: a.client}
			before := a.snapshot(keyPrefix + "ratelimit:")
			r := a.do(tc.method, tc.path, tc.body, tc.opts...)
			msg := r.fail(t, tc.status, tc.code)
			if tc.allow != "" && r.header.Get("Allow") != tc.allow {
				t.Errorf("Allow %q, want %q", r.header.Get("Allow"), tc.allow)
			}
			if tc.message != "" && msg != tc.message {
				t.Errorf("message %q, want %q", msg, tc.message)
			}
			assertSameSnapshot(t, before, a.snapshot(keyPrefix+"ratelimit:"))
		})
	}
}

// TestAPIDeleteRateLimit checks the sliding-window delete limit per API key,
// its 429 code 1004 and a Retry-After that follows the injected clock.
func TestAPIDeleteRateLimit(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t, func(c *APIConfig) {
		c.DeleteLimit = []RateWindow{{Limit: 2, Window: time.Minute}, {Limit: 3, Window: 10 * time.Minute}}
	})
	n := 0
	del := func(opts ...reqOpt) response {
		t.Helper()
		n++
		return a.do("DELETE", "/v1/sessions/"+a.create(fmt.Sprintf("r%d", n)).ID, "", opts...)
	}
	limited := func(r response, retryAfter string) {
		t.Helper()
		r.fail(t, 429, CodeTooManyRequests)
		if got := r.header.Get("Retry-After"); got != retryAfter {
			t.Errorf("Retry-After %q, want %q", got, retryAfter)
		}
	}
	del().ok(t, 200)
	del().ok(t, 200)
	limited(del(), "60")
	e := a.env
	e.clock.Advance(30*time.Second + 500*time.Millisecond)
	limited(del(), "30") // 29.5 s, rounded up
	del(as(otherKey, otherSecret)).ok(t, 200)
	e.clock.Advance(29*time.Second + 499*time.Millisecond)
	limited(del(), "1") // 1 ms left
	e.clock.Advance(time.Millisecond)
	del().ok(t, 200) // the minute has slid past the first two
	// Now the 10-minute window is full: 3 in it, the oldest at t0.
	limited(del(), "540")
	e.clock.Advance(9 * time.Minute) // t0+10m: the first two left both windows
	del().ok(t, 200)
	del().ok(t, 200)
	limited(del(), "60")

	// Refused requests are not logged, old ones are dropped, and the log
	// carries a TTL.
	if ttl := a.rdb.PTTL(a.ctx, rateKey("delete", testKey)).Val(); ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("rate log PTTL %v", ttl)
	}
	if n := a.rdb.ZCard(a.ctx, rateKey("delete", testKey)).Val(); n != 3 {
		t.Errorf("rate log holds %d requests, want the 3 allowed within 10 minutes", n)
	}
	// A refused delete leaves the session alone.
	id := a.create("kept").ID
	limited(a.do("DELETE", "/v1/sessions/"+id, ""), "60")
	a.get(id)
}

// TestAPIDeleteDisabled checks a zero limit refuses every delete.
func TestAPIDeleteDisabled(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t, func(c *APIConfig) { c.DeleteLimit = []RateWindow{{Limit: 0, Window: time.Hour}} })
	id := a.create("r").ID
	r := a.do("DELETE", "/v1/sessions/"+id, "")
	r.fail(t, 429, CodeTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	a.get(id)
}

// TestAPIIdempotencyKey checks that an exact retry with the same
// Idempotency-Key gets the first response, another body is refused, and
// the stored response holds no readable token or personal data.
func TestAPIIdempotencyKey(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t)
	body := `{"ref_id":"idem","person":{"name":"Ophelia Wintergreen"}}`
	first := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"))
	m := first.ok(t, 201)
	token := m["token"].(string)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Error("first response marked as replayed")
	}
	a.clock.Advance(time.Minute)
	for range 2 {
		again := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"))
		if again.status != 201 || !bytes.Equal(again.body, first.body) {
			t.Errorf("retry: %d %s, want the first response %s", again.status, again.body, first.body)
		}
		if again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry lacks Idempotent-Replayed: %v", again.header)
		}
	}
	if s, err := a.svc.SessionForToken(a.ctx, token); err != nil || s.ID != m["id"] {
		t.Errorf("a replay must not reissue the token: %v", err)
	}
	a.do("POST", "/v1/sessions", `{"ref_id":"idem2"}`, header("Idempotency-Key", "k-1")).fail(t, 400, CodeInvalidRequest)
	// The same key of another client is another key.
	a.do("POST", "/v1/sessions", `{"ref_id":"idem3"}`, header("Idempotency-Key", "k-1"), as(otherKey, otherSecret)).ok(t, 201)
	// Without the key, the same body is an idempotent create by ref_id: 200
	// and a fresh token.
	m2 := a.do("POST", "/v1/sessions", body).ok(t, 200)
	if m2["id"] != m["id"] || m2["token"] == token {
		t.Errorf("create by ref_id: %v", m2)
	}
	all := a.contents()
	if strings.Contains(all, token) || strings.Contains(all, m2["token"].(string)) {
		t.Error("a token is in Redis in plaintext")
	}
	if idem := a.keys(keyPrefix + "idem:*"); len(idem) != 2 {
		t.Errorf("idempotency keys %v", idem)
	} else {
		for _, k := range idem {
			if ttl := a.rdb.PTTL(a.ctx, k).Val(); ttl <= 0 {
				t.Errorf("%s has no TTL", k)
			}
		}
	}

	// Once redacted, personal data leaves the replay too.
	a.do("POST", "/v1/sessions/"+m["id"].(string)+"/redact", "").ok(t, 200)
	if strings.Contains(a.contents(), "Ophelia") {
		t.Error("personal data in Redis after redaction")
	}
	again := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"))
	if again.status != 201 || bytes.Contains(again.body, []byte("Ophelia")) {
		t.Errorf("replay after redaction: %d %s", again.status, again.body)
	}
	var replayed map[string]any
	if err := json.Unmarshal(again.body, &replayed); err != nil || replayed["token"] != token || replayed["id"] != m["id"] {
		t.Errorf("replay after redaction lost the rest of the first response: %s", again.body)
	}
}

// TestAPIIdempotencyConcurrent sends the same keyed create many times at
// once: one create runs, the others replay it or are told to retry.
func TestAPIIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	a := newAPIEnv(t)
	body := `{"ref_id":"c","force_creation":true}`
	var wg sync.WaitGroup
	results := make([]response, 10)
	for i := range results {
		wg.Go(func() { results[i] = a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "same")) })
	}
	wg.Wait()
	var firstBody []byte
	for _, r := range results {
		switch r.status {
		case 201:
			if firstBody == nil {
				firstBody = r.body
			} else if !bytes.Equal(r.body, firstBody) {
				t.Errorf("two different 201 bodies for one key:\n%s\n%s", firstBody, r.body)
			}
		case 409:
			r.fail(t, 409, CodeInvalidRequest)
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	if n := len(a.keys(keyPrefix + "{*}:session")); n != 1 {
		t.Errorf("%d sessions made for one Idempotency-Key", n)
	}
}
