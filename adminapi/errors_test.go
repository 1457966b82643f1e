package adminapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
)

// TestRedisUnavailableIs503: an error that says Redis cannot be reached
// now answers 503 with Retry-After, anything else unknown 500.
func TestRedisUnavailableIs503(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("create session: commit: %w", refused), http.StatusServiceUnavailable},
		{fmt.Errorf("read: %w", syscall.ECONNREFUSED), http.StatusServiceUnavailable},
		{errors.New("something else"), http.StatusInternalServerError},
	} {
		e := errorFor(tc.err)
		if e.Status != tc.want || (tc.want == http.StatusServiceUnavailable && e.RetryAfter <= 0) {
			t.Errorf("errorFor(%v) = %d (Retry-After %v), want %d", tc.err, e.Status, e.RetryAfter, tc.want)
		}
	}
}
