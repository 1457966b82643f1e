package main

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// TestReceiverHold sends signed webhooks to the receiver: held ones get
// no answer until release, and are then counted with their receipt time
// after the release.
func TestReceiverHold(t *testing.T) {
	secret := signing.GenerateSecret()
	got := make(chan delivery, 1)
	r, err := startReceiver("127.0.0.1:0", secret, nil, func(d delivery) { got <- d })
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	key, err := signing.ParseKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signing.NewSigner("bench", key)
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string) <-chan int {
		status := make(chan int, 1)
		body := []byte(`{"type":"session.approved","timestamp":"2026-01-02T03:04:05Z","data":{"id":"s-` + id + `"}}`)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.url(), bytes.NewReader(body))
		if err := signer.SetHeaders(req.Header, id, time.Now(), body); err != nil {
			t.Fatal(err)
		}
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				status <- 0
				return
			}
			resp.Body.Close()
			status <- resp.StatusCode
		}()
		return status
	}

	if s := <-send("msg-1"); s != http.StatusNoContent || r.unique.Load() != 1 {
		t.Fatalf("unheld delivery: %d, %d unique; want 204, 1", s, r.unique.Load())
	}
	<-got

	r.hold()
	held := send("msg-2")
	select {
	case s := <-held:
		t.Fatalf("held delivery answered %d before the release", s)
	case <-time.After(200 * time.Millisecond):
	}
	if n := r.unique.Load(); n != 1 {
		t.Fatalf("%d unique deliveries while holding, want 1", n)
	}
	released := time.Now()
	r.release()
	if s := <-held; s != http.StatusNoContent {
		t.Fatalf("held delivery answered %d after the release, want 204", s)
	}
	if d := <-got; d.ID != "msg-2" || d.SessionID != "s-msg-2" || d.Received.Before(released) {
		t.Errorf("delivery %+v; want msg-2 of session s-msg-2, received after the release at %s", d, released)
	}
	if s := <-send("msg-3"); s != http.StatusNoContent || r.unique.Load() != 3 {
		t.Errorf("after the release: %d, %d unique; want 204, 3", s, r.unique.Load())
	}
}
