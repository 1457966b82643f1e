package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
)

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := basicAuth(ok, "sessiond queues", "ops", "ui-password-123")
	for _, tc := range []struct {
		name       string
		user, pass string
		noAuth     bool
		want       int
	}{
		{name: "no credentials", noAuth: true, want: http.StatusUnauthorized},
		{name: "right", user: "ops", pass: "ui-password-123", want: http.StatusNoContent},
		{name: "wrong password", user: "ops", pass: "ui-password-124", want: http.StatusUnauthorized},
		{name: "password prefix", user: "ops", pass: "ui-password-12", want: http.StatusUnauthorized},
		{name: "wrong user", user: "admin", pass: "ui-password-123", want: http.StatusUnauthorized},
		{name: "empty", user: "", pass: "", want: http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodGet, "/ui/", nil)
			if !tc.noAuth {
				r.SetBasicAuth(tc.user, tc.pass)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("status = %d, want %d", w.Code, tc.want)
			}
			if tc.want == http.StatusUnauthorized {
				if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="sessiond queues"`) {
					t.Errorf("WWW-Authenticate = %q, want a Basic challenge", got)
				}
				if strings.Contains(w.Body.String(), "ui-password") {
					t.Errorf("401 body %q repeats the password", w.Body)
				}
			}
		})
	}
}

// uiRequest sends one request to the daemon, with the UI's credentials
// when auth is set, and closes the response at the end of the test.
func uiRequest(t *testing.T, d *testDaemon, method, path string, auth bool, hdr map[string]string) *http.Response {
	t.Helper()
	r, err := http.NewRequest(method, d.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		r.SetBasicAuth("ops", "ui-password-123")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// startUIDaemon starts a daemon with the UI's credentials and extra env,
// and enqueues one task on the queue "ui-probe" of its Redis.
func startUIDaemon(t *testing.T, env map[string]string) *testDaemon {
	t.Helper()
	vars := map[string]string{"SESSIOND_UI_USER": "ops", "SESSIOND_UI_PASSWORD": "ui-password-123"}
	for k, v := range env {
		vars[k] = v
	}
	d := startDaemon(t, nil, vars)
	client := asynq.NewClientFromRedisClient(d.Redis.Client())
	if _, err := client.Enqueue(asynq.NewTask("probe", nil), asynq.Queue("ui-probe")); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return d
}

// paused reports whether the queue "ui-probe" is paused, as Asynq sees it.
func paused(t *testing.T, d *testDaemon) bool {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(d.Redis.Client()).GetQueueInfo("ui-probe")
	if err != nil {
		t.Fatalf("queue info: %v", err)
	}
	return info.Paused
}

// TestUIMounted checks /ui/ on a running daemon: basic auth, the SPA, its
// API over the daemon's Redis, and refusal of cross-site writes.
func TestUIMounted(t *testing.T) {
	t.Parallel()
	d := startUIDaemon(t, nil)
	if !d.Logs.has(func(l map[string]any) bool { return l["msg"] == "queue ui" && l["mode"] == "read-write" }) {
		t.Errorf("no start-up line says the UI is read-write")
	}

	if resp := uiRequest(t, d, http.MethodGet, "/ui/", false, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ without auth = %d, want 401", resp.StatusCode)
	}
	resp := uiRequest(t, d, http.MethodGet, "/ui/", true, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui/ = %d %s, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", got)
	}
	resp = uiRequest(t, d, http.MethodGet, "/ui/api/queues", true, nil)
	var body struct {
		Queues []struct {
			Queue string `json:"queue"`
			Size  int    `json:"size"`
		} `json:"queues"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET /ui/api/queues: %v", err)
	}
	found := false
	for _, q := range body.Queues {
		found = found || (q.Queue == "ui-probe" && q.Size == 1)
	}
	if !found {
		t.Errorf("GET /ui/api/queues = %+v, want ui-probe with 1 task", body.Queues)
	}

	// Without credentials, and from a page on another site, nothing changes.
	if resp := uiRequest(t, d, http.MethodPost, "/ui/api/queues/ui-probe:pause", false, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without auth = %d, want 401", resp.StatusCode)
	}
	resp = uiRequest(t, d, http.MethodPost, "/ui/api/queues/ui-probe:pause", true, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST = %d, want 403", resp.StatusCode)
	}
	if paused(t, d) {
		t.Fatalf("queue paused by a refused request")
	}
	resp = uiRequest(t, d, http.MethodPost, "/ui/api/queues/ui-probe:pause", true, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Errorf("same-origin POST = %d, want 2xx", resp.StatusCode)
	}
	if !paused(t, d) {
		t.Errorf("queue not paused by the operator's request")
	}
	if resp := uiRequest(t, d, http.MethodGet, "/debug/pprof/", true, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without SESSIOND_PPROF = %d, want 404", resp.StatusCode)
	}
}

