package lifecycle

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sessiond/sessiond/internal/redistest"
)

// TestMain fails the package when a test leaves a goroutine behind. No
// goroutine is ignored: every go-redis client is closed by a t.Cleanup
// (redistest's Client and the tests' own), every httptest server too, so
// the pools' goroutines are gone when the last test returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(redistest.Wrap(m))
}
