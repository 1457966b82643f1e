package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file starts and stops the real processes the bench and the drill
// run against: a private redis-server and sessiond replicas, each a child
// process of this tool, on free loopback ports, with their files in one
// work directory.

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeAddr is a free 127.0.0.1:port.
func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// child is one child process that can be killed and started again with the
// same command line. It notices exits it did not cause.
type child struct {
	name    string
	path    string
	args    []string
	env     []string // nil: inherit
	logPath string   // stdout and stderr are appended here

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	stopping   bool
	unexpected []string // exits not caused by kill or term
}

func (c *child) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		select {
		case <-c.done:
		default:
			return fmt.Errorf("start %s: already running", c.name)
		}
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	done := make(chan struct{})
	c.cmd, c.done, c.stopping = cmd, done, false
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.mu.Lock()
		if !c.stopping {
			c.unexpected = append(c.unexpected, fmt.Sprintf("%s exited by itself at %s: %v", c.name, time.Now().Format(time.TimeOnly), err))
		}
		c.mu.Unlock()
		close(done)
	}()
	return nil
}

// running reports whether the process is alive.
func (c *child) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits up to wait for the exit, then SIGKILLs. It
// returns the exit error of the process (nil for exit status 0).
func (c *child) signal(sig syscall.Signal, wait time.Duration) error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	if cmd == nil {
		c.mu.Unlock()
		return nil
	}
	c.stopping = true
	c.mu.Unlock()
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %s of %s: killed", c.name, wait, sig)
	}
	if cmd.ProcessState != nil && !cmd.ProcessState.Success() && sig != syscall.SIGKILL {
		return fmt.Errorf("%s: %s", c.name, cmd.ProcessState)
	}
	return nil
}

// kill SIGKILLs the process and waits for it.
func (c *child) kill() { _ = c.signal(syscall.SIGKILL, time.Minute) }

// term asks the process to stop (SIGTERM) and waits up to wait.
func (c *child) term(wait time.Duration) error { return c.signal(syscall.SIGTERM, wait) }

// exits lists the exits that were not asked for.
func (c *child) exits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.unexpected...)
}

// logTail returns the last n lines of the child's log.
func (c *child) logTail(n int) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// redisServer is a private redis-server.
type redisServer struct {
	*child
	addr string
	dir  string
}

// startRedis starts redis-server on a free port with its files in dir.
// appendfsync is "" for no AOF, else "always" or "everysec".
func startRedis(ctx context.Context, dir, appendfsync string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found in PATH: install it (apt-get install redis-server)")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	args := []string{
		"--port", port,
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--protected-mode", "no",
		"--maxmemory-policy", "noeviction",
		"--logfile", "",
	}
	if appendfsync != "" {
		args = append(args, "--appendonly", "yes", "--appendfsync", appendfsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	s := &redisServer{
		child: &child{name: "redis-server", path: bin, args: args, logPath: filepath.Join(dir, "redis.log")},
		addr:  addr,
		dir:   dir,
	}
	if err := s.restartNow(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// restartNow starts the server (again, if it was killed) and waits until
// it answers PING.
func (s *redisServer) restartNow(ctx context.Context) error {
	if err := s.start(); err != nil {
		return err
	}
	if err := waitRedis(ctx, s.addr, 15*time.Second); err != nil {
		return fmt.Errorf("redis-server on %s not ready: %w\n%s", s.addr, err, s.logTail(20))
	}
	return nil
}

// url is the server's redis:// URL.
func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

// waitRedis polls addr with PING until it answers or limit passes. A Redis
// that is still loading its AOF answers PING with an error, so this also
// waits for the load.
func waitRedis(ctx context.Context, addr string, limit time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err := c.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemon is one sessiond replica.
type daemon struct {
	*child
	addr string // admin address host:port
}

// newDaemon prepares (does not start) a sessiond replica with the given
// SESSIOND_* settings. Every SESSIOND_* variable of this tool's own
// environment is dropped, so the settings are exactly these.
func newDaemon(bin, name, logPath string, settings map[string]string) *daemon {
	env := make([]string, 0, len(os.Environ())+len(settings))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIOND_") {
			env = append(env, kv)
		}
	}
	for k, v := range settings {
		env = append(env, k+"="+v)
	}
	return &daemon{
		child: &child{name: name, path: bin, env: env, logPath: logPath},
		addr:  settings["SESSIOND_ADMIN_ADDR"],
	}
}

// startReady starts the replica and waits until /readyz answers 200.
func (d *daemon) startReady(ctx context.Context, limit time.Duration) error {
	if err := d.start(); err != nil {
		return err
	}
	return d.waitReady(ctx, limit)
}

// waitReady polls /readyz until it answers 200, the process dies or limit
// passes.
func (d *daemon) waitReady(ctx context.Context, limit time.Duration) error {
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(limit)
	for {
		if !d.running() {
			return fmt.Errorf("%s exited during start-up:\n%s", d.name, d.logTail(20))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready on %s within %s:\n%s", d.name, d.addr, limit, d.logTail(20))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// buildDaemon compiles ./cmd/sessiond into dir and returns the binary's
// path. It runs the go command from the module this tool belongs to, so it
// works from the repository root (make) and from this package's directory
// (go test).
func buildDaemon(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			return "", errors.New("go command not found in PATH: pass --daemon-bin")
		}
	}
	out := filepath.Join(dir, "sessiond")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/sessiond/sessiond/cmd/sessiond")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sessiond: %w\n%s", err, b)
	}
	return out, nil
}

// usedMemory is INFO memory's used_memory, in bytes.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("info memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("info memory: no used_memory")
}
