//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hibiken/asynq"

	"github.com/sessiond/sessiond/internal/daemontest"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// The crash test's webhook secret (32 bytes) and admin client.
var (
	crashSecretBytes = []byte("crash-test-secret-0123456789abcd")
	crashSecret      = "whsec_" + base64.StdEncoding.EncodeToString(crashSecretBytes)
)

const (
	crashAPIKey    = "crash-platform"
	crashAPISecret = "crash-platform-secret-0123"
)

// TestDispatcherSurvivesCrashes runs the daemon binary against a Redis
// with AOF (appendfsync always) and a receiver that fails every other
// request, makes a burst of lifecycle events, SIGKILLs the daemon several
// times mid-burst (restarting it each time) and restarts Redis once. In
// the end every event must have reached the receiver with a 2xx, every
// request must carry a valid signature, and the requests for one event
// must share its webhook-id and body.
func TestDispatcherSurvivesCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and takes about a minute")
	}
	// Registered first, so it runs after every other cleanup.
	running := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, running) })
	began := time.Now()
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	rdb := srv.Client()
	ctx := t.Context()
	bin := daemontest.Build(t)
	rv := newCrashReceiver(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := "127.0.0.1:" + strconv.Itoa(port)
	daemon := &crashDaemon{t: t, bin: bin, logs: filepath.Join(t.TempDir(), "daemon.log"), env: []string{
		"PATH=" + os.Getenv("PATH"),
		"SESSIOND_REDIS_URL=" + srv.URL(),
		"SESSIOND_ADMIN_ADDR=" + adminAddr,
		"SESSIOND_API_KEY=" + crashAPIKey,
		"SESSIOND_API_SECRET=" + crashAPISecret,
		"SESSIOND_WEBHOOK_URL=" + rv.srv.URL + "/hook",
		"SESSIOND_WEBHOOK_SECRET=" + crashSecret,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8",
		"SESSIOND_WEBHOOK_RETRY_SCHEDULE=100ms,100ms,200ms,200ms,500ms,1s,1s,1s,1s,1s",
		"SESSIOND_WEBHOOK_TIMEOUT=2s",
		"SESSIOND_SHUTDOWN_TIMEOUT=5s",
		"SESSIOND_LOG_LEVEL=warn",
	}, admin: "http://" + adminAddr}
	t.Cleanup(daemon.kill)
	daemon.start()

	// The burst: sessions created, submitted and decided, from this
	// process, through the lifecycle, while the daemon dies and Redis
	// restarts. An operation cut by the Redis restart is retried; a retry
	// of one that had committed is refused as a transition, which is fine.
	svc := lifecycle.New(rdb, lifecycle.Config{})
	const sessions = 150
	var produced atomic.Int64
	produceDone := make(chan struct{})
	go func() {
		defer close(produceDone)
		for i := range sessions {
			ref := "crash-" + strconv.Itoa(i)
			var id string
			crashRetry(ctx, func() error {
				c, err := svc.Create(ctx, lifecycle.CreateRequest{RefID: ref})
				if err == nil {
					id = c.ID
				}
				return err
			})
			crashRetry(ctx, func() error { _, err := svc.Progress(ctx, id, lifecycle.StatusSubmitted); return err })
			crashRetry(ctx, func() error {
				_, err := svc.Decide(ctx, id, lifecycle.DecisionRequest{Status: lifecycle.StatusApproved})
				return err
			})
			produced.Add(1)
		}
	}()

	// Kill the daemon four times at random points of the burst, restart
	// Redis once between the second and third kill.
	for k := range 4 {
		crashWaitUntil(t, 30*time.Second, "progress before a kill", func() bool {
			return produced.Load() >= int64((k+1)*sessions/6) || crashClosed(produceDone)
		})
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond) // a random point, not a wait for work
		daemon.kill()
		if k == 1 {
			srv.Restart()
		}
		daemon.start()
	}
	<-produceDone

	// Every event of the outbox reached the receiver with a 2xx.
	feed := feedEvents(t, svc)
	events := make(map[string]lifecycle.FeedEvent, len(feed))
	for _, fe := range feed {
		events[fe.ID] = fe
	}
	if len(events) != 3*sessions {
		t.Fatalf("outbox holds %d events, want %d", len(events), 3*sessions)
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(rv.missing(events)) > 0 {
		if time.Now().After(deadline) {
			missing := rv.missing(events)
			rv.mu.Lock()
			invalid, ids := rv.invalid, len(rv.byID)
			rv.mu.Unlock()
			insp := asynq.NewInspectorFromRedisClient(rdb)
			for _, q := range webhookQueues {
				if info, err := insp.GetQueueInfo(q); err == nil {
					t.Logf("queue %s: %+v", q, info)
				}
				if ts, err := insp.ListRetryTasks(q, asynq.PageSize(3)); err == nil {
					for _, ti := range ts {
						t.Logf("retry task %s: retried %d/%d, next %v (now %v), last error %q", ti.ID, ti.Retried, ti.MaxRetry, ti.NextProcessAt, time.Now(), ti.LastErr)
					}
				}
			}
			t.Fatalf("%d invalid requests, %d ids; %d events never delivered (e.g. %s)\n%s",
				invalid, ids, len(missing), missing[0], daemon.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The admin API lists every delivery as succeeded, with the attempts
	// the receiver saw. A kill can lose the record of an attempt it had
	// sent (the takeover sends it again without using up an attempt), so
	// a delivery may record fewer attempts than the receiver counted, never
	// more; one that lost none records the receiver's answers in order.
	sessionIDs := make(map[string]bool, sessions)
	for _, ev := range events {
		sessionIDs[ev.Data.ID] = true
	}
	exact := 0
	deadline = time.Now().Add(30 * time.Second)
	for id := range sessionIDs {
		for {
			ds := daemon.deliveries(id)
			done := len(ds) == 3
			for _, d := range ds {
				done = done && d.Status == "succeeded"
			}
			if done {
				exact += rv.checkAttempts(t, ds)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s: deliveries not all recorded as succeeded: %+v\n%s", id, ds, daemon.tail())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if exact < 3*sessions/2 {
		t.Errorf("only %d of %d deliveries record every attempt the receiver saw", exact, 3*sessions)
	}
	daemon.stop()

	rv.mu.Lock()
	defer rv.mu.Unlock()
	requests, duplicates := 0, 0
	idOfBody := make(map[string]string) // an event sent twice carries one webhook-id
	for id, rs := range rv.byID {
		ev, ok := events[id]
		if !ok {
			t.Errorf("webhook-id %s is no event of the outbox", id)
			continue
		}
		requests += len(rs)
		oks := 0
		for _, r := range rs {
			if !bytes.Equal(r.body, webhookBody(t, ev)) {
				t.Errorf("%s: a request's body differs from the event", id)
			}
			if other, seen := idOfBody[string(r.body)]; seen && other != id {
				t.Errorf("one event sent with webhook-ids %s and %s", other, id)
			}
			idOfBody[string(r.body)] = id
			if r.ok {
				oks++
			}
		}
		duplicates += max(oks-1, 0)
	}
	if rv.invalid != 0 {
		t.Errorf("%d requests with an invalid signature", rv.invalid)
	}
	logs, _ := os.ReadFile(daemon.logs)
	t.Logf("%d events, %d requests, %d delivered more than once, %d deliveries that record every attempt, %d daemon starts, %d log lines on tasks given back after a kill, %d on outbox entries claimed, %v in all",
		len(events), requests, duplicates, exact, daemon.starts,
		bytes.Count(logs, []byte("gave back deliveries whose worker died")),
		bytes.Count(logs, []byte("claimed outbox entries")),
		time.Since(began).Round(time.Second))
}

// crashRetry runs op until it succeeds or is refused as a transition
// (it had committed before its answer was lost).
func crashRetry(ctx context.Context, op func() error) {
	for ctx.Err() == nil {
		err := op()
		if err == nil || errors.Is(err, lifecycle.ErrInvalidTransition) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func crashClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func crashWaitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crashDaemon runs the daemon binary, one process at a time.
type crashDaemon struct {
	t      *testing.T
	bin    string
	env    []string
	logs   string
	admin  string
	cmd    *exec.Cmd
	starts int
}

// start runs the daemon and waits until /readyz answers 200.
func (d *crashDaemon) start() {
	d.t.Helper()
	f, err := os.OpenFile(d.logs, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(d.bin)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.cmd = cmd
	d.starts++
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(d.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				client.CloseIdleConnections()
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("daemon not ready: %v\n%s", err, d.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill SIGKILLs the daemon, if it runs.
func (d *crashDaemon) kill() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	_ = d.cmd.Wait()
	d.cmd = nil
}

// stop sends SIGTERM and expects a clean exit.
func (d *crashDaemon) stop() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			d.t.Errorf("daemon exit after SIGTERM: %v\n%s", err, d.tail())
		}
	case <-time.After(15 * time.Second):
		d.t.Errorf("daemon still running 15s after SIGTERM")
		_ = d.cmd.Process.Kill()
		<-done
	}
	d.cmd = nil
}

// crashDelivery is a delivery as GET /v1/sessions/{id}/deliveries lists it.
type crashDelivery struct {
	ID       string `json:"id"`
	EventID  string `json:"event_id"`
	Status   string `json:"status"`
	Attempts []struct {
		Attempt    int `json:"attempt"`
		StatusCode int `json:"status_code"`
	} `json:"attempts"`
}

// deliveries reads a session's deliveries through the admin API.
func (d *crashDaemon) deliveries(sessionID string) []crashDelivery {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, d.admin+"/v1/sessions/"+sessionID+"/deliveries", nil)
	signRequest(req, crashAPIKey, crashAPISecret, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Deliveries []crashDelivery `json:"deliveries"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		d.t.Fatalf("GET deliveries: %s", resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()
	return out.Deliveries
}

// tail is the end of the daemon's log.
func (d *crashDaemon) tail() string {
	b, _ := os.ReadFile(d.logs)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// crashReceiver verifies each webhook with its own HMAC code and fails
// every other request for the same webhook-id (the first one included).
type crashReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	byID    map[string][]crashRequest
	invalid int
}

type crashRequest struct {
	body []byte
	ok   bool // answered 2xx
}

func newCrashReceiver(t *testing.T) *crashReceiver {
	rv := &crashReceiver{byID: map[string][]crashRequest{}}
	rv.srv = httptest.NewServer(http.HandlerFunc(rv.serve))
	t.Cleanup(rv.srv.Close)
	return rv
}

func (rv *crashReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	m := hmac.New(sha256.New, crashSecretBytes)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	valid := false
	for _, sig := range strings.Fields(r.Header.Get("webhook-signature")) {
		valid = valid || hmac.Equal([]byte(sig), []byte(want))
	}
	hm := hmac.New(sha256.New, crashSecretBytes)
	hm.Write(body)
	valid = valid && r.Header.Get("X-HMAC-SIGNATURE") == hex.EncodeToString(hm.Sum(nil))

	rv.mu.Lock()
	defer rv.mu.Unlock()
	if !valid {
		rv.invalid++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	ok := len(rv.byID[id])%2 == 1
	rv.byID[id] = append(rv.byID[id], crashRequest{body: body, ok: ok})
	rv.mu.Unlock()
	// A receiver's own work, so that kills find requests in flight.
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	rv.mu.Lock()
	if !ok {
		http.Error(w, "flaky", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkAttempts compares a session's recorded attempts with the requests
// the receiver answered for each event, and returns how many deliveries
// recorded all of them.
func (rv *crashReceiver) checkAttempts(t *testing.T, ds []crashDelivery) (exact int) {
	t.Helper()
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, d := range ds {
		seen := rv.byID[d.EventID]
		var answered []int // the recorded attempts that got an HTTP answer
		for _, a := range d.Attempts {
			if a.StatusCode != 0 {
				answered = append(answered, a.StatusCode)
			}
		}
		if len(answered) == 0 || answered[len(answered)-1] != http.StatusNoContent {
			t.Errorf("delivery %s succeeded, but its last answered attempt is not the receiver's 204: %v", d.ID, answered)
			continue
		}
		if len(answered) > len(seen) {
			t.Errorf("delivery %s records %d answered attempts, the receiver saw %d requests", d.ID, len(answered), len(seen))
			continue
		}
		if len(answered) < len(seen) {
			continue // a kill lost an attempt's record
		}
		for i, code := range answered {
			want := http.StatusServiceUnavailable
			if seen[i].ok {
				want = http.StatusNoContent
			}
			if code != want {
				t.Errorf("delivery %s: attempt %d recorded %d, the receiver answered %d", d.ID, i+1, code, want)
			}
		}
		exact++
	}
	return exact
}

// missing returns the events not yet answered with a 2xx.
func (rv *crashReceiver) missing(events map[string]lifecycle.FeedEvent) []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []string
	for id := range events {
		ok := false
		for _, r := range rv.byID[id] {
			ok = ok || r.ok
		}
		if !ok {
			out = append(out, id)
		}
	}
	return out
}
