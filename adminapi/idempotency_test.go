package adminapi

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// TestIdempotencyKey: an exact retry with the same Idempotency-Key gets the
// first response, another body is refused, and the stored response holds no
// readable token or personal data.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	forEachTopology(t, func(t *testing.T, a *env) {
		body := `{"ref_id":"idem","person":{"name":"Ophelia Wintergreen"}}`
		first := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"))
		m := first.ok(t, 201)
		token := m["token"].(string)
		if first.header.Get("Idempotent-Replayed") != "" {
			t.Error("first response marked as replayed")
		}
		a.clock.Advance(time.Minute)
		for range 2 {
			again := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"))
			if again.status != 201 || !bytes.Equal(again.body, first.body) {
				t.Errorf("retry: %d %s, want the first response %s", again.status, again.body, first.body)
			}
			if again.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry lacks Idempotent-Replayed: %v", again.header)
			}
		}
		// Signed with the client's other secret (a rotation), still the same.
		again := a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1"), as(testKey, testSecret2))
		if again.status != 201 || !bytes.Equal(again.body, first.body) {
			t.Errorf("retry with the rotated secret: %d %s", again.status, again.body)
		}
		if s, err := a.svc.SessionForToken(a.ctx, token); err != nil || s.ID != m["id"] {
			t.Errorf("a replay must not reissue the token: %v", err)
		}
		a.do("POST", "/v1/sessions", `{"ref_id":"idem2"}`, header("Idempotency-Key", "k-1")).fail(t, 400, CodeInvalidRequest)
		// The same key of another client is another key.
		a.do("POST", "/v1/sessions", `{"ref_id":"idem3"}`, header("Idempotency-Key", "k-1"), as(otherKey, otherSecret)).ok(t, 201)
		// Without the key, the same body is an idempotent create by ref_id: 200
		// and a fresh token.
		m2 := a.do("POST", "/v1/sessions", body).ok(t, 200)
		if m2["id"] != m["id"] || m2["token"] == token {
			t.Errorf("create by ref_id: %v", m2)
		}
		all := a.contents()
		if strings.Contains(all, token) || strings.Contains(all, m2["token"].(string)) {
			t.Error("a token is in Redis in plaintext")
		}
		if idem := a.keys("*:idem:*"); len(idem) != 2 {
			t.Errorf("idempotency keys %v", idem)
		} else {
			for _, k := range idem {
				if ttl := a.rdb.PTTL(a.ctx, k).Val(); ttl <= 0 {
					t.Errorf("%s has no TTL", k)
				}
			}
		}

		// Once redacted, the stored response is a tombstone: no personal
		// data in Redis, and a retry is told the response was erased.
		idemKey := []string{keyspace.New(a.tg.Namespace).Idempotency(testKey, "k-1")}
		ttlBefore := a.rdb.PTTL(a.ctx, idemKey[0]).Val()
		a.do("POST", "/v1/sessions/"+m["id"].(string)+"/redact", "").ok(t, 200)
		if strings.Contains(a.contents(), "Ophelia") {
			t.Error("personal data in Redis after the redaction")
		}
		if v := a.rdb.Get(a.ctx, idemKey[0]).Val(); v != lifecycle.ErasedResponse {
			t.Errorf("stored response after redaction = %q, want the tombstone", v)
		}
		if ttl := a.rdb.PTTL(a.ctx, idemKey[0]).Val(); ttl <= 0 || ttl > ttlBefore {
			t.Errorf("tombstone TTL %v, want the stored response's (%v)", ttl, ttlBefore)
		}
		a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "k-1")).fail(t, 409, CodeConflict)
	})
}

// TestIdempotencyConcurrent sends the same keyed create many times at
// once: one create runs, the others replay it or are told to retry.
func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	body := `{"ref_id":"c","force_creation":true}`
	var wg sync.WaitGroup
	results := make([]response, 10)
	for i := range results {
		wg.Go(func() { results[i] = a.do("POST", "/v1/sessions", body, header("Idempotency-Key", "same")) })
	}
	wg.Wait()
	var firstBody []byte
	for _, r := range results {
		switch r.status {
		case 201:
			if firstBody == nil {
				firstBody = r.body
			} else if !bytes.Equal(r.body, firstBody) {
				t.Errorf("two different 201 bodies for one key:\n%s\n%s", firstBody, r.body)
			}
		case 409:
			r.fail(t, 409, CodeInvalidRequest)
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	page, err := a.svc.List(a.ctx, listByRef("c"))
	if err != nil || len(page.Sessions) != 1 {
		t.Errorf("%d sessions made for one Idempotency-Key (%v)", len(page.Sessions), err)
	}
}
