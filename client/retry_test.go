package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/client/clienttest"
	"github.com/sessiond/sessiond/internal/clocktest"
)

// sleeps records the client's waits instead of sleeping them.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// answers serves the given statuses in turn (the last one again after
// that); Retry-After goes with each 503 and 429 when ra is set.
func answers(ra string, statuses ...int) http.Handler {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		st := statuses[min(i, len(statuses)-1)]
		if st >= 300 {
			if ra != "" && (st == 503 || st == 429) {
				w.Header().Set("Retry-After", ra)
			}
			clienttest.WriteError(w, st, 1000, "status "+strconv.Itoa(st))
			return
		}
		clienttest.WriteJSON(w, st, map[string]any{"id": "8a1b", "status": "created", "tags": []string{}})
	})
}

func testClient(t *testing.T, srv *clienttest.Server, opts ...Option) (*Client, *sleeps) {
	t.Helper()
	c, err := New(srv.URL, clienttest.Key, clienttest.Secret, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s := &sleeps{}
	c.sleep = s.sleep
	return c, s
}

// TestRetries checks which answers are sent again and which are not. The
// test server fails the test when a nonce comes twice, so every retry is
// also checked to be signed afresh.
func TestRetries(t *testing.T) {
	t.Parallel()
	post := func(ctx context.Context, c *Client) error {
		_, err := c.CreateSession(ctx, CreateSessionRequest{RefID: "user-42"})
		return err
	}
	postIdem := func(ctx context.Context, c *Client) error {
		_, err := c.CreateSession(ctx, CreateSessionRequest{RefID: "user-42"}, WithIdempotencyKey("k1"))
		return err
	}
	patch := func(ctx context.Context, c *Client) error {
		_, err := c.UpdateSession(ctx, "8a1b", UpdateSessionRequest{Tags: &[]string{}})
		return err
	}
	del := func(ctx context.Context, c *Client) error { return c.DeleteSession(ctx, "8a1b") }
	get := func(ctx context.Context, c *Client) error {
		_, err := c.GetSession(ctx, "8a1b")
		return err
	}
	tests := []struct {
		name       string
		call       func(context.Context, *Client) error
		h          http.Handler
		wantTries  int
		wantStatus int // of the *Error; 0 for success
		wantWaits  []time.Duration
	}{
		{"GET 500 then 200", get, answers("", 500, 200), 2, 0, nil},
		{"GET 502 503 504 gives up after 3", get, answers("", 502, 503, 504), 3, 504, nil},
		{"GET 404 not retried", get, answers("", 404), 1, 404, nil},
		{"GET 429 not retried", get, answers("1", 429), 1, 429, nil},
		{"POST 503 Retry-After then 201", post, answers("1", 503, 201), 2, 0, []time.Duration{time.Second}},
		{"PATCH 503 Retry-After then 200", patch, answers("2", 503, 200), 2, 0, []time.Duration{2 * time.Second}},
		{"DELETE 503 Retry-After then 200", del, answers("1", 503, 200), 2, 0, []time.Duration{time.Second}},
		{"POST 503 Retry-After over the cap", post, answers("31", 503, 201), 1, 503, nil},
		{"POST 503 without Retry-After", post, answers("", 503, 201), 1, 503, nil},
		{"POST 500", post, answers("", 500, 201), 1, 500, nil},
		{"PATCH 502", patch, answers("", 502, 200), 1, 502, nil},
		{"DELETE 500", del, answers("", 500, 200), 1, 500, nil},
		{"POST 429", post, answers("3600", 429, 201), 1, 429, nil},
		{"POST with Idempotency-Key 500 then 201", postIdem, answers("", 500, 201), 2, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := clienttest.NewServer(t, clienttest.Config{}, tt.h)
			c, s := testClient(t, srv)
			err := tt.call(t.Context(), c)
			if n := len(srv.Requests()); n != tt.wantTries {
				t.Errorf("%d attempts, want %d", n, tt.wantTries)
			}
			var e *Error
			switch {
			case tt.wantStatus == 0 && err != nil:
				t.Errorf("err = %v, want success", err)
			case tt.wantStatus != 0 && (!errors.As(err, &e) || e.StatusCode != tt.wantStatus):
				t.Errorf("err = %v, want an *Error with status %d", err, tt.wantStatus)
			}
			waits := s.waits()
			if len(waits) != tt.wantTries-1 {
				t.Errorf("waits = %v, want %d", waits, tt.wantTries-1)
			}
			for i, w := range tt.wantWaits {
				if i < len(waits) && waits[i] != w {
					t.Errorf("wait %d = %v, want %v (Retry-After)", i, waits[i], w)
				}
			}
			nonces := map[string]bool{}
			for _, r := range srv.Requests() {
				nonces[r.Header.Get("X-NONCE")] = true
			}
			if len(nonces) != tt.wantTries {
				t.Errorf("%d distinct nonces over %d attempts", len(nonces), tt.wantTries)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answers("", 500))
	c, s := testClient(t, srv, WithRetry(RetryPolicy{MaxAttempts: 5, MinBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}))
	if _, err := c.GetSession(t.Context(), "8a1b"); err == nil {
		t.Fatal("a 500 succeeded")
	}
	waits := s.waits()
	ceilings := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}
	if len(waits) != len(ceilings) {
		t.Fatalf("waits = %v, want %d", waits, len(ceilings))
	}
	for i, w := range waits {
		if w < ceilings[i]/2 || w > ceilings[i] {
			t.Errorf("wait %d = %v, want within [%v, %v]", i, w, ceilings[i]/2, ceilings[i])
		}
	}
	if n := len(srv.Requests()); n != 5 {
		t.Errorf("%d attempts, want 5", n)
	}
}

func TestRetryOff(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answers("", 500, 200))
	c, _ := testClient(t, srv, WithRetry(RetryPolicy{MaxAttempts: 1}))
	if _, err := c.GetSession(t.Context(), "8a1b"); err == nil {
		t.Error("the 500 was retried")
	}
}

// blockFirst holds its first request until the client gives up on it, then
// answers the next ones.
func blockFirst() http.Handler {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			<-r.Context().Done()
			return
		}
		clienttest.WriteJSON(w, 200, map[string]any{"id": "8a1b", "tags": []string{}})
	})
}

