package dispatcher

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sessiond/sessiond/lifecycle"
)

// A session created through the lifecycle reaches the receiver as a
// session.created webhook, signed as the contract says, on the first try.
func TestSignedDeliveryFromLifecycle(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	e := newEnv(t, testConfig(rv.endpoint("default")))
	sid := e.create("user-1")
	evs := e.events(sid)
	if len(evs) != 1 || evs[0].Type != "session.created" {
		t.Fatalf("outbox events = %v, want one session.created", evs)
	}
	ev := evs[0]
	got := rv.waitN(ev.ID, 1, 5*time.Second)[0]

	checks := []struct {
		name      string
		got, want string
	}{
		{"webhook-id", got.id, ev.ID},
		{"webhook-attempt", got.header.Get("webhook-attempt"), "1"},
		{"Content-Type", got.header.Get("Content-Type"), "application/json"},
		{"X-AUTH-CLIENT", got.header.Get("X-AUTH-CLIENT"), testAPIKey},
		{"body", string(got.body), string(ev.Body)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if got.v1Entries != 1 || got.v1Valid != 1 {
		t.Errorf("v1 entries = %d, valid = %d, want 1 and 1 (signature %q)", got.v1Entries, got.v1Valid, got.header.Get("webhook-signature"))
	}
	if !got.hmacValid {
		t.Errorf("X-HMAC-SIGNATURE %q does not verify", got.header.Get("X-HMAC-SIGNATURE"))
	}
	ts, err := strconv.ParseInt(got.header.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Second {
		t.Errorf("webhook-timestamp = %q, want about now", got.header.Get("webhook-timestamp"))
	}

	// The official Standard Webhooks library accepts it too.
	wh, err := standardwebhooks.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.body, got.header); err != nil {
		t.Errorf("standard-webhooks Verify: %v", err)
	}

	// The delivery is recorded as succeeded with one attempt.
	waitFor(t, 5*time.Second, "delivery succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded
	})
	d := e.deliveries(sid)[0]
	if d.ID != deliveryID(sid, ev.ID, "default") || d.EventID != ev.ID || d.EventType != ev.Type || d.EndpointID != "default" || d.URL != rv.url() {
		t.Errorf("delivery = %+v", d)
	}
	if len(d.Attempts) != 1 || d.Attempts[0].Attempt != 1 || d.Attempts[0].StatusCode != http.StatusNoContent || d.Attempts[0].Error != "" {
		t.Errorf("attempts = %+v, want one 204", d.Attempts)
	}
}

// With two whsec_ secrets every webhook carries two v1 entries, each
// verifying with its own secret; X-HMAC-SIGNATURE uses the first.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret, testSecret2)
	e := newEnv(t, testConfig(rv.endpoint("default", testSecret, testSecret2)))
	ev := e.events(e.create("user-1"))[0]
	got := rv.waitN(ev.ID, 1, 5*time.Second)[0]
	if got.v1Entries != 2 || got.v1Valid != 2 {
		t.Fatalf("v1 entries = %d, valid = %d, want 2 and 2", got.v1Entries, got.v1Valid)
	}
	if !got.hmacValid {
		t.Errorf("X-HMAC-SIGNATURE does not verify with the first secret")
	}
	// Each secret alone verifies (a receiver holding only the old or the
	// new one), with the official library.
	for _, s := range []string{testSecret, testSecret2} {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(got.body, got.header); err != nil {
			t.Errorf("standard-webhooks Verify with one secret: %v", err)
		}
	}
}

// An endpoint with a whsk_ key gets a v1a entry that verifies with the
// whpk_ public key alone.
func TestEd25519Signature(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	pub, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(testPublic, "whpk_"))
	if err != nil {
		t.Fatal(err)
	}
	rv.public = ed25519.PublicKey(pub)
	e := newEnv(t, testConfig(rv.endpoint("default", testSecret, testPrivate)))
	ev := e.events(e.create("user-1"))[0]
	got := rv.waitN(ev.ID, 1, 5*time.Second)[0]
	if !got.v1aValid {
		t.Errorf("v1a does not verify with %s: %q", testPublic, got.header.Get("webhook-signature"))
	}
	if got.v1Valid != 1 {
		t.Errorf("v1 valid = %d, want 1", got.v1Valid)
	}
}

