package adminapi

import (
	"bytes"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var timeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func checkTimes(t testing.TB, m map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if s, _ := m[f].(string); !timeRE.MatchString(s) {
			t.Errorf("%s = %v, want RFC 3339 UTC with milliseconds", f, m[f])
		}
	}
}

// TestAPIRoutes walks every /v1 route's success.
func TestAPIRoutes(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {

		m := a.do("POST", "/v1/sessions", `{"ref_id":"r1","flow_id":"f","person":{"name":"A"},"metadata":{"m":1}}`).ok(t, 201)
		id, _ := m["id"].(string)
		token, _ := m["token"].(string)
		if m["status"] != "created" || m["ref_id"] != "r1" || token == "" || len(id) != 36 {
			t.Fatalf("create: %v", m)
		}
		checkTimes(t, m, "created_at", "updated_at", "expires_at", "token_expires_at")

		m = a.do("POST", "/v1/tokens/introspect", `{"token":"`+token+`"}`).ok(t, 200)
		if m["active"] != true || m["session"].(map[string]any)["id"] != id || m["token_expires_at"] == nil {
			t.Errorf("introspect: %v", m)
		}

		m = a.do("POST", "/v1/sessions", `{"ref_id":"r1"}`).ok(t, 200)
		if m["id"] != id || m["token"] == token || m["token"] == "" {
			t.Errorf("second create: %v", m)
		}
		if m = a.do("POST", "/v1/tokens/introspect", `{"token":"`+token+`"}`).ok(t, 200); len(m) != 1 || m["active"] != false {
			t.Errorf("introspect of a replaced token: %v, want only active false", m)
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
		m = a.do("GET", "/v1/sessions/"+id+"/deliveries", "").ok(t, 200)
		if ds, ok := m["deliveries"].([]any); !ok || len(ds) != 0 {
			t.Errorf("deliveries without endpoints: %v", m)
		}
		m = a.do("POST", "/v1/sessions/"+id+"/redact", "").ok(t, 200)
		if _, has := m["person"]; has || m["redacted_at"] == nil {
			t.Errorf("redact: %v", m)
		}
		m = a.do("DELETE", "/v1/sessions/"+id, "").ok(t, 200)
		if m["status"] != "success" || m["id"] != id {
			t.Errorf("delete: %v", m)
		}
		a.do("GET", "/v1/sessions/"+id, "").fail(t, 404, CodeNotFound)

		// The feed orders sessions by commit time, Redis's milliseconds
		// (stream ids): within one millisecond two sessions' events may
		// come in either order.
		time.Sleep(2 * time.Millisecond)
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
		for _, p := range a.api.Patterns() {
			if !strings.HasPrefix(p, "GET /v1/") && !strings.HasPrefix(p, "POST /v1/") && !strings.HasPrefix(p, "PATCH /v1/") && !strings.HasPrefix(p, "DELETE /v1/") {
				t.Errorf("pattern %q is not a method and a /v1 path", p)
			}
		}
	})
}

