package main

import (
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sessiond/sessiond/signing"
)

// TestClientSignsV2 checks the load tool's requests against the server's
// verifier: what it sends verifies, and each bad-request option breaks it.
func TestClientSignsV2(t *testing.T) {
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		gotBody, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := newAPIClient("bench", "bench-secret-0123456789", 1)
	verify := func() bool {
		ts, _ := signing.ParseRequestTimestamp(got.Header.Get(signing.HeaderRequestTimestamp))
		mac, ok := signing.ParseRequestSignature(got.Header.Get(signing.HeaderHMACSignature))
		canonical := signing.CanonicalRequest(got.Method, got.RequestURI, sha256.Sum256(gotBody), ts, got.Header.Get(signing.HeaderNonce))
		return ok && got.Header.Get(signing.HeaderAuthClient) == "bench" && signing.VerifyRequest([][]byte{[]byte("bench-secret-0123456789")}, canonical, mac)
	}
	for _, tc := range []struct {
		name, method, path, body string
		a                        auth
		valid                    bool
	}{
		{"get with query", "GET", "/v1/events?after=x&limit=10", "", auth{}, true},
		{"post with body", "POST", "/v1/sessions/abc/status", `{"status":"started"}`, auth{}, true},
		{"fixed nonce", "POST", "/v1/sessions/abc/cancel", "", auth{nonce: "drill-nonce-0123456789"}, true},
		{"other secret", "POST", "/v1/sessions/abc/cancel", "", auth{secret: "nope-nope-nope-nope"}, false},
		{"moved target", "POST", "/v1/sessions/abc/cancel", "", auth{signTarget: "/v1/sessions/def/cancel"}, false},
		{"tampered body", "POST", "/v1/sessions/abc/decision", `{"status":"approved"}`, auth{signBody: `{"status":"declined"}`}, false},
		{"no signature", "GET", "/v1/events", "", auth{noSig: true}, false},
	} {
		var body []byte
		if tc.body != "" {
			body = []byte(tc.body)
		}
		if _, err := c.do(t.Context(), srv.URL, tc.method, tc.path, body, tc.a); err != nil {
			t.Fatal(err)
		}
		if verify() != tc.valid {
			t.Errorf("%s: verifies = %v, want %v", tc.name, !tc.valid, tc.valid)
		}
		if tc.a.nonce != "" && got.Header.Get(signing.HeaderNonce) != tc.a.nonce {
			t.Errorf("%s: nonce %q", tc.name, got.Header.Get(signing.HeaderNonce))
		}
	}
}

func TestFlakinessStreak(t *testing.T) {
	f := &flakiness{p500: 1, maxStreak: 3} // would fail every delivery
	run := 0
	for i := range 100 {
		if f.pick() == verdictOK {
			if run != 3 {
				t.Fatalf("delivery %d: success after %d failures, want exactly 3", i, run)
			}
			run = 0
			continue
		}
		if run++; run > 3 {
			t.Fatalf("delivery %d: %d failures in a row, want at most 3", i, run)
		}
	}
}
