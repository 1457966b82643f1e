package dispatcher

import (
	"testing"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redistest"
)

// On one Redis one relay reads every shard; on a cluster each shard has
// its own (a multi-stream XREADGROUP across slots is CROSSSLOT).
func TestRelayGroups(t *testing.T) {
	t.Parallel()
	one := relayGroups(redistest.Start(t).Client())
	if len(one) != 1 || len(one[0]) != keyspace.Shards {
		t.Fatalf("one Redis: %d relays (%v), want one for the %d shards", len(one), one, keyspace.Shards)
	}
	cluster := relayGroups(redistest.SharedCluster(t).Client())
	if len(cluster) != keyspace.Shards {
		t.Fatalf("cluster: %d relays, want %d", len(cluster), keyspace.Shards)
	}
	seen := map[keyspace.Shard]bool{}
	for _, g := range append(cluster, one[0]) {
		for _, sh := range g {
			seen[sh] = true
		}
	}
	if len(seen) != keyspace.Shards {
		t.Fatalf("shards covered: %d of %d", len(seen), keyspace.Shards)
	}
}
