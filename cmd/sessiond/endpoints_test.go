package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sessiond/sessiond/internal/redistest"
)

// hookLog is a receiver that answers 204 and keeps every request.
type hookLog struct {
	URL     string
	mu      sync.Mutex
	reqs    []hookRequest
	changed chan struct{}
}

type hookRequest struct {
	header http.Header
	body   []byte
	event  struct {
		Type string `json:"type"`
		Test bool   `json:"test"`
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
}

func newHookLog(t *testing.T) *hookLog {
	h := &hookLog{changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hr := hookRequest{header: r.Header.Clone(), body: body}
		if err := json.Unmarshal(body, &hr.event); err != nil {
			t.Errorf("webhook body is not JSON: %s", body)
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, hr)
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL + "/hooks"
	return h
}

// all returns the requests so far.
func (h *hookLog) all() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reqs)
}

// wait returns the first request that match accepts, failing the test
// after 15 s.
func (h *hookLog) wait(t *testing.T, what string, match func(hookRequest) bool) hookRequest {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		h.mu.Lock()
		for _, r := range h.reqs {
			if match(r) {
				h.mu.Unlock()
				return r
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no webhook %s within 15s; got %d requests", what, len(h.all()))
		}
	}
}

// forSession matches a session's event of type typ.
func forSession(id, typ string) func(hookRequest) bool {
	return func(r hookRequest) bool { return r.event.Data.ID == id && r.event.Type == typ }
}

// verifies reports whether an official Standard Webhooks library accepts
// r with secret.
func (r hookRequest) verifies(t *testing.T, secret string) bool {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("standardwebhooks.NewWebhook: %v", err)
	}
	return wh.Verify(r.body, r.header) == nil
}

// decide drives a new session of d to status (approved or declined) and
// returns its id.
func decide(t *testing.T, d *testDaemon, ref, status string) string {
	t.Helper()
	id, _ := d.createSession(ref, nil)
	for _, step := range []struct{ path, status string }{{"/status", "started"}, {"/status", "submitted"}, {"/decision", status}} {
		if code, b := d.call(http.MethodPost, "/v1/sessions/"+id+step.path, id, map[string]string{"status": step.status}); code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", step.path, step.status, code, b)
		}
	}
	return id
}

// apiEndpoint is an endpoint as the admin API answers it.
type apiEndpoint struct {
	ID, URL, Secret, Source string
	Events                  []string
	Headers                 map[string]string
	Disabled                bool
}

// recovery is a recovery as the admin API answers it.
type recovery struct {
	ID, Status               string
	Scanned, Scheduled, Done int64
}

// callAs makes a call to d that must answer want, and decodes the answer.
func callAs[T any](t *testing.T, d *testDaemon, method, path string, body any, want int) T {
	t.Helper()
	code, b := d.call(method, path, "", body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: %s: %v", method, path, b, err)
	}
	return v
}

