package lifecycle

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecodeCreate feeds arbitrary bodies (and Idempotency-Keys) to the
// create endpoint, correctly signed: the answer is a session (200/201) or
// the contract's 400 code 1001, never a 500 or a panic, and a refused body
// changes nothing.
func FuzzDecodeCreate(f *testing.F) {
	for _, seed := range []string{
		`{"ref_id":"a"}`,
		`{"ref_id":"a","flow_id":"f","person":{"name":"N","dob":"1990-01-01"},"metadata":{"k":[1,2]},"force_creation":true}`,
		`{"ref_id":"a","person":null,"metadata":null}`,
		`{"ref_id":"a"}}`, `{"ref_id":"a"} x`, `{`, `}`, ``, `null`, `[]`, `"ref_id"`, `1e999`,
		`{"ref_id":""}`, `{"ref_id":"\u0000"}`, `{"ref_id":"\ud800"}`, `{"ref_id":"a","person":"x"}`,
		`{"ref_id":"a","person":{"a":1e999}}`, `{"REF_ID":"a"}`, `{"ref_id":"a","ref_id":"b"}`,
		`{"ref_id":"a","metadata":{"x":"` + "\xff\xfe" + `"}}`, `{"ref_id":"a","force_creation":1}`,
		`{"ref_id":"a","person":[[[[[[[[[[[]]]]]]]]]]]}`, "{\"ref_id\":\"a\"}\n\t ",
	} {
		f.Add([]byte(seed), "")
		f.Add([]byte(seed), "idem-1")
	}
	e := newEnv(f)
	api := NewAPI(e.svc, APIConfig{Clients: map[string]string{testKey: testSecret}, MaxBodyBytes: 64 << 10})
	f.Fuzz(func(t *testing.T, body []byte, idem string) {
		e := e.with(t)
		sessions := e.rdb.ZCard(e.ctx, allIndexKey).Val()
		events := e.rdb.XLen(e.ctx, OutboxKey).Val()
		req := httptest.NewRequestWithContext(e.ctx, "POST", "/v1/sessions", bytes.NewReader(body))
		req.Header.Set("X-AUTH-CLIENT", testKey)
		req.Header.Set("X-HMAC-SIGNATURE", hexHMAC(testSecret, signedPart("/v1/sessions", string(body))))
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusCreated:
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			var c struct {
				ID     string `json:"id"`
				Status Status `json:"status"`
				Token  string `json:"token"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil || c.Token == "" || !c.Status.Active() {
				t.Fatalf("success body %s: %v", rec.Body, err)
			}
			if _, err := e.svc.Get(e.ctx, c.ID); err != nil {
				t.Fatalf("created session %s: %v", c.ID, err)
			}
		case http.StatusBadRequest:
			checkErrorBody(t, rec.Body.Bytes(), CodeInvalidRequest)
			if e.rdb.ZCard(e.ctx, allIndexKey).Val() != sessions || e.rdb.XLen(e.ctx, OutboxKey).Val() != events {
				t.Fatalf("refused body %q changed sessions or events", body)
			}
		default:
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
	})
}

// FuzzAuth sends arbitrary X-AUTH-CLIENT and X-HMAC-SIGNATURE values with
// arbitrary bodies and queries: a request passes authentication exactly
// when the key is known and the signature is the HMAC of what the contract
// signs (checked here with crypto/hmac, either hex case); otherwise the
// answer is 401 with 1101 or 1102.
func FuzzAuth(f *testing.F) {
	const id = "2f1b3a4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
	f.Add(testKey, "", []byte(nil), "", uint8(0), true)
	f.Add(testKey, "", []byte(`{}`), "", uint8(0), true)
	f.Add(testKey, "", []byte(nil), "ref_id=a&limit=2", uint8(1), true)
	f.Add(testKey, "", []byte(nil), "after=0-0", uint8(2), true)
	f.Add(testKey, hexHMAC(testSecret, id), []byte(nil), "", uint8(0), false)
	f.Add(testKey, hexHMAC(testSecret, ""), []byte(nil), "", uint8(1), false)
	f.Add(testKey, hexHMAC(testSecret, id)[:63]+"G", []byte(nil), "", uint8(0), false)
	f.Add(testKey, " "+hexHMAC(testSecret, id), []byte(nil), "", uint8(0), false)
	f.Add(testKey, hexHMAC(otherSecret, id), []byte(nil), "", uint8(0), false)
	f.Add("", hexHMAC(testSecret, id), []byte(nil), "", uint8(0), false)
	f.Add("key-1 ", hexHMAC(testSecret, id), []byte(nil), "", uint8(0), false)
	f.Add("KEY-1", "", []byte("x"), "q", uint8(1), true)
	e := newEnv(f)
	api := NewAPI(e.svc, APIConfig{Clients: map[string]string{testKey: testSecret, otherKey: otherSecret}})
	f.Fuzz(func(t *testing.T, client, sig string, body []byte, query string, route uint8, valid bool) {
		e := e.with(t)
		var method, path string
		switch route % 3 {
		case 0:
			method, path = "POST", "/v1/sessions/"+id+"/cancel"
		case 1:
			method, path = "GET", "/v1/sessions"
		default:
			method, path = "GET", "/v1/events"
		}
		msg := string(body)
		if len(body) == 0 {
			if route%3 == 0 {
				msg = id
			} else {
				msg = query
			}
		}
		secrets := map[string]string{testKey: testSecret, otherKey: otherSecret}
		secret, known := secrets[client]
		if valid {
			sig = hexHMAC(secret, msg)
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(msg))
		got, err := hex.DecodeString(sig)
		sigOK := err == nil && hmac.Equal(got, mac.Sum(nil))

		req := httptest.NewRequestWithContext(e.ctx, method, path, bytes.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("X-AUTH-CLIENT", client)
		req.Header.Set("X-HMAC-SIGNATURE", sig)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)

		switch {
		case rec.Code == http.StatusInternalServerError:
			t.Fatalf("500: %s", rec.Body)
		case client == "" || !known:
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("client %q: status %d, want 401", client, rec.Code)
			}
			checkErrorBody(t, rec.Body.Bytes(), CodeMissingAuth)
		case !sigOK:
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("signature %q over %q: status %d, want 401", sig, msg, rec.Code)
			}
			checkErrorBody(t, rec.Body.Bytes(), CodeBadSignature)
		default:
			if rec.Code == http.StatusUnauthorized {
				t.Fatalf("valid signature over %q refused: %s", msg, rec.Body)
			}
		}
	})
}
