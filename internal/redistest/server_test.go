package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// errNotYet is a poll check's answer when the state is not reached yet.
var errNotYet = errors.New("not yet")

// plainClient is a client without credentials or TLS, closed at cleanup.
func plainClient(t *testing.T, o *redis.Options) *redis.Client {
	t.Helper()
	o.MaxRetries = -1
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// urlClient is a client built from u the way the daemon builds one: parse
// the URL, then trust caFile when given.
func urlClient(t *testing.T, u, caFile string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", u, err)
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("no certificate in %s", caFile)
		}
		o.TLSConfig.RootCAs = pool
	}
	return plainClient(t, o)
}

func TestServerPassword(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Quotes, a backslash and URL delimiters: the config file and the URL
	// must both carry them intact.
	const pass = `pa"ss\w:o@r/d`
	srv := Start(t, Options{Password: pass})

	err := plainClient(t, &redis.Options{Addr: srv.Addr}).Ping(ctx).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("PING without credentials: got %v, want NOAUTH", err)
	}
	err = plainClient(t, &redis.Options{Addr: srv.Addr, Password: "wrong"}).Ping(ctx).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
		t.Errorf("PING with a wrong password: got %v, want WRONGPASS", err)
	}
	if !strings.HasPrefix(srv.URL(), "redis://:") {
		t.Errorf("URL() = %q, want redis://:password@...", srv.URL())
	}
	if err := urlClient(t, srv.URL(), "").Ping(ctx).Err(); err != nil {
		t.Errorf("PING with the URL's credentials: %v", err)
	}
	if err := srv.Client().Ping(ctx).Err(); err != nil {
		t.Errorf("PING from Client(): %v", err)
	}
	if got := srv.CAFile(); got != "" {
		t.Errorf("CAFile() without TLS = %q, want empty", got)
	}
}

func TestServerACLUser(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := Start(t, Options{Password: "default-pass", ACLUser: "app", ACLPassword: "app pass@:/"})

	if !strings.HasPrefix(srv.URL(), "redis://app:") {
		t.Errorf("URL() = %q, want the ACL user", srv.URL())
	}
	c := urlClient(t, srv.URL(), "")
	who, err := c.Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil || who != "app" {
		t.Errorf("ACL WHOAMI with the URL's credentials: got %q, %v; want app", who, err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("SET as the ACL user: %v", err)
	}
	who, err = srv.Client().Do(ctx, "ACL", "WHOAMI").Text()
	if err != nil || who != "app" {
		t.Errorf("ACL WHOAMI from Client(): got %q, %v; want app", who, err)
	}
	err = plainClient(t, &redis.Options{Addr: srv.Addr, Username: "app", Password: "wrong"}).Ping(ctx).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "WRONGPASS") {
		t.Errorf("PING as app with a wrong password: got %v, want WRONGPASS", err)
	}
	err = plainClient(t, &redis.Options{Addr: srv.Addr}).Ping(ctx).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("PING without credentials: got %v, want NOAUTH", err)
	}
}

func TestServerTLS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := Start(t, Options{TLS: true, Password: "pw"})

	if err := plainClient(t, &redis.Options{Addr: srv.Addr, Password: "pw"}).Ping(ctx).Err(); err == nil {
		t.Error("PING in plaintext on the TLS port succeeded")
	}
	noCA := plainClient(t, &redis.Options{Addr: srv.Addr, Password: "pw", TLSConfig: &tls.Config{ServerName: "127.0.0.1"}})
	var unknown x509.UnknownAuthorityError
	if err := noCA.Ping(ctx).Err(); !errors.As(err, &unknown) {
		t.Errorf("PING over TLS without the CA: got %v, want an unknown authority error", err)
	}
	if !strings.HasPrefix(srv.URL(), "rediss://:pw@") {
		t.Errorf("URL() = %q, want rediss://:pw@...", srv.URL())
	}
	if srv.CAFile() == "" {
		t.Fatal("CAFile() is empty with TLS")
	}
	if err := urlClient(t, srv.URL(), srv.CAFile()).Ping(ctx).Err(); err != nil {
		t.Errorf("PING with the URL and the CA: %v", err)
	}
	if err := srv.Client().Ping(ctx).Err(); err != nil {
		t.Errorf("PING from Client(): %v", err)
	}
}