func TestTimeoutAfterSending(t *testing.T) {
	t.Parallel()
	t.Run("POST is not resent", func(t *testing.T) {
		t.Parallel()
		srv := clienttest.NewServer(t, clienttest.Config{}, blockFirst())
		c, _ := testClient(t, srv, WithHTTPClient(&http.Client{Timeout: 500 * time.Millisecond}))
		_, err := c.CancelSession(t.Context(), "8a1b")
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("err = %v, want a timeout", err)
		}
		if n := len(srv.Requests()); n != 1 {
			t.Errorf("%d attempts, want 1", n)
		}
	})
	t.Run("GET is resent", func(t *testing.T) {
		t.Parallel()
		srv := clienttest.NewServer(t, clienttest.Config{}, blockFirst())
		c, _ := testClient(t, srv, WithHTTPClient(&http.Client{Timeout: 500 * time.Millisecond}))
		if _, err := c.GetSession(t.Context(), "8a1b"); err != nil {
			t.Errorf("err = %v, want the second attempt's answer", err)
		}
		if n := len(srv.Requests()); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
	})
}

// TestDialErrorRetried: a request the connection refused never left, so
// even a POST is sent again.
func TestDialErrorRetried(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answers("", 200))
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	c, s := testClient(t, srv, WithHTTPClient(&http.Client{Transport: tr}))
	if _, err := c.CancelSession(t.Context(), "8a1b"); err != nil {
		t.Fatalf("err = %v, want success on the second dial", err)
	}
	if d, n := dials.Load(), len(srv.Requests()); d != 2 || n != 1 {
		t.Errorf("%d dials and %d requests, want 2 and 1", d, n)
	}
	if len(s.waits()) != 1 {
		t.Errorf("waits = %v, want one backoff", s.waits())
	}
}

