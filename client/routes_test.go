package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/client/clienttest"
)

func newClient(t *testing.T, srv *clienttest.Server, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(srv.URL, clienttest.Key, clienttest.Secret, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const sessionJSON = `{"id":"8a1b","ref_id":"user-42","flow_id":"kyc","status":"created",` +
	`"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z",` +
	`"expires_at":"2026-01-03T03:04:05.678Z","metadata":{"plan":"pro"},"tags":["vip"],` +
	`"person":{"first_name":"Ada"}}`

const tokenSessionJSON = `{"id":"8a1b","ref_id":"user-42","status":"created",` +
	`"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z","tags":[],` +
	`"token":"vst_abc","token_expires_at":"2026-01-02T03:34:05.678Z"}`

const deliveryJSON = `{"id":"8a1b~e1~default","event_id":"e1","event_type":"session.approved","session_id":"8a1b",` +
	`"endpoint_id":"default","url":"https://hooks.example.com/idv","status":"failed",` +
	`"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:06.000Z",` +
	`"attempts":[{"attempt":1,"at":"2026-01-02T03:04:05.700Z","status_code":500,"latency_ms":12.5,` +
	`"error":"status 500","response_body":"oops","response_truncated":true}]}`

const endpointJSON = `{"id":"ep_1","url":"https://hooks.example.com/idv","events":["session.approved"],` +
	`"description":"main","headers":{"X-Env":"prod"},"disabled":false,"source":"api",` +
	`"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z","secret":"whsec_AAAA"}`

const recoveryJSON = `{"id":"rec_1","endpoint_id":"ep_1","since":"2026-01-01T00:00:00.000Z",` +
	`"until":"2026-01-02T00:00:00.000Z","status":"running","scanned":10,"scheduled":4,"done":2}`

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)

// TestRoutes calls every method once and checks the request the daemon
// gets (method, target with its escaping and query, body) and the answer
// the caller gets.
func TestRoutes(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	yes := true
	tags := []string{"a", "b"}
	code := 7
	tests := []struct {
		name       string
		call       func(ctx context.Context, c *client.Client) (any, error)
		status     int
		answer     string
		wantMethod string
		wantTarget string
		wantBody   string
		wantHeader map[string]string
		check      func(t *testing.T, got any)
	}{
		{
			name: "create new",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.CreateSession(ctx, client.CreateSessionRequest{RefID: "user-42", FlowID: "kyc",
					Person: json.RawMessage(`{"first_name":"Ada"}`), ForceCreation: true}, client.WithIdempotencyKey("idem-1"))
			},
			status: 201, answer: tokenSessionJSON,
			wantMethod: "POST", wantTarget: "/v1/sessions",
			wantBody:   `{"ref_id":"user-42","flow_id":"kyc","person":{"first_name":"Ada"},"force_creation":true}`,
			wantHeader: map[string]string{"Idempotency-Key": "idem-1", "Content-Type": "application/json"},
			check: func(t *testing.T, got any) {
				s := got.(*client.CreatedSession)
				if !s.New || s.Token != "vst_abc" || s.ID != "8a1b" || !s.TokenExpiresAt.Equal(t0.Add(30*time.Minute)) {
					t.Errorf("got %+v, want new session 8a1b with token vst_abc until %v", s, t0.Add(30*time.Minute))
				}
			},
		},
		{
			name: "create existing",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.CreateSession(ctx, client.CreateSessionRequest{RefID: "user-42"})
			},
			status: 200, answer: tokenSessionJSON,
			wantMethod: "POST", wantTarget: "/v1/sessions", wantBody: `{"ref_id":"user-42"}`,
			check: func(t *testing.T, got any) {
				if s := got.(*client.CreatedSession); s.New {
					t.Errorf("New = true for a 200, want false")
				}
			},
		},
		{
			name:   "get",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.GetSession(ctx, "8a1b") },
			status: 200, answer: sessionJSON,
			wantMethod: "GET", wantTarget: "/v1/sessions/8a1b",
			check: func(t *testing.T, got any) {
				s := got.(*client.Session)
				want := &client.Session{ID: "8a1b", RefID: "user-42", FlowID: "kyc", Status: "created", CreatedAt: t0, UpdatedAt: t0,
					ExpiresAt: ptr(t0.Add(24 * time.Hour)), Metadata: json.RawMessage(`{"plan":"pro"}`), Tags: []string{"vip"},
					Person: json.RawMessage(`{"first_name":"Ada"}`)}
				if !reflect.DeepEqual(s, want) {
					t.Errorf("got %+v, want %+v", s, want)
				}
			},
		},
		{
			name:   "get escapes the id",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.GetSession(ctx, "a/b c?d") },
			status: 200, answer: sessionJSON,
			wantMethod: "GET", wantTarget: "/v1/sessions/a%2Fb%20c%3Fd",
		},
		{
			name: "list",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.ListSessions(ctx, client.ListSessionsOptions{RefID: "user 42&x", Status: "approved", Limit: 10, Cursor: "c1"})
			},
			status: 200, answer: `{"sessions":[` + sessionJSON + `],"next_cursor":"c2"}`,
			wantMethod: "GET", wantTarget: "/v1/sessions?cursor=c1&limit=10&ref_id=user+42%26x&status=approved",
			check: func(t *testing.T, got any) {
				p := got.(*client.SessionPage)
				if len(p.Sessions) != 1 || p.Sessions[0].ID != "8a1b" || p.NextCursor == nil || *p.NextCursor != "c2" {
					t.Errorf("got %+v, want one session and next_cursor c2", p)
				}
			},
		},
		{
			name: "list last page",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.ListSessions(ctx, client.ListSessionsOptions{})
			},
			status: 200, answer: `{"sessions":[],"next_cursor":null}`,
			wantMethod: "GET", wantTarget: "/v1/sessions",
			check: func(t *testing.T, got any) {
				if p := got.(*client.SessionPage); p.NextCursor != nil {
					t.Errorf("NextCursor = %q, want nil", *p.NextCursor)
				}
			},
		},
		{
			name: "update",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.UpdateSession(ctx, "8a1b", client.UpdateSessionRequest{Metadata: json.RawMessage(`{"a":1}`), Tags: &tags})
			},
			status: 200, answer: sessionJSON,
			wantMethod: "PATCH", wantTarget: "/v1/sessions/8a1b", wantBody: `{"metadata":{"a":1},"tags":["a","b"]}`,
		},
		{
			name: "update clears tags only",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.UpdateSession(ctx, "8a1b", client.UpdateSessionRequest{Tags: &[]string{}})
			},
			status: 200, answer: sessionJSON,
			wantMethod: "PATCH", wantTarget: "/v1/sessions/8a1b", wantBody: `{"tags":[]}`,
		},
		{
			name:   "status",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.SetStatus(ctx, "8a1b", "submitted") },
			status: 200, answer: sessionJSON,
			wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/status", wantBody: `{"status":"submitted"}`,
		},
		{
			name: "decide",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.Decide(ctx, "8a1b", client.DecideRequest{Status: "declined", Reason: "blurry", ReasonCode: &code})
			},
			status: 200,
			answer: `{"id":"8a1b","ref_id":"r","status":"declined","created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z",` +
				`"tags":[],"decision":{"status":"declined","reason":"blurry","reason_code":7,"decided_at":"2026-01-02T03:04:05.678Z"}}`,
			wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/decision", wantBody: `{"status":"declined","reason":"blurry","reason_code":7}`,
			check: func(t *testing.T, got any) {
				d := got.(*client.Session).Decision
				if d == nil || d.Status != "declined" || d.ReasonCode == nil || *d.ReasonCode != 7 || !d.DecidedAt.Equal(t0) {
					t.Errorf("decision = %+v, want declined, code 7, at %v", d, t0)
				}
			},
		},
		{
			name:   "cancel",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.CancelSession(ctx, "8a1b") },
			status: 200, answer: sessionJSON, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/cancel",
		},
		{
			name:   "expire",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.ExpireSession(ctx, "8a1b") },
			status: 200, answer: sessionJSON, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/expire",
		},
		{
			name:   "resume",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.ResumeSession(ctx, "8a1b") },
			status: 200, answer: tokenSessionJSON, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/resume",
			check: func(t *testing.T, got any) {
				if s := got.(*client.SessionWithToken); s.Token != "vst_abc" || s.TokenExpiresAt.IsZero() {
					t.Errorf("got %+v, want token vst_abc with its expiry", s)
				}
			},
		},
		{
			name:   "delete",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return nil, c.DeleteSession(ctx, "8a1b") },
			status: 200, answer: `{"status":"success","id":"8a1b"}`, wantMethod: "DELETE", wantTarget: "/v1/sessions/8a1b",
		},
		{
			name:   "redact",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.RedactSession(ctx, "8a1b") },
			status: 200, answer: sessionJSON, wantMethod: "POST", wantTarget: "/v1/sessions/8a1b/redact",
		},
		{
			name:   "deliveries",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.ListDeliveries(ctx, "8a1b") },
			status: 200, answer: `{"deliveries":[` + deliveryJSON + `]}`,
			wantMethod: "GET", wantTarget: "/v1/sessions/8a1b/deliveries",
			check: func(t *testing.T, got any) {
				ds := got.([]client.Delivery)
				want := []client.Delivery{{ID: "8a1b~e1~default", EventID: "e1", EventType: "session.approved", SessionID: "8a1b",
					EndpointID: "default", URL: "https://hooks.example.com/idv", Status: "failed", CreatedAt: t0,
					UpdatedAt: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
					Attempts: []client.Attempt{{Attempt: 1, At: time.Date(2026, 1, 2, 3, 4, 5, 700e6, time.UTC), StatusCode: 500,
						LatencyMS: 12.5, Error: "status 500", ResponseBody: "oops", ResponseTruncated: true}}}}
				if !reflect.DeepEqual(ds, want) {
					t.Errorf("got %+v, want %+v", ds, want)
				}
			},
		},
		{
			name: "replay",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.ReplayDelivery(ctx, "8a1b~e1~default")
			},
			status: 202, answer: deliveryJSON,
			wantMethod: "POST", wantTarget: "/v1/deliveries/8a1b~e1~default/replay",
		},
		{
			name:   "events",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.Events(ctx, "17-3", 50) },
			status: 200, answer: `{"events":[{"id":"e1","cursor":"18-0","type":"session.created","timestamp":"2026-01-02T03:04:05.678Z","data":{"id":"8a1b","sequence":1}}],"next_cursor":"18-0"}`,
			wantMethod: "GET", wantTarget: "/v1/events?after=17-3&limit=50",
			check: func(t *testing.T, got any) {
				p := got.(*client.EventPage)
				if len(p.Events) != 1 || p.NextCursor != "18-0" {
					t.Fatalf("got %+v, want one event and next_cursor 18-0", p)
				}
				e := p.Events[0]
				if e.ID != "e1" || e.Cursor != "18-0" || e.Type != "session.created" || !e.Timestamp.Equal(t0) ||
					string(e.Data) != `{"id":"8a1b","sequence":1}` || !json.Valid(e.Raw) || len(e.Raw) < len(e.Data) {
					t.Errorf("event = %+v", e)
				}
			},
		},
		{
			name:   "introspect",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.Introspect(ctx, "vst_secret") },
			status: 200, answer: `{"active":true,"session":` + sessionJSON + `,"token_expires_at":"2026-01-02T03:34:05.678Z"}`,
			wantMethod: "POST", wantTarget: "/v1/tokens/introspect", wantBody: `{"token":"vst_secret"}`,
			check: func(t *testing.T, got any) {
				in := got.(*client.Introspection)
				if !in.Active || in.Session == nil || in.Session.ID != "8a1b" || in.TokenExpiresAt == nil {
					t.Errorf("got %+v, want active with session 8a1b", in)
				}
			},
		},
		{
			name:   "introspect inactive",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.Introspect(ctx, "vst_gone") },
			status: 200, answer: `{"active":false}`,
			wantMethod: "POST", wantTarget: "/v1/tokens/introspect", wantBody: `{"token":"vst_gone"}`,
			check: func(t *testing.T, got any) {
				if in := got.(*client.Introspection); in.Active || in.Session != nil {
					t.Errorf("got %+v, want inactive", in)
				}
			},
		},
		{
			name:   "endpoints list",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.ListEndpoints(ctx) },
			status: 200, answer: `{"endpoints":[` + endpointJSON + `]}`,
			wantMethod: "GET", wantTarget: "/v1/endpoints",
			check: func(t *testing.T, got any) {
				want := []client.Endpoint{{ID: "ep_1", URL: "https://hooks.example.com/idv", Events: []string{"session.approved"},
					Description: "main", Headers: map[string]string{"X-Env": "prod"}, Source: "api", CreatedAt: t0, UpdatedAt: t0, Secret: "whsec_AAAA"}}
				if got := got.([]client.Endpoint); !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			},
		},
		{
			name:   "endpoint get",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.GetEndpoint(ctx, "ep_1") },
			status: 200, answer: endpointJSON, wantMethod: "GET", wantTarget: "/v1/endpoints/ep_1",
		},
		{
			name: "endpoint create",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.CreateEndpoint(ctx, client.CreateEndpointRequest{URL: "https://h.example/x", Events: []string{"session.approved"},
					Headers: map[string]string{"X-Env": "prod"}})
			},
			status: 201, answer: endpointJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints",
			wantBody: `{"url":"https://h.example/x","events":["session.approved"],"headers":{"X-Env":"prod"}}`,
			check: func(t *testing.T, got any) {
				if e := got.(*client.Endpoint); e.Secret != "whsec_AAAA" {
					t.Errorf("Secret = %q, want whsec_AAAA", e.Secret)
				}
			},
		},
		{
			name: "endpoint update sends only the given fields",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.UpdateEndpoint(ctx, "ep_1", client.UpdateEndpointRequest{Description: str(""), Disabled: &yes})
			},
			status: 200, answer: endpointJSON,
			wantMethod: "PATCH", wantTarget: "/v1/endpoints/ep_1", wantBody: `{"description":"","disabled":true}`,
		},
		{
			name: "endpoint update all",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.UpdateEndpoint(ctx, "ep_1", client.UpdateEndpointRequest{URL: str("https://n.example"), Events: &[]string{},
					Description: str("d"), Headers: &map[string]string{}, Disabled: new(bool)})
			},
			status: 200, answer: endpointJSON,
			wantMethod: "PATCH", wantTarget: "/v1/endpoints/ep_1",
			wantBody: `{"url":"https://n.example","events":[],"description":"d","headers":{},"disabled":false}`,
		},
		{
			name:   "endpoint delete",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return nil, c.DeleteEndpoint(ctx, "ep_1") },
			status: 200, answer: `{"status":"success","id":"ep_1"}`, wantMethod: "DELETE", wantTarget: "/v1/endpoints/ep_1",
		},
		{
			name: "endpoint rotate",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.RotateEndpointSecret(ctx, "ep_1", 36*time.Hour)
			},
			status: 200, answer: endpointJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/rotate-secret", wantBody: `{"overlap":"36h"}`,
		},
		{
			name: "endpoint rotate default overlap",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.RotateEndpointSecret(ctx, "ep_1", 0)
			},
			status: 200, answer: endpointJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/rotate-secret", wantBody: `{}`,
		},
		{
			name: "endpoint test",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.TestEndpoint(ctx, "ep_1", "session.approved")
			},
			status: 202, answer: deliveryJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/test", wantBody: `{"type":"session.approved"}`,
			check: func(t *testing.T, got any) {
				if d := got.(*client.Delivery); d.ID != "8a1b~e1~default" {
					t.Errorf("delivery id = %q", d.ID)
				}
			},
		},
		{
			name: "endpoint recover",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.RecoverEndpoint(ctx, "ep_1", time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("x", 3600)), time.Time{})
			},
			status: 202, answer: recoveryJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/recover", wantBody: `{"since":"2026-01-01T00:00:00.000Z"}`,
			check: func(t *testing.T, got any) {
				want := &client.Recovery{ID: "rec_1", EndpointID: "ep_1", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
					Until: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Status: "running", Scanned: 10, Scheduled: 4, Done: 2}
				if got := got.(*client.Recovery); !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			},
		},
		{
			name: "endpoint recover with until",
			call: func(ctx context.Context, c *client.Client) (any, error) {
				return c.RecoverEndpoint(ctx, "ep_1", t0, t0.Add(time.Hour))
			},
			status: 202, answer: recoveryJSON,
			wantMethod: "POST", wantTarget: "/v1/endpoints/ep_1/recover",
			wantBody: `{"since":"2026-01-02T03:04:05.678Z","until":"2026-01-02T04:04:05.678Z"}`,
		},
		{
			name:   "recovery get",
			call:   func(ctx context.Context, c *client.Client) (any, error) { return c.GetRecovery(ctx, "rec_1") },
			status: 200, answer: recoveryJSON, wantMethod: "GET", wantTarget: "/v1/recoveries/rec_1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.answer))
			}))
			got, err := tt.call(t.Context(), newClient(t, srv))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != tt.wantMethod || r.Target != tt.wantTarget {
				t.Errorf("request = %s %s, want %s %s", r.Method, r.Target, tt.wantMethod, tt.wantTarget)
			}
			if string(r.Body) != tt.wantBody {
				t.Errorf("body = %s, want %s", r.Body, tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDo(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/missing" {
			clienttest.WriteError(w, 404, 1104, "Not found.")
			return
		}
		w.Header().Set("X-Answer", "yes")
		w.WriteHeader(201)
		w.Write([]byte(`{"ok":true}`))
	}))
	c := newClient(t, srv)

	resp, err := c.Do(t.Context(), "post", "/v1/anything?b=2&a=1", []byte(`{"x":1}`), client.WithHeader("X-Extra", "e"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 || string(resp.Body) != `{"ok":true}` || resp.Header.Get("X-Answer") != "yes" {
		t.Errorf("response = %d %q %v", resp.StatusCode, resp.Body, resp.Header)
	}
	r := srv.Requests()[0]
	if r.Method != "POST" || r.Target != "/v1/anything?b=2&a=1" || string(r.Body) != `{"x":1}` || r.Header.Get("X-Extra") != "e" {
		t.Errorf("request = %s %s %s %v", r.Method, r.Target, r.Body, r.Header)
	}

	resp, err = c.Do(t.Context(), "GET", "/v1/missing", nil)
	if !client.IsNotFound(err) {
		t.Errorf("err = %v, want not found", err)
	}
	if resp == nil || resp.StatusCode != 404 || !json.Valid(resp.Body) {
		t.Errorf("response = %+v, want the 404 with its body", resp)
	}

	if _, err := c.Do(t.Context(), "GET", "v1/no-slash", nil); err == nil {
		t.Error("a path without a leading / was sent")
	}
	if n := len(srv.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestCaptureResponse(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clienttest.WriteError(w, 409, 1401, "transition from approved to started not allowed")
	}))
	var raw client.Response
	_, err := newClient(t, srv).SetStatus(t.Context(), "8a1b", "started", client.CaptureResponse(&raw))
	if !client.IsInvalidTransition(err) {
		t.Fatalf("err = %v, want invalid transition", err)
	}
	if raw.StatusCode != 409 || string(raw.Body) != `{"code":1401,"message":"transition from approved to started not allowed","status":"fail"}`+"\n" {
		t.Errorf("captured %d %q", raw.StatusCode, raw.Body)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ base, key, secret string }{
		{"", "k", "s"},
		{"ftp://h", "k", "s"},
		{"http://", "k", "s"},
		{"http://h?x=1", "k", "s"},
		{"http://u:p@h", "k", "s"},
		{"http://h", "", "s"},
		{"http://h", "k", ""},
	} {
		if _, err := client.New(tt.base, tt.key, tt.secret); err == nil {
			t.Errorf("New(%q, %q, %q) succeeded, want an error", tt.base, tt.key, tt.secret)
		}
	}
}

func TestBaseURLPrefix(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(sessionJSON))
	}))
	c, err := client.New(srv.URL+"/sessiond/", clienttest.Key, clienttest.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSession(t.Context(), "8a1b"); err != nil {
		t.Fatal(err)
	}
	if got := srv.Requests()[0].Target; got != "/sessiond/v1/sessions/8a1b" {
		t.Errorf("target = %s, want /sessiond/v1/sessions/8a1b", got)
	}
}
