package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sessiond/sessiond/internal/redisconn"
)

const (
	// redisNotFound is startLocalRedis's error when redis-server is missing.
	redisNotFound = "redis-server not found in PATH: install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set SESSIOND_REDIS_URL"

	// localRedisStartTimeout bounds how long a private redis-server may take
	// to answer PING.
	localRedisStartTimeout = 10 * time.Second
	// localRedisStopTimeout bounds how long stop waits after SIGTERM before
	// it kills the server.
	localRedisStopTimeout = 10 * time.Second
	// localRedisPortTries is how many free ports startLocalRedis tries when
	// another process takes the chosen port before redis-server binds it.
	localRedisPortTries = 3
)

// startLocalRedis starts a private redis-server child for a deployment
// without SESSIOND_REDIS_URL and returns its URL once it answers PING.
//
// The server listens on a free 127.0.0.1 port, requires a random password
// (carried in the returned URL, so never log the URL) and keeps its files,
// with appendonly yes and appendfsync everysec, in a new temporary
// directory. ctx bounds only the start-up: the server runs until stop is
// called, so the caller stops it last, after everything that uses Redis.
//
// stop sends SIGTERM, waits up to localRedisStopTimeout (then kills the
// server) and removes the directory with all data; it may be called more
// than once and returns the first call's result. On Linux the server is
// killed if sessiond dies without calling stop (the directory then stays).
func startLocalRedis(ctx context.Context, logger *slog.Logger) (url string, stop func() error, err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New(redisNotFound)
	}
	dir, err := os.MkdirTemp("", "sessiond-redis-")
	if err != nil {
		return "", nil, fmt.Errorf("start local redis: %w", err)
	}
	password := rand.Text()
	// The password goes in a file only sessiond's user can read, not on the
	// command line where any local user could see it.
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte("requirepass "+password+"\n"), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("start local redis: %w", err)
	}
	for try := 1; ; try++ {
		r, err := launchRedis(ctx, logger, bin, conf, dir, password)
		if err == nil {
			logger.Info("started private redis-server: its data is deleted when sessiond stops; set SESSIOND_REDIS_URL to keep sessions",
				"addr", r.addr, "dir", dir, "pid", r.cmd.Process.Pid)
			return "redis://:" + password + "@" + r.addr + "/0", r.stop, nil
		}
		if !errors.Is(err, errPortTaken) || try == localRedisPortTries {
			_ = os.RemoveAll(dir)
			return "", nil, fmt.Errorf("start local redis: %w", err)
		}
	}
}

// errPortTaken reports that redis-server could not bind its port.
var errPortTaken = errors.New("port already in use")

// localRedis is a running private redis-server.
type localRedis struct {
	cmd     *exec.Cmd
	addr    string // 127.0.0.1:port
	dir     string
	logger  *slog.Logger
	exited  chan struct{} // closed once the process has exited and been reaped
	waitErr error         // cmd.Wait's result, set before exited is closed
	stopped atomic.Bool   // stop has begun; an exit is expected
	once    sync.Once
	stopErr error
}

// launchRedis starts redis-server on a free port and waits until it answers
// PING. On error the process is gone; the directory is left to the caller.
func launchRedis(ctx context.Context, logger *slog.Logger, bin, conf, dir, password string) (*localRedis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &localRedis{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:    dir,
		logger: logger,
		exited: make(chan struct{}),
	}
	logFile := filepath.Join(dir, "redis.log")
	_ = os.Remove(logFile) // so that its tail tells about this try only
	r.cmd = exec.Command(bin, conf,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--logfile", logFile,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "everysec",
	)
	r.cmd.Dir = dir
	r.cmd.SysProcAttr = redisSysProcAttr()
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go r.wait()

	if err := r.waitReady(ctx, password); err != nil {
		r.stopped.Store(true)
		_ = r.cmd.Process.Kill()
		<-r.exited
		log := tail(logFile, 1024)
		if strings.Contains(log, "Address already in use") {
			return nil, fmt.Errorf("127.0.0.1:%d: %w", port, errPortTaken)
		}
		if log != "" {
			return nil, fmt.Errorf("%w; redis-server log ends:\n%s", err, log)
		}
		return nil, err
	}
	return r, nil
}

// wait reaps the process and logs an exit that stop did not ask for.
func (r *localRedis) wait() {
	r.waitErr = r.cmd.Wait()
	close(r.exited)
	if !r.stopped.Load() {
		r.logger.Error("private redis-server exited unexpectedly", "pid", r.cmd.Process.Pid, "err", fmt.Sprint(r.waitErr))
	}
}

// waitReady polls PING until it succeeds, the process exits, ctx is done or
// localRedisStartTimeout passes.
func (r *localRedis) waitReady(ctx context.Context, password string) error {
	ctx, cancel := context.WithTimeout(ctx, localRedisStartTimeout)
	defer cancel()
	conn, err := redisconn.Parse("redis://:"+password+"@"+r.addr+"/0", redisconn.Options{})
	if err != nil {
		return err
	}
	c := conn.Client(redisconn.Pool{Name: "sessiond-start", Size: 1, NoRetries: true})
	defer c.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pingCtx, pingCancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := c.Ping(pingCtx).Err()
		pingCancel()
		if err == nil {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("redis-server exited before answering PING: %v", r.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("wait for redis-server on %s to answer PING: %w (last error: %v)", r.addr, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// stop stops the server once and removes its directory.
func (r *localRedis) stop() error {
	r.once.Do(func() { r.stopErr = r.terminate() })
	return r.stopErr
}

func (r *localRedis) terminate() error {
	r.stopped.Store(true)
	var errs []error
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("signal: %w", err))
	}
	timer := time.NewTimer(localRedisStopTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
	case <-timer.C:
		_ = r.cmd.Process.Kill()
		<-r.exited
		errs = append(errs, fmt.Errorf("no exit within %s of SIGTERM: killed", localRedisStopTimeout))
	}
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop local redis: %w", err)
	}
	r.logger.Info("stopped private redis-server", "pid", r.cmd.Process.Pid)
	return nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another process
// may take it before redis-server binds it; launchRedis reports that as
// errPortTaken.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns up to the last n bytes of the file at path, or "" if it
// cannot be read.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
