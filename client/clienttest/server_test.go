package clienttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// recordingTB is a testing.TB whose Errorf is recorded instead of failing
// the test, so a test can check that the server fails a test when it
// should.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}

func (r *recordingTB) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs)
}

// signed builds a request to srv signed as the contract says, with ts and
// nonce; change rewrites it after signing.
func signed(t *testing.T, srv *Server, method, target string, body []byte, ts time.Time, nonce string, change func(*http.Request)) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(signing.HeaderAuthClient, Key)
	req.Header.Set(signing.HeaderRequestTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(signing.HeaderNonce, nonce)
	req.Header.Set(signing.HeaderHMACSignature, signing.SignRequest([]byte(Secret), method, target, body, ts.Unix(), nonce))
	if change != nil {
		change(req)
	}
	return req
}

func TestServerChecks(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"ref_id":"u"}`)
	tests := []struct {
		name     string
		ts       time.Time
		nonce    string
		change   func(*http.Request)
		wantCode int // 0: accepted
	}{
		{"valid", now, "nonce-valid-0000000001", nil, 0},
		{"valid at the window's edge", now.Add(-300 * time.Second), "nonce-valid-0000000002", nil, 0},
		{"missing key", now, "nonce-bad-00000000001", func(r *http.Request) { r.Header.Del(signing.HeaderAuthClient) }, 1101},
		{"unknown key", now, "nonce-bad-00000000002", func(r *http.Request) { r.Header.Set(signing.HeaderAuthClient, "other") }, 1102},
		{"stale timestamp", now.Add(-301 * time.Second), "nonce-bad-00000000003", nil, 1103},
		{"future timestamp", now.Add(301 * time.Second), "nonce-bad-00000000004", nil, 1103},
		{"short nonce", now, "short", nil, 1102},
		{"other target", now, "nonce-bad-00000000005", func(r *http.Request) { r.URL.RawQuery = "x=1" }, 1102},
		{"other method", now, "nonce-bad-00000000006", func(r *http.Request) { r.Method = http.MethodPut }, 1102},
		{"other body", now, "nonce-bad-00000000007", func(r *http.Request) {
			r.Body = nopCloser{bytes.NewReader([]byte(`{"ref_id":"v"}`))} // same length
		}, 1102},
		{"uppercase signature", now, "nonce-bad-00000000008", func(r *http.Request) {
			r.Header.Set(signing.HeaderHMACSignature, "v2="+string(bytes.ToUpper([]byte(r.Header.Get(signing.HeaderHMACSignature)[3:]))))
		}, 1102},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := &recordingTB{TB: t}
			var handled atomic.Bool
			srv := NewServer(tb, Config{Now: func() time.Time { return now }}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handled.Store(true)
				WriteJSON(w, 200, map[string]string{"ok": "yes"})
			}))
			resp, err := http.DefaultClient.Do(signed(t, srv, "POST", "/v1/sessions", body, tt.ts, tt.nonce, tt.change))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Status string `json:"status"`
				Code   int    `json:"code"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			if tt.wantCode == 0 {
				if resp.StatusCode != 200 || !handled.Load() || tb.failures() != 0 {
					t.Errorf("status %d, handled %v, failures %d; want accepted", resp.StatusCode, handled.Load(), tb.failures())
				}
				return
			}
			if resp.StatusCode != 401 || e.Status != "fail" || e.Code != tt.wantCode || handled.Load() || tb.failures() != 1 {
				t.Errorf("status %d, code %d, handled %v, failures %d; want 401 code %d, refused and the test failed",
					resp.StatusCode, e.Code, handled.Load(), tb.failures(), tt.wantCode)
			}
			if rs := srv.Requests(); len(rs) != 1 || rs[0].Refused == "" {
				t.Errorf("requests = %+v, want one, refused", rs)
			}
		})
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// TestServerRefusesAReusedNonce: the same signed request twice fails the
// test, as the daemon would refuse it (1105).
func TestServerRefusesAReusedNonce(t *testing.T) {
	t.Parallel()
	tb := &recordingTB{TB: t}
	srv := NewServer(tb, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, "ok") }))
	now := time.Now()
	var codes []int
	for range 2 {
		resp, err := http.DefaultClient.Do(signed(t, srv, "GET", "/v1/events?limit=1", nil, now, "the-same-nonce-000001", nil))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Code int }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode, e.Code)
	}
	if codes[0] != 200 || codes[2] != 401 || codes[3] != 1105 || tb.failures() != 1 {
		t.Errorf("answers %v, %d failures; want 200, then 401 code 1105 and a failed test", codes, tb.failures())
	}
	if rs := srv.Requests(); len(rs) != 2 || rs[0].Target != "/v1/events?limit=1" || rs[0].Refused != "" || rs[1].Refused == "" {
		t.Errorf("requests = %+v", rs)
	}
}
