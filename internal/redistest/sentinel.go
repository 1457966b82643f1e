package redistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMasterName is the name the sentinels monitor the master under when
// SentinelOptions.MasterName is empty.
const DefaultMasterName = "sessiond-master"

// Failover settings of the sentinels: fast, for tests. Down-after is kept
// well above the ping period (see sentinelTiming).
const (
	downAfter       = time.Second // a master silent this long is down
	failoverTimeout = 3 * time.Second
	quorum          = 2
)

// Timing of the sentinels, set with SENTINEL DEBUG (Redis 7.0 or newer) as
// Redis's own Sentinel tests do; the defaults suit a down-after of 30 s.
//
// The ping period bounds both ends. It is the least time between two
// reconnections, so it must stay well below down-after: after a failover
// a sentinel's link to the healthy new master is reset (switch-master, or
// the CLIENT KILL the failover sends), and with the default 1 s and a
// down-after of 500 ms the sentinel found that master down and, counting
// its peers' stale "down" answers about the old one, failed over again.
// And while the master is down a sentinel trusts a replica's INFO for only
// 5 ping periods, but asks for it once a second: at 5 × 100 ms no replica
// qualified and every election ended in -failover-abort-no-good-slave.
//
// Hello messages every 200 ms (not 2 s) let the sentinels find each other
// and agree on a new master fast; INFO every second (not 10 s) lets them
// see a restarted replica; ask-period makes the quorum fast.
var sentinelTiming = []any{
	"ping-period", 300,
	"ask-period", 100,
	"publish-period", 200,
	"info-period", 1000,
}

// setLimit bounds how long a Sentinel set or a Cluster may take to get
// ready, to fail over or to take a restarted node back.
const setLimit = 30 * time.Second

// SentinelOptions tune a Sentinel set.
type SentinelOptions struct {
	// Options apply to the three data nodes (the sentinels themselves have
	// no password). With credentials, the replicas authenticate to their
	// master (masteruser, masterauth) and the sentinels to the data nodes
	// (sentinel auth-user, auth-pass) with them. TLS is refused.
	Options

	// MasterName is the name the master is monitored under; empty means
	// DefaultMasterName.
	MasterName string
}

// Sentinel is a running Sentinel set: three data nodes (one master, two
// replicas, so that a promoted master still has one) and three sentinels
// that monitor the master with a quorum of 2. When the master dies, the
// sentinels name a promoted replica about 2 s later and the set has settled
// (what WaitFailover waits for) about 3 s later. Its methods are safe for
// concurrent use.
type Sentinel struct {
	name      string
	opts      Options
	nodes     []*Server // data nodes; nodes[0] is the first master
	sentinels []*Server // plain, without credentials
	sc        []*redis.SentinelClient
	tb        testing.TB

	mu      sync.Mutex
	clients []io.Closer
}

// StartSentinelServers starts a Sentinel set with its files in dir (one
// subdirectory per process: node0..node2, sentinel0..sentinel2) and waits
// until it is ready: both replicas linked to the master, and every sentinel
// naming the master, seeing both replicas and the two other sentinels.
// Close stops it.
func StartSentinelServers(ctx context.Context, dir string, opts SentinelOptions) (*Sentinel, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start sentinel set: %w", err)
	}
	if opts.TLS {
		return nil, errors.New("start sentinel set: TLS is supported for a single server only")
	}
	name := opts.MasterName
	if name == "" {
		name = DefaultMasterName
	}
	return retryTaken(func() (*Sentinel, error) {
		s := &Sentinel{name: name, opts: opts.Options}
		if err := s.start(ctx, dir); err != nil {
			// A retry must not find a rewritten sentinel or replica
			// configuration.
			return nil, errors.Join(fmt.Errorf("start sentinel set: %w", err), s.Close(), removeAll(dir, "node0", "node1", "node2", "sentinel0", "sentinel1", "sentinel2"))
		}
		return s, nil
	})
}

