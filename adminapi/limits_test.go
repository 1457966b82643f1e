package adminapi

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeleteRateLimit checks the sliding-window delete limit per API key,
// its 429 code 1004 and a Retry-After that follows the injected clock.
func TestDeleteRateLimit(t *testing.T) {
	t.Parallel()
	a := newEnv(t, apiConfig(func(c *Config) {
		c.DeleteLimit = []RateWindow{{Limit: 2, Window: time.Minute}, {Limit: 3, Window: 10 * time.Minute}}
	}))
	n := 0
	del := func(opts ...reqOpt) response {
		t.Helper()
		n++
		return a.do("DELETE", "/v1/sessions/"+a.create(fmt.Sprintf("r%d", n)).ID, "", opts...)
	}
	limited := func(r response, retryAfter string) {
		t.Helper()
		r.fail(t, 429, CodeTooManyRequests)
		if got := r.header.Get("Retry-After"); got != retryAfter {
			t.Errorf("Retry-After %q, want %q", got, retryAfter)
		}
	}
	del().ok(t, 200)
	del().ok(t, 200)
	limited(del(), "60")
	a.clock.Advance(30*time.Second + 500*time.Millisecond)
	limited(del(), "30") // 29.5 s, rounded up
	del(as(otherKey, otherSecret)).ok(t, 200)
	a.clock.Advance(29*time.Second + 499*time.Millisecond)
	limited(del(), "1") // 1 ms left
	a.clock.Advance(time.Millisecond)
	del().ok(t, 200) // the minute has slid past the first two
	limited(del(), "540")
	a.clock.Advance(9 * time.Minute)
	del().ok(t, 200)
	del().ok(t, 200)
	limited(del(), "60")

	key := a.api.keys.RateLimit("delete", testKey)
	if ttl := a.rdb.PTTL(a.ctx, key).Val(); ttl <= 0 || ttl > 10*time.Minute {
		t.Errorf("rate log PTTL %v", ttl)
	}
	if n := a.rdb.ZCard(a.ctx, key).Val(); n != 3 {
		t.Errorf("rate log holds %d requests, want the 3 allowed within 10 minutes", n)
	}
	id := a.create("kept").ID
	limited(a.do("DELETE", "/v1/sessions/"+id, ""), "60")
	a.get(id)
}

// TestFailedDeletesKeepQuota: deletes that fail (unknown id, in progress,
// not allowed) and a refused one leave the quota whole.
func TestFailedDeletesKeepQuota(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		submitted := a.create("busy").ID
		if _, err := a.svc.Progress(a.ctx, submitted, "submitted"); err != nil {
			t.Fatal(err)
		}
		a.do("DELETE", "/v1/sessions/2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b", "").fail(t, 404, CodeNotFound)
		a.do("DELETE", "/v1/sessions/not-an-id", "").fail(t, 404, CodeNotFound)
		a.do("DELETE", "/v1/sessions/"+submitted, "").fail(t, 400, CodeSessionInProgress)
		ok := a.create("ok").ID
		a.do("DELETE", "/v1/sessions/"+ok, "").ok(t, 200)
		// Now the quota is used up: the refused delete must not extend it.
		other := a.create("other").ID
		r := a.do("DELETE", "/v1/sessions/"+other, "")
		r.fail(t, 429, CodeTooManyRequests)
		if r.header.Get("Retry-After") != "3600" {
			t.Errorf("Retry-After %q, want 3600 (one successful delete, just now)", r.header.Get("Retry-After"))
		}
		if n := a.rdb.ZCard(a.ctx, a.api.keys.RateLimit("delete", testKey)).Val(); n != 1 {
			t.Errorf("rate log holds %d requests, want 1", n)
		}
	}, apiConfig(func(c *Config) { c.DeleteLimit = []RateWindow{{Limit: 1, Window: time.Hour}} }))
}

