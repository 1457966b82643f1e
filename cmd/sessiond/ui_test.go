package main

import (
	"encoding/json"
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

// TestUIMounted checks /ui/ on a running daemon: basic auth, the SPA, its
// API over the daemon's Redis, and refusal of cross-site writes.
func TestUIMounted(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil, map[string]string{"SESSIOND_UI_USER": "ops", "SESSIOND_UI_PASSWORD": "ui-password-123"})
	client := asynq.NewClientFromRedisClient(d.Redis.Client())
	if _, err := client.Enqueue(asynq.NewTask("probe", nil), asynq.Queue("ui-probe")); err != nil {
		t.Fatalf("enqueue: %v", err)
	}

	req := func(method, path string, auth bool, hdr map[string]string) *http.Response {
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

	if resp := req(http.MethodGet, "/ui/", false, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/ without auth = %d, want 401", resp.StatusCode)
	}
	resp := req(http.MethodGet, "/ui/", true, nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui/ = %d %s, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", got)
	}
	resp = req(http.MethodGet, "/ui/api/queues", true, nil)
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

	// A page on another site must not make the operator's browser change
	// the queues.
	resp = req(http.MethodPost, "/ui/api/queues/ui-probe:pause", true, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site POST = %d, want 403", resp.StatusCode)
	}
	resp = req(http.MethodPost, "/ui/api/queues/ui-probe:pause", true, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Errorf("same-origin POST = %d, want 2xx", resp.StatusCode)
	}
}