func (s *Sentinel) start(ctx context.Context, dir string) error {
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	master, err := startData(ctx, filepath.Join(dir, "node0"), ports[0], s.opts, masterAuthConf(s.opts))
	if err != nil {
		return err
	}
	s.nodes = append(s.nodes, master)
	replicaConf := append(masterAuthConf(s.opts), "replicaof 127.0.0.1 "+strconv.Itoa(ports[0]))
	replicas, err := startAll(ctx, 2, func(ctx context.Context, i int) (*Server, error) {
		return startData(ctx, filepath.Join(dir, "node"+strconv.Itoa(i+1)), ports[1+i], s.opts, replicaConf)
	})
	s.nodes = append(s.nodes, replicas...)
	if err != nil {
		return err
	}
	// The sentinels start once the replicas are linked: a sentinel asks
	// the master for INFO as soon as it connects and learns the replicas
	// from it, instead of waiting for the next INFO ten seconds later.
	replicaAddrs := []string{replicas[0].Addr, replicas[1].Addr}
	err = poll(ctx, setLimit, func(ctx context.Context) error { return s.replicasLinked(ctx, master.Addr, replicaAddrs) })
	if err != nil {
		return err
	}
	s.sentinels, err = startAll(ctx, 3, func(ctx context.Context, i int) (*Server, error) {
		sdir := filepath.Join(dir, "sentinel"+strconv.Itoa(i))
		if err := mkdir(sdir); err != nil {
			return nil, err
		}
		return launch(ctx, sdir, ports[3+i], Options{}, nil, s.sentinelConf(sdir, ports[3+i], ports[0]), "--sentinel")
	})
	if err != nil {
		return err
	}
	for _, n := range s.sentinels {
		sc := redis.NewSentinelClient(n.clientOptions(-1))
		s.sc = append(s.sc, sc)
		args := append([]any{"SENTINEL", "DEBUG"}, sentinelTiming...)
		if err := sc.Process(ctx, redis.NewStatusCmd(ctx, args...)); err != nil {
			return fmt.Errorf("sentinel on %s: SENTINEL DEBUG (Redis 7.0 or newer): %w", n.Addr, err)
		}
	}
	return poll(ctx, setLimit, func(ctx context.Context) error { return s.agree(ctx, master.Addr, replicaAddrs) })
}

// sentinelConf is the configuration of a sentinel on port watching the
// master on masterPort.
func (s *Sentinel) sentinelConf(dir string, port, masterPort int) []string {
	name := quote(s.name)
	lines := []string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"protected-mode no",
		"dir " + quote(dir),
		"logfile " + quote(filepath.Join(dir, logName)),
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", name, masterPort, quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", name, downAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", name, failoverTimeout.Milliseconds()),
		fmt.Sprintf("sentinel parallel-syncs %s 1", name),
	}
	user, pass := s.opts.credentials()
	if user != "" {
		lines = append(lines, fmt.Sprintf("sentinel auth-user %s %s", name, quote(user)))
	}
	if pass != "" {
		lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", name, quote(pass)))
	}
	return lines
}

// replicasLinked checks that every replica in replicas follows master with
// its link up.
func (s *Sentinel) replicasLinked(ctx context.Context, master string, replicas []string) error {
	host, port, _ := net.SplitHostPort(master)
	for _, addr := range replicas {
		info, err := s.info(ctx, addr)
		if err != nil {
			return err
		}
		if info["role"] != "slave" || info["master_host"] != host || info["master_port"] != port || info["master_link_status"] != "up" {
			return fmt.Errorf("replica %s: role %s of %s:%s, link %s; want slave of %s, link up",
				addr, info["role"], info["master_host"], info["master_port"], info["master_link_status"], master)
		}
	}
	return nil
}

// info returns INFO replication of the data node at addr as a map.
func (s *Sentinel) info(ctx context.Context, addr string) (map[string]string, error) {
	n := s.Node(addr)
	if n == nil {
		return nil, permanentError{fmt.Errorf("no data node at %s", addr)}
	}
	c := redis.NewClient(n.clientOptions(-1))
	defer c.Close()
	text, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO on %s: %w", addr, err)
	}
	return parseInfo(text), nil
}

