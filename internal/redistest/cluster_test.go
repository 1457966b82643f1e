package redistest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// keyPerNode returns one key served by each master, in node order.
func keyPerNode(t *testing.T, c *Cluster, prefix string) []string {
	t.Helper()
	keys := make([]string, len(c.Nodes()))
	found := 0
	for n := 0; found < len(keys) && n < 1000; n++ {
		k := fmt.Sprintf("%s:k%d", prefix, n)
		for i, node := range c.Nodes() {
			if node == c.NodeForKey(k) && keys[i] == "" {
				keys[i] = k
				found++
			}
		}
	}
	if found < len(keys) {
		t.Fatalf("no key found for every node: %q", keys)
	}
	return keys
}

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	opts := Options{AppendOnly: true, Password: "default-pw", ACLUser: "app", ACLPassword: "app-pw"}
	c := StartCluster(t, opts) // logs its ready time

	wantURL := "redis-cluster://app:app-pw@" + strings.Join(c.Addrs(), ",")
	if got := c.URL(); got != wantURL {
		t.Errorf("URL() = %q, want %q", got, wantURL)
	}

	// Every master holds the keys of its slots: a key written through the
	// cluster client is read back from the node itself.
	cc := c.Client()
	keys := keyPerNode(t, c, "cluster")
	for i, k := range keys {
		if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		got, err := c.Nodes()[i].Client().Get(ctx, k).Int()
		if err != nil || got != i {
			t.Errorf("GET %s on node %d: got %d, %v; want %d", k, i, got, err, i)
		}
	}

	// keySlot (hence NodeForKey) agrees with Redis, hash tags included.
	node0 := c.Nodes()[0].Client()
	for _, k := range []string{"a", "cluster:k1", "{user1000}.following", "foo{}{bar}", "{}x", "a{b", "sessiond:{s42}:session"} {
		want, err := node0.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(k); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}

	// A restarted master keeps its identity (nodes.conf) and its keys
	// (AOF).
	node1 := c.Nodes()[1].Client()
	idBefore, err := node1.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	if err := c.RestartNode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("node restart to a healthy cluster in %s", time.Since(restartedAt).Round(time.Millisecond))
	if idAfter, err := node1.Do(ctx, "CLUSTER", "MYID").Text(); err != nil || idAfter != idBefore {
		t.Errorf("CLUSTER MYID after the restart: got %q, %v; want %q", idAfter, err, idBefore)
	}
	for i, k := range keys {
		got, err := cc.Get(ctx, k).Int()
		if err != nil || got != i {
			t.Errorf("GET %s after the restart: got %d, %v; want %d", k, got, err, i)
		}
	}
}

func TestClusterRefusesTLS(t *testing.T) {
	t.Parallel()
	if _, err := StartClusterServers(t.Context(), t.TempDir(), Options{TLS: true}); err == nil {
		t.Error("StartClusterServers with TLS succeeded")
	}
	if _, err := StartSentinelServers(t.Context(), t.TempDir(), SentinelOptions{Options: Options{TLS: true}}); err == nil {
		t.Error("StartSentinelServers with TLS succeeded")
	}
}

func TestSharedCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	var addrs []string
	for i := range 2 {
		t.Run(fmt.Sprint("user", i), func(t *testing.T) {
			c := SharedCluster(t)
			if addrs == nil {
				addrs = c.Addrs()
			} else if got := c.Addrs(); strings.Join(got, ",") != strings.Join(addrs, ",") {
				t.Errorf("second SharedCluster: nodes %v, want the first's %v", got, addrs)
			}
			ns := Namespace(t)
			cc := c.Client()
			for _, k := range keyPerNode(t, c, ns) {
				if err := cc.Set(ctx, k, ns, 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", k, err)
				}
				if got, err := cc.Get(ctx, k).Result(); got != ns {
					t.Errorf("GET %s: got %q, %v; want %q", k, got, err, ns)
				}
			}
			if err := c.RestartNode(ctx, 0); !errors.Is(err, errShared) {
				t.Errorf("RestartNode on the shared cluster: got %v, want %v", err, errShared)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close on the shared cluster: %v", err)
			}
			if err := cc.Ping(ctx).Err(); err != nil {
				t.Errorf("PING after Close on the shared cluster: %v", err)
			}
		})
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		ns := Namespace(t)
		if seen[ns] {
			t.Fatalf("Namespace returned %q twice", ns)
		}
		seen[ns] = true
		if len(ns) > 16 || strings.ContainsAny(ns, "{}: ") {
			t.Fatalf("Namespace() = %q: want a short prefix without braces, colons or spaces", ns)
		}
	}
}
