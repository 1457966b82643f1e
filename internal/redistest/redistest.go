// Package redistest starts private redis-server processes for tests.
//
// Every server listens on a free loopback port, keeps its files in a test
// temporary directory and is stopped by t.Cleanup. Tests never touch a shared
// Redis on 6379, so they may run in parallel without flushing anything.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Server is a running redis-server owned by one test.
type Server struct {
	Addr string // host:port
	Dir  string // working directory (AOF files live here)

	t    testing.TB
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Options tune a server. The zero value is a plain in-memory server.
type Options struct {
	// AppendOnly turns on AOF with fsync every write, so that Restart keeps
	// every acknowledged write.
	AppendOnly bool
}

// Start starts a redis-server on a free port and stops it when the test ends.
// The test is skipped with a clear message when redis-server is not installed
// and SESSIOND_REQUIRE_REDIS is unset; CI sets it so a missing server fails.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("SESSIOND_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found in PATH: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found in PATH; install it to run this test")
	}
	dir := t.TempDir()
	s := &Server{Dir: dir, t: t}
	s.args = []string{
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--protected-mode", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
	}
	if o.AppendOnly {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
	port, err := FreePort()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.start(bin)
	t.Cleanup(s.stop)
	return s
}

func (s *Server) start(bin string) {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command(bin, append([]string{"--port", port}, s.args...)...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	if err := waitReady(s.Addr, 10*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
		s.t.Fatalf("redistest: redis-server on %s not ready: %v\n%s", s.Addr, err, log)
	}
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart kills the server (SIGKILL, no final save) and starts it again on the
// same port and directory. With AppendOnly the data survives.
func (s *Server) Restart() {
	s.t.Helper()
	s.stop()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: s.Addr,
		// Maintenance notifications are a Redis Enterprise feature; with
		// them on, a copy of these options (a second pool) logs an error.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitReady(addr string, limit time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
