// Package redistest starts private Redis deployments for tests and for the
// load tool: one redis-server (optionally with a password, an ACL user, TLS
// and an append-only file), a Sentinel set (one master, two replicas, three
// sentinels) and a Redis Cluster (three masters). These are the topologies
// SESSIOND_REDIS_URL can name, and each offers the URL the daemon is given.
//
// Each deployment has two constructors: a core one that takes a context and
// a directory and returns an error (StartServer, StartSentinelServers,
// StartClusterServers), usable without a testing.TB, and a test one (Start,
// StartSentinel, StartCluster) that puts the files in t.TempDir, stops every
// process at t.Cleanup and skips the test when redis-server is not in PATH
// (it fails instead when SESSIOND_REQUIRE_REDIS is set, as in CI). Sentinel
// sets and Clusters need Redis 7.0 or newer.
//
// A package that uses SharedCluster runs its tests through Main or Wrap;
// with goleak, Wrap goes inside, so the leak check comes after the shared
// cluster and its clients are gone:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Wrap(m)) }
//
// Invariants:
//
//   - Every process listens on 127.0.0.1 on a port picked free by the
//     kernel, never on the shared 6379, and keeps all its files (config,
//     log, AOF, nodes.conf, certificates) in its own directory.
//   - Secrets go in a config file (mode 0600), never on a command line.
//   - Every process is a child of this one: Close (or the test's cleanup)
//     kills it with SIGKILL and reaps it; on Linux the kernel kills it too if
//     this process dies first.
//   - A Cluster can be shared by the tests of a package (SharedCluster);
//     the tests that share it isolate by key prefix (Namespace) and never
//     flush, kill or reconfigure it. TestMain runs the tests through Main
//     (or Wrap), which stops the shared cluster after the last test.
package redistest
