package adminapi

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sessiond/sessiond/internal/redistest"
)

// TestMain fails the package when a test leaves a goroutine behind, after
// the shared cluster and its clients are gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(redistest.Wrap(m))
}