// agree checks that every sentinel names master, sees it up, knows the two
// other sentinels and sees every replica in replicas up.
func (s *Sentinel) agree(ctx context.Context, master string, replicas []string) error {
	for i, sc := range s.sc {
		addr, err := sc.GetMasterAddrByName(ctx, s.name).Result()
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		if got := net.JoinHostPort(addr[0], addr[1]); got != master {
			return fmt.Errorf("sentinel %d names master %s, want %s", i, got, master)
		}
		m, err := sc.Master(ctx, s.name).Result()
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		if m["flags"] != "master" || m["num-other-sentinels"] != "2" {
			return fmt.Errorf("sentinel %d: master flags %q, %s other sentinels; want master, 2", i, m["flags"], m["num-other-sentinels"])
		}
		rs, err := sc.Replicas(ctx, s.name).Result()
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		up := map[string]bool{}
		for _, r := range rs {
			up[net.JoinHostPort(r["ip"], r["port"])] = r["flags"] == "slave" && r["master-link-status"] == "ok"
		}
		for _, r := range replicas {
			if !up[r] {
				return fmt.Errorf("sentinel %d does not see replica %s up (%v)", i, r, rs)
			}
		}
	}
	return nil
}

// MasterAddr asks the sentinels (the first that answers) for the master's
// address.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var errs []error
	for _, sc := range s.sc {
		addr, err := sc.GetMasterAddrByName(ctx, s.name).Result()
		if err == nil {
			return net.JoinHostPort(addr[0], addr[1]), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("master address: %w", errors.Join(errs...))
}

// KillMaster sends SIGKILL to the current master and returns its address.
func (s *Sentinel) KillMaster(ctx context.Context) (string, error) {
	addr, err := s.MasterAddr(ctx)
	if err != nil {
		return "", fmt.Errorf("kill master: %w", err)
	}
	n := s.Node(addr)
	if n == nil {
		return "", fmt.Errorf("kill master: no data node at %s", addr)
	}
	n.Kill()
	return addr, nil
}

// WaitFailover waits until the sentinels have promoted a replica in place
// of oldAddr and returns its address: every sentinel names it, it answers
// as a master, and every other running data node follows it with its link
// up. A client that asks a sentinel from then on reaches the new master.
func (s *Sentinel) WaitFailover(ctx context.Context, oldAddr string) (string, error) {
	var master string
	err := poll(ctx, setLimit, func(ctx context.Context) error {
		var err error
		master, err = s.agreedMaster(ctx)
		if err != nil {
			return err
		}
		if master == oldAddr {
			return fmt.Errorf("the sentinels still name %s", oldAddr)
		}
		if err := s.masterUp(ctx); err != nil {
			return err
		}
		info, err := s.info(ctx, master)
		if err != nil {
			return err
		}
		if info["role"] != "master" {
			return fmt.Errorf("%s is named master but answers role %s", master, info["role"])
		}
		return s.replicasLinked(ctx, master, s.runningReplicas(master))
	})
	if err != nil {
		return "", fmt.Errorf("wait for failover from %s: %w", oldAddr, err)
	}
	return master, nil
}

// agreedMaster is the master every sentinel names, or an error when they
// differ.
func (s *Sentinel) agreedMaster(ctx context.Context) (string, error) {
	var master string
	for i, sc := range s.sc {
		addr, err := sc.GetMasterAddrByName(ctx, s.name).Result()
		if err != nil {
			return "", fmt.Errorf("sentinel %d: %w", i, err)
		}
		got := net.JoinHostPort(addr[0], addr[1])
		if i > 0 && got != master {
			return "", fmt.Errorf("sentinels disagree: %s and %s", master, got)
		}
		master = got
	}
	return master, nil
}

// masterUp checks that every sentinel sees the master up, with no failover
// in progress.
func (s *Sentinel) masterUp(ctx context.Context) error {
	for i, sc := range s.sc {
		m, err := sc.Master(ctx, s.name).Result()
		if err != nil {
			return fmt.Errorf("sentinel %d: %w", i, err)
		}
		if m["flags"] != "master" {
			return fmt.Errorf("sentinel %d: master %s:%s flags %q, want master", i, m["ip"], m["port"], m["flags"])
		}
	}
	return nil
}

// runningReplicas are the running data nodes other than master.
func (s *Sentinel) runningReplicas(master string) []string {
	var addrs []string
	for _, n := range s.nodes {
		if n.Addr != master && n.running() {
			addrs = append(addrs, n.Addr)
		}
	}
	return addrs
}

// RestartNode starts the data node at addr again on its port and
// directory (killing it first if it runs) and waits until it is back in the
// set. A node that is not the current master (a killed master after the
// failover, say) comes back as a replica of the current master: its config
// file is pointed at it before the start, as an operator would, rather than
// waiting the ~8 s Sentinel takes to convert a stale master. The wait ends
// when its link to the master is up and every sentinel sees it up.
func (s *Sentinel) RestartNode(ctx context.Context, addr string) error {
	n := s.Node(addr)
	if n == nil {
		return fmt.Errorf("restart node: no data node at %s", addr)
	}
	master, err := s.MasterAddr(ctx)
	if err != nil {
		return fmt.Errorf("restart node %s: %w", addr, err)
	}
	if master != addr {
		host, port, _ := net.SplitHostPort(master)
		if err := setReplicaOf(filepath.Join(n.Dir, confName), host, port); err != nil {
			return fmt.Errorf("restart node %s: %w", addr, err)
		}
	}
	if err := n.RestartContext(ctx); err != nil {
		return fmt.Errorf("restart node %s: %w", addr, err)
	}
	err = poll(ctx, setLimit, func(ctx context.Context) error {
		replicas := s.runningReplicas(master)
		if err := s.replicasLinked(ctx, master, replicas); err != nil {
			return err
		}
		return s.agree(ctx, master, replicas)
	})
	if err != nil {
		return fmt.Errorf("restart node %s: %w", addr, err)
	}
	return nil
}

// Node returns the data node listening on addr, or nil.
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range s.nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// Nodes returns the three data nodes; the first was the master at start.
// Restart them through RestartNode, which makes a former master come back
// as a replica.
func (s *Sentinel) Nodes() []*Server { return append([]*Server(nil), s.nodes...) }

// SentinelAddrs returns the sentinels' addresses (host:port).
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.Addr
	}
	return addrs
}

