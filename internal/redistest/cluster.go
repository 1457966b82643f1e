package redistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// nodeTimeout is the cluster-node-timeout: how long a silent node takes
// to be suspected (PFAIL), and twice it before a failed master with slots
// is taken back.
const nodeTimeout = time.Second

// slotRanges are the slots of each master, in node order.
var slotRanges = [3][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}

// errShared refuses what would disturb the other tests of a shared cluster.
var errShared = errors.New("the package's shared cluster cannot be restarted or closed by a test: start a private one with StartCluster")

// Cluster is a running Redis Cluster of three masters without replicas:
// Nodes()[0] serves slots 0-5460, Nodes()[1] 5461-10922 and Nodes()[2]
// 10923-16383. Its methods are safe for concurrent use.
type Cluster struct {
	opts   Options
	nodes  []*Server
	tb     testing.TB
	shared bool // a view of the package's shared cluster

	mu      sync.Mutex
	clients []io.Closer
}

// StartClusterServers starts a three-master cluster with its files in dir
// (node0..node2, each with its nodes.conf): it assigns the slots evenly
// (CLUSTER ADDSLOTSRANGE), joins the nodes (CLUSTER MEET) and waits until
// every node reports cluster_state:ok and knows the three masters
// connected. Close stops it. Options apply to every node; TLS is refused.
func StartClusterServers(ctx context.Context, dir string, opts Options) (*Cluster, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	if opts.TLS {
		return nil, errors.New("start cluster: TLS is supported for a single server only")
	}
	return retryTaken(func() (*Cluster, error) {
		c := &Cluster{opts: opts}
		if err := c.start(ctx, dir); err != nil {
			// A retry must not find a stale nodes.conf.
			return nil, errors.Join(fmt.Errorf("start cluster: %w", err), c.Close(), removeAll(dir, "node0", "node1", "node2"))
		}
		return c, nil
	})
}

func (c *Cluster) start(ctx context.Context, dir string) error {
	// Three client ports and three bus ports, all distinct: the bus port is
	// always explicit, since port+10000 may be taken or above 65535.
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	c.nodes, err = startAll(ctx, 3, func(ctx context.Context, i int) (*Server, error) {
		ndir := filepath.Join(dir, "node"+strconv.Itoa(i))
		extra := append([]string{
			"cluster-enabled yes",
			"cluster-config-file " + quote(filepath.Join(ndir, "nodes.conf")),
			"cluster-port " + strconv.Itoa(ports[3+i]),
			"cluster-node-timeout " + strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
			"cluster-announce-ip 127.0.0.1",
		}, masterAuthConf(c.opts)...)
		return startData(ctx, ndir, ports[i], c.opts, extra)
	})
	if err != nil {
		return err
	}
	first := redis.NewClient(c.nodes[0].clientOptions(-1))
	defer first.Close()
	for i, n := range c.nodes {
		rc := redis.NewClient(n.clientOptions(-1))
		// Distinct config epochs before the nodes meet, as redis-cli does,
		// so no epoch collision has to be resolved.
		err := errors.Join(
			rc.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(),
			rc.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", slotRanges[i][0], slotRanges[i][1]).Err(),
		)
		rc.Close()
		if err == nil && i > 0 {
			err = first.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", ports[i], ports[3+i]).Err()
		}
		if err != nil {
			return fmt.Errorf("set up node %s: %w", n.Addr, err)
		}
	}
	return poll(ctx, setLimit, c.healthy)
}

// healthy checks that every node reports cluster_state:ok with
// every slot served, and sees the three masters connected, none failing.
func (c *Cluster) healthy(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := nodeHealthy(ctx, n); err != nil {
			return fmt.Errorf("node %s: %w", n.Addr, err)
		}
	}
	return nil
}

