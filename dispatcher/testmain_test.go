package dispatcher

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sessiond/sessiond/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(redistest.Wrap(m))
}
