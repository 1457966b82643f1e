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
)

// This file starts and stops the sessiond replicas the bench and the drill
// run against, each a child process of this tool, on a free loopback
// port, with its log in the run's work directory. The Redis deployments
// come from internal/redistest (topology.go).

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

// pid is the process's id while it runs, else 0.
func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	select {
	case <-c.done:
		return 0
	default:
		return c.cmd.Process.Pid
	}
}

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
