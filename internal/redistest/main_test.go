package redistest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain stops the shared cluster after the last test (Wrap), then fails
// the package if a goroutine is left behind: every process is reaped and
// every client closed by then.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(Wrap(m))
}
