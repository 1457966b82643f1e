package dispatcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// A session created and decided through the lifecycle reaches the
// receiver as four webhooks, each on its first try, signed as the contract
// says (v1 HMAC, v1a ed25519, X-AUTH-CLIENT, X-HMAC-SIGNATURE, at the
// dispatcher's clock), with the event's data as the body, and without
// an Asynq task: first attempts are made in-process.
func TestSignedDeliveryFromLifecycle(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		rv.public = testPublic
		cfg := testConfig(rv.endpoint("default", testSecret, testPrivate))
		// The dispatcher's clock: webhook-timestamp and the records' times
		// come from it. 90 s back is inside the Standard Webhooks
		// library's tolerance.
		signedAt := time.Now().Add(-90 * time.Second).Truncate(time.Millisecond)
		cfg.Now = clocktest.New(signedAt).Now
		e := newEnv(t, tg, cfg)

		c, err := e.svc.Create(e.ctx, lifecycle.CreateRequest{
			RefID: "user-1", FlowID: "kyc",
			Person:   json.RawMessage(`{"name":"Ada Lovelace"}`),
			Metadata: json.RawMessage(`{"plan":"gold"}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		sid := c.ID
		for _, s := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
			if _, err := e.svc.Progress(e.ctx, sid, s); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.Decide(e.ctx, sid, lifecycle.DecisionRequest{Status: lifecycle.StatusApproved, Reason: "documents match", ReasonCode: new(9001)}); err != nil {
			t.Fatal(err)
		}
		evs := e.events(sid)
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type)
		}
		if want := []string{"session.created", "session.started", "session.submitted", "session.approved"}; !slices.Equal(types, want) {
			t.Fatalf("outbox events = %v, want %v", types, want)
		}

		for i, ev := range evs {
			got := rv.waitN(ev.ID, 1, 5*time.Second)[0]
			checks := []struct {
				name      string
				got, want string
			}{
				{"webhook-id", got.id, ev.ID},
				{"webhook-attempt", got.header.Get("webhook-attempt"), "1"},
				{"webhook-timestamp", got.header.Get("webhook-timestamp"), strconv.FormatInt(signedAt.Unix(), 10)},
				{"Content-Type", got.header.Get("Content-Type"), "application/json"},
				{"X-AUTH-CLIENT", got.header.Get("X-AUTH-CLIENT"), testAPIKey},
				{"body", string(got.body), string(e.body(ev))},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: %s = %q, want %q", ev.Type, c.name, c.got, c.want)
				}
			}
			if got.v1Entries != 1 || got.v1Valid != 1 {
				t.Errorf("%s: v1 entries = %d, valid = %d, want 1 and 1 (%q)", ev.Type, got.v1Entries, got.v1Valid, got.header.Get("webhook-signature"))
			}
			if !got.v1aValid {
				t.Errorf("%s: no v1a entry verifies with the public key (%q)", ev.Type, got.header.Get("webhook-signature"))
			}
			if !got.hmacValid {
				t.Errorf("%s: X-HMAC-SIGNATURE %q does not verify", ev.Type, got.header.Get("X-HMAC-SIGNATURE"))
			}
			// The official Standard Webhooks library accepts it too.
			wh, err := standardwebhooks.NewWebhook(testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(got.body, got.header); err != nil {
				t.Errorf("%s: standard-webhooks Verify: %v", ev.Type, err)
			}
			// The body, read on its own: the contract's fields, nothing
			// personal.
			var body struct {
				Type      string                     `json:"type"`
				Timestamp string                     `json:"timestamp"`
				Data      map[string]json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(got.body, &body); err != nil {
				t.Fatalf("%s: body %s: %v", ev.Type, got.body, err)
			}
			if body.Type != ev.Type || body.Timestamp != ev.Timestamp.Format(lifecycle.TimeLayout) {
				t.Errorf("%s: type %q, timestamp %q", ev.Type, body.Type, body.Timestamp)
			}
			for field, want := range map[string]string{
				"id": strconv.Quote(sid), "ref_id": `"user-1"`, "flow_id": `"kyc"`,
				"status": strconv.Quote(string(ev.Status)), "sequence": strconv.Itoa(i + 1),
			} {
				if g := string(body.Data[field]); g != want {
					t.Errorf("%s: data.%s = %s, want %s", ev.Type, field, g, want)
				}
			}
			for _, field := range []string{"person", "metadata", "token"} {
				if _, ok := body.Data[field]; ok {
					t.Errorf("%s: data has %q", ev.Type, field)
				}
			}
			if bytes.Contains(got.body, []byte("Ada")) || bytes.Contains(got.body, []byte("gold")) {
				t.Errorf("%s: body holds personal data: %s", ev.Type, got.body)
			}
		}
		approved := rv.byID(evs[3].ID)[0]
		if !bytes.Contains(approved.body, []byte(`"decision":{"status":"approved","reason":"documents match","reason_code":9001`)) {
			t.Errorf("approved body has no decision: %s", approved.body)
		}

		// Each delivery is recorded as succeeded with one attempt at the
		// dispatcher's clock; the records acknowledged the entries.
		for _, ev := range evs {
			d := e.waitStatus(sid, deliveryID(sid, ev.ID, "default"), StatusSucceeded, 1)
			if d.EventID != ev.ID || d.EventType != ev.Type || d.EndpointID != "default" || d.URL != rv.url() || !d.CreatedAt.Equal(signedAt) {
				t.Errorf("delivery = %+v", d)
			}
			a := d.Attempts
			if len(a) != 1 || a[0].Attempt != 1 || a[0].StatusCode != http.StatusNoContent || a[0].Error != "" || !a[0].At.Equal(signedAt) {
				t.Errorf("attempts = %+v, want one 204 at %v", a, signedAt)
			}
		}
		if n := e.pending(e.shard(sid)); n != 0 {
			t.Errorf("%d outbox entries not acknowledged", n)
		}
		if keys := e.asynqKeys(); len(keys) != 0 {
			t.Errorf("first attempts that succeeded left Asynq keys: %v", keys)
		}
		if st := e.d.Stats(); st.Attempts != 4 || st.Succeeded != 4 || st.Failed != 0 {
			t.Errorf("stats = %+v", st)
		}
	})
}

// With two whsec_ secrets every webhook carries two v1 entries, each
// verifying with its own secret; X-HMAC-SIGNATURE uses the first.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret, testSecret2)
		e := newEnv(t, tg, testConfig(rv.endpoint("default", testSecret, testSecret2)))
		ev := e.events(e.create("user-1"))[0]
		got := rv.waitN(ev.ID, 1, 5*time.Second)[0]
		if got.v1Entries != 2 || got.v1Valid != 2 {
			t.Fatalf("v1 entries = %d, valid = %d, want 2 and 2", got.v1Entries, got.v1Valid)
		}
		if !got.hmacValid {
			t.Errorf("X-HMAC-SIGNATURE does not verify with the first secret")
		}
		// Each secret alone verifies (a receiver holding only the old or
		// the new one), with the official library.
		for _, s := range []string{testSecret, testSecret2} {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(got.body, got.header); err != nil {
				t.Errorf("standard-webhooks Verify with one secret: %v", err)
			}
		}
	})
}

// Event filters pick what each endpoint gets; a disabled endpoint gets
// nothing, and no delivery of it is recorded.
func TestEventFilters(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		all, decisions, off := newReceiver(t, testSecret), newReceiver(t, testSecret), newReceiver(t, testSecret)
		dec := decisions.endpoint("decisions")
		dec.Events = []string{"session.approved", "session.declined"}
		disabled := off.endpoint("off")
		disabled.Disabled = true
		e := newEnv(t, tg, testConfig(all.endpoint("all"), dec, disabled))

		sid := e.create("user-1")
		for _, s := range []lifecycle.Status{lifecycle.StatusStarted, lifecycle.StatusSubmitted} {
			if _, err := e.svc.Progress(e.ctx, sid, s); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.svc.Decide(e.ctx, sid, lifecycle.DecisionRequest{Status: lifecycle.StatusApproved}); err != nil {
			t.Fatal(err)
		}
		evs := e.events(sid)
		if len(evs) != 4 {
			t.Fatalf("got %d events, want 4", len(evs))
		}
		for _, ev := range evs {
			e.waitStatus(sid, deliveryID(sid, ev.ID, "all"), StatusSucceeded, 1)
		}
		e.waitStatus(sid, deliveryID(sid, evs[3].ID, "decisions"), StatusSucceeded, 1)
		e.waitRelayed(sid)
		if n := len(e.deliveries(sid)); n != 5 {
			t.Errorf("%d deliveries recorded, want 5", n)
		}
		var types []string
		for _, r := range decisions.receipts() {
			var b struct{ Type string }
			_ = json.Unmarshal(r.body, &b)
			types = append(types, b.Type)
		}
		if !slices.Equal(types, []string{"session.approved"}) {
			t.Errorf("filtered endpoint got %v, want only session.approved", types)
		}
		if n := len(off.receipts()); n != 0 {
			t.Errorf("disabled endpoint got %d requests", n)
		}
	})
}

// A failing receiver is retried through Asynq, in the webhook queue of the
// session's shard, with the same webhook-id and webhook-attempt 1, 2, 3;
// the retry task holds identifiers only, never the body.
func TestRetriesKeepWebhookID(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		e := newEnv(t, tg, testConfig(rv.endpoint("default")))
		type seenTask struct {
			info *asynq.TaskInfo
			err  error
		}
		var (
			mu    sync.Mutex
			tasks []seenTask // the retry task, looked up during its attempts
		)
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, seen int) int {
			if seen > 0 {
				var info *asynq.TaskInfo
				err := errors.New("no session in the body")
				sid := sessionOf(r)
				if sh, ok := lifecycle.ShardOfSession(sid); ok {
					q := keyspace.WebhookQueue(e.keys.WebhookQueues(), sh)
					info, err = e.insp.GetTaskInfo(q, deliveryID(sid, r.Header.Get("webhook-id"), "default"))
				}
				mu.Lock()
				tasks = append(tasks, seenTask{info, err})
				mu.Unlock()
			}
			if seen < 2 {
				http.Error(w, "try later", http.StatusInternalServerError)
				return http.StatusInternalServerError
			}
			return answerCode(w, http.StatusOK)
		})
		c, err := e.svc.Create(e.ctx, lifecycle.CreateRequest{RefID: "user-1", Person: json.RawMessage(`{"name":"Ada Lovelace"}`)})
		if err != nil {
			t.Fatal(err)
		}
		sid := c.ID
		ev := e.events(sid)[0]
		did := deliveryID(sid, ev.ID, "default")
		got := rv.waitN(ev.ID, 3, 10*time.Second)
		for i, r := range got {
			if r.attempt != i+1 {
				t.Errorf("request %d: webhook-attempt = %d, want %d", i, r.attempt, i+1)
			}
			if r.v1Valid != 1 || !r.hmacValid {
				t.Errorf("request %d: signature does not verify", i)
			}
			if !bytes.Equal(r.body, got[0].body) {
				t.Errorf("request %d: body changed: %s", i, r.body)
			}
			if i > 0 && r.header.Get("webhook-timestamp") < got[i-1].header.Get("webhook-timestamp") {
				t.Errorf("request %d: timestamp went back", i)
			}
		}
		d := e.waitStatus(sid, did, StatusSucceeded, 3)
		var codes, numbers []int
		for _, a := range d.Attempts {
			codes = append(codes, a.StatusCode)
			numbers = append(numbers, a.Attempt)
		}
		if !slices.Equal(codes, []int{500, 500, 200}) || !slices.Equal(numbers, []int{1, 2, 3}) {
			t.Errorf("attempts: codes %v, numbers %v; want [500 500 200], [1 2 3]", codes, numbers)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(tasks) != 2 {
			t.Fatalf("looked the retry task up %d times, want 2", len(tasks))
		}
		for i, st := range tasks {
			if st.err != nil {
				t.Errorf("retry %d: task not in queue %s: %v", i+1, e.queue(sid), st.err)
				continue
			}
			if st.info.State != asynq.TaskStateActive || st.info.Queue != e.queue(sid) || st.info.Retried != i {
				t.Errorf("retry %d: task %s in %s, state %v, retried %d", i+1, st.info.ID, st.info.Queue, st.info.State, st.info.Retried)
			}
			if bytes.Contains(st.info.Payload, []byte("user-1")) || bytes.Contains(st.info.Payload, []byte("Ada")) || len(st.info.Payload) > 200 {
				t.Errorf("retry task payload holds more than ids: %s", st.info.Payload)
			}
		}
	})
}

// sessionOf is the session id in a webhook's body.
func sessionOf(r *http.Request) string {
	var b struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	_ = json.Unmarshal(body, &b)
	return b.Data.ID
}

// 429 and 503 with Retry-After are retried after it, clamped to the
// schedule's shortest and longest delay, after a first attempt and after
// a retry alike.
func TestRetryAfterHonouredAndClamped(t *testing.T) {
	t.Parallel()
	// Asynq keeps due times in whole seconds: a retry comes at the first
	// whole second at or after its delay, so up to 1 s later, plus the
	// forwarder's and the server's poll intervals.
	const late = 1500 * time.Millisecond
	tests := []struct {
		name     string
		answers  []int  // status codes before a 200
		header   string // Retry-After of the last of them; DATE+2 is a date 2 s ahead
		min, max time.Duration
	}{
		{"429 seconds", []int{429}, "1", time.Second, time.Second + late},
		{"503 past the longest delay", []int{503}, "3600", 2 * time.Second, 2*time.Second + late},
		{"429 date", []int{429}, "DATE+2", time.Second, 2*time.Second + late},
		{"429 zero", []int{429}, "0", 50 * time.Millisecond, 50*time.Millisecond + late},
		// On the retry: the schedule's next delay would be 2 s.
		{"503 on a retry", []int{500, 503}, "0", 50 * time.Millisecond, 50*time.Millisecond + late},
	}
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		var eps []Endpoint
		rvs := make([]*receiver, len(tests))
		for i, tt := range tests {
			rvs[i] = newReceiver(t, testSecret)
			rvs[i].setAnswer(func(w http.ResponseWriter, _ *http.Request, seen int) int {
				if seen >= len(tt.answers) {
					return answerCode(w, http.StatusOK)
				}
				if seen == len(tt.answers)-1 {
					v := tt.header
					if v == "DATE+2" {
						v = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
					}
					w.Header().Set("Retry-After", v)
				}
				return answerCode(w, tt.answers[seen])
			})
			eps = append(eps, rvs[i].endpoint("ep"+strconv.Itoa(i)))
		}
		cfg := testConfig(eps...)
		cfg.RetrySchedule = []time.Duration{50 * time.Millisecond, 2 * time.Second}
		cfg.Jitter = -1
		e := newEnv(t, tg, cfg)
		ev := e.events(e.create("user-1"))[0]
		for i, tt := range tests {
			n := len(tt.answers)
			got := rvs[i].waitN(ev.ID, n+1, 10*time.Second)
			if wait := got[n].at.Sub(got[n-1].at); wait < tt.min || wait > tt.max {
				t.Errorf("%s: attempt %d came %v after the one answered with Retry-After, want %v to %v", tt.name, n+1, wait, tt.min, tt.max)
			}
			if got[n].attempt != n+1 {
				t.Errorf("%s: webhook-attempt = %d, want %d", tt.name, got[n].attempt, n+1)
			}
		}
	})
}

// A 410 disables the endpoint for every replica: the delivery is dead
// (archived in Asynq) and later events are not sent. A replay that gets a
// 2xx enables it again, for every replica.
func TestGoneDisablesEndpoint(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		var gone atomic.Bool
		gone.Store(true)
		rv.setAnswer(func(w http.ResponseWriter, _ *http.Request, _ int) int {
			if gone.Load() {
				return answerCode(w, http.StatusGone)
			}
			return answerCode(w, http.StatusOK)
		})
		cfg := testConfig(rv.endpoint("default"))
		e := newEnv(t, tg, cfg)
		running := e.start(cfg) // a replica: either may make the attempt
		sid := e.create("user-1")
		ev := e.events(sid)[0]
		did := deliveryID(sid, ev.ID, "default")
		d := e.waitStatus(sid, did, StatusDead, 1)
		if len(d.Attempts) != 1 || d.Attempts[0].StatusCode != http.StatusGone {
			t.Errorf("attempts = %+v, want one 410", d.Attempts)
		}
		if ok, err := e.rdb.HExists(e.ctx, e.keys.EndpointsDisabled(), "default").Result(); err != nil || !ok {
			t.Fatalf("disabled mark not in Redis: %v %v", ok, err)
		}
		info, err := e.task(sid, did)
		if err != nil || info.State != asynq.TaskStateArchived {
			t.Errorf("dead delivery's task: %+v, %v; want archived", info, err)
		}
		// The running replicas see it within a maintenance period, one
		// started later at once.
		waitFor(t, 5*time.Second, "both replicas to see the endpoint disabled", func() bool {
			return e.d.EndpointDisabled("default") && running.EndpointDisabled("default")
		})
		replica := e.start(cfg)
		if !replica.EndpointDisabled("default") {
			t.Error("a replica started later does not see the disabled endpoint")
		}

		// Later events are not delivered, by any replica.
		sid2 := e.create("user-2")
		e.waitRelayed(sid2)
		if ds := e.deliveries(sid2); len(ds) != 0 {
			t.Errorf("deliveries to a disabled endpoint: %+v", ds)
		}
		if n := len(rv.receipts()); n != 1 {
			t.Errorf("receiver got %d requests, want 1", n)
		}

		// A replay probes it; a 2xx enables it again.
		gone.Store(false)
		if _, err := e.d.Replay(e.ctx, did); err != nil {
			t.Fatal(err)
		}
		got := rv.waitN(ev.ID, 2, 10*time.Second)
		if got[1].attempt != 2 {
			t.Errorf("replay webhook-attempt = %d, want 2", got[1].attempt)
		}
		e.waitStatus(sid, did, StatusSucceeded, 2)
		waitFor(t, 5*time.Second, "every replica to see the endpoint enabled", func() bool {
			return !e.d.EndpointDisabled("default") && !running.EndpointDisabled("default") && !replica.EndpointDisabled("default")
		})
		if n, _ := e.rdb.HLen(e.ctx, e.keys.EndpointsDisabled()).Result(); n != 0 {
			t.Errorf("%d disabled marks left", n)
		}
	})
}

// A redirect is the attempt's answer, a failure: the target is never
// requested. After the schedule the delivery is dead, archived in Asynq.
func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
			if r.URL.Path == "/hook" {
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
				return http.StatusFound
			}
			return answerCode(w, http.StatusOK)
		})
		cfg := testConfig(rv.endpoint("default"))
		cfg.RetrySchedule = []time.Duration{10 * time.Millisecond}
		e := newEnv(t, tg, cfg)
		sid := e.create("user-1")
		did := deliveryID(sid, e.events(sid)[0].ID, "default")
		d := e.waitStatus(sid, did, StatusDead, 2)
		for _, r := range rv.receipts() {
			if r.path != "/hook" {
				t.Errorf("redirect followed to %s", r.path)
			}
		}
		for _, a := range d.Attempts {
			if a.StatusCode != http.StatusFound || !strings.Contains(a.Error, "redirects are not followed") {
				t.Errorf("attempt = %+v, want 302 with a redirect error", a)
			}
		}
		waitFor(t, 5*time.Second, "the dead delivery archived", func() bool {
			info, err := e.task(sid, did)
			return err == nil && info.State == asynq.TaskStateArchived
		})
	})
}

// An attempt that outlasts Config.Timeout fails as a timeout and is
// retried.
func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t, testSecret)
		rv.setAnswer(func(w http.ResponseWriter, r *http.Request, seen int) int {
			if seen == 0 {
				<-r.Context().Done() // hang until the dispatcher gives up
				return 0
			}
			return answerCode(w, http.StatusOK)
		})
		cfg := testConfig(rv.endpoint("default"))
		cfg.Timeout = 200 * time.Millisecond
		e := newEnv(t, tg, cfg)
		sid := e.create("user-1")
		d := e.waitStatus(sid, deliveryID(sid, e.events(sid)[0].ID, "default"), StatusSucceeded, 2)
		a := d.Attempts
		if len(a) != 2 {
			t.Fatalf("attempts = %+v, want 2", a)
		}
		if a[0].StatusCode != 0 || a[0].Error != "timeout after 200ms" || a[0].LatencyMS < 190 || a[0].LatencyMS > 1500 {
			t.Errorf("first attempt = %+v, want a 200ms timeout", a[0])
		}
		if a[1].StatusCode != http.StatusOK || a[1].Attempt != 2 {
			t.Errorf("second attempt = %+v", a[1])
		}
	})
}

// Without an allowed network, a loopback target is refused at dial time.
func TestEgressGuardRefusesLoopback(t *testing.T) {
	t.Parallel()
	tg := redistest.Open(t, "single") // no Redis behaviour here beyond the others'
	rv := newReceiver(t, testSecret)
	cfg := testConfig(rv.endpoint("default"))
	cfg.AllowNetworks = nil
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond}
	e := newEnv(t, tg, cfg)
	sid := e.create("user-1")
	d := e.waitStatus(sid, deliveryID(sid, e.events(sid)[0].ID, "default"), StatusDead, 2)
	for _, a := range d.Attempts {
		if a.StatusCode != 0 || !strings.Contains(a.Error, ErrBlockedAddress.Error()) || !strings.Contains(a.Error, "loopback") {
			t.Errorf("attempt = %+v, want a refused loopback address", a)
		}
	}
	if n := len(rv.receipts()); n != 0 {
		t.Errorf("receiver got %d requests", n)
	}
}
