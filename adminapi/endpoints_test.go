package adminapi

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/internal/keyspace"
)

// createEndpoint adds an endpoint through the API (v2) and returns its id
// and secret.
func (e *env) createEndpoint(url string) (id, secret string) {
	e.t.Helper()
	m := e.do("POST", "/v1/endpoints", `{"url":"`+url+`"}`).ok(e.t, http.StatusCreated)
	return m["id"].(string), m["secret"].(string)
}

// TestLegacyRefusedOnEndpointRoutes: a legacy signature covers only the
// {id} on a route without a body, so a captured GET of an endpoint would
// also sign its DELETE or rotation. The endpoint and recovery routes take
// only v2: every legacy request there is 401 code 1102, and the endpoint
// is left as it was.
func TestLegacyRefusedOnEndpointRoutes(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		id, _ := a.createEndpoint("https://hooks.example.com/legacy")
		before := a.do("GET", "/v1/endpoints/"+id, "").ok(t, http.StatusOK)

		captured := a.build("GET", "/v1/endpoints/"+id, "", legacy())
		msg := a.resend(captured).fail(t, http.StatusUnauthorized, CodeAuthFailed)
		if msg != errV2Only.Message {
			t.Errorf("legacy GET message %q, want %q", msg, errV2Only.Message)
		}
		for _, move := range []struct{ method, path string }{
			{"DELETE", "/v1/endpoints/" + id},
			{"POST", "/v1/endpoints/" + id + "/rotate-secret"},
		} {
			req := a.build(move.method, move.path, "", legacy())
			req.Header.Set("X-HMAC-SIGNATURE", captured.Header.Get("X-HMAC-SIGNATURE"))
			if msg := a.send(req).fail(t, http.StatusUnauthorized, CodeAuthFailed); msg != errV2Only.Message {
				t.Errorf("%s %s with the GET's legacy signature: message %q", move.method, move.path, msg)
			}
		}
		after := a.do("GET", "/v1/endpoints/"+id, "").ok(t, http.StatusOK)
		if after["updated_at"] != before["updated_at"] {
			t.Errorf("the endpoint changed: updated_at %v, was %v", after["updated_at"], before["updated_at"])
		}

		// The legacy client still works on the other routes.
		a.do("GET", "/v1/events", "", legacy()).ok(t, http.StatusOK)
	})
}

// TestRotateSecretOverlap: an overlap is a Go duration above 0 and at
// most 720h, the dispatcher's rule and message; left out it is 24h.
func TestRotateSecretOverlap(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		id, _ := a.createEndpoint("https://hooks.example.com/rotate")
		path := "/v1/endpoints/" + id + "/rotate-secret"
		_, want := dispatcher.ParseOverlap("0s")
		if want == nil {
			t.Fatal(`dispatcher.ParseOverlap("0s") accepted it`)
		}
		for _, body := range []string{`{"overlap":"0s"}`, `{"overlap":"-1h"}`, `{"overlap":"721h"}`, `{"overlap":"soon"}`} {
			msg := a.do("POST", path, body).fail(t, http.StatusBadRequest, CodeInvalidRequest)
			if msg != want.Error() {
				t.Errorf("%s: message %q, want %q", body, msg, want.Error())
			}
		}
		for _, body := range []string{``, `{}`, `{"overlap":"1h"}`, `{"overlap":"720h"}`} {
			m := a.do("POST", path, body).ok(t, http.StatusOK)
			if s, _ := m["secret"].(string); s == "" {
				t.Errorf("%s: no new secret in %v", body, m)
			}
		}
	})
}

// TestEndpointsBusy: a change that keeps losing its transaction to other
// changes is 503 code 1000 with Retry-After, never a 500.
func TestEndpointsBusy(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		id, _ := a.createEndpoint("https://hooks.example.com/busy")
		ver := keyspace.New(a.tg.Namespace).EndpointsVersion()
		ctx, stop := context.WithCancel(a.ctx)
		var bumpers sync.WaitGroup
		for range 4 { // other replicas' changes, as fast as Redis takes them
			bumpers.Go(func() {
				for ctx.Err() == nil {
					_ = a.rdb.Incr(ctx, ver).Err()
				}
			})
		}
		defer bumpers.Wait()
		defer stop()
		deadline := time.Now().Add(20 * time.Second)
		for busy := false; !busy; {
			if time.Now().After(deadline) {
				t.Fatal("no change lost its transaction 10 times in a row within 20s")
			}
			r := a.do("PATCH", "/v1/endpoints/"+id, `{"description":"busy"}`)
			switch r.status {
			case http.StatusOK:
			case http.StatusServiceUnavailable:
				busy = true
				if msg := r.fail(t, http.StatusServiceUnavailable, codeInternal); msg != "Endpoints are busy with other changes, retry." {
					t.Errorf("message %q", msg)
				}
				if got := r.header.Get("Retry-After"); got != "1" {
					t.Errorf("Retry-After %q, want 1", got)
				}
			default:
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		}
	})
}