// MasterName is the name the sentinels monitor the master under.
func (s *Sentinel) MasterName() string { return s.name }

// URL is the set's URL as SESSIOND_REDIS_URL takes it:
// redis-sentinel://[user:password@]s1,s2,s3/0?master=NAME. The credentials
// are the data nodes'; the sentinels have none.
func (s *Sentinel) URL() string {
	return "redis-sentinel://" + s.opts.userinfo() + strings.Join(s.SentinelAddrs(), ",") +
		"/0?master=" + url.QueryEscape(s.name)
}

// Client returns a failover client (it asks the sentinels for the master)
// with the data nodes' credentials, closed at the test's cleanup or in
// Close.
func (s *Sentinel) Client() *redis.Client {
	user, pass := s.opts.credentials()
	c := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.name,
		SentinelAddrs: s.SentinelAddrs(),
		Username:      user,
		Password:      pass,
	})
	if s.tb != nil {
		s.tb.Cleanup(func() { _ = c.Close() })
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients = append(s.clients, c)
	return c
}

// Close stops every process of the set (sentinels first) and waits for
// their exits, after closing the clients Client returned. Closing twice is
// fine.
func (s *Sentinel) Close() error {
	s.mu.Lock()
	clients := s.clients
	s.clients = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range clients {
		errs = append(errs, c.Close())
	}
	for _, c := range s.sc {
		_ = c.Close()
	}
	for _, n := range append(s.sentinels, s.nodes...) {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// StartSentinel starts a Sentinel set for t (files in t.TempDir, stopped
// at its cleanup; skipped without redis-server, as Start) and logs how long
// it took to get ready.
func StartSentinel(t testing.TB, opts ...SentinelOptions) *Sentinel {
	t.Helper()
	requireRedis(t)
	var o SentinelOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), setLimit)
	defer cancel()
	began := time.Now()
	s, err := StartSentinelServers(ctx, t.TempDir(), o)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Logf("redistest: sentinel set ready in %s (master %s, sentinels %s)",
		time.Since(began).Round(time.Millisecond), s.nodes[0].Addr, strings.Join(s.SentinelAddrs(), ","))
	s.tb = t
	for _, n := range append(s.sentinels, s.nodes...) {
		n.tb = t
	}
	t.Cleanup(func() {
		logOnFailure(t, append(s.sentinels, s.nodes...))
		if err := s.Close(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return s
}

// parseInfo turns INFO's "key:value" lines into a map.
func parseInfo(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}
