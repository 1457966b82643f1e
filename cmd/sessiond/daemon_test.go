package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/signing"
)

// Test credentials of the daemons the tests start.
const (
	testAPIKey    = "ops-test"
	testAPISecret = "api-secret-0123456789-abcdef"
)

// testDaemon is a sessiond started in-process by run, on a free port.
type testDaemon struct {
	t      *testing.T
	URL    string // http://127.0.0.1:port
	Redis  *redistest.Server
	Logs   *logSink // stdout and stderr, as run wrote them
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // run's result, set before done is closed
}

// startDaemon runs sessiond against a new redis-server (or redis when not
// nil) with env on top of the test defaults, waits until it listens, and
// stops it when the test ends.
func startDaemon(t *testing.T, redis *redistest.Server, env map[string]string) *testDaemon {
	t.Helper()
	if redis == nil {
		redis = redistest.Start(t)
	}
	d := startDaemonAt(t, redis.URL(), env)
	d.Redis = redis
	return d
}

// startDaemonAt is startDaemon on the Redis deployment at url (any
// topology); the daemon's Redis field is nil.
func startDaemonAt(t *testing.T, url string, env map[string]string) *testDaemon {
	t.Helper()
	vars := map[string]string{
		"SESSIOND_REDIS_URL":   url,
		"SESSIOND_ADMIN_ADDR":  "127.0.0.1:0",
		"SESSIOND_API_KEY":     testAPIKey,
		"SESSIOND_API_SECRET":  testAPISecret,
		"SESSIOND_LOG_LEVEL":   "debug",
		"SESSIOND_SWEEP_EVERY": "1s",
	}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &testDaemon{t: t, Logs: newLogSink(), cancel: cancel, done: make(chan struct{})}
	go func() {
		d.err = run(ctx, nil, func(k string) string { return vars[k] }, d.Logs, d.Logs)
		close(d.done)
	}()
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	addr, err := d.Logs.waitFor(func(line map[string]any) (string, bool) {
		a, ok := line["addr"].(string)
		return a, ok && line["msg"] == "admin api listening"
	}, d.done, 30*time.Second)
	if err != nil {
		t.Fatalf("daemon did not start listening: %v (run: %v)\nlogs:\n%s", err, d.runErr(), d.Logs)
	}
	d.URL = "http://" + addr
	return d
}

// Stop cancels run's context and returns run's result; it may be called
// more than once.
func (d *testDaemon) Stop() error {
	d.cancel()
	select {
	case <-d.done:
		return d.err
	case <-time.After(60 * time.Second):
		return errors.New("run did not return within 60s of cancel")
	}
}

// runErr is run's result if it has returned, else nil.
func (d *testDaemon) runErr() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

// call makes a /v1 request signed with scheme v2 (the id argument is
// unused: the signature covers the whole request).
func (d *testDaemon) call(method, path, _ string, body any) (int, []byte) {
	d.t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			d.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, d.URL+path, bytes.NewReader(raw))
	if err != nil {
		d.t.Fatal(err)
	}
	signRequest(req, testAPIKey, testAPISecret, raw)
	if len(raw) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	return d.do(req)
}

// signRequest signs req (whose body is body) with scheme v2.
func signRequest(req *http.Request, key, secret string, body []byte) {
	signing.SetRequestHeaders(req.Header, key, []byte(secret), req.Method, req.URL.RequestURI(), body, time.Now())
}

// get makes an unauthenticated GET.
func (d *testDaemon) get(path string) (int, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(http.MethodGet, d.URL+path, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	return d.do(req)
}

func (d *testDaemon) do(req *http.Request) (int, []byte) {
	d.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp.StatusCode, b
}

// createSession creates a session for refID with person and returns its
// id and token.
func (d *testDaemon) createSession(refID string, person map[string]string) (id, token string) {
	d.t.Helper()
	body := map[string]any{"ref_id": refID}
	if person != nil {
		body["person"] = person
	}
	code, b := d.call(http.MethodPost, "/v1/sessions", "", body)
	if code != http.StatusCreated {
		d.t.Fatalf("create session: got %d %s, want 201", code, b)
	}
	var s struct{ ID, Token string }
	if err := json.Unmarshal(b, &s); err != nil || s.ID == "" || s.Token == "" {
		d.t.Fatalf("create session: body %s: want id and token (%v)", b, err)
	}
	return s.ID, s.Token
}

// metrics scrapes /metrics and returns each sample's value by series,
// e.g. `sessiond_session_transitions_total{from="none",to="created"}`.
func (d *testDaemon) metrics() map[string]float64 {
	d.t.Helper()
	code, b := d.get("/metrics")
	if code != http.StatusOK {
		d.t.Fatalf("GET /metrics: %d %s", code, b)
	}
	return parseMetrics(d.t, b)
}

// waitMetric polls /metrics until cond holds for the series' value (0 when
// absent) or the deadline passes.
func (d *testDaemon) waitMetric(series string, cond func(float64) bool, what string) float64 {
	d.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		v := d.metrics()[series]
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s = %v, want %s", series, v, what)
		}
		<-tick.C
	}
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$`)

// parseMetrics reads the Prometheus text format: series -> value.
func parseMetrics(t *testing.T, b []byte) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unparsable metrics line %q", line)
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

// logSink collects a daemon's output and lets a test wait for a line.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.buf.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	return n, err
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Lines returns the output's lines.
func (s *logSink) Lines() []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// waitFor waits until match accepts a JSON log line and returns what it
// extracted; it gives up when done yields (run returned) or after limit.
func (s *logSink) waitFor(match func(map[string]any) (string, bool), done <-chan struct{}, limit time.Duration) (string, error) {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		text := s.buf.String()
		s.mu.Unlock()
		for line := range strings.SplitSeq(text, "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			if v, ok := match(m); ok {
				return v, nil
			}
		}
		select {
		case <-changed:
		case <-done:
			return "", errors.New("run returned")
		case <-timer.C:
			return "", errors.New("timed out")
		}
	}
}

// has reports whether a JSON log line so far satisfies match.
func (s *logSink) has(match func(map[string]any) bool) bool {
	for _, line := range s.Lines() {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && match(m) {
			return true
		}
	}
	return false
}
