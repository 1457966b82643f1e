package redistest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Files in a server's directory.
const (
	confName = "redis.conf" // the whole configuration, secrets included
	logName  = "redis.log"  // Redis's log, and its stdout and stderr
)

// startLimit bounds how long one redis-server may take to answer PING
// after it is started (an AOF being loaded included).
const startLimit = 15 * time.Second

// Options tune a server, or every data node of a Sentinel set or a Cluster.
// The zero value is a plain in-memory server without credentials.
type Options struct {
	// AppendOnly turns on AOF with fsync on every write (appendfsync
	// always), so that a restart keeps every acknowledged write.
	AppendOnly bool

	// AppendFsync is the AOF's appendfsync policy with AppendOnly:
	// "always" (the default when empty), "everysec" (a restart may lose
	// the last second of writes, as many production setups accept) or
	// "no". Setting it without AppendOnly is an error.
	AppendFsync string

	// Password is the default user's password (requirepass).
	Password string

	// ACLUser and ACLPassword add a user with every right
	// (on >ACLPassword ~* &* +@all). When set, URL, Client and the
	// replication links authenticate as this user; otherwise as the default
	// user with Password.
	ACLUser, ACLPassword string

	// TLS makes the server listen with TLS only, on Addr, with a
	// certificate for 127.0.0.1, ::1 and localhost signed by a CA made for
	// this server (CAFile). Clients are not asked for certificates. A single
	// server only: Sentinel sets and Clusters refuse it.
	TLS bool
}

// credentials are the user and password clients log in with ("" when
// there are none).
func (o Options) credentials() (user, pass string) {
	if o.ACLUser != "" {
		return o.ACLUser, o.ACLPassword
	}
	return "", o.Password
}

// userinfo is the credentials in URL form, or nil.
func (o Options) userinfo() string {
	user, pass := o.credentials()
	if pass == "" {
		return ""
	}
	return url.UserPassword(user, pass).String() + "@"
}

func (o Options) validate() error {
	if (o.ACLUser == "") != (o.ACLPassword == "") {
		return errors.New("options: ACLUser and ACLPassword go together")
	}
	switch o.AppendFsync {
	case "", "always", "everysec", "no":
	default:
		return fmt.Errorf("options: AppendFsync %q: want always, everysec or no", o.AppendFsync)
	}
	if o.AppendFsync != "" && !o.AppendOnly {
		return errors.New("options: AppendFsync needs AppendOnly")
	}
	return nil
}

// appendFsync is the appendfsync policy of an AppendOnly server.
func (o Options) appendFsync() string {
	if o.AppendFsync == "" {
		return "always"
	}
	return o.AppendFsync
}

// Server is one running redis-server (a plain server, a data node of a
// Sentinel set or a Cluster, or a sentinel). Its methods are safe for
// concurrent use.
type Server struct {
	Addr string // 127.0.0.1:port (the TLS port with TLS)
	Dir  string // its files: redis.conf, redis.log, AOF, certificates

	opts Options
	bin  string
	args []string       // the command line after the binary
	pool *x509.CertPool // trusts the server's CA; nil without TLS
	tb   testing.TB     // from the test wrappers: clients close at its cleanup

	mu      sync.Mutex
	proc    *process // nil once closed
	closed  bool
	clients []io.Closer // clients of a server without tb, closed by Close
}

// StartServer starts a redis-server on a free port with its files in dir
// (which it creates if need be) and waits until it answers PING. Close
// stops it.
func StartServer(ctx context.Context, dir string, opts Options) (*Server, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	return retryTaken(func() (*Server, error) {
		port, err := FreePort()
		if err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		return startData(ctx, dir, port, opts, nil)
	})
}

// startData starts a data node on port with the configuration of opts plus
// extra lines.
func startData(ctx context.Context, dir string, port int, opts Options, extra []string) (*Server, error) {
	if err := mkdir(dir); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	var pool *x509.CertPool
	if opts.TLS {
		var err error
		if pool, err = writeTLSFiles(dir); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
	}
	conf := append(dataConf(dir, port, opts), extra...)
	return launch(ctx, dir, port, opts, pool, conf)
}

