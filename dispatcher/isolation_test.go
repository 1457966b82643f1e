package dispatcher

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/redistest"
)

// One endpoint hangs, another is healthy. The healthy one's deliveries are
// not delayed; the hanging one's are deferred by its concurrency limit and
// circuit breaker without using up their attempts, and all go through once
// it recovers.
func TestHangingEndpointDoesNotDelayHealthy(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) { testHangingEndpoint(t, tg) })
}

func testHangingEndpoint(t *testing.T, tg redistest.Target) {
	const sessions = 30
	fast, slow := newReceiver(t, testSecret), newReceiver(t, testSecret)
	var hanging atomic.Bool
	hanging.Store(true)
	release := make(chan struct{})
	var closeOnce sync.Once
	t.Cleanup(func() { closeOnce.Do(func() { close(release) }) })
	slow.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
		if hanging.Load() {
			select {
			case <-r.Context().Done():
				return 0
			case <-release: // recovered: answer below
			}
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	cfg := testConfig(fast.endpoint("fast"), slow.endpoint("slow"))
	cfg.Timeout = 2 * time.Second
	cfg.EndpointConcurrency = 2
	cfg.BreakerThreshold, cfg.BreakerPeriod = 2, time.Millisecond
	cfg.BreakerCooldown = 300 * time.Millisecond
	// Three retries: if deferrals used up attempts, these deliveries,
	// deferred many times, would be dead.
	cfg.RetrySchedule = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	e := newEnv(t, tg, cfg)

	eventIDs, worst := e.createAndTime(fast, sessions, 5*time.Second)
	// Well under the hanging endpoint's timeout: nothing waited for it.
	if worst > time.Second {
		t.Errorf("slowest delivery to the healthy endpoint took %v", worst)
	}

	// Let the hanging endpoint time out a few times, then recover.
	waitFor(t, 10*time.Second, "the breaker to open and deliveries to be deferred", func() bool {
		return e.d.endpoints().endpoint("slow").breaker.isOpen() && e.d.Stats().Deferred > sessions
	})
	hanging.Store(false)
	closeOnce.Do(func() { close(release) })
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, id := range eventIDs {
			var got []string
			for _, r := range slow.byID(id) {
				got = append(got, fmt.Sprintf("%d:%d@%s", r.attempt, r.answerCode, r.at.Format("05.000")))
			}
			t.Logf("%s: %v", id, got)
		}
		t.Logf("stats %+v now %s", e.d.Stats(), time.Now().Format("05.000"))
	})
	slow.waitUntil(30*time.Second, "every delivery to the slow endpoint to succeed", func() bool {
		for _, id := range eventIDs {
			got := slow.byID(id)
			if len(got) == 0 || got[len(got)-1].answerCode != http.StatusOK {
				return false
			}
		}
		return true
	})
	st := e.d.Stats()
	if st.Dead != 0 {
		t.Errorf("%d deliveries dead; deferrals must not use up attempts", st.Dead)
	}
	// Attempt numbers count only real attempts: consecutive from 1.
	for _, id := range eventIDs {
		for i, r := range slow.byID(id) {
			if r.attempt != i+1 {
				t.Errorf("%s: request %d has webhook-attempt %d", id, i, r.attempt)
			}
		}
	}
	t.Logf("stats: %+v; slowest healthy delivery %v", st, worst)
}
