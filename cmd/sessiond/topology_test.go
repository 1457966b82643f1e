//go:build unix

package main

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client"
	"github.com/sessiond/sessiond/internal/daemontest"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/signing"
)

var topologyWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("topology-test-webhook-secret-key"))

// webhookReceiver records the types of the webhooks it received with a
// valid signature.
type webhookReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	types map[string]int
	seen  chan struct{} // signalled on each valid webhook
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	key, err := signing.ParseKey(topologyWebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &webhookReceiver{types: map[string]int{}, seen: make(chan struct{}, 1000)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := signing.Verify(req.Header, body, time.Now(), key); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		typ := strings.SplitN(strings.SplitN(string(body), `"type":"`, 2)[1], `"`, 2)[0]
		r.mu.Lock()
		r.types[typ]++
		r.mu.Unlock()
		r.seen <- struct{}{}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

// waitFor waits until a webhook of typ has arrived.
func (r *webhookReceiver) waitFor(t *testing.T, typ string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		r.mu.Lock()
		n := r.types[typ]
		r.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-r.seen:
		case <-deadline:
			t.Fatalf("no %s webhook within %v", typ, within)
		}
	}
}

// topologyEnv is what a daemon on one of the Redis topologies gets.
func topologyEnv(url string, rcv *webhookReceiver) map[string]string {
	env := map[string]string{
		"SESSIOND_API_KEY":                testAPIKey,
		"SESSIOND_API_SECRET":             testAPISecret,
		"SESSIOND_WEBHOOK_URL":            rcv.URL,
		"SESSIOND_WEBHOOK_SECRET":         topologyWebhookSecret,
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
	}
	if url != "" {
		env["SESSIOND_REDIS_URL"] = url
	}
	return env
}

// driveSession creates a session, takes it to a decision and waits for the
// decision's webhook.
func driveSession(t *testing.T, c *client.Client, rcv *webhookReceiver, ref string) {
	t.Helper()
	ctx := t.Context()
	s, err := c.CreateSession(ctx, client.CreateSessionRequest{RefID: ref, Person: []byte(`{"first_name":"Ada"}`)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	for _, st := range []string{"started", "submitted"} {
		if _, err := c.SetStatus(ctx, s.ID, st); err != nil {
			t.Fatalf("status %s: %v", st, err)
		}
	}
	if _, err := c.Decide(ctx, s.ID, client.DecideRequest{Status: "approved"}); err != nil {
		t.Fatalf("decide: %v", err)
	}
	rcv.waitFor(t, "session.approved", 15*time.Second)
}

// TestCleanOnEveryTopology starts the daemon on each Redis it supports
// (a private child, a password and an ACL user, TLS with a private CA,
// Sentinel), drives a whole session with a delivered webhook and stops
// it: no line of its output is a WARN, an ERROR or not JSON.
func TestCleanOnEveryTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	t.Parallel()
	bin := daemontest.Build(t)
	cases := []struct {
		name  string
		redis func(t *testing.T) (url, caFile string)
	}{
		{"private redis-server", func(*testing.T) (string, string) { return "", "" }},
		{"password and ACL user", func(t *testing.T) (string, string) {
			s := redistest.Start(t, redistest.Options{Password: "topology-pw-0123", ACLUser: "sessiond", ACLPassword: "topology-acl-0123"})
			return s.URL(), ""
		}},
		{"tls with a private CA", func(t *testing.T) (string, string) {
			s := redistest.Start(t, redistest.Options{TLS: true, Password: "topology-pw-0123"})
			return s.URL(), s.CAFile()
		}},
		{"sentinel", func(t *testing.T) (string, string) {
			s := redistest.StartSentinel(t, redistest.SentinelOptions{Options: redistest.Options{Password: "topology-pw-0123"}})
			return s.URL(), ""
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, ca := tc.redis(t)
			rcv := newWebhookReceiver(t)
			env := topologyEnv(url, rcv)
			if ca != "" {
				env["SESSIOND_REDIS_TLS_CA_FILE"] = ca
			}
			p := daemontest.Start(t, bin, env)
			c, err := client.New(p.URL, testAPIKey, testAPISecret)
			if err != nil {
				t.Fatal(err)
			}
			driveSession(t, c, rcv, "topology-user")
			p.Stop(20 * time.Second)
			if problems := p.Logs.Problems(); len(problems) > 0 {
				t.Errorf("%d WARN, ERROR or non-JSON lines:\n%s", len(problems), strings.Join(problems, "\n"))
			}
		})
	}
}

// TestFrozenRedis freezes Redis (SIGSTOP: connections open, nothing
// answered): /readyz still answers 503 within 1.5 s, and SIGTERM ends the
// daemon within SESSIOND_SHUTDOWN_TIMEOUT + 1 s.
func TestFrozenRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon")
	}
	t.Parallel()
	redis := redistest.Start(t)
	rcv := newWebhookReceiver(t)
	env := topologyEnv(redis.URL(), rcv)
	env["SESSIOND_SHUTDOWN_TIMEOUT"] = "2s"
	p := daemontest.Start(t, daemontest.Build(t), env)
	c, err := client.New(p.URL, testAPIKey, testAPISecret)
	if err != nil {
		t.Fatal(err)
	}
	driveSession(t, c, rcv, "frozen-user")

	if err := syscall.Kill(redis.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(redis.Pid(), syscall.SIGCONT) }()
	for range 3 {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		took := time.Since(start)
		if err != nil {
			t.Fatalf("/readyz: %v after %v", err, took)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || took > 1500*time.Millisecond {
			t.Errorf("/readyz with Redis frozen: %d after %v, want 503 within 1.5s", resp.StatusCode, took)
		}
	}
	took := p.Stop(10 * time.Second)
	if took > 3*time.Second {
		t.Errorf("SIGTERM with Redis frozen: exit after %v, want within the 2s shutdown timeout + 1s", took)
	}
	t.Logf("exit %v after SIGTERM with Redis frozen (SESSIOND_SHUTDOWN_TIMEOUT=2s)", took)
}
