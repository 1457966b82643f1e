package redisconn

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redistest"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url      string
		topology Topology
		addrs    []string
		user     string
		db       int
		master   string
		tls      bool
		err      string
	}{
		{url: "redis://127.0.0.1:6379/0", topology: Single, addrs: []string{"127.0.0.1:6379"}},
		{url: "redis://:pw@redis.internal/3", topology: Single, addrs: []string{"redis.internal:6379"}, db: 3},
		{url: "redis://app:pw@[::1]:7000", topology: Single, addrs: []string{"[::1]:7000"}, user: "app"},
		{url: "rediss://redis.example:6380", topology: Single, addrs: []string{"redis.example:6380"}, tls: true},
		{url: "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2,10.0.0.3:26380/2?master=main", topology: Sentinel,
			addrs: []string{"10.0.0.1:26379", "10.0.0.2:6379", "10.0.0.3:26380"}, db: 2, master: "main"},
		{url: "redis-cluster://u:p@127.0.0.1:7001,127.0.0.1:7002", topology: Cluster, addrs: []string{"127.0.0.1:7001", "127.0.0.1:7002"}, user: "u"},
		{url: "rediss-cluster://127.0.0.1:7001", topology: Cluster, addrs: []string{"127.0.0.1:7001"}, tls: true},
		{url: "http://127.0.0.1", err: `unknown scheme "http"`},
		{url: "redis://", err: "no host"},
		{url: "redis://a:1,b:2", err: "one host for redis://"},
		{url: "redis://a/x", err: `bad database "x"`},
		{url: "redis-cluster://a:1/1", err: "only database 0"},
		{url: "redis-sentinel://a:1", err: "needs ?master=NAME"},
		{url: "redis://a:1?master=m", err: "master= is for redis-sentinel"},
		{url: "redis://a:1?read_timeout=1", err: `unknown parameter "read_timeout"`},
		{url: "redis-cluster://a:1,,b:2", err: "an empty host"},
		{url: "redis://:s3cret-pw@%zz", err: "not a URL"},
	} {
		c, err := Parse(tc.url, Options{})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, want an error with %q", tc.url, err, tc.err)
			}
			if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "pw@")) {
				t.Errorf("Parse(%q) error %q shows the password", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.url, err)
			continue
		}
		if c.topology != tc.topology || !slices.Equal(c.addrs, tc.addrs) || c.username != tc.user || c.db != tc.db || c.master != tc.master || (c.tls != nil) != tc.tls {
			t.Errorf("Parse(%q) = %+v", tc.url, c)
		}
		if strings.Contains(c.String(), "pw") {
			t.Errorf("String() = %q shows the password", c.String())
		}
	}
	if _, err := Parse("redis://a:1", Options{CAFile: "/nonexistent.pem"}); err == nil {
		t.Error("a CA file without rediss:// was accepted")
	}
	c, err := Parse("redis-sentinel://a:1?master=m&sentinel_password=hunter22", Options{})
	if err != nil || strings.Contains(c.String(), "hunter22") {
		t.Errorf("sentinel password: %v, String %q", err, c)
	}
}

// checkConn proves that every kind of client the daemon makes from c
// authenticates: a plain command, Asynq's pub/sub (the connection that
// lost the password when options were copied) and an Asynq inspector.
func checkConn(t *testing.T, c *Conn) {
	t.Helper()
	ctx := t.Context()
	rdb := c.Client(Pool{Name: "test"})
	defer rdb.Close()
	if err := rdb.Set(ctx, "redisconn:{k}", "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	sub := rdb.Subscribe(ctx, "redisconn:channel")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	insp := asynq.NewInspector(c.Asynq(Pool{Name: "test-asynq"}))
	defer insp.Close()
	if _, err := insp.Queues(); err != nil {
		t.Fatalf("asynq inspector: %v", err)
	}
	client := asynq.NewClient(c.Asynq(Pool{}))
	defer client.Close()
	if _, err := client.EnqueueContext(ctx, asynq.NewTask("t", nil), asynq.Queue("redisconn")); err != nil {
		t.Fatalf("asynq enqueue: %v", err)
	}
}

func TestTopologies(t *testing.T) {
	t.Parallel()
	t.Run("password", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t, redistest.Options{Password: "pw-0123456789"})
		c, err := Parse(srv.URL(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkConn(t, c)
		bad, _ := Parse(strings.Replace(srv.URL(), "pw-0123456789", "wrong", 1), Options{})
		if err := bad.Client(Pool{NoRetries: true}).Ping(t.Context()).Err(); err == nil {
			t.Error("a wrong password was accepted")
		}
	})
	t.Run("acl user", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t, redistest.Options{Password: "pw-0123456789", ACLUser: "sessiond", ACLPassword: "acl-0123456789"})
		c, err := Parse(srv.URL(), Options{})
		if err != nil || !strings.Contains(c.String(), "sessiond:") {
			t.Fatalf("%v %s", err, c)
		}
		checkConn(t, c)
	})
	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t, redistest.Options{TLS: true, Password: "pw-0123456789"})
		if _, err := Parse(srv.URL(), Options{CAFile: srv.CAFile()}); err != nil {
			t.Fatal(err)
		}
		c, _ := Parse(srv.URL(), Options{CAFile: srv.CAFile()})
		checkConn(t, c)
		// Without the private CA the server's certificate is refused.
		plain, _ := Parse(srv.URL(), Options{})
		if err := plain.Client(Pool{NoRetries: true}).Ping(t.Context()).Err(); err == nil {
			t.Error("a certificate from an unknown CA was accepted")
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		t.Parallel()
		s := redistest.StartSentinel(t, redistest.SentinelOptions{Options: redistest.Options{Password: "pw-0123456789"}})
		c, err := Parse(s.URL(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkConn(t, c)
		// The client follows a failover without being rebuilt.
		rdb := c.Client(Pool{})
		defer rdb.Close()
		if err := rdb.Set(t.Context(), "before", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		old, err := s.KillMaster(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.WaitFailover(t.Context(), old); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := rdb.Set(t.Context(), "after", "1", 0).Err()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no write accepted after the failover: %v", err)
			}
			time.Sleep(50 * time.Millisecond) // polling the new master with a deadline
		}
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		cl := redistest.StartCluster(t, redistest.Options{Password: "pw-0123456789"})
		c, err := Parse(cl.URL(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.Client(Pool{}).(*redis.ClusterClient); !ok {
			t.Fatal("not a cluster client")
		}
		checkConn(t, c)
	})
}

// TestDeadlinesHonoured: with Redis frozen (SIGSTOP), a command returns
// when its context ends, not after the read timeout.
func TestDeadlinesHonoured(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	c, _ := Parse(srv.URL(), Options{})
	rdb := c.Client(Pool{})
	defer rdb.Close()
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(srv.Pid(), syscall.SIGCONT) }()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := rdb.Ping(ctx).Err()
	took := time.Since(start)
	if err == nil {
		t.Fatal("PING answered by a stopped server")
	}
	var ne interface{ Timeout() bool }
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("PING error %v, want a timeout", err)
	}
	if took > 2*time.Second { // the read timeout is 3 s
		t.Errorf("PING took %v with a 200ms context", took)
	}
}
