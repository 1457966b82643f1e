package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// recordedMetrics is a Metrics that remembers what it heard of the
// endpoints' lifetimes and breakers.
type recordedMetrics struct {
	mu       sync.Mutex
	forgot   []string
	circuits map[string][]bool
}

func (m *recordedMetrics) ObserveAttempt(string, string, time.Duration) {}

func (m *recordedMetrics) SetCircuit(endpoint string, open bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.circuits == nil {
		m.circuits = make(map[string][]bool)
	}
	m.circuits[endpoint] = append(m.circuits[endpoint], open)
}

func (m *recordedMetrics) ForgetEndpoint(endpoint string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgot = append(m.forgot, endpoint)
}

// forgotten reports whether ForgetEndpoint was called for endpoint.
func (m *recordedMetrics) forgotten(endpoint string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.forgot, endpoint)
}

// circuit returns what SetCircuit heard for endpoint, in order.
func (m *recordedMetrics) circuit(endpoint string) []bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.circuits[endpoint])
}

// createAPIEndpoint adds an endpoint through the API at url.
func (e *env) createAPIEndpoint(d *Dispatcher, url string) *EndpointInfo {
	e.t.Helper()
	in, err := d.CreateEndpoint(e.ctx, EndpointSpec{URL: url})
	if err != nil {
		e.t.Fatalf("CreateEndpoint: %v", err)
	}
	return in
}

// storedSecrets returns endpoint id's secrets as ep:api holds them.
func (e *env) storedSecrets(id string) []storedSecret {
	e.t.Helper()
	js, err := e.rdb.HGet(e.ctx, e.keys.EndpointsAPI(), id).Result()
	if err != nil {
		e.t.Fatalf("read endpoint %s: %v", id, err)
	}
	var s storedEndpoint
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		e.t.Fatal(err)
	}
	return s.Secrets
}

// Concurrent reloads (the watcher, the API's reads, the reload after a
// change) never store a registry older than the one they replace, and
// each returns with the registry at least as new as ep:ver was when it
// began.
func TestReloadNeverGoesBack(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		e := newEnv(t, tg, testConfig())
		for i := range 30 { // a build takes a while
			e.createAPIEndpoint(e.d, fmt.Sprintf("https://hooks.example.com/%d", i))
		}
		ver := e.keys.EndpointsVersion()
		ctx, stop := context.WithCancel(e.ctx)
		var bumper sync.WaitGroup
		bumper.Go(func() {
			for ctx.Err() == nil {
				_ = e.rdb.Incr(ctx, ver).Err()
			}
		})
		var (
			reloaders sync.WaitGroup
			went      atomic.Int64
			first     atomic.Value
		)
		back := func(what string) {
			went.Add(1)
			first.CompareAndSwap(nil, what)
		}
		done := make(chan struct{})
		var monitor sync.WaitGroup
		monitor.Go(func() { // every registry stored, in order
			last := int64(-1)
			for {
				select {
				case <-done:
					return
				default:
				}
				got, _ := strconv.ParseInt(e.d.endpoints().version, 10, 64)
				if got < last {
					back(fmt.Sprintf("the registry went from ep:ver %d back to %d", last, got))
				}
				last = max(last, got)
				runtime.Gosched()
			}
		})
		for range 8 {
			reloaders.Go(func() {
				for range 60 {
					before, err := e.rdb.Get(e.ctx, ver).Int64()
					if err != nil {
						t.Errorf("read ep:ver: %v", err)
						return
					}
					if err := e.d.reloadEndpoints(e.ctx, true); err != nil {
						t.Errorf("reloadEndpoints: %v", err)
						return
					}
					got, _ := strconv.ParseInt(e.d.endpoints().version, 10, 64)
					if got < before {
						back(fmt.Sprintf("ep:ver was %d before a reload, the registry holds %d after it", before, got))
					}
				}
			})
		}
		reloaders.Wait()
		close(done)
		monitor.Wait()
		stop()
		bumper.Wait()
		if n := went.Load(); n > 0 {
			t.Errorf("the registry went back %d times; first: %v", n, first.Load())
		}
	})
}