// TestBrokenConnectionPOST: a connection that breaks after the request was
// written leaves the outcome unknown; the POST is not resent.
func TestBrokenConnectionPOST(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}))
	c, _ := testClient(t, srv)
	if _, err := c.Decide(t.Context(), "8a1b", DecideRequest{Status: "approved"}); err == nil {
		t.Fatal("a broken connection succeeded")
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

// TestEachAttemptSignedAtItsTime: the timestamp of a retry is the clock's
// time when it is sent, not the first attempt's.
func TestEachAttemptSignedAtItsTime(t *testing.T) {
	t.Parallel()
	clock := clocktest.New(time.Unix(1_800_000_000, 0))
	srv := clienttest.NewServer(t, clienttest.Config{Now: clock.Now}, answers("4", 503, 503, 200))
	c, err := New(srv.URL, clienttest.Key, clienttest.Secret, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	c.sleep = func(ctx context.Context, d time.Duration) error { clock.Advance(d); return nil }
	if _, err := c.ExpireSession(t.Context(), "8a1b"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range srv.Requests() {
		got = append(got, r.Header.Get("X-TIMESTAMP"))
	}
	want := []string{"1800000000", "1800000004", "1800000008"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("timestamps = %v, want %v", got, want)
	}
}

func TestContextCancelledDuringBackoff(t *testing.T) {
	t.Parallel()
	first := make(chan struct{})
	var once sync.Once
	srv := clienttest.NewServer(t, clienttest.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(first) })
		clienttest.WriteError(w, 500, 1000, "internal")
	}))
	c, err := New(srv.URL, clienttest.Key, clienttest.Secret, WithRetry(RetryPolicy{MinBackoff: time.Hour, MaxBackoff: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.GetSession(ctx, "8a1b")
		done <- err
	}()
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the first attempt never came")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call outlived its context")
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

func TestContextCancelledBeforeCall(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answers("", 200))
	c, _ := testClient(t, srv)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.GetSession(ctx, "8a1b"); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("%d requests sent with a cancelled context", n)
	}
}

// TestDeadlineBeforeRetryAfter: when the context would end before the
// Retry-After, the caller gets the 503 at once instead of a late timeout.
func TestDeadlineBeforeRetryAfter(t *testing.T) {
	t.Parallel()
	srv := clienttest.NewServer(t, clienttest.Config{}, answers("20", 503, 201))
	c, s := testClient(t, srv)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := c.CreateSession(ctx, CreateSessionRequest{RefID: "r"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 503 || e.RetryAfter != 20*time.Second {
		t.Errorf("err = %v, want the 503 with Retry-After 20s", err)
	}
	if len(s.waits()) != 0 || len(srv.Requests()) != 1 {
		t.Errorf("waited %v over %d attempts, want no wait and 1 attempt", s.waits(), len(srv.Requests()))
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"120", 2 * time.Minute},
		{" 3 ", 3 * time.Second},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"99999999999", 365 * 24 * time.Hour},
	} {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		24 * time.Hour:                "24h",
		90 * time.Minute:              "1h30m",
		90 * time.Second:              "1m30s",
		time.Hour + time.Second:       "1h0m1s",
		1500 * time.Millisecond:       "1.5s",
		10 * time.Minute:              "10m",
		30 * time.Second:              "30s",
		24*time.Hour + 30*time.Minute: "24h30m",
		-(2 * time.Hour):              "-2h",
		100 * time.Hour * 24 * 7 * 52: "873600h",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", formatDuration(d), back, err, d)
		}
	}
}
