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

// TestDrill runs the reliability drill with small settings, so that CI's
// `go test ./...` runs it: real redis-server and sessiond processes, a
// flaky receiver, SIGKILLed replicas and a Redis restart. It takes about a
// minute and is skipped with -short.
func TestDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("the drill runs real processes for about a minute; skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SESSIOND_REQUIRE_REDIS") != "" {
			t.Fatal("redis-server not found in PATH: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found in PATH; install it to run the drill")
	}
	cfg, err := parseDrillFlags([]string{
		"--load-for=20s", "--workers=3", "--kill-min=4s", "--kill-max=6s",
		"--ttl=6s", "--settle=45s",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
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
}

// testWriter sends the drill's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