// A build that is not (yet) stored leaves the live endpoints' 410 marks
// alone; the reload that stores it sets them.
func TestBuildLeavesMarksToTheSwap(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		e := newEnv(t, tg, testConfig())
		id := e.createAPIEndpoint(e.d, "https://hooks.example.com/marks").ID
		ep := e.d.endpoints().endpoint(id)
		mark, err := json.Marshal(disabledMark{URLHash: ep.urlHash, At: lifecycle.At(time.Now()), Reason: "answered 410 Gone"})
		if err != nil {
			t.Fatal(err)
		}
		api, err := e.rdb.HGetAll(e.ctx, e.keys.EndpointsAPI()).Result()
		if err != nil {
			t.Fatal(err)
		}
		cur := e.d.endpoints()
		next, err := e.d.buildRegistry(cur, cur.version+"0", api, map[string]string{id: string(mark)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if next.endpoint(id) != ep {
			t.Fatalf("the build did not keep the unchanged endpoint's object")
		}
		if ep.marked.Load() {
			t.Errorf("a build that was not stored marked the live endpoint disabled")
		}

		// Marked in Redis: the reload that stores the registry marks it.
		if err := e.d.store.disable(e.ctx, ep, "answered 410 Gone"); err != nil {
			t.Fatal(err)
		}
		if err := e.d.reloadEndpoints(e.ctx, false); err != nil {
			t.Fatal(err)
		}
		if !e.d.endpoints().endpoint(id).marked.Load() {
			t.Errorf("after a reload, the endpoint Redis marks disabled is not marked")
		}
	})
}

// A change of an endpoint's URL starts a fresh circuit breaker (the old
// URL's failures say nothing of the new one) but keeps its concurrency
// limiter; another change keeps both.
func TestURLChangeStartsFreshBreaker(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		m := &recordedMetrics{}
		cfg := testConfig()
		cfg.Metrics = m
		e := newEnv(t, tg, cfg)
		id := e.createAPIEndpoint(e.d, "https://old.example.com/hook").ID
		old := e.d.endpoints().endpoint(id)
		old.breaker.mu.Lock()
		old.breaker.open(time.Now())
		old.breaker.mu.Unlock()

		desc := "still the same receiver"
		if _, err := e.d.UpdateEndpoint(e.ctx, id, EndpointPatch{Description: &desc}); err != nil {
			t.Fatal(err)
		}
		same := e.d.endpoints().endpoint(id)
		if same == old {
			t.Fatal("the changed endpoint was not rebuilt")
		}
		if same.breaker != old.breaker || !same.breaker.isOpen() {
			t.Errorf("a change that kept the URL dropped the open breaker")
		}
		if same.limit != old.limit {
			t.Errorf("a change that kept the URL dropped the limiter")
		}

		url := "https://new.example.com/hook"
		if _, err := e.d.UpdateEndpoint(e.ctx, id, EndpointPatch{URL: &url}); err != nil {
			t.Fatal(err)
		}
		moved := e.d.endpoints().endpoint(id)
		if moved.breaker == old.breaker || moved.breaker.isOpen() {
			t.Errorf("after a URL change the breaker is the old URL's (open %v)", moved.breaker.isOpen())
		}
		if moved.limit != old.limit {
			t.Errorf("a URL change dropped the limiter")
		}
		if got := m.circuit(id); len(got) == 0 || got[len(got)-1] {
			t.Errorf("SetCircuit(%s) calls %v: want the last to report it closed", id, got)
		}
	})
}

// One slow endpoint added through the API beside the single configured
// one cannot hold every worker: the default cap is half of them, and the
// configured endpoint's deliveries are not delayed.
func TestSlowAPIEndpointLeavesWorkers(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		const sessions = 40
		fast, slow := newReceiver(t, testSecret), newReceiver(t, testSecret)
		release := make(chan struct{})
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
		var inflight, most atomic.Int64
		slow.setAnswer(func(w http.ResponseWriter, r *http.Request, _ int) int {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			select {
			case <-r.Context().Done():
				return 0
			case <-release:
			}
			w.WriteHeader(http.StatusOK)
			return http.StatusOK
		})
		cfg := testConfig(fast.endpoint("fast"))
		cfg.Timeout = 3 * time.Second
		e := newEnv(t, tg, cfg)
		if got, want := e.d.cfg.EndpointConcurrency, cfg.Concurrency/2; got != want {
			t.Errorf("EndpointConcurrency with one configured endpoint = %d, want %d", got, want)
		}
		id := e.createAPIEndpoint(e.d, slow.url()).ID
		if got := e.d.endpoints().endpoint(id).limit.slots; got != cfg.Concurrency/2 {
			t.Errorf("the API endpoint's cap = %d, want %d", got, cfg.Concurrency/2)
		}

		_, worst := e.createAndTime(fast, sessions, 10*time.Second)
		if worst > time.Second {
			t.Errorf("slowest delivery to the configured endpoint took %v: the slow one held the workers", worst)
		}
		if got := most.Load(); got > int64(cfg.Concurrency/2) {
			t.Errorf("the slow endpoint had %d attempts in flight, want at most %d", got, cfg.Concurrency/2)
		}
		releaseOnce.Do(func() { close(release) })
	})
}