// TestUIReadOnly checks that SESSIOND_UI_READONLY shows the queues but
// refuses every change, even with the right credentials.
func TestUIReadOnly(t *testing.T) {
	t.Parallel()
	d := startUIDaemon(t, map[string]string{"SESSIOND_UI_READONLY": "true"})
	if !d.Logs.has(func(l map[string]any) bool { return l["msg"] == "queue ui" && l["mode"] == "read-only" }) {
		t.Errorf("no start-up line says the UI is read-only")
	}
	if resp := uiRequest(t, d, http.MethodGet, "/ui/api/queues", true, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/api/queues = %d, want 200", resp.StatusCode)
	}
	if resp := uiRequest(t, d, http.MethodGet, "/ui/api/queues", false, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/api/queues without auth = %d, want 401", resp.StatusCode)
	}
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		resp := uiRequest(t, d, method, "/ui/api/queues/ui-probe:pause", true, map[string]string{"Sec-Fetch-Site": "same-origin"})
		if resp.StatusCode < 400 {
			t.Errorf("%s in read-only mode = %d, want refused", method, resp.StatusCode)
		}
	}
	resp := uiRequest(t, d, http.MethodDelete, "/ui/api/queues/ui-probe", true, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode < 400 {
		t.Errorf("DELETE queue in read-only mode = %d, want refused", resp.StatusCode)
	}
	if paused(t, d) {
		t.Errorf("read-only UI paused the queue")
	}
	info, err := asynq.NewInspectorFromRedisClient(d.Redis.Client()).GetQueueInfo("ui-probe")
	if err != nil || info.Size != 1 {
		t.Errorf("queue after refused writes: %+v, %v; want its 1 task", info, err)
	}
}

// TestUIOffWithoutPassword checks that without SESSIOND_UI_PASSWORD there is
// no UI at all, and that the start-up log says so.
func TestUIOffWithoutPassword(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil, map[string]string{"SESSIOND_PPROF": "true"})
	for _, path := range []string{"/ui/", "/ui/api/queues", "/ui"} {
		if resp := uiRequest(t, d, http.MethodGet, path, false, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without a UI password = %d, want 404", path, resp.StatusCode)
		}
	}
	if resp := uiRequest(t, d, http.MethodPost, "/ui/api/queues/x:pause", false, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /ui/api/... without a UI password = %d, want 404", resp.StatusCode)
	}
	if !d.Logs.has(func(l map[string]any) bool {
		mode, _ := l["mode"].(string)
		return l["msg"] == "queue ui" && strings.HasPrefix(mode, "off")
	}) {
		t.Errorf("no start-up line says the UI is off")
	}
	// Profiles, asked for, are served (no password: no auth).
	resp := uiRequest(t, d, http.MethodGet, "/debug/pprof/heap?debug=1", false, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "heap profile") {
		t.Errorf("GET /debug/pprof/heap = %d %.60q, want a heap profile", resp.StatusCode, b)
	}
}
