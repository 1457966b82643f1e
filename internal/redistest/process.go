package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file holds what every deployment shares: the child processes,
// free ports and the one polling loop used to wait for readiness.

// binary returns the path of redis-server. Its error wraps exec.ErrNotFound
// when redis-server is not installed.
func binary() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server not found in PATH: install it (apt-get install redis-server): %w", err)
	}
	return bin, nil
}

// process is one running child. It is reaped by its own goroutine; done is
// closed once it has been.
type process struct {
	cmd      *exec.Cmd
	done     chan struct{}
	err      error // cmd.Wait's result, valid once done is closed
	mu       sync.Mutex
	expected bool // the exit was asked for (kill)
}

// startProcess starts bin with args, its stdout and stderr appended to
// logPath (Redis writes there before its own log file is open).
func startProcess(bin string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL and waits until the process is reaped. It is a no-op
// on a process that has already exited.
func (p *process) kill() {
	p.mu.Lock()
	p.expected = true
	p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// unexpectedExit describes an exit that kill did not cause, or is nil.
func (p *process) unexpectedExit() error {
	if !p.exited() {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.expected {
		return nil
	}
	return fmt.Errorf("exited by itself: %v", p.err)
}

// FreePort returns a free TCP port on 127.0.0.1 below the kernel's
// ephemeral range (see freePorts).
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// Ports are picked from [portFloor, the first ephemeral port): the kernel
// never hands those out as the local port of an outgoing connection, which
// a port from the ephemeral range can become between the pick and the
// server's bind (the suite's packages run at once and open thousands of
// connections). Other listeners can still take one; a start that loses its
// port fails with errPortTaken and is retried on fresh ports.
const (
	portFloor         = 20000
	defaultEphemeral  = 32768 // Linux's default first ephemeral port
	minPortRangeWidth = 2000
)

// errPortTaken marks a start whose port another process took between the
// pick and the bind.
var errPortTaken = errors.New("port taken by another process")

// portAttempts bounds the starts retried after errPortTaken.
const portAttempts = 4

// retryTaken calls start until it succeeds, fails for another reason than
// errPortTaken, or has tried portAttempts times.
func retryTaken[T any](start func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil || !errors.Is(err, errPortTaken) || attempt == portAttempts {
			return v, err
		}
	}
}

// firstEphemeralPort reads the low end of the kernel's ephemeral range.
func firstEphemeralPort() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeral
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return defaultEphemeral
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil {
		return defaultEphemeral
	}
	return n
}

// freePorts returns n distinct free ports: all n listeners stay open until
// the last port is picked, so none is handed out twice. They come from
// below the ephemeral range when it leaves room, else from the kernel.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	ceiling := firstEphemeralPort()
	for range n {
		l, err := listenFree(ceiling)
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// listenFree listens on a random port in [portFloor, ceiling), or on one
// the kernel picks when that range is too narrow or full.
func listenFree(ceiling int) (net.Listener, error) {
	if width := ceiling - portFloor; width >= minPortRangeWidth {
		for range 50 {
			port := portFloor + mrand.IntN(width)
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				return l, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// pollInterval is the pause between two readiness checks.
const pollInterval = 25 * time.Millisecond

// poll calls check until it returns nil, ctx ends or limit passes. When it
// gives up it returns the last error check gave before the deadline (not
// the deadline's own error). A check that can never succeed returns a
// permanentError, which stops poll at once.
func poll(ctx context.Context, limit time.Duration, check func(context.Context) error) error {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.err
		}
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", time.Since(began).Round(time.Millisecond), last)
		case <-tick.C:
		}
	}
}

// permanentError stops poll at once.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }

// logTail returns the last n lines of the file at path, for error messages.
func logTail(path string, n int) string {
	f, err := os.Open(path)
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

// removeAll removes the subdirectories of dir that a failed start left
// behind, so a retry starts from empty ones.
func removeAll(dir string, subdirs ...string) error {
	var errs []error
	for _, sub := range subdirs {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, sub)))
	}
	return errors.Join(errs...)
}

// mkdir creates dir (and its parents) for one process's files.
func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	return nil
}

// startAll runs n starts at once and returns the servers that started (the
// caller closes them on error) and the joined errors.
func startAll(ctx context.Context, n int, start func(ctx context.Context, i int) (*Server, error)) ([]*Server, error) {
	servers := make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { servers[i], errs[i] = start(ctx, i) })
	}
	wg.Wait()
	var started []*Server
	for _, s := range servers {
		if s != nil {
			started = append(started, s)
		}
	}
	return started, errors.Join(errs...)
}

// logOnFailure logs the end of each server's log when t has failed, so a
// CI failure shows what Redis said.
func logOnFailure(t testing.TB, servers []*Server) {
	if !t.Failed() {
		return
	}
	for _, s := range servers {
		t.Logf("redistest: end of the log of %s (%s):\n%s", s.Addr, s.Dir, logTail(filepath.Join(s.Dir, logName), 30))
	}
}
