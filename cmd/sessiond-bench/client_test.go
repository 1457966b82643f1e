package main

import "testing"

func TestSignedMessage(t *testing.T) {
	for _, tc := range []struct {
		name, path, id, body, want string
	}{
		{"body wins", "/v1/sessions/abc/status", "abc", `{"status":"started"}`, `{"status":"started"}`},
		{"id without body", "/v1/sessions/abc", "abc", "", "abc"},
		{"query without id", "/v1/events?after=1-0&limit=10", "", "", "after=1-0&limit=10"},
		{"nothing", "/v1/events", "", "", ""},
	} {
		if got := signedMessage(tc.path, tc.id, []byte(tc.body)); got != tc.want {
			t.Errorf("%s: signedMessage = %q, want %q", tc.name, got, tc.want)
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