// Event filters pick what each endpoint gets; a disabled endpoint gets
// nothing.
func TestEventFilters(t *testing.T) {
	t.Parallel()
	all, decisions, off := newReceiver(t, testSecret), newReceiver(t, testSecret), newReceiver(t, testSecret)
	dec := decisions.endpoint("decisions")
	dec.Events = []string{"session.approved", "session.declined"}
	disabled := off.endpoint("off")
	disabled.Disabled = true
	e := newEnv(t, testConfig(all.endpoint("all"), dec, disabled))

	sid := e.create("user-1")
	for _, s := range []lifecycle.Status{"started", "submitted"} {
		if _, err := e.svc.Progress(e.ctx, sid, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.Decide(e.ctx, sid, lifecycle.DecisionRequest{Status: "approved"}); err != nil {
		t.Fatal(err)
	}
	evs := e.events(sid)
	if len(evs) != 4 {
		t.Fatalf("got %d events, want 4", len(evs))
	}
	for _, ev := range evs {
		all.waitN(ev.ID, 1, 5*time.Second)
	}
	approved := evs[3]
	decisions.waitN(approved.ID, 1, 5*time.Second)
	// Every delivery is recorded by now: the filtered endpoint has one.
	waitFor(t, 5*time.Second, "5 deliveries recorded as succeeded", func() bool {
		n := 0
		for _, d := range e.deliveries(sid) {
			if d.Status == StatusSucceeded {
				n++
			}
		}
		return n == 5
	})
	var types []string
	for _, r := range decisions.receipts() {
		types = append(types, string(r.body[:bytes.IndexByte(r.body, ',')]))
	}
	if len(types) != 1 || !strings.Contains(types[0], "session.approved") {
		t.Errorf("filtered endpoint got %v, want only session.approved", types)
	}
	if n := len(off.receipts()); n != 0 {
		t.Errorf("disabled endpoint got %d requests", n)
	}
}

// A failing receiver is retried on the schedule with the same webhook-id
// and webhook-attempt 1, 2, 3.
func TestRetriesKeepWebhookID(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ *receipt, seen int) int {
		if seen < 2 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	e := newEnv(t, testConfig(rv.endpoint("default")))
	sid := e.create("user-1")
	ev := e.events(sid)[0]
	got := rv.waitN(ev.ID, 3, 5*time.Second)
	for i, r := range got {
		if r.attempt != i+1 {
			t.Errorf("request %d: webhook-attempt = %d, want %d", i, r.attempt, i+1)
		}
		if r.v1Valid != 1 {
			t.Errorf("request %d: signature does not verify", i)
		}
		if i > 0 && r.header.Get("webhook-timestamp") < got[i-1].header.Get("webhook-timestamp") {
			t.Errorf("request %d: timestamp went back", i)
		}
	}
	waitFor(t, 5*time.Second, "delivery succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded && len(ds[0].Attempts) == 3
	})
	var codes []int
	for _, a := range e.deliveries(sid)[0].Attempts {
		codes = append(codes, a.StatusCode)
	}
	if !slices.Equal(codes, []int{500, 500, 200}) {
		t.Errorf("attempt status codes = %v, want [500 500 200]", codes)
	}
}

// 429 and 503 with Retry-After are retried after it, clamped to the
// schedule's shortest and longest delay.
func TestRetryAfterHonouredAndClamped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		code     int
		header   string
		min, max time.Duration // the wait before the second attempt
	}{
		// Asynq keeps due times in whole seconds: a retry comes at the
		// first whole second at or after the wait, so up to 1s later.
		{"429 seconds", http.StatusTooManyRequests, "1", time.Second, 2100 * time.Millisecond},
		{"503 too long", http.StatusServiceUnavailable, "3600", 1500 * time.Millisecond, 2600 * time.Millisecond},
		{"429 date", http.StatusTooManyRequests, "DATE+2", time.Second, 2600 * time.Millisecond},
		{"429 zero", http.StatusTooManyRequests, "0", 50 * time.Millisecond, 1100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rv := newReceiver(t, testSecret)
			rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ *receipt, seen int) int {
				if seen > 0 {
					w.WriteHeader(http.StatusOK)
					return http.StatusOK
				}
				v := tt.header
				if v == "DATE+2" {
					v = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
				}
				w.Header().Set("Retry-After", v)
				w.WriteHeader(tt.code)
				return tt.code
			})
			cfg := testConfig(rv.endpoint("default"))
			cfg.RetrySchedule = []time.Duration{50 * time.Millisecond, 1500 * time.Millisecond}
			cfg.Jitter = -1
			e := newEnv(t, cfg)
			ev := e.events(e.create("user-1"))[0]
			got := rv.waitN(ev.ID, 2, 5*time.Second)
			wait := got[1].at.Sub(got[0].at)
			if wait < tt.min || wait > tt.max {
				t.Errorf("second attempt after %v, want %v to %v", wait, tt.min, tt.max)
			}
		})
	}
}