// TestDeleteDisabled checks a zero limit refuses every delete.
func TestDeleteDisabled(t *testing.T) {
	t.Parallel()
	a := newEnv(t, apiConfig(func(c *Config) { c.DeleteLimit = []RateWindow{{Limit: 0, Window: time.Hour}} }))
	id := a.create("r").ID
	r := a.do("DELETE", "/v1/sessions/"+id, "")
	r.fail(t, 429, CodeTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	a.get(id)
}

// TestLegacyScheme: a client configured with the legacy scheme signs the
// body, else the id, else the query; any of its secrets verifies.
func TestLegacyScheme(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	m := a.do("POST", "/v1/sessions", `{"ref_id":"leg"}`, legacy()).ok(t, 201)
	id := m["id"].(string)
	a.do("GET", "/v1/sessions/"+id, "", legacy()).ok(t, 200)
	a.do("GET", "/v1/sessions?ref_id=leg", "", legacy()).ok(t, 200)
	a.do("GET", "/v1/events", "", legacy()).ok(t, 200)
	a.do("POST", "/v1/sessions/"+id+"/cancel", "", legacy()).ok(t, 200)
	// A legacy request replays (the README says so): same answer twice.
	req := a.build("GET", "/v1/sessions/"+id, "", legacy())
	a.resend(req).ok(t, 200)
	a.resend(req).ok(t, 200)
}

// TestSecretRotation: during a rotation both of a client's secrets verify.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	id := a.create("rot").ID
	a.do("GET", "/v1/sessions/"+id, "", as(testKey, testSecret)).ok(t, 200)
	a.do("GET", "/v1/sessions/"+id, "", as(testKey, testSecret2)).ok(t, 200)
	a.do("GET", "/v1/sessions/"+id, "", as(testKey, otherSecret)).fail(t, 401, CodeAuthFailed)
}

// TestInFlightCap: past MaxInFlight requests in flight the answer is 503
// with Retry-After, before anything is read.
func TestInFlightCap(t *testing.T) {
	t.Parallel()
	a := newEnv(t, apiConfig(func(c *Config) { c.MaxInFlight = 1 }))
	// The first request holds the only slot while its body trickles in.
	pr, pw := io.Pipe()
	body := `{"ref_id":"slow"}`
	req := a.build("POST", "/v1/sessions", body)
	req.Body, req.ContentLength, req.GetBody = pr, int64(len(body)), nil
	done := make(chan response, 1)
	go func() { done <- a.send(req) }()
	if _, err := pw.Write([]byte(body[:5])); err != nil { // the handler is reading
		t.Fatal(err)
	}
	r := a.do("GET", "/v1/events", "")
	r.fail(t, 503, CodeTooManyRequests)
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", r.header.Get("Retry-After"))
	}
	if _, err := pw.Write([]byte(body[5:])); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	(<-done).ok(t, 201)
	a.do("GET", "/v1/events", "").ok(t, 200)
	// Health and readiness are not capped.
	if r := a.send(mustRequest(t, "GET", a.url+"/healthz")); r.status != 200 {
		t.Errorf("healthz %d", r.status)
	}
}

func mustRequest(t testing.TB, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestUnknownKeyBodyNotRead: a request under an unknown key is refused
// before its body is read, so a flood of large bodies costs no memory.
func TestUnknownKeyBodyNotRead(t *testing.T) {
	t.Parallel()
	a := newEnv(t, apiConfig(func(c *Config) { c.MaxBodyBytes = 1 << 20 }))
	req := a.build("POST", "/v1/sessions", "", as("nobody", "secret-of-nobody-0123"))
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The headers promise 1 MiB; not a byte of it is ever sent.
	fmt.Fprintf(conn, "POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\nContent-Length: %d\r\n", 1<<20)
	for k, v := range req.Header {
		fmt.Fprintf(conn, "%s: %s\r\n", k, v[0])
	}
	fmt.Fprint(conn, "\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	response{status: resp.StatusCode, header: resp.Header, body: b}.fail(t, 401, CodeAuthFailed)
}

// TestLogsCutPaths: a failed request's log line holds the route and at most
// maxLoggedPath bytes of path; a bad cursor is a client error (INFO), not
// an ERROR.
func TestLogsCutPaths(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	a := newEnv(t, apiConfig(func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}))
	long := "/v1/sessions/" + strings.Repeat("x", 100_000)
	a.do("GET", long, "").fail(t, 404, CodeNotFound)
	a.do("GET", "/v1/events?after=99999999999999999999", "").fail(t, 400, CodeInvalidRequest)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if len(line) > 2*maxLoggedPath+400 {
			t.Errorf("log line of %d bytes", len(line))
		}
		if strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("ERROR line: %s", line)
		}
		if strings.Contains(line, "99999999999999999999") {
			t.Errorf("a query string is logged: %s", line)
		}
	}
	if !strings.Contains(buf.String(), `"route":"GET /v1/sessions/{id}"`) {
		t.Errorf("no line names the route:\n%s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