// TestEndpointsThroughTheAPI drives webhook endpoints through the admin
// API of two replicas on one Redis, with real receivers: an endpoint
// created through one replica gets the next event decided through the
// other; a rotation signs with both secrets during its overlap; a test
// event arrives signed with "test":true and touches no session; a
// recovery brings exactly the events a disabled endpoint missed; the
// configuration's endpoint refuses changes.
func TestEndpointsThroughTheAPI(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	config, hooks := newHookLog(t), newHookLog(t)
	env := map[string]string{
		"SESSIOND_WEBHOOK_URL":            config.URL,
		"SESSIOND_WEBHOOK_SECRET":         hmacSecret1,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
		"SESSIOND_WEBHOOK_RETRY_SCHEDULE": "100ms,200ms",
	}
	a, b := startDaemon(t, redis, env), startDaemon(t, redis, env)

	// Created through A, with a custom header and an event filter.
	created := callAs[apiEndpoint](t, a, http.MethodPost, "/v1/endpoints", map[string]any{
		"url": hooks.URL, "events": []string{"session.approved", "session.expired"},
		"description": "test receiver", "headers": map[string]string{"X-Tenant": "tenant-7"},
	}, http.StatusCreated)
	answered := time.Now()
	if !strings.HasPrefix(created.Secret, "whsec_") || created.Source != "api" || !strings.HasPrefix(created.ID, "ep_") {
		t.Fatalf("created endpoint %+v: want an ep_ id, a whsec_ secret and source api", created)
	}

	// A stops: the event decided through B can only be B's delivery, and
	// B learns of the endpoint only by its own polling, which the contract
	// bounds at 1 s. Nothing asks B about the endpoint before.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(answered.Add(time.Second)))
	first := decide(t, b, "endpoints-1", "approved")
	got := hooks.wait(t, "for the first approval", forSession(first, "session.approved"))
	if !got.verifies(t, created.Secret) {
		t.Errorf("the first webhook does not verify with the secret the create returned")
	}
	// A read never shows the secret.
	if code, body := b.call(http.MethodGet, "/v1/endpoints/"+created.ID, "", nil); code != http.StatusOK || strings.Contains(string(body), created.Secret) {
		t.Errorf("GET through B: %d %s (want 200 without the secret)", code, body)
	}
	if v := got.header.Get("X-Tenant"); v != "tenant-7" {
		t.Errorf("custom header X-Tenant = %q, want tenant-7", v)
	}
	if strings.Contains(b.Logs.String(), "tenant-7") {
		t.Errorf("a custom header's value is in the logs")
	}
	if strings.Contains(b.Logs.String(), created.Secret[len("whsec_"):]) {
		t.Errorf("the endpoint's secret is in the logs")
	}
	// The filter holds: the session.created, started and submitted events
	// went to the configuration's endpoint only.
	config.wait(t, "for the first approval (configuration)", forSession(first, "session.approved"))
	for _, r := range hooks.all() {
		if r.event.Type != "session.approved" {
			t.Errorf("the endpoint got %s, which it does not subscribe to", r.event.Type)
		}
	}

	// Rotation: during the overlap both secrets verify each webhook.
	rotated := callAs[apiEndpoint](t, b, http.MethodPost, "/v1/endpoints/"+created.ID+"/rotate-secret",
		map[string]string{"overlap": "1h"}, http.StatusOK)
	if rotated.Secret == "" || rotated.Secret == created.Secret {
		t.Fatalf("rotation answered secret %q: want a new one", rotated.Secret)
	}
	second := decide(t, b, "endpoints-2", "approved")
	got = hooks.wait(t, "for the second approval", forSession(second, "session.approved"))
	if n := len(strings.Fields(got.header.Get("webhook-signature"))); n != 2 {
		t.Errorf("webhook-signature has %d entries during the overlap, want 2", n)
	}
	if !got.verifies(t, created.Secret) || !got.verifies(t, rotated.Secret) {
		t.Errorf("during the overlap, verify with the old secret: %v, with the new: %v",
			got.verifies(t, created.Secret), got.verifies(t, rotated.Secret))
	}

	// A test event: signed, "test":true, the type asked for, no session.
	delivery := callAs[struct {
		EventID   string `json:"event_id"`
		SessionID string `json:"session_id"`
	}](t, b, http.MethodPost, "/v1/endpoints/"+created.ID+"/test", map[string]string{"type": "session.expired"}, http.StatusAccepted)
	got = hooks.wait(t, "for the test event", func(r hookRequest) bool { return r.header.Get("webhook-id") == delivery.EventID })
	if !got.event.Test || got.event.Type != "session.expired" || !got.verifies(t, rotated.Secret) {
		t.Errorf("test event: type %s test %v verifies %v: %s", got.event.Type, got.event.Test, got.verifies(t, rotated.Secret), got.body)
	}
	if code, body := b.call(http.MethodGet, "/v1/sessions/"+delivery.SessionID, "", nil); code != http.StatusNotFound {
		t.Errorf("the test event's session answers %d %s, want 404: it does not exist", code, body)
	}

	// Disabled, it misses three events; the configuration's endpoint gets
	// them (so they were relayed).
	if code, body := b.call(http.MethodPatch, "/v1/endpoints/"+created.ID, "", map[string]any{"disabled": true}); code != http.StatusOK {
		t.Fatalf("disable: %d %s", code, body)
	}
	var missed []string
	for i := range 3 {
		id := decide(t, b, "endpoints-missed-"+string(rune('a'+i)), "approved")
		config.wait(t, "for a missed approval (configuration)", forSession(id, "session.approved"))
		missed = append(missed, id)
	}
	before := len(hooks.all())
	if code, body := b.call(http.MethodPost, "/v1/endpoints/"+created.ID+"/recover", "", map[string]string{
		"since": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}); code != http.StatusConflict {
		t.Errorf("recover a disabled endpoint: %d %s, want 409", code, body)
	}
	if code, body := b.call(http.MethodPatch, "/v1/endpoints/"+created.ID, "", map[string]any{"disabled": false}); code != http.StatusOK {
		t.Fatalf("enable: %d %s", code, body)
	}
	rec := callAs[recovery](t, b, http.MethodPost, "/v1/endpoints/"+created.ID+"/recover",
		map[string]string{"since": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, http.StatusAccepted)
	deadline := time.Now().Add(20 * time.Second)
	for rec.Status != "done" {
		if time.Now().After(deadline) {
			t.Fatalf("recovery %+v not done after 20s", rec)
		}
		time.Sleep(100 * time.Millisecond)
		rec = callAs[recovery](t, b, http.MethodGet, "/v1/recoveries/"+rec.ID, nil, http.StatusOK)
	}
	if rec.Scheduled != 3 || rec.Done != 3 {
		t.Errorf("recovery %+v: want 3 scheduled and done (the missed events)", rec)
	}
	var recovered []string
	for _, r := range hooks.all()[before:] {
		recovered = append(recovered, r.event.Data.ID)
		if !r.verifies(t, rotated.Secret) {
			t.Errorf("a recovered webhook does not verify")
		}
	}
	slices.Sort(recovered)
	slices.Sort(missed)
	if !slices.Equal(recovered, missed) {
		t.Errorf("recovery sent the events of %v, want exactly the missed %v", recovered, missed)
	}

	// The configuration's endpoint is listed, and refuses changes.
	list := callAs[struct{ Endpoints []apiEndpoint }](t, b, http.MethodGet, "/v1/endpoints", nil, http.StatusOK)
	if len(list.Endpoints) != 2 || list.Endpoints[0].Source != "config" || list.Endpoints[1].ID != created.ID {
		t.Fatalf("list: %+v, want the configuration's endpoint then the API's", list.Endpoints)
	}
	cfgID := list.Endpoints[0].ID
	for _, change := range []struct{ method, path string }{
		{http.MethodPatch, "/v1/endpoints/" + cfgID},
		{http.MethodDelete, "/v1/endpoints/" + cfgID},
		{http.MethodPost, "/v1/endpoints/" + cfgID + "/rotate-secret"},
	} {
		var body any
		if change.method == http.MethodPatch {
			body = map[string]any{"disabled": true}
		}
		code, answer := b.call(change.method, change.path, "", body)
		var e struct{ Code int }
		_ = json.Unmarshal(answer, &e)
		if code != http.StatusConflict || e.Code != 1409 {
			t.Errorf("%s %s: %d %s, want 409 code 1409", change.method, change.path, code, answer)
		}
	}

	// Bad input is refused in the contract's shape, and changes nothing.
	for _, bad := range []map[string]any{
		{"url": "ftp://example.com/"},
		{"url": hooks.URL, "headers": map[string]string{"webhook-signature": "v1,forged"}},
		{"url": hooks.URL, "headers": map[string]string{"Host": "evil.example"}},
		{"url": hooks.URL, "events": []string{"session.unknown"}},
	} {
		code, answer := b.call(http.MethodPost, "/v1/endpoints", "", bad)
		var e struct{ Code int }
		_ = json.Unmarshal(answer, &e)
		if code != http.StatusBadRequest || e.Code != 1001 {
			t.Errorf("create %v: %d %s, want 400 code 1001", bad, code, answer)
		}
	}

	// Deleted: gone from the list and from the deliveries.
	if code, body := b.call(http.MethodDelete, "/v1/endpoints/"+created.ID, "", nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, body := b.call(http.MethodGet, "/v1/endpoints/"+created.ID, "", nil); code != http.StatusNotFound {
		t.Errorf("GET after delete: %d %s, want 404", code, body)
	}
	n := len(hooks.all())
	last := decide(t, b, "endpoints-after-delete", "approved")
	config.wait(t, "for the approval after the delete (configuration)", forSession(last, "session.approved"))
	if len(hooks.all()) != n {
		t.Errorf("a deleted endpoint got a webhook")
	}
}
