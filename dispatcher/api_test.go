package dispatcher

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/lifecycle"
)

const (
	adminKey    = "platform"
	adminSecret = "platform-secret-0123456789"
)

// admin is the admin API with the delivery routes.
func (e *env) admin() *lifecycle.API {
	api := lifecycle.NewAPI(e.svc, lifecycle.APIConfig{Clients: map[string]string{adminKey: adminSecret}})
	e.d.RegisterRoutes(api, e.svc)
	return api
}

// call makes a signed admin request (no body: the signature covers the
// {id}) and decodes the JSON answer into out.
func call(t *testing.T, api http.Handler, method, path, id string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	m := hmac.New(sha256.New, []byte(adminSecret))
	m.Write([]byte(id))
	req.Header.Set("X-AUTH-CLIENT", adminKey)
	req.Header.Set("X-HMAC-SIGNATURE", hex.EncodeToString(m.Sum(nil)))
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec.Code
}

type apiError struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// A delivery that keeps failing is dead after the schedule, archived in
// Asynq and listed with every attempt; a replay sends it again with the
// same webhook-id and the next attempt number.
func TestDeadThenReplay(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	long := strings.Repeat("x", 10<<10)
	var failing atomic.Bool
	failing.Store(true)
	rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ *receipt, _ int) int {
		if failing.Load() {
			http.Error(w, long, http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		return answerJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	cfg := testConfig(rv.endpoint("default"))
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
	e := newEnv(t, cfg)
	api := e.admin()
	sid := e.create("user-1")
	ev := e.events(sid)[0]
	did := deliveryID(sid, ev.ID, "default")

	waitFor(t, 10*time.Second, "delivery dead", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusDead
	})
	// Archived in Asynq, where the UI shows it.
	// The record is written just before Asynq archives the task.
	insp := asynq.NewInspectorFromRedisClient(e.rdb)
	waitFor(t, 5*time.Second, "the task archived", func() bool {
		info, err := insp.GetTaskInfo(e.d.cfg.Queue, did)
		return err == nil && info.State == asynq.TaskStateArchived
	})

	var list DeliveryList
	if code := call(t, api, "GET", "/v1/sessions/"+sid+"/deliveries", sid, &list); code != http.StatusOK {
		t.Fatalf("GET deliveries = %d", code)
	}
	if len(list.Deliveries) != 1 {
		t.Fatalf("deliveries = %+v", list.Deliveries)
	}
	dl := list.Deliveries[0]
	if dl.ID != did || dl.Status != StatusDead || dl.EventID != ev.ID || dl.EventType != "session.created" || dl.EndpointID != "default" || dl.URL != rv.url() {
		t.Errorf("delivery = %+v", dl)
	}
	if len(dl.Attempts) != 3 {
		t.Fatalf("attempts = %d, want 3", len(dl.Attempts))
	}
	for i, a := range dl.Attempts {
		if a.Attempt != i+1 || a.StatusCode != 500 || a.Error != "HTTP 500 Internal Server Error" ||
			len(a.ResponseBody) != 4096 || !a.ResponseTruncated || a.LatencyMS <= 0 || a.At.IsZero() {
			t.Errorf("attempt %d = %+v (body %d bytes)", i, a, len(a.ResponseBody))
		}
	}

	// Replay: 202 with the delivery, then attempt 4 with the same webhook-id.
	failing.Store(false)
	var replayed Delivery
	if code := call(t, api, "POST", "/v1/deliveries/"+did+"/replay", did, &replayed); code != http.StatusAccepted {
		t.Fatalf("replay = %d", code)
	}
	if replayed.ID != did || len(replayed.Attempts) < 3 {
		t.Errorf("replay answer = %+v", replayed)
	}
	got := rv.waitN(ev.ID, 4, 5*time.Second)
	if got[3].attempt != 4 || got[3].v1Valid != 1 {
		t.Errorf("replay request: attempt %d, valid %d", got[3].attempt, got[3].v1Valid)
	}
	waitFor(t, 5*time.Second, "replay succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded && len(ds[0].Attempts) == 4
	})
	if a := e.deliveries(sid)[0].Attempts[3]; a.StatusCode != 200 || a.ResponseBody != "{\"ok\":true}\n" || a.ResponseTruncated {
		t.Errorf("replay attempt = %+v", a)
	}
}

// Unknown sessions and deliveries are 404 with code 1104; a session
// without deliveries lists none.
func TestDeliveryRoutesNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testConfig()) // no endpoints: no deliveries
	api := e.admin()
	sid := e.create("user-1")

	var list DeliveryList
	if code := call(t, api, "GET", "/v1/sessions/"+sid+"/deliveries", sid, &list); code != http.StatusOK || list.Deliveries == nil || len(list.Deliveries) != 0 {
		t.Errorf("GET deliveries of a session without any = %d %+v, want 200 and []", code, list)
	}
	tests := []struct{ method, path, id string }{
		{"GET", "/v1/sessions/6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11/deliveries", "6f1c3a0e-9a8e-4c1e-8d5e-2a7c0b9d4e11"},
		{"GET", "/v1/sessions/nope/deliveries", "nope"},
		{"POST", "/v1/deliveries/nope/replay", "nope"},
		{"POST", "/v1/deliveries/" + sid + "~evt_00~default/replay", sid + "~evt_00~default"},
	}
	for _, tt := range tests {
		var got apiError
		if code := call(t, api, tt.method, tt.path, tt.id, &got); code != http.StatusNotFound || got.Code != lifecycle.CodeNotFound || got.Status != "fail" {
			t.Errorf("%s %s = %d %+v, want 404 code 1104", tt.method, tt.path, code, got)
		}
	}
}