// TestAPIErrors sends one bad request for every error of the contract and
// checks the status, the code, the body and that Redis did not change.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		created := a.create("created").ID
		submitted := a.create("submitted").ID
		if _, err := a.svc.Progress(a.ctx, submitted, "submitted"); err != nil {
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
		unknown := "2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
		big := `{"ref_id":"` + strings.Repeat("x", testMaxBody) + `"}`
		deep := `{"ref_id":"d","metadata":` + strings.Repeat(`{"a":`, 32) + `1` + strings.Repeat(`}`, 32) + `}`
		now := a.clock.Now()

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
			{name: "invalid utf-8 in person", method: "POST", path: "/v1/sessions", body: "{\"ref_id\":\"u\",\"person\":{\"name\":\"\xff\xfe\"}}", status: 400, code: 1001},
			{name: "nested 33 deep", method: "POST", path: "/v1/sessions", body: deep, status: 400, code: 1001},
			{name: "duplicate name", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","ref_id":"b"}`, status: 400, code: 1001},
			{name: "duplicate name in metadata", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","metadata":{"k":1,"\u006b":2}}`, status: 400, code: 1001},
			{name: "missing ref_id", method: "POST", path: "/v1/sessions", body: `{"flow_id":"f"}`, status: 400, code: 1001},
			{name: "ref_id wrong type", method: "POST", path: "/v1/sessions", body: `{"ref_id":5}`, status: 400, code: 1001},
			{name: "ref_id control char", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a\u0007"}`, status: 400, code: 1001},
			{name: "ref_id bidi override", method: "POST", path: "/v1/sessions", body: `{"ref_id":"user\u202e24"}`, status: 400, code: 1001},
			{name: "flow_id zero width", method: "POST", path: "/v1/sessions", body: `{"ref_id":"a","flow_id":"f\u200bf"}`, status: 400, code: 1001},
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
			{name: "tag with zero width", method: "PATCH", path: "/v1/sessions/" + created, body: `{"tags":["vip\u200d"]}`, status: 400, code: 1001},
			{name: "list unknown status", method: "GET", path: "/v1/sessions?status=done", status: 400, code: 1001},
			{name: "list limit text", method: "GET", path: "/v1/sessions?limit=ten", status: 400, code: 1001},
			{name: "list limit negative", method: "GET", path: "/v1/sessions?limit=-1", status: 400, code: 1001},
			{name: "list limit too big", method: "GET", path: "/v1/sessions?limit=101", status: 400, code: 1001},
			{name: "list bad cursor", method: "GET", path: "/v1/sessions?cursor=abc", status: 400, code: 1001},
			{name: "events limit too big", method: "GET", path: "/v1/events?limit=1001", status: 400, code: 1001},
			{name: "events bad cursor", method: "GET", path: "/v1/events?after=x", status: 400, code: 1001},
			{name: "events cursor out of range", method: "GET", path: "/v1/events?after=99999999999999999999", status: 400, code: 1001},
			{name: "introspect empty token", method: "POST", path: "/v1/tokens/introspect", body: `{"token":""}`, status: 400, code: 1001},
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
			{name: "unknown key", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as("key-3", testSecret)}, status: 401, code: 1102, message: "Authentication failed."},
			{name: "no signature", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", "")}, status: 401, code: 1102, message: "Authentication failed."},
			{name: "other client's secret", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as(testKey, otherSecret)}, status: 401, code: 1102, message: "Authentication failed."},
			{name: "no timestamp", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-TIMESTAMP", "")}, status: 401, code: 1102},
			{name: "timestamp not a number", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-TIMESTAMP", "soon")}, status: 401, code: 1103},
			{name: "timestamp 400 s old", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{at(now.Add(-400 * time.Second))}, status: 401, code: 1103},
			{name: "timestamp 400 s ahead", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{at(now.Add(400 * time.Second))}, status: 401, code: 1103},
			{name: "unknown key, old timestamp", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as("key-3", testSecret), at(now.Add(-400 * time.Second))}, status: 401, code: 1103},
			{name: "nonce too short", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{nonce("short")}, status: 401, code: 1102},
			{name: "nonce bad character", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{nonce("nonce/with/slashes")}, status: 401, code: 1102},
			{name: "signature not hex", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", "v2="+strings.Repeat("z", 64))}, status: 401, code: 1102},
			{name: "signature without version", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{header("X-HMAC-SIGNATURE", strings.Repeat("a", 64))}, status: 401, code: 1102},
			{name: "signed as another method", method: "DELETE", path: "/v1/sessions/" + created, opts: []reqOpt{signedAs("GET", "/v1/sessions/"+created, "")}, status: 401, code: 1102},
			{name: "signed for another id", method: "POST", path: "/v1/sessions/" + created + "/cancel", opts: []reqOpt{signedAs("POST", "/v1/sessions/"+submitted+"/cancel", "")}, status: 401, code: 1102},
			{name: "signed for another path", method: "POST", path: "/v1/sessions/" + created + "/expire", opts: []reqOpt{signedAs("POST", "/v1/sessions/"+created+"/cancel", "")}, status: 401, code: 1102},
			{name: "signed without the query", method: "GET", path: "/v1/sessions?ref_id=created", opts: []reqOpt{signedAs("GET", "/v1/sessions", "")}, status: 401, code: 1102},
			{name: "signed for another query", method: "GET", path: "/v1/sessions?ref_id=created", opts: []reqOpt{signedAs("GET", "/v1/sessions?ref_id=other", "")}, status: 401, code: 1102},
			{name: "signed for another body", method: "POST", path: "/v1/sessions/" + submitted + "/decision", body: `{"status":"approved"}`,
				opts: []reqOpt{signedAs("POST", "/v1/sessions/"+submitted+"/decision", `{"status":"declined"}`)}, status: 401, code: 1102},
			{name: "signed without the body", method: "POST", path: "/v1/sessions", body: `{"ref_id":"n"}`, opts: []reqOpt{signedAs("POST", "/v1/sessions", "")}, status: 401, code: 1102},
			{name: "legacy key signing v2", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{as(legacyKey, legacySecret)}, status: 401, code: 1102},
			{name: "v2 key signing legacy", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{legacy(), as(testKey, testSecret)}, status: 401, code: 1102},
			{name: "legacy wrong secret", method: "GET", path: "/v1/sessions/" + created, opts: []reqOpt{legacyOver("x")}, status: 401, code: 1102},
			{name: "legacy signature as a body", method: "POST", path: "/v1/sessions/" + created + "/cancel", body: `{"status":"approved"}`,
				opts: []reqOpt{legacy()}, status: 400, code: 1001},
			{name: "legacy id signed as query", method: "POST", path: "/v1/sessions/" + created + "/cancel?x=1", opts: []reqOpt{legacyOver("x=1")}, status: 401, code: 1102},
			{name: "legacy on endpoints list", method: "GET", path: "/v1/endpoints", opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on endpoint create", method: "POST", path: "/v1/endpoints", body: `{"url":"https://hooks.example.com/"}`,
				opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on endpoint read", method: "GET", path: "/v1/endpoints/ep_x", opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on endpoint change", method: "PATCH", path: "/v1/endpoints/ep_x", body: `{"disabled":true}`,
				opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on endpoint delete", method: "DELETE", path: "/v1/endpoints/ep_x", opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on rotate-secret", method: "POST", path: "/v1/endpoints/ep_x/rotate-secret", opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on endpoint test", method: "POST", path: "/v1/endpoints/ep_x/test", body: `{"type":"session.approved"}`,
				opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on recover", method: "POST", path: "/v1/endpoints/ep_x/recover", body: `{"since":"2026-01-01T00:00:00Z"}`,
				opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "legacy on recovery", method: "GET", path: "/v1/recoveries/rcv_x", opts: []reqOpt{legacy()}, status: 401, code: 1102, message: errV2Only.Message},
			{name: "unknown key, legacy, on endpoints", method: "GET", path: "/v1/endpoints/ep_x", opts: []reqOpt{legacy(), as("key-3", testSecret)},
				status: 401, code: 1102, message: errV2Only.Message},

			{name: "unknown session", method: "GET", path: "/v1/sessions/" + unknown, status: 404, code: 1104},
			{name: "malformed id", method: "GET", path: "/v1/sessions/not-a-uuid", status: 404, code: 1104},
			{name: "uppercase id", method: "GET", path: "/v1/sessions/" + strings.ToUpper(created), status: 404, code: 1104},
			{name: "cancel unknown", method: "POST", path: "/v1/sessions/" + unknown + "/cancel", status: 404, code: 1104},
			{name: "decide unknown", method: "POST", path: "/v1/sessions/" + unknown + "/decision", body: `{"status":"approved"}`, status: 404, code: 1104},
			{name: "deliveries of unknown session", method: "GET", path: "/v1/sessions/" + unknown + "/deliveries", status: 404, code: 1104},
			{name: "replay unknown delivery", method: "POST", path: "/v1/deliveries/nope/replay", status: 404, code: 1104},
			{name: "unknown path", method: "GET", path: "/v1/nothing", status: 404, code: 1104},
			{name: "outside v1", method: "GET", path: "/v2/sessions", status: 404, code: 1104},

			{name: "delete submitted", method: "DELETE", path: "/v1/sessions/" + submitted, status: 400, code: 1306, message: "Session in progress."},
			{name: "cancel canceled", method: "POST", path: "/v1/sessions/" + canceled + "/cancel", status: 409, code: 1401},
			{name: "decide created", method: "POST", path: "/v1/sessions/" + created + "/decision", body: `{"status":"approved"}`, status: 409, code: 1401},
			{name: "resume created", method: "POST", path: "/v1/sessions/" + created + "/resume", status: 409, code: 1401},
			{name: "expire submitted", method: "POST", path: "/v1/sessions/" + submitted + "/expire", status: 409, code: 1401},
			{name: "resume beside active", method: "POST", path: "/v1/sessions/" + expired + "/resume", status: 409, code: 1401},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				a := a.with(t)
				before := a.snapshot()
				r := a.do(tc.method, tc.path, tc.body, tc.opts...)
				if tc.path == "/v2/sessions" {
					// Outside /v1 the answer is the plain 404 of the mux.
					if r.status != 404 {
						t.Errorf("status %d, want 404", r.status)
					}
					return
				}
				msg := r.fail(t, tc.status, tc.code)
				if tc.allow != "" && r.header.Get("Allow") != tc.allow {
					t.Errorf("Allow %q, want %q", r.header.Get("Allow"), tc.allow)
				}
				if tc.message != "" && msg != tc.message {
					t.Errorf("message %q, want %q", msg, tc.message)
				}
				assertSameSnapshot(t, before, a.snapshot())
			})
		}
	})
}

