package redistest

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Target is one Redis deployment a test runs on: a client of it, its URL,
// and the key namespace the test must keep to (the default, "", on a
// server of its own; a unique one on the package's shared cluster).
type Target struct {
	Name      string // "single" or "cluster"
	Client    redis.UniversalClient
	URL       string
	Namespace string
}

// Topologies are the names ForEachTopology runs: "single" and "cluster",
// or those listed in SESSIOND_TEST_TOPOLOGIES (comma-separated), for a
// quick run on one.
func Topologies() []string {
	all := []string{"single", "cluster"}
	if v := os.Getenv("SESSIOND_TEST_TOPOLOGIES"); v != "" {
		var out []string
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); slices.Contains(all, n) {
				out = append(out, n)
			}
		}
		return out
	}
	return all
}

// ForEachTopology runs f as a parallel subtest on every topology the
// daemon supports: a redis-server of its own, and the package's shared
// cluster under a namespace of its own (the package's TestMain must run
// through Wrap or Main).
func ForEachTopology(t *testing.T, f func(t *testing.T, tg Target)) {
	t.Helper()
	for _, name := range Topologies() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, Open(t, name))
		})
	}
}

// Open returns a Target of the named topology for t.
func Open(t testing.TB, name string) Target {
	t.Helper()
	switch name {
	case "cluster":
		c := SharedCluster(t)
		return Target{Name: name, Client: c.Client(), URL: c.URL(), Namespace: Namespace(t)}
	case "single":
		s := Start(t)
		return Target{Name: name, Client: s.Client(), URL: s.URL()}
	}
	t.Fatalf("redistest: unknown topology %q", name)
	return Target{}
}