// A change that keeps losing its optimistic transaction gives up with
// ErrEndpointsBusy after maxChangeAttempts tries.
func TestChangeEndpointsBusy(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		e := newEnv(t, tg, testConfig())
		tries := 0
		err := e.d.changeEndpoints(e.ctx, func(map[string]string) (map[string]*storedEndpoint, error) {
			tries++
			// Another replica's change, between WATCH and EXEC.
			if err := e.rdb.Incr(e.ctx, e.keys.EndpointsVersion()).Err(); err != nil {
				t.Fatal(err)
			}
			return nil, nil
		})
		if !errors.Is(err, ErrEndpointsBusy) {
			t.Errorf("changeEndpoints after %d lost transactions = %v, want ErrEndpointsBusy", tries, err)
		}
		if tries != maxChangeAttempts {
			t.Errorf("changeEndpoints tried %d times, want %d", tries, maxChangeAttempts)
		}
	})
}

// A rotation's overlap is above 0 and at most 720h (0 is the default,
// 24h); the two newest previous secrets still in their overlap keep
// signing beside the new one, older ones stop.
func TestRotationOverlapAndPreviousSecrets(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		rv := newReceiver(t)
		e := newEnv(t, tg, testConfig())
		created := e.createAPIEndpoint(e.d, rv.url())
		id := created.ID

		for _, bad := range []time.Duration{-time.Second, maxOverlap + time.Second} {
			_, err := e.d.RotateEndpointSecret(e.ctx, id, bad)
			var ie *InvalidEndpointError
			if !errors.As(err, &ie) {
				t.Errorf("RotateEndpointSecret(%v) = %v, want an InvalidEndpointError", bad, err)
				continue
			}
			if ie.Error() != errOverlap.Error() || strings.Contains(ie.Error(), "from 0s") {
				t.Errorf("RotateEndpointSecret(%v) = %q, want %q", bad, ie.Error(), errOverlap.Error())
			}
		}
		for _, tc := range []struct {
			in   string
			want time.Duration
			ok   bool
		}{
			{"", 0, true}, {"1h", time.Hour, true}, {"720h", maxOverlap, true},
			{"0s", 0, false}, {"0", 0, false}, {"-1h", 0, false}, {"720h1s", 0, false}, {"soon", 0, false},
		} {
			got, err := ParseOverlap(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("ParseOverlap(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && err.Error() != errOverlap.Error() {
				t.Errorf("ParseOverlap(%q) error %q, want %q", tc.in, err, errOverlap.Error())
			}
		}

		// The default overlap is 24h.
		before := time.Now()
		first, err := e.d.RotateEndpointSecret(e.ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		secs := e.storedSecrets(id)
		if len(secs) != 2 || secs[1].Secret != created.Secret {
			t.Fatalf("after one rotation ep:api holds %d secrets, want the new and the created one", len(secs))
		}
		if until := time.UnixMilli(secs[1].Until); until.Before(before.Add(defaultOverlap).Truncate(time.Millisecond)) || until.After(time.Now().Add(defaultOverlap)) {
			t.Errorf("the created secret signs until %v, want 24h from the rotation", until)
		}

		// Three more rotations: the new secret and the two before it.
		shown := []string{created.Secret, first.Secret}
		for range 3 {
			in, err := e.d.RotateEndpointSecret(e.ctx, id, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			shown = append(shown, in.Secret)
		}
		var got []string
		for _, s := range e.storedSecrets(id) {
			got = append(got, s.Secret)
		}
		want := []string{shown[4], shown[3], shown[2]}
		if !slices.Equal(got, want) {
			t.Errorf("after four rotations ep:api holds %d secrets; want the newest and the two before it, newest first (%v)", len(got), slices.Equal(got[:min(len(got), 3)], want))
		}

		// A webhook carries one v1 entry per secret that signs: three.
		if _, err := e.d.TestEndpoint(e.ctx, id, "session.approved"); err != nil {
			t.Fatal(err)
		}
		rv.waitUntil(10*time.Second, "the test event", func() bool { return len(rv.receipts()) > 0 })
		if n := rv.receipts()[0].v1Entries; n != 3 {
			t.Errorf("webhook-signature has %d v1 entries, want 3", n)
		}
	})
}

// validateEndpoint (and the configuration's endpoints) refuse URLs without
// a host name, with a port out of range or an empty user name (the API's
// a fragment too), and the error never quotes the URL.
func TestEndpointURLValidation(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		e := newEnv(t, tg, testConfig())
		for _, bad := range []string{
			"http://:8080/", "http://:8080", "https://secret-host.example.com:0/", "https://secret-host.example.com:65536/",
			"https://secret-host.example.com:99999/", "https://secret-host.example.com:/", "http://@secret-host.example.com/",
			"http://:secret-pw@secret-host.example.com/", "http://secret-user:secret-pw@/", "https:secret-host.example.com",
			"http:///secret-path", "ftp://secret-host.example.com/", "https://secret-host.example.com/#secret-fragment",
			"https://[]:8080/", "secret-host.example.com/hook",
		} {
			_, err := e.d.CreateEndpoint(e.ctx, EndpointSpec{URL: bad})
			var ie *InvalidEndpointError
			if !errors.As(err, &ie) {
				t.Errorf("CreateEndpoint(%q) = %v, want an InvalidEndpointError", bad, err)
				continue
			}
			if strings.Contains(ie.Error(), "secret") || strings.Contains(ie.Error(), "8080") {
				t.Errorf("CreateEndpoint(%q) error quotes the URL: %q", bad, ie.Error())
			}
			if strings.Contains(bad, "#") {
				continue // the API's rule only: a configured URL's fragment is never sent
			}
			cfg := testConfig(Endpoint{ID: "cfg", URL: bad, Secrets: []string{testSecret}})
			cfg.Namespace = tg.Namespace
			if _, err := New(tg.Client, e.svc, cfg); err == nil {
				t.Errorf("New with a configured endpoint at %q succeeded", bad)
			} else if strings.Contains(err.Error(), "secret-") {
				t.Errorf("New's error quotes the URL: %q", err)
			}
		}
		if n, err := e.rdb.HLen(e.ctx, e.keys.EndpointsAPI()).Result(); err != nil || n != 0 {
			t.Errorf("ep:api holds %d endpoints after refused creates (%v)", n, err)
		}
		for _, good := range []string{
			"https://hooks.example.com:8443/x", "http://[2001:db8::1]:8080/", "https://user:pw@hooks.example.com/",
			"https://hooks.example.com:1/", "https://hooks.example.com:65535/?a=b",
		} {
			if _, err := e.d.CreateEndpoint(e.ctx, EndpointSpec{URL: good}); err != nil {
				t.Errorf("CreateEndpoint(%q) = %v, want it accepted", good, err)
			}
		}
	})
}