// TestCapturedRequests replays and moves captured requests, as an attacker
// holding one would: each is refused, and nothing changes.
func TestCapturedRequests(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		victim := a.create("victim").ID
		mine := a.create("mine").ID
		if _, err := a.svc.Progress(a.ctx, mine, "submitted"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.svc.Progress(a.ctx, victim, "submitted"); err != nil {
			t.Fatal(err)
		}

		// A captured GET of a session that answered 404.
		gone := "2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
		get := a.build("GET", "/v1/sessions/"+gone, "")
		a.resend(get).fail(t, 404, CodeNotFound)
		before := a.snapshot()
		// Replayed as is: the nonce is spent.
		a.resend(get).fail(t, 401, CodeReplayed)
		// Its headers on other routes, for other ids, or with its target as a body.
		for _, move := range []struct{ method, path, body string }{
			{"GET", "/v1/sessions/" + victim, ""},
			{"POST", "/v1/sessions/" + victim + "/expire", ""},
			{"POST", "/v1/sessions/" + victim + "/resume", ""},
			{"DELETE", "/v1/sessions/" + gone, ""},
			{"POST", "/v1/sessions/" + victim + "/cancel", gone},
		} {
			req := a.build(move.method, move.path, move.body)
			for _, h := range []string{"X-TIMESTAMP", "X-NONCE", "X-HMAC-SIGNATURE"} {
				req.Header.Set(h, get.Header.Get(h))
			}
			a.send(req).fail(t, 401, CodeAuthFailed)
		}
		assertSameSnapshot(t, before, a.snapshot())

		// A captured decision approving my session, moved to the victim's.
		body := `{"status":"approved"}`
		dec := a.build("POST", "/v1/sessions/"+mine+"/decision", body)
		a.resend(dec).ok(t, 200)
		moved := a.build("POST", "/v1/sessions/"+victim+"/decision", body)
		for _, h := range []string{"X-TIMESTAMP", "X-NONCE", "X-HMAC-SIGNATURE"} {
			moved.Header.Set(h, dec.Header.Get(h))
		}
		a.send(moved).fail(t, 401, CodeAuthFailed)
		if s := a.get(victim); s.Status != "submitted" {
			t.Errorf("victim's status %s, want submitted", s.Status)
		}

		// A replayed create does not issue a fresh token (and revoke the
		// user's live one): it is refused.
		create := a.build("POST", "/v1/sessions", `{"ref_id":"user-9"}`)
		first := a.resend(create).ok(t, 201)
		token := first["token"].(string)
		a.resend(create).fail(t, 401, CodeReplayed)
		if _, err := a.svc.SessionForToken(a.ctx, token); err != nil {
			t.Errorf("the user's token no longer works after a replay: %v", err)
		}

		// A replay within the nonce window but after the timestamp window is
		// 1103; the same nonce with a fresh timestamp is still 1105.
		a.clock.Advance(400 * time.Second)
		a.resend(create).fail(t, 401, CodeTimestamp)
		again := a.build("POST", "/v1/sessions", `{"ref_id":"user-9"}`, nonce(create.Header.Get("X-NONCE")))
		a.send(again).fail(t, 401, CodeReplayed)
	})
}