func TestServerRestartKeepsAppendOnlyData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{AppendOnly: true}},
		{"tls and acl user", Options{AppendOnly: true, TLS: true, ACLUser: "app", ACLPassword: "pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			srv := Start(t, tc.opts)
			c := srv.Client()
			if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
				t.Fatal(err)
			}
			srv.Restart()
			if got, err := c.Get(ctx, "k").Result(); got != "before" {
				t.Errorf("GET after Restart: got %q, %v; want before", got, err)
			}

			srv.Kill()
			if err := plainClient(t, srv.clientOptions(-1)).Ping(ctx).Err(); err == nil {
				t.Error("PING after Kill succeeded")
			}
			if err := srv.RestartContext(ctx); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx, "k").Result(); got != "before" {
				t.Errorf("GET after Kill and RestartContext: got %q, %v; want before", got, err)
			}
		})
	}
}

// TestServerAppendFsync checks the AOF policy each Options asks for, and
// that a policy without AOF, or an unknown one, is refused.
func TestServerAppendFsync(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		opts       Options
		appendonly string
		fsync      string // "" when the options must be refused
	}{
		{"aof default", Options{AppendOnly: true}, "yes", "always"},
		{"aof everysec", Options{AppendOnly: true, AppendFsync: "everysec"}, "yes", "everysec"},
		{"no aof", Options{}, "no", "everysec"}, // Redis's own default policy, unused
		{"policy without aof", Options{AppendFsync: "everysec"}, "", ""},
		{"unknown policy", Options{AppendOnly: true, AppendFsync: "sometimes"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tc.appendonly == "" {
				s, err := StartServer(ctx, t.TempDir(), tc.opts)
				if err == nil {
					_ = s.Close()
					t.Fatalf("StartServer(%+v) succeeded, want an error", tc.opts)
				}
				return
			}
			c := Start(t, tc.opts).Client()
			got, err := c.ConfigGet(ctx, "append*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if got["appendonly"] != tc.appendonly || got["appendfsync"] != tc.fsync {
				t.Errorf("appendonly %q, appendfsync %q; want %q, %q", got["appendonly"], got["appendfsync"], tc.appendonly, tc.fsync)
			}
		})
	}
}

// TestStartServerWithoutTesting uses the core API as the load tool does:
// Close must close its clients and leave no process behind.
func TestStartServerWithoutTesting(t *testing.T) {
	t.Parallel()
	requireRedis(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	srv, err := StartServer(ctx, t.TempDir(), Options{Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("PING on a client after Close: got %v, want %v", err, redis.ErrClosed)
	}
	if conn, err := net.Dial("tcp", srv.Addr); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", srv.Addr)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := srv.RestartContext(ctx); err == nil {
		t.Error("RestartContext after Close succeeded")
	}
}

// TestCloseReportsCrash: a server that dies by itself makes Close fail.
func TestCloseReportsCrash(t *testing.T) {
	t.Parallel()
	requireRedis(t)
	ctx := t.Context()
	srv, err := StartServer(ctx, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = plainClient(t, srv.clientOptions(-1)).Do(ctx, "SHUTDOWN", "NOSAVE").Err()
	err = poll(ctx, 5*time.Second, func(context.Context) error {
		if srv.running() {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		t.Fatalf("server still running after SHUTDOWN: %v", err)
	}
	err = srv.Close()
	if err == nil || !strings.Contains(err.Error(), "exited by itself") {
		t.Errorf("Close after a crash: got %v, want an exit by itself", err)
	}
}

// A port taken between the pick and the bind is reported as errPortTaken,
// whether the taker is a plain listener (the bind fails) or another Redis
// (which would answer PING in the new server's place).
func TestStartOnTakenPort(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	other := Start(t)
	_, otherPort, _ := net.SplitHostPort(other.Addr)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	takers := map[string]int{
		"redis":    mustAtoi(t, otherPort),
		"listener": l.Addr().(*net.TCPAddr).Port,
	}
	for name, port := range takers {
		s, err := startData(ctx, t.TempDir(), port, Options{}, nil)
		if err == nil {
			s.Close()
			t.Fatalf("%s: start on a taken port succeeded", name)
		}
		if !errors.Is(err, errPortTaken) {
			t.Errorf("%s: error %v does not wrap errPortTaken", name, err)
		}
	}
	// The other server is untouched.
	if err := other.Client().Ping(ctx).Err(); err != nil {
		t.Fatalf("the server on the taken port: %v", err)
	}
}

func TestFreePortsBelowEphemeralRange(t *testing.T) {
	ceiling := firstEphemeralPort()
	if ceiling-portFloor < minPortRangeWidth {
		t.Skipf("ephemeral range starts at %d: no room below it", ceiling)
	}
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < portFloor || p >= ceiling {
			t.Errorf("port %d outside [%d, %d)", p, portFloor, ceiling)
		}
		if seen[p] {
			t.Errorf("port %d picked twice", p)
		}
		seen[p] = true
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