// Every replica forgets the metrics of an endpoint that leaves its
// registry, not only the one that served the delete.
func TestReplicasForgetDeletedEndpoints(t *testing.T) {
	t.Parallel()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		m1, m2 := &recordedMetrics{}, &recordedMetrics{}
		cfg := testConfig()
		cfg.Metrics = m1
		e := newEnv(t, tg, cfg)
		cfg2 := testConfig()
		cfg2.Metrics = m2
		d2 := e.start(cfg2)

		id := e.createAPIEndpoint(e.d, "https://hooks.example.com/forget").ID
		keep := e.createAPIEndpoint(e.d, "https://hooks.example.com/keep").ID
		waitFor(t, 5*time.Second, "the other replica to load the endpoints", func() bool {
			return d2.endpoints().endpoint(id) != nil && d2.endpoints().endpoint(keep) != nil
		})
		if err := e.d.DeleteEndpoint(e.ctx, id); err != nil {
			t.Fatal(err)
		}
		if !m1.forgotten(id) {
			t.Errorf("the replica that deleted %s did not forget its metrics", id)
		}
		waitFor(t, 5*time.Second, "the other replica to forget the deleted endpoint's metrics", func() bool { return m2.forgotten(id) })
		if m1.forgotten(keep) || m2.forgotten(keep) {
			t.Errorf("an endpoint still there was forgotten")
		}
	})
}
