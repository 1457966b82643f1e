//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/daemontest"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// TestReplicasExpireEachSessionOnce runs three sessiond processes on one
// Redis, creates 1,000 sessions that expire a few seconds later, SIGKILLs
// one replica while they expire, and checks that every session got exactly
// one transition to expired and one session.expired event: the survivors
// take over the dead replica's claims when their lease ends.
func TestReplicasExpireEachSessionOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three daemons")
	}
	const (
		replicas = 3
		sessions = 1000
		ttl      = 3 * time.Second
	)
	srv := redistest.Start(t)
	rdb := srv.Client()
	svc := lifecycle.New(rdb, lifecycle.Config{}) // to read the feed
	bin := daemontest.Build(t)

	var procs []*replicaProc
	for i := range replicas {
		procs = append(procs, startReplica(t, bin, i, map[string]string{
			"SESSIOND_REDIS_URL":        srv.URL(),
			"SESSIOND_API_KEY":          replicaAPIKey,
			"SESSIOND_API_SECRET":       replicaAPISecret,
			"SESSIOND_SESSION_TTL":      ttl.String(),
			"SESSIOND_SWEEP_EVERY":      "1s",
			"SESSIOND_SHUTDOWN_TIMEOUT": "5s",
			"SESSIOND_LOG_LEVEL":        "warn",
		}))
	}
	for _, p := range procs {
		p.waitReady(t, 20*time.Second)
	}

	// Create the sessions through all three replicas at once.
	type created struct {
		ID        string         `json:"id"`
		Status    string         `json:"status"`
		ExpiresAt lifecycle.Time `json:"expires_at"`
	}
	due := make(map[string]time.Time, sessions)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	next := make(chan int, sessions)
	for i := range sessions {
		next <- i
	}
	close(next)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var c created
				code, err := procs[(i+w)%replicas].post("/v1/sessions", map[string]string{"ref_id": "replica-" + strconv.Itoa(i)}, &c)
				if err != nil || code != http.StatusCreated || c.Status != "created" {
					errs <- fmt.Errorf("create %d: %d %v %+v", i, code, err, c)
					continue
				}
				mu.Lock()
				due[c.ID] = c.ExpiresAt.Time
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Kill one replica in the middle of the expiry burst.
	waitReplicas(t, 3*ttl, "a third of the sessions to expire", func() bool {
		return len(feedOf(t, svc, "session.expired")) >= sessions/3
	})
	if err := procs[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := len(feedOf(t, svc, "session.expired"))

	// Done when every session expired and no claim is left in the due
	// index (a dead replica's claims come back when their lease ends).
	var expired map[string][]lifecycle.FeedEvent
	waitReplicas(t, 25*time.Second, "every session to expire and the due indexes to empty", func() bool {
		expired = feedOf(t, svc, "session.expired")
		n := int64(0)
		for sh := range keyspace.Shards {
			c, err := rdb.ZCard(context.Background(), svc.DueKey(keyspace.Shard(sh), lifecycle.WorkExpire)).Result()
			if err != nil {
				return false
			}
			n += c
		}
		return n == 0 && len(expired) >= sessions
	})

	var lags []time.Duration
	for id, at := range due {
		evs := expired[id]
		if len(evs) != 1 {
			t.Errorf("session %s: %d session.expired events, want 1", id, len(evs))
			continue
		}
		if evs[0].Data.Status != lifecycle.StatusExpired {
			t.Errorf("session %s: event data status %q, want expired", id, evs[0].Data.Status)
		}
		lag := evs[0].Timestamp.Sub(at)
		if lag < 0 {
			t.Errorf("session %s expired %v early", id, -lag)
		}
		lags = append(lags, lag)
	}
	if got := len(expired); got != sessions {
		t.Errorf("%d sessions have expired events, want %d", got, sessions)
	}
	for id := range expired {
		if _, ok := due[id]; !ok {
			t.Errorf("expired event for unknown session %s", id)
		}
	}
	if n := len(feedOf(t, svc, "session.abandoned")); n != 0 {
		t.Errorf("%d abandoned events, want 0", n)
	}
	slices.Sort(lags)
	if len(lags) > 0 {
		t.Logf("replica 0 killed after %d expiries; lag from expires_at p50 %v, p99 %v, max %v",
			killed, lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
	}

	// The survivors still stop cleanly.
	for _, p := range procs[1:] {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs[1:] {
		select {
		case <-p.done:
			if p.err != nil {
				t.Errorf("replica %d exited with %v after SIGTERM; log:\n%s", p.n, p.err, p.log())
			}
		case <-time.After(15 * time.Second):
			t.Errorf("replica %d did not exit within 15s of SIGTERM", p.n)
		}
	}
}

const (
	replicaAPIKey    = "replica-test"
	replicaAPISecret = "replica-secret-0123456789"
)

// replicaProc is one sessiond process.
type replicaProc struct {
	n       int
	url     string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit error, set before done is closed
}

func startReplica(t *testing.T, bin string, n int, env map[string]string) *replicaProc {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p := &replicaProc{n: n, url: "http://" + addr, done: make(chan struct{})}
	p.logPath = filepath.Join(t.TempDir(), fmt.Sprintf("replica-%d.log", n))
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"SESSIOND_ADMIN_ADDR=" + addr}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("replica %d log:\n%s", n, p.log())
		}
	})
	return p
}

func (p *replicaProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *replicaProc) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	waitReplicas(t, within, fmt.Sprintf("replica %d /readyz", p.n), func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// post sends a signed JSON request and decodes the answer into out.
func (p *replicaProc) post(path string, body, out any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, p.url+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	signRequest(req, replicaAPIKey, replicaAPISecret, b)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

// feedOf reads the events feed: events of type typ by session id.
func feedOf(t *testing.T, svc *lifecycle.Service, typ string) map[string][]lifecycle.FeedEvent {
	t.Helper()
	out := map[string][]lifecycle.FeedEvent{}
	for _, fe := range feedEvents(t, svc) {
		if fe.Type == typ {
			out[fe.Data.ID] = append(out[fe.Data.ID], fe)
		}
	}
	return out
}

// waitReplicas polls cond until it holds or the deadline passes.
func waitReplicas(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}
