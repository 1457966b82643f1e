// Package daemontest builds the sessiond binary for tests that run it as a
// real process (crashes, signals, peak memory, the command-line client).
package daemontest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Build builds ./cmd/sessiond (a static binary, as the Dockerfile does)
// into a temporary directory of t and returns its path.
func Build(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	pkg := filepath.Join(filepath.Dir(here), "..", "..", "cmd", "sessiond")
	bin := filepath.Join(t.TempDir(), "sessiond")
	cmd := exec.Command(GoTool(t), "build", "-o", bin, ".")
	cmd.Dir = pkg
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build sessiond: %v\n%s", err, out)
	}
	return bin
}

// GoTool is the go command that runs the tests.
func GoTool(t testing.TB) string {
	t.Helper()
	if goroot := os.Getenv("GOROOT"); goroot != "" {
		return filepath.Join(goroot, "bin", "go")
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH: %v", err)
	}
	return p
}
