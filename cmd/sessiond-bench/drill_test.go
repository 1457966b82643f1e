package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDrill runs the reliability drill with small settings on each
// topology, so that CI's `go test ./...` runs it: real redis-server and
// sessiond processes, a flaky receiver, SIGKILLed replicas and the
// topology's Redis chaos (a restart with the AOF; on Sentinel a master's
// SIGKILL and failover, with SESSIOND_REDIS_MIN_REPLICAS=1; on a cluster a
// master's restart). The topologies run one after the other (the machine
// may have two cores), about 45 s each; skipped with -short.
func TestDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("the drill runs real processes for about two minutes; skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SESSIOND_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server not found in PATH: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found in PATH; install it to run the drill")
	}
	bin, err := buildDaemon(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, topology := range []string{topologySingle, topologySentinel, topologyCluster} {
		t.Run(topology, func(t *testing.T) {
			cfg, err := parseDrillFlags([]string{
				"--topology=" + topology, "--daemon-bin=" + bin,
				"--load-for=15s", "--workers=3", "--kill-min=4s", "--kill-max=6s",
				"--ttl=5s", "--settle=45s",
			}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
			defer cancel()
			rep, err := runDrill(ctx, cfg, testWriter{t})
			if err != nil {
				t.Fatalf("drill could not run: %v", err)
			}
			var buf bytes.Buffer
			rep.writeTable(&buf)
			t.Log(buf.String())
			if rep.Failed {
				t.Fatalf("drill failed: %s", strings.Join(rep.Failures, "; "))
			}
			if rep.RedisRestarts != 1 {
				t.Errorf("Redis chaos rounds = %d, want 1", rep.RedisRestarts)
			}
			if topology == topologySentinel && (rep.MinReplicas != 1 || rep.FirstWrite == "") {
				t.Errorf("sentinel: min replicas %d, first write after %q; want 1 and a time", rep.MinReplicas, rep.FirstWrite)
			}
		})
	}
}

// testWriter sends the drill's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestVerdict checks which figures fail the drill: on a Sentinel set
// with SESSIOND_REDIS_MIN_REPLICAS=0 the losses a failover may cause are
// reported instead, but nothing else is excused.
func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rep        drillReport
		failed     bool
		losses     int
		failureHas string
	}{
		{"clean", drillReport{Topology: topologySingle, EventsProduced: 10}, false, 0, ""},
		{"acked change lost on single", drillReport{Topology: topologySingle, EventsProduced: 10, LostAcked: 1}, true, 0, "acknowledged changes lost"},
		{"acked change lost, min replicas 1", drillReport{Topology: topologySentinel, MinReplicas: 1, EventsProduced: 10, LostAcked: 2, RedisRestarts: 1, FirstWrite: "2s"}, true, 0, "acknowledged changes lost"},
		{"losses, min replicas 0", drillReport{Topology: topologySentinel, EventsProduced: 10, LostAcked: 2, AckedMissing: 1, WrongStatus: 3, MissingStatus: 1, RedisRestarts: 1, FirstWrite: "2s"}, false, 4, ""},
		{"undelivered event, min replicas 0", drillReport{Topology: topologySentinel, EventsProduced: 10, Lost: 1, RedisRestarts: 1, FirstWrite: "2s"}, true, 0, "events lost"},
		{"unauthorised accepted, min replicas 0", drillReport{Topology: topologySentinel, EventsProduced: 10, BadAccepted: 1, RedisRestarts: 1, FirstWrite: "2s"}, true, 0, "unauthorised"},
		{"wrong status on cluster", drillReport{Topology: topologyCluster, EventsProduced: 10, WrongStatus: 1}, true, 0, "wrong final status"},
		{"no write after failover", drillReport{Topology: topologySentinel, MinReplicas: 1, EventsProduced: 10, RedisRestarts: 1}, true, 0, "no write accepted"},
		{"no load", drillReport{Topology: topologySingle}, true, 0, "no events produced"},
	} {
		r := tc.rep
		r.verdict()
		if r.Failed != tc.failed || len(r.Losses) != tc.losses || !strings.Contains(strings.Join(r.Failures, "; "), tc.failureHas) {
			t.Errorf("%s: failed %v, failures %q, losses %q; want failed %v with %q, %d losses", tc.name, r.Failed, r.Failures, r.Losses, tc.failed, tc.failureHas, tc.losses)
		}
		var buf bytes.Buffer
		r.writeTable(&buf)
		if got := strings.Contains(buf.String(), "losses reported, not failed"); got != (tc.losses > 0) {
			t.Errorf("%s: the table tells of reported losses: %v, want %v", tc.name, got, tc.losses > 0)
		}
	}
}
