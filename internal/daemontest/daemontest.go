// Package daemontest builds the sessiond binary for tests that run it as a
// real process (crashes, signals, peak memory, the command-line client).
package daemontest

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build builds ./cmd/sessiond (a static binary, as the Dockerfile does)
// into a temporary directory of t and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	pkg := filepath.Join(filepath.Dir(here), "..", "..", "cmd", "sessiond")
	bin := filepath.Join(t.TempDir(), "sessiond")
	cmd := exec.Command(GoTool(t), "build", "-o", bin, ".")
	cmd.Dir = pkg
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build sessiond: %v\n%s", err, out)
	}
	return bin
}

// GoTool is the go command that runs the tests.
func GoTool(t testing.TB) string {
	t.Helper()
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		return filepath.Join(goroot, "bin", "go")
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	return p
}

// Process is a running sessiond binary.
type Process struct {
	URL  string // http://127.0.0.1:port, the admin port
	Cmd  *exec.Cmd
	Logs *Logs
	t    testing.TB
	done chan struct{} // closed once the process has exited
	exit error         // its exit, once done is closed
}

// Start runs bin with env (SESSIOND_ADMIN_ADDR is set to a free port
// unless env has it) and waits until /readyz answers 200. The process is
// killed at t's cleanup if it still runs.
func Start(t testing.TB, bin string, env map[string]string) *Process {
	t.Helper()
	if env["SESSIOND_ADMIN_ADDR"] == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		env = maps.Clone(env)
		env["SESSIOND_ADMIN_ADDR"] = addr
	}
	cmd := exec.Command(bin)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &Process{URL: "http://" + env["SESSIOND_ADMIN_ADDR"], Cmd: cmd, Logs: &Logs{}, t: t, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Logs, p.Logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exit = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("sessiond logs:\n%s", p.Logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("sessiond exited before it was ready: %v\n%s", cmd.ProcessState, p.Logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessiond not ready within 30s:\n%s", p.Logs)
		}
		time.Sleep(20 * time.Millisecond) // polling readiness with a deadline
	}
}

// Stop sends SIGTERM and waits up to within for the exit; it returns how
// long the exit took.
func (p *Process) Stop(within time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.exit != nil {
			p.t.Errorf("sessiond exit after SIGTERM: %v, want status 0\n%s", p.exit, p.Logs)
		}
		return time.Since(start)
	case <-time.After(within):
		p.t.Fatalf("sessiond did not exit within %v of SIGTERM\n%s", within, p.Logs)
		return 0
	}
}

// Logs collects a process's output (JSON lines).
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(b)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Problems returns the lines at WARN or ERROR level, and any line that is
// not a JSON object (go-redis or Asynq writing past the logger).
func (l *Logs) Problems() []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		if line == "" {
			continue
		}
		var m struct{ Level string }
		if json.Unmarshal([]byte(line), &m) != nil || m.Level == "WARN" || m.Level == "ERROR" {
			out = append(out, line)
		}
	}
	return out
}