// launch writes conf as dir/redis.conf, starts redis-server with it and the
// extra arguments and waits until it answers PING. opts gives the
// credentials and TLS of the clients, pool the CA they trust.
func launch(ctx context.Context, dir string, port int, opts Options, pool *x509.CertPool, conf []string, args ...string) (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, confName)
	if err := writeConf(path, conf); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &Server{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:  dir,
		opts: opts,
		bin:  bin,
		args: append([]string{path}, args...),
		pool: pool,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// startLocked starts the process and waits until it answers PING. On
// failure the process is killed. s.mu is held.
func (s *Server) startLocked(ctx context.Context) error {
	p, err := startProcess(s.bin, s.args, filepath.Join(s.Dir, logName))
	if err != nil {
		return fmt.Errorf("start redis-server on %s: %w", s.Addr, err)
	}
	s.proc = p
	c := redis.NewClient(s.clientOptions(-1))
	defer c.Close()
	err = poll(ctx, startLimit, func(ctx context.Context) error {
		if p.exited() {
			return permanentError{fmt.Errorf("exited: %v", p.err)}
		}
		return owns(ctx, c, p.cmd.Process.Pid)
	})
	if err != nil {
		p.kill()
		tail := logTail(filepath.Join(s.Dir, logName), 20)
		if strings.Contains(tail, "Address already in use") {
			err = errors.Join(err, errPortTaken)
		}
		return fmt.Errorf("redis-server on %s not ready: %w\n%s", s.Addr, err, tail)
	}
	return nil
}

// owns checks that the server answering c is the process pid, not another
// one that took the port first.
func owns(ctx context.Context, c *redis.Client, pid int) error {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if got := parseInfo(info)["process_id"]; got != strconv.Itoa(pid) {
		return permanentError{fmt.Errorf("%w: process %s answers, not %d", errPortTaken, got, pid)}
	}
	return nil
}

// Close stops the server (SIGKILL) and waits for its exit; for a server
// from StartServer it first closes the clients Client returned. It reports
// an exit that was not asked for (a crash). Closing twice is fine.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, c := range s.clients {
		errs = append(errs, c.Close())
	}
	s.clients = nil
	if s.proc != nil {
		if err := s.proc.unexpectedExit(); err != nil {
			errs = append(errs, fmt.Errorf("redis-server on %s %w\n%s", s.Addr, err, logTail(filepath.Join(s.Dir, logName), 20)))
		}
		s.proc.kill()
	}
	return errors.Join(errs...)
}

// Kill sends SIGKILL to the server (no final save: the crash case) and
// waits for its exit. RestartContext starts it again.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.kill()
	}
}

// Restart is RestartContext for tests: it fails the test (or, for a server
// from StartServer, panics) when the server does not come back.
func (s *Server) Restart() {
	if s.tb != nil {
		s.tb.Helper()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	if err := s.RestartContext(ctx); err != nil {
		if s.tb == nil {
			panic(fmt.Sprintf("redistest: %v", err))
		}
		s.tb.Fatalf("redistest: %v", err)
	}
}

// RestartContext kills the server (SIGKILL, no final save) if it is
// running and starts it again on the same port, directory and
// configuration, then waits until it answers PING. With AppendOnly every
// acknowledged write survives; a Cluster node keeps its identity
// (nodes.conf).
func (s *Server) RestartContext(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("restart redis-server on %s: closed", s.Addr)
	}
	s.proc.kill()
	return s.startLocked(ctx)
}

// running reports whether the process is up (not killed, not exited).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}

// Client returns a client with the server's credentials and TLS. A test
// server closes it at the test's cleanup, a server from StartServer in
// Close.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(s.clientOptions(0))
	s.track(c)
	return c
}

// track closes c at the test's cleanup or in Close.
func (s *Server) track(c io.Closer) {
	if s.tb != nil {
		s.tb.Cleanup(func() { _ = c.Close() })
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients = append(s.clients, c)
}

// clientOptions are the options of a client of s; maxRetries as in
// redis.Options.
func (s *Server) clientOptions(maxRetries int) *redis.Options {
	user, pass := s.opts.credentials()
	o := &redis.Options{
		Addr:       s.Addr,
		Username:   user,
		Password:   pass,
		MaxRetries: maxRetries,
		// Maintenance notifications are a Redis Enterprise feature; with
		// them on, a copy of these options (a second pool) logs an error.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if s.pool != nil {
		o.TLSConfig = clientTLS(s.pool, "127.0.0.1")
	}
	return o
}

// URL is the server's URL as SESSIOND_REDIS_URL takes it:
// redis://[user:password@]127.0.0.1:port/0, rediss:// with TLS (the
// client then needs CAFile). The ACL user is named when set, else the
// default user's password is given as :password@.
func (s *Server) URL() string {
	scheme := "redis"
	if s.opts.TLS {
		scheme = "rediss"
	}
	return scheme + "://" + s.opts.userinfo() + s.Addr + "/0"
}

// CAFile is the path of the PEM file of the CA that signed the server's
// certificate, or "" without TLS.
func (s *Server) CAFile() string {
	if !s.opts.TLS {
		return ""
	}
	return filepath.Join(s.Dir, caName)
}

// Start starts a redis-server on a free port with its files in a test
// temporary directory and stops it when the test ends. The test is skipped
// with a clear message when redis-server is not installed and
// SESSIOND_REQUIRE_REDIS is unset; CI sets it so a missing server fails.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	requireRedis(t)
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	s, err := StartServer(ctx, t.TempDir(), o)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.tb = t
	t.Cleanup(func() {
		logOnFailure(t, []*Server{s})
		if err := s.Close(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return s
}

// requireRedis skips t when redis-server is not installed, or fails it when
// SESSIOND_REQUIRE_REDIS is set.
func requireRedis(t testing.TB) {
	t.Helper()
	if _, err := binary(); err != nil {
		if os.Getenv("SESSIOND_REQUIRE_REDIS") != "" {
			t.Fatalf("redistest: %v", err)
		}
		t.Skip("redis-server not found in PATH; install it to run this test")
	}
}

// Pid is the server process's id, for tests that stop it (SIGSTOP) to
// play a Redis that answers nothing; 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}