// TestEveryRouteRefusesReplay sends one signed request to every /v1 route
// and the same request again: the second is always 1105, whichever way
// the route spends its nonce (before its handler, or in its lifecycle
// operation's first read) and whatever the first answered.
func TestEveryRouteRefusesReplay(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		c := a.create("replay-user")
		unknown := "2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
		requests := map[string]struct{ path, body string }{
			"POST /v1/sessions":                     {"/v1/sessions", `{"ref_id":"replay-2"}`},
			"GET /v1/sessions":                      {"/v1/sessions?limit=1", ""},
			"GET /v1/sessions/{id}":                 {"/v1/sessions/" + c.ID, ""},
			"PATCH /v1/sessions/{id}":               {"/v1/sessions/" + c.ID, `{"tags":["x"]}`},
			"DELETE /v1/sessions/{id}":              {"/v1/sessions/" + unknown, ""},
			"POST /v1/sessions/{id}/status":         {"/v1/sessions/" + c.ID + "/status", `{"status":"started"}`},
			"POST /v1/sessions/{id}/decision":       {"/v1/sessions/" + c.ID + "/decision", `{"status":"approved"}`},
			"POST /v1/sessions/{id}/cancel":         {"/v1/sessions/" + unknown + "/cancel", ""},
			"POST /v1/sessions/{id}/expire":         {"/v1/sessions/" + unknown + "/expire", ""},
			"POST /v1/sessions/{id}/resume":         {"/v1/sessions/" + c.ID + "/resume", ""},
			"POST /v1/sessions/{id}/redact":         {"/v1/sessions/" + unknown + "/redact", ""},
			"GET /v1/sessions/{id}/deliveries":      {"/v1/sessions/" + c.ID + "/deliveries", ""},
			"POST /v1/deliveries/{id}/replay":       {"/v1/deliveries/" + c.ID + "~evt_0~default/replay", ""},
			"GET /v1/events":                        {"/v1/events?limit=1", ""},
			"POST /v1/tokens/introspect":            {"/v1/tokens/introspect", `{"token":"` + c.Token + `"}`},
			"POST /v1/tokens/introspect (junk)":     {"/v1/tokens/introspect", `{"token":"not-a-token"}`},
			"GET /v1/endpoints":                     {"/v1/endpoints", ""},
			"POST /v1/endpoints":                    {"/v1/endpoints", `{"url":"https://hooks.example.com/"}`},
			"GET /v1/endpoints/{id}":                {"/v1/endpoints/ep_unknown", ""},
			"PATCH /v1/endpoints/{id}":              {"/v1/endpoints/ep_unknown", `{"disabled":true}`},
			"DELETE /v1/endpoints/{id}":             {"/v1/endpoints/ep_unknown", ""},
			"POST /v1/endpoints/{id}/rotate-secret": {"/v1/endpoints/ep_unknown/rotate-secret", ""},
			"POST /v1/endpoints/{id}/test":          {"/v1/endpoints/ep_unknown/test", `{"type":"session.approved"}`},
			"POST /v1/endpoints/{id}/recover":       {"/v1/endpoints/ep_unknown/recover", `{"since":"2026-01-01T00:00:00Z"}`},
			"GET /v1/recoveries/{id}":               {"/v1/recoveries/rcv_unknown", ""},
		}
		for _, p := range a.api.Patterns() {
			if _, ok := requests[p]; !ok {
				t.Errorf("route %s has no request in this test", p)
			}
		}
		for name, rq := range requests {
			method, _, _ := strings.Cut(name, " ")
			req := a.build(method, rq.path, rq.body)
			first := a.resend(req)
			if first.status == 401 {
				t.Errorf("%s: first request refused: %s", name, first.body)
				continue
			}
			a.resend(req).fail(t, 401, CodeReplayed)
		}
	})
}
