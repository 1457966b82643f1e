package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
)

// This file holds the Redis side of a run: the deployment (one Redis, a
// Sentinel set or a Cluster, started with internal/redistest), the clients
// the tool needs (built with internal/redisconn from the deployment's URL,
// as the daemon builds its own) and what the tool reads from Redis: INFO
// of every master.

// The topologies --topology takes; they are SESSIOND_REDIS_URL's.
const (
	topologySingle   = "single"
	topologySentinel = "sentinel"
	topologyCluster  = "cluster"
)

// checkTopology refuses an unknown --topology, and a --min-replicas the
// topology cannot honour (only a Sentinel set has replicas).
func checkTopology(topology string, minReplicas int) error {
	switch topology {
	case topologySingle, topologyCluster:
		if minReplicas > 0 {
			return fmt.Errorf("--min-replicas %d: the %s deployment has no replicas (only --topology sentinel has)", minReplicas, topology)
		}
	case topologySentinel:
		if minReplicas > 2 {
			return fmt.Errorf("--min-replicas %d: the Sentinel set has two replicas", minReplicas)
		}
	default:
		return fmt.Errorf("--topology: want single, sentinel or cluster, got %q", topology)
	}
	if minReplicas < 0 {
		return errors.New("--min-replicas must not be negative")
	}
	return nil
}

// defaultMinReplicas is --min-replicas when not given: 1 on a Sentinel
// set (a failover loses no acknowledged change), else 0.
func defaultMinReplicas(topology string) int {
	if topology == topologySentinel {
		return 1
	}
	return 0
}

// deployment is a private Redis deployment of one topology. Exactly one
// of single, sentinel and cluster is set.
type deployment struct {
	topology string
	conn     *redisconn.Conn

	single   *redistest.Server
	sentinel *redistest.Sentinel
	cluster  *redistest.Cluster
}

// startDeployment starts a deployment of topology with its files under
// dir. opts apply to every data node.
func startDeployment(ctx context.Context, topology, dir string, opts redistest.Options) (*deployment, error) {
	d := &deployment{topology: topology}
	var (
		url string
		err error
	)
	dir = filepath.Join(dir, "redis")
	switch topology {
	case topologySingle:
		if d.single, err = redistest.StartServer(ctx, dir, opts); err == nil {
			url = d.single.URL()
		}
	case topologySentinel:
		if d.sentinel, err = redistest.StartSentinelServers(ctx, dir, redistest.SentinelOptions{Options: opts}); err == nil {
			url = d.sentinel.URL()
		}
	case topologyCluster:
		if d.cluster, err = redistest.StartClusterServers(ctx, dir, opts); err == nil {
			url = d.cluster.URL()
		}
	default:
		err = fmt.Errorf("unknown topology %q", topology)
	}
	if err != nil {
		return nil, fmt.Errorf("start the %s deployment: %w", topology, err)
	}
	if d.conn, err = redisconn.Parse(url, redisconn.Options{}); err != nil {
		return nil, errors.Join(err, d.close())
	}
	return d, nil
}

// url is SESSIOND_REDIS_URL for the daemons.
func (d *deployment) url() string {
	switch {
	case d.sentinel != nil:
		return d.sentinel.URL()
	case d.cluster != nil:
		return d.cluster.URL()
	}
	return d.single.URL()
}

// describe names the deployment's processes for the log.
func (d *deployment) describe() string {
	switch {
	case d.sentinel != nil:
		var nodes []string
		for _, n := range d.sentinel.Nodes() {
			nodes = append(nodes, n.Addr)
		}
		return fmt.Sprintf("sentinel set: data nodes %s (first master %s), sentinels %s",
			strings.Join(nodes, ","), nodes[0], strings.Join(d.sentinel.SentinelAddrs(), ","))
	case d.cluster != nil:
		return "cluster: masters " + strings.Join(d.cluster.Addrs(), ",")
	}
	return "redis-server " + d.single.Addr
}

// masterAddr is the current master's address (a node of the cluster for
// redis-benchmark --cluster).
func (d *deployment) masterAddr(ctx context.Context) (string, error) {
	switch {
	case d.sentinel != nil:
		return d.sentinel.MasterAddr(ctx)
	case d.cluster != nil:
		return d.cluster.Addrs()[0], nil
	}
	return d.single.Addr, nil
}

// close stops every process of the deployment. It reports an exit that
// was not asked for (a crash).
func (d *deployment) close() error {
	switch {
	case d.sentinel != nil:
		return d.sentinel.Close()
	case d.cluster != nil:
		return d.cluster.Close()
	case d.single != nil:
		return d.single.Close()
	}
	return nil
}

// connFor parses a Redis address or URL given on the command line: a
// bare host:port is redis://host:port.
func connFor(s string) (*redisconn.Conn, error) {
	if !strings.Contains(s, "://") {
		s = "redis://" + s
	}
	return redisconn.Parse(s, redisconn.Options{})
}

// redisStats is what the tool reads from one master's INFO.
type redisStats struct {
	Addr     string  `json:"addr"`
	Commands int64   `json:"commands"` // total_commands_processed: those inside scripts included
	Reads    int64   `json:"reads"`    // total_reads_processed: about one per round trip
	CPU      float64 `json:"cpu_s"`    // used_cpu_user + used_cpu_sys, seconds
	Memory   int64   `json:"memory_b"` // used_memory
	Calls    int64   `json:"calls"`    // commandstats: EVAL, EVALSHA and FCALL calls (script runs)
	Keys     int64   `json:"keys,omitempty"`

	// PerCommand is commandstats' calls by command name (lowercase, as
	// INFO names them: "evalsha", "xreadgroup", "client|setname"),
	// those run inside scripts included.
	PerCommand map[string]int64 `json:"per_command,omitempty"`
}

