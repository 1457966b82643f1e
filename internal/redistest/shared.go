package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// This file holds what the tests of one package share: one cluster,
// started on first use and stopped after the last test, and the key
// namespaces that keep their data apart.

// shared is the package's shared cluster. mu is held while it starts, so
// concurrent first users wait for the one start.
var shared struct {
	mu      sync.Mutex
	main    bool // the tests run through Wrap's Run
	started bool
	cluster *Cluster
	dir     string
	err     error
}

// TestingM is what TestMain's *testing.M offers and goleak.VerifyTestMain
// takes.
type TestingM interface{ Run() int }

// Wrap returns m whose Run runs the tests and then stops the shared
// servers (SharedCluster), reporting a failure to stop them in the exit
// code. Use it to combine with goleak, which then looks for leaked
// goroutines after the shared servers and their clients are gone:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Wrap(m)) }
func Wrap(m TestingM) TestingM { return wrapped{m} }

type wrapped struct{ m TestingM }

func (w wrapped) Run() int {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()
	code := w.m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "redistest: stop the shared servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Main runs the tests and then stops the shared servers; it returns the
// exit code. Without goleak:
//
//	func TestMain(m *testing.M) { os.Exit(redistest.Main(m)) }
func Main(m *testing.M) int { return Wrap(m).Run() }

// stopShared stops the shared cluster, if one was started, and removes its
// files.
func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil {
		return nil
	}
	c := shared.cluster
	shared.cluster = nil
	shared.err = errors.New("stopped: the tests have ended")
	return errors.Join(c.Close(), os.RemoveAll(shared.dir))
}

// SharedCluster returns the package's cluster (three masters, no
// credentials, no AOF), started on first use and stopped by Main (or
// Wrap) after the last test; the package's TestMain must run the tests
// through one of them, or the test fails. Its clients are closed at t's
// cleanup.
//
// Tests share it, in parallel: each keeps to its own keys, under a prefix
// from Namespace, and never flushes, restarts or reconfigures it.
// RestartNode and Close refuse on it (Close does nothing); a test that
// needs them starts its own with StartCluster.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	requireRedis(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.main {
		t.Fatal("redistest: SharedCluster needs the package's TestMain to run the tests through redistest.Main or redistest.Wrap, which stop the cluster after the last test")
	}
	if !shared.started {
		shared.started = true
		began := time.Now()
		shared.cluster, shared.dir, shared.err = startShared()
		if shared.err == nil {
			t.Logf("redistest: shared cluster ready in %s", time.Since(began).Round(time.Millisecond))
		}
	}
	if shared.err != nil {
		t.Fatalf("redistest: shared cluster: %v", shared.err)
	}
	c := shared.cluster
	return &Cluster{opts: c.opts, nodes: c.nodes, tb: t, shared: true}
}

// startShared starts the shared cluster in a new temporary directory.
func startShared() (*Cluster, string, error) {
	dir, err := os.MkdirTemp("", "redistest-cluster-")
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), setLimit)
	defer cancel()
	c, err := StartClusterServers(ctx, dir, Options{})
	if err != nil {
		return nil, "", errors.Join(err, os.RemoveAll(dir))
	}
	return c, dir, nil
}

// namespaces counts the namespaces handed out by this process.
var namespaces atomic.Uint64

// Namespace returns a short key prefix that no other test of this process
// (nor a rerun with -count) gets: "t", a counter, "-" and 6 random hex
// digits, e.g. "t12-3fa9c1". Keys stay apart on a shared server when each
// test writes only below its own prefix (ns + ":" + key). It holds no
// braces, so it can also be a hash tag ("{" + ns + "}:a") when a test's
// keys must share a cluster slot.
func Namespace(t testing.TB) string {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail
	return "t" + strconv.FormatUint(namespaces.Add(1), 10) + "-" + hex.EncodeToString(b[:])
}