// A 410 disables the endpoint for every replica: the delivery is dead and
// later events are not sent. A replay that gets a 2xx enables it again.
func TestGoneDisablesEndpoint(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	var gone atomic.Bool
	gone.Store(true)
	rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ *receipt, _ int) int {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
			return http.StatusGone
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rv.endpoint("default"))
	e := newEnv(t, cfg)
	sid := e.create("user-1")
	ev := e.events(sid)[0]
	rv.waitN(ev.ID, 1, 5*time.Second)
	waitFor(t, 5*time.Second, "delivery dead", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusDead
	})
	if !e.d.EndpointDisabled("default") {
		t.Fatal("endpoint not disabled after 410")
	}
	if n, _ := e.rdb.HExists(e.ctx, disabledKey, "default").Result(); !n {
		t.Fatal("disabled mark not in Redis")
	}
	// Another replica sees it as soon as it starts.
	replica := e.start(cfg)
	if !replica.EndpointDisabled("default") {
		t.Error("replica does not see the disabled endpoint")
	}

	// Later events are not delivered.
	sid2 := e.create("user-2")
	waitFor(t, 5*time.Second, "the relay to acknowledge the new event", func() bool {
		p, err := e.rdb.XPending(e.ctx, "sessiond:outbox", relayGroup).Result()
		return err == nil && p.Count == 0
	})
	if ds := e.deliveries(sid2); len(ds) != 0 {
		t.Errorf("deliveries to a disabled endpoint: %+v", ds)
	}
	if n := len(rv.receipts()); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}

	// A replay probes it; a 2xx enables it again.
	gone.Store(false)
	dl, err := e.d.Replay(e.ctx, deliveryID(sid, ev.ID, "default"))
	if err != nil {
		t.Fatal(err)
	}
	if dl.Status != StatusPending && dl.Status != StatusSucceeded {
		t.Errorf("replayed delivery status %q", dl.Status)
	}
	got := rv.waitN(ev.ID, 2, 5*time.Second)
	if got[1].attempt != 2 {
		t.Errorf("replay webhook-attempt = %d, want 2", got[1].attempt)
	}
	waitFor(t, 5*time.Second, "endpoint enabled", func() bool { return !e.d.EndpointDisabled("default") })
	waitFor(t, 5*time.Second, "the replica to see it enabled", func() bool { return !replica.EndpointDisabled("default") })
}

// A redirect is the attempt's answer, a failure: the target is never
// requested.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ *receipt, _ int) int {
		if r.URL.Path == "/hook" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return http.StatusFound
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rv.endpoint("default"))
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond}
	e := newEnv(t, cfg)
	sid := e.create("user-1")
	waitFor(t, 5*time.Second, "delivery dead", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusDead && len(ds[0].Attempts) == 2
	})
	for _, r := range rv.receipts() {
		if r.path != "/hook" {
			t.Errorf("redirect followed to %s", r.path)
		}
	}
	a := e.deliveries(sid)[0].Attempts[0]
	if a.StatusCode != http.StatusFound || !strings.Contains(a.Error, "redirects are not followed") {
		t.Errorf("attempt = %+v, want 302 with a redirect error", a)
	}
}

// An attempt that outlasts Config.Timeout fails as a timeout.
func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ *receipt, seen int) int {
		if seen == 0 {
			<-r.Context().Done() // hang until the dispatcher gives up
			return 0
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(rv.endpoint("default"))
	cfg.Timeout = 200 * time.Millisecond
	e := newEnv(t, cfg)
	sid := e.create("user-1")
	waitFor(t, 5*time.Second, "delivery succeeded", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusSucceeded
	})
	a := e.deliveries(sid)[0].Attempts
	if len(a) != 2 {
		t.Fatalf("attempts = %+v, want 2", a)
	}
	if a[0].StatusCode != 0 || a[0].Error != "timeout after 200ms" || a[0].LatencyMS < 190 || a[0].LatencyMS > 1000 {
		t.Errorf("first attempt = %+v, want a 200ms timeout", a[0])
	}
}

// Without an allowed network, a loopback target is refused at dial time.
func TestEgressGuardRefusesLoopback(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t, testSecret)
	cfg := testConfig(rv.endpoint("default"))
	cfg.AllowNetworks = nil
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond}
	e := newEnv(t, cfg)
	sid := e.create("user-1")
	waitFor(t, 5*time.Second, "delivery dead", func() bool {
		ds := e.deliveries(sid)
		return len(ds) == 1 && ds[0].Status == StatusDead
	})
	for _, a := range e.deliveries(sid)[0].Attempts {
		if a.StatusCode != 0 || !strings.Contains(a.Error, ErrBlockedAddress.Error()) || !strings.Contains(a.Error, "loopback") {
			t.Errorf("attempt = %+v, want a refused loopback address", a)
		}
	}
	if n := len(rv.receipts()); n != 0 {
		t.Errorf("receiver got %d requests", n)
	}
}