// scriptCommands are the commands that run a script or a function.
var scriptCommands = map[string]bool{"eval": true, "evalsha": true, "eval_ro": true, "evalsha_ro": true, "fcall": true, "fcall_ro": true}

// parseInfo reads the fields the tool needs from an INFO reply (sections
// server, stats, cpu, memory, commandstats, keyspace). Addr is
// 127.0.0.1:tcp_port. It fails when a counter is missing, so a change in
// Redis's INFO cannot pass for zero.
func parseInfo(text string) (redisStats, error) {
	var s redisStats
	seen := map[string]bool{}
	var user, sys float64
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "tcp_port":
			s.Addr = "127.0.0.1:" + v
		case "total_commands_processed":
			s.Commands, err = strconv.ParseInt(v, 10, 64)
		case "total_reads_processed":
			s.Reads, err = strconv.ParseInt(v, 10, 64)
		case "used_memory":
			s.Memory, err = strconv.ParseInt(v, 10, 64)
		case "used_cpu_user":
			user, err = strconv.ParseFloat(v, 64)
		case "used_cpu_sys":
			sys, err = strconv.ParseFloat(v, 64)
		default:
			var n int64
			if name, ok := strings.CutPrefix(k, "cmdstat_"); ok {
				// cmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,...
				n, err = leadingCount(v, "calls")
				s.addCalls(name, n)
				k = "cmdstat"
			} else if strings.HasPrefix(k, "db") {
				// db0:keys=12,expires=3,avg_ttl=0
				n, err = leadingCount(v, "keys")
				s.Keys += n
				k = "db"
			}
		}
		if err != nil {
			return s, fmt.Errorf("INFO %s: %q: %w", k, v, err)
		}
		seen[k] = true
	}
	for _, k := range []string{"total_commands_processed", "total_reads_processed", "used_memory", "used_cpu_user", "used_cpu_sys"} {
		if !seen[k] {
			return s, fmt.Errorf("INFO: no %s", k)
		}
	}
	s.CPU = user + sys
	return s, nil
}

// leadingCount parses the count at the head of an INFO value such as
// "calls=12,usec=340" (name "calls").
func leadingCount(v, name string) (int64, error) {
	n, _, _ := strings.Cut(strings.TrimPrefix(v, name+"="), ",")
	return strconv.ParseInt(n, 10, 64)
}

// addCalls counts n more calls of the command name.
func (s *redisStats) addCalls(name string, n int64) {
	if s.PerCommand == nil {
		s.PerCommand = map[string]int64{}
	}
	s.PerCommand[name] += n
	if scriptCommands[name] {
		s.Calls += n
	}
}

// masters is INFO of every master, sorted by address.
type masters []redisStats

// readMasters reads INFO from every master rdb reaches: the server of a
// plain client (on Sentinel, the current master), each master of a
// cluster client.
func readMasters(ctx context.Context, rdb redis.UniversalClient) (masters, error) {
	var (
		mu  sync.Mutex
		out masters
	)
	one := func(ctx context.Context, c *redis.Client) error {
		text, err := c.Info(ctx, "server", "stats", "cpu", "memory", "commandstats", "keyspace").Result()
		if err != nil {
			return fmt.Errorf("INFO: %w", err)
		}
		s, err := parseInfo(text)
		if err != nil {
			return err
		}
		mu.Lock()
		out = append(out, s)
		mu.Unlock()
		return nil
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *redis.Client:
		err = one(ctx, c)
	default:
		err = fmt.Errorf("unsupported client %T", rdb)
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b redisStats) int { return strings.Compare(a.Addr, b.Addr) })
	return out, nil
}

// sum adds up the counters of every master.
func (m masters) sum() redisStats {
	var s redisStats
	for _, x := range m {
		s.Commands += x.Commands
		s.Reads += x.Reads
		s.CPU += x.CPU
		s.Memory += x.Memory
		s.Calls += x.Calls
		s.Keys += x.Keys
		for name, n := range x.PerCommand {
			if s.PerCommand == nil {
				s.PerCommand = map[string]int64{}
			}
			s.PerCommand[name] += n
		}
	}
	return s
}

// since is the growth of each counter from before to m, per master
// (matched by address). A master missing from before, or whose counters
// went down (it restarted), is an error: its growth is unknown.
func (m masters) since(before masters) (masters, error) {
	prev := make(map[string]redisStats, len(before))
	for _, b := range before {
		prev[b.Addr] = b
	}
	out := make(masters, 0, len(m))
	for _, x := range m {
		b, ok := prev[x.Addr]
		if !ok {
			return nil, fmt.Errorf("master %s was not there at the start", x.Addr)
		}
		d := redisStats{Addr: x.Addr, Commands: x.Commands - b.Commands, Reads: x.Reads - b.Reads,
			CPU: x.CPU - b.CPU, Memory: x.Memory - b.Memory, Calls: x.Calls - b.Calls, Keys: x.Keys - b.Keys}
		if d.Commands < 0 || d.Reads < 0 || d.CPU < 0 {
			return nil, fmt.Errorf("master %s: counters went down (a restart?)", x.Addr)
		}
		for name, n := range x.PerCommand {
			if n -= b.PerCommand[name]; n != 0 {
				if d.PerCommand == nil {
					d.PerCommand = map[string]int64{}
				}
				d.PerCommand[name] = n
			}
		}
		out = append(out, d)
	}
	return out, nil
}
