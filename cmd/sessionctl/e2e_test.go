package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/daemontest"
	"github.com/sessiond/sessiond/internal/redistest"
)

// TestDrivesARealDaemon builds and runs sessiond against a private
// redis-server and drives a whole session with sessionctl: create, read,
// introspect the token, progress, decide, list, the events feed, delete.
func TestDrivesARealDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	t.Parallel()
	redis := redistest.Start(t)
	bin := daemontest.Build(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const key, secret = "e2e", "e2e-secret-0123456789"
	daemon := exec.Command(bin)
	daemon.Env = append(os.Environ(),
		"SESSIOND_REDIS_URL="+redis.URL(), "SESSIOND_ADMIN_ADDR="+addr,
		"SESSIOND_API_KEY="+key, "SESSIOND_API_SECRET="+secret)
	var logs lockedBuffer
	daemon.Stdout, daemon.Stderr = &logs, &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = daemon.Process.Signal(os.Interrupt)
		_ = daemon.Wait()
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 30s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling readiness with a deadline
	}

	vars := map[string]string{"SESSIOND_URL": base, "SESSIOND_API_KEY": key, "SESSIOND_API_SECRET": secret}
	ctl := func(stdin string, args ...string) map[string]any {
		t.Helper()
		r := runCtl(t.Context(), vars, stdin, args...)
		if r.code != 0 {
			t.Fatalf("sessionctl %s: exit %d\nstdout %s\nstderr %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Fatalf("sessionctl %s: stdout %q: %v", strings.Join(args, " "), r.stdout, err)
		}
		return m
	}
	created := ctl(`{"first_name":"Ada","last_name":"Lovelace"}`, "sessions", "create", "--ref-id", "user-42", "--person", "-", "--idempotency-key", "k-42")
	id, _ := created["id"].(string)
	token, _ := created["token"].(string)
	if created["status"] != "created" || id == "" || !strings.HasPrefix(token, "vst_") {
		t.Fatalf("create: %v", created)
	}
	if again := ctl(`{"first_name":"Ada","last_name":"Lovelace"}`, "sessions", "create", "--ref-id", "user-42", "--person", "-", "--idempotency-key", "k-42"); again["token"] != token {
		t.Errorf("idempotent retry: %v, want the first token", again)
	}
	if got := ctl("", "sessions", "get", id); got["person"].(map[string]any)["first_name"] != "Ada" {
		t.Errorf("get: %v", got)
	}
	if in := ctl(token, "tokens", "introspect", "-"); in["active"] != true {
		t.Errorf("introspect: %v", in)
	}
	ctl("", "sessions", "status", id, "started")
	ctl("", "sessions", "status", id, "submitted")
	if dec := ctl("", "sessions", "decide", id, "approved", "--reason", "document and selfie match"); dec["status"] != "approved" {
		t.Errorf("decide: %v", dec)
	}
	if in := ctl(token, "tokens", "introspect", "-"); in["active"] != false {
		t.Errorf("introspect after the decision: %v, want inactive", in)
	}
	if list := ctl("", "sessions", "list", "--ref-id", "user-42"); len(list["sessions"].([]any)) != 1 {
		t.Errorf("list: %v", list)
	}
	feed := ctl("", "events", "--limit", "10")
	var types []string
	for _, ev := range feed["events"].([]any) {
		types = append(types, ev.(map[string]any)["type"].(string))
	}
	if strings.Join(types, ",") != "session.created,session.started,session.submitted,session.approved" {
		t.Errorf("events: %v", types)
	}
	if del := ctl("", "sessions", "delete", id); del["status"] != "success" {
		t.Errorf("delete: %v", del)
	}
	r := runCtl(t.Context(), vars, "", "sessions", "get", id)
	if r.code != 1 || !strings.Contains(r.stdout, `"code":1104`) {
		t.Errorf("get after delete: exit %d, stdout %s", r.code, r.stdout)
	}
	// The generic command signs any request.
	r = runCtl(context.Background(), vars, "", "api", "GET", "/v1/events?limit=1")
	if r.code != 0 || !strings.Contains(r.stdout, "session.created") {
		t.Errorf("api GET: exit %d, stdout %s, stderr %s", r.code, r.stdout, r.stderr)
	}
}

// lockedBuffer collects a child's output safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