func nodeHealthy(ctx context.Context, n *Server) error {
	rc := redis.NewClient(n.clientOptions(-1))
	defer rc.Close()
	text, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	info := parseInfo(text)
	if info["cluster_state"] != "ok" || info["cluster_slots_ok"] != "16384" || info["cluster_known_nodes"] != "3" {
		return fmt.Errorf("cluster_state %s, %s slots ok, %s known nodes; want ok, 16384, 3",
			info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"])
	}
	nodes, err := rc.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	// <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> ...
	masters := 0
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return fmt.Errorf("CLUSTER NODES line %q", line)
		}
		flags := strings.Split(f[2], ",")
		for _, bad := range []string{"fail", "fail?", "handshake", "noaddr"} {
			if slices.Contains(flags, bad) {
				return fmt.Errorf("sees %s as %s", f[1], f[2])
			}
		}
		if !slices.Contains(flags, "master") || f[7] != "connected" {
			return fmt.Errorf("sees %s as %s, %s; want a connected master", f[1], f[2], f[7])
		}
		masters++
	}
	if masters != 3 {
		return fmt.Errorf("knows %d masters, want 3", masters)
	}
	return nil
}

// RestartNode sends SIGKILL to master i and starts it again on the same
// ports and directory: nodes.conf keeps its identity and slots, and with
// AppendOnly its AOF keeps its keys. It waits until the cluster is healthy
// again, which takes about 2 s: a restarted master waits that long before
// it serves. A shared cluster refuses.
func (c *Cluster) RestartNode(ctx context.Context, i int) error {
	if c.shared {
		return fmt.Errorf("restart node %d: %w", i, errShared)
	}
	if i < 0 || i >= len(c.nodes) {
		return fmt.Errorf("restart node %d: no such node", i)
	}
	if err := c.nodes[i].RestartContext(ctx); err != nil {
		return fmt.Errorf("restart node %d: %w", i, err)
	}
	if err := poll(ctx, setLimit, c.healthy); err != nil {
		return fmt.Errorf("restart node %d: %w", i, err)
	}
	return nil
}

// Nodes returns the three masters, in slot order (see Cluster).
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns the masters' addresses (host:port).
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// MasterOf returns the master that serves slot (0..16383), or nil.
func (c *Cluster) MasterOf(slot int) *Server {
	for i, r := range slotRanges {
		if slot >= r[0] && slot <= r[1] {
			return c.nodes[i]
		}
	}
	return nil
}

// NodeForKey returns the master that serves key (its hash tag, if any,
// decides, as in Redis).
func (c *Cluster) NodeForKey(key string) *Server { return c.MasterOf(keySlot(key)) }

// URL is the cluster's URL as SESSIOND_REDIS_URL takes it:
// redis-cluster://[user:password@]127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3.
func (c *Cluster) URL() string {
	return "redis-cluster://" + c.opts.userinfo() + strings.Join(c.Addrs(), ",")
}

// Client returns a cluster client with the nodes' credentials, closed at
// the test's cleanup (for a shared cluster, the cleanup of the test that
// asked for it) or in Close.
func (c *Cluster) Client() *redis.ClusterClient {
	user, pass := c.opts.credentials()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:    c.Addrs(),
		Username: user,
		Password: pass,
		// As in Server.Client: an Enterprise feature, off.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	if c.tb != nil {
		c.tb.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clients = append(c.clients, cc)
	return cc
}

// Close stops the three nodes and waits for their exits, after closing the
// clients Client returned. Closing twice is fine. On a shared cluster it
// does nothing: Main stops it after the last test.
func (c *Cluster) Close() error {
	if c.shared {
		return nil
	}
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	var errs []error
	for _, cc := range clients {
		errs = append(errs, cc.Close())
	}
	for _, n := range c.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// StartCluster starts a cluster for t (files in t.TempDir, stopped at its
// cleanup; skipped without redis-server, as Start) and logs how long it
// took to get ready. Tests that only read and write should share one
// cluster per package instead: SharedCluster.
func StartCluster(t testing.TB, opts ...Options) *Cluster {
	t.Helper()
	requireRedis(t)
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), setLimit)
	defer cancel()
	began := time.Now()
	c, err := StartClusterServers(ctx, t.TempDir(), o)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Logf("redistest: cluster ready in %s (%s)", time.Since(began).Round(time.Millisecond), strings.Join(c.Addrs(), ","))
	c.tb = t
	for _, n := range c.nodes {
		n.tb = t
	}
	t.Cleanup(func() {
		logOnFailure(t, c.nodes)
		if err := c.Close(); err != nil {
			t.Errorf("redistest: %v", err)
		}
	})
	return c
}

// keySlot is the cluster slot of key: CRC16 (XMODEM) of its hash tag (the
// part between the first { and the next }, when not empty) or of the whole
// key, modulo 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
