package signing_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// An integrator's webhook handler: read the raw body, verify it against the
// endpoint's secret, then dedupe by webhook-id and process it.
func ExampleVerify() {
	key, err := signing.ParseKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		fmt.Println(err)
		return
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		// Verify the raw bytes, never a re-encoded JSON value.
		if err := signing.Verify(r.Header, body, time.Now(), key); err != nil {
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		// Dedupe by r.Header.Get("webhook-id"), then handle body.
		w.WriteHeader(http.StatusNoContent)
	})

	// Deliver one signed webhook, then a tampered copy.
	body := []byte(`{"type":"session.approved","data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}`)
	signer, err := signing.NewSigner("", key)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, b := range [][]byte{body, append(bytes.Clone(body), ' ')} {
		req := httptest.NewRequest(http.MethodPost, "/webhooks", bytes.NewReader(b))
		if err := signer.SetHeaders(req.Header, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", time.Now(), body); err != nil {
			fmt.Println(err)
			return
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// 204
	// 401
}

// Verify's errors tell a stale or replayed delivery from a forged one.
func ExampleVerify_errors() {
	key, _ := signing.ParseKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	sent := time.Unix(1614265330, 0)

	fmt.Println(signing.Verify(h, body, sent.Add(time.Minute), key))
	err := signing.Verify(h, body, sent.Add(time.Hour), key)
	fmt.Println(errors.Is(err, signing.ErrTimestampOutOfRange))
	err = signing.Verify(h, []byte(`{"test": 1}`), sent, key)
	fmt.Println(errors.Is(err, signing.ErrNoMatchingSignature))
	// Output:
	// <nil>
	// true
	// true
}

// The X-HMAC-SIGNATURE of an admin request: the hex HMAC-SHA256 of the raw
// body (else the {id} in the path, else the raw query), keyed with the
// client's API secret.
func ExampleHexHMAC() {
	secret := []byte("admin-secret")
	body := []byte(`{"ref_id":"user-42"}`)
	sig := signing.HexHMAC(secret, body)
	fmt.Println(sig)

	// The admin API checks it in constant time.
	fmt.Println(signing.VerifyHexHMAC(secret, body, sig))
	// Output:
	// 1e1e461ec6a61a02d95de08cce5da97d41755401153631860d26bf0e63b8a303
	// true
}

// The headers of one delivery attempt, as the dispatcher sets them.
func ExampleSigner_SetHeaders() {
	key, _ := signing.ParseKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	signer, err := signing.NewSigner("api-key-1", key)
	if err != nil {
		fmt.Println(err)
		return
	}
	h := http.Header{}
	err = signer.SetHeaders(h, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range []string{"webhook-id", "webhook-timestamp", "webhook-signature", "X-AUTH-CLIENT", "X-HMAC-SIGNATURE"} {
		fmt.Printf("%s: %s\n", name, h.Get(name))
	}
	// Output:
	// webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek
	// webhook-timestamp: 1614265330
	// webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
	// X-AUTH-CLIENT: api-key-1
	// X-HMAC-SIGNATURE: e2cb4f5251572539d458bfb8a7adb533b08801e6a794467e06f771debbb0818b
}

// A client of the admin API signs each request with scheme v2: the method,
// the request target, the body's hash, the time and a fresh nonce.
func ExampleSetRequestHeaders() {
	body := []byte(`{"ref_id":"user-42"}`)
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:8080/v1/sessions", bytes.NewReader(body))
	signing.SetRequestHeaders(req.Header, "demo", []byte("demo-secret-change-me"), req.Method, req.URL.RequestURI(), body, time.Now())
	fmt.Println(req.Header.Get("X-AUTH-CLIENT"), strings.HasPrefix(req.Header.Get("X-HMAC-SIGNATURE"), "v2="))
	// Output: demo true
}
