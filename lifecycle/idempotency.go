package lifecycle

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// idempotencyLock is how long a first request holds its Idempotency-Key
// before a retry may run again (it crashed, say).
const idempotencyLock = 10 * time.Second

// errIdempotencyInProgress answers a retry that overtook its first request
// (or one whose first request died: it may run again once the lock ends).
var errIdempotencyInProgress = &Error{Status: http.StatusConflict, Code: CodeInvalidRequest,
	Message: "A request with this Idempotency-Key is in progress; retry.", RetryAfter: time.Second}

// storedResponse is the first response to an Idempotency-Key. Its body
// holds a token, so it is sealed with a key derived from the client's
// secret and the Idempotency-Key: Redis never holds a readable token.
type storedResponse struct {
	Pending     bool   `json:"pending,omitempty"`
	RequestHash []byte `json:"h"`
	Status      int    `json:"s,omitempty"`
	Sealed      []byte `json:"b,omitempty"`
	// SessionID names the session the response shows, so that a replay
	// after its redaction or deletion leaves its personal data out.
	SessionID string `json:"sid,omitempty"`
}

// idempotent runs h once per Idempotency-Key: a retry with the same key and
// body gets the first response again; with another body it is refused.
// Without the header h simply runs. Only successes are kept; a failed
// request may be retried with the same key.
func (a *API) idempotent(w http.ResponseWriter, r *http.Request, h func() (int, any, error)) error {
	idem := r.Header.Get("Idempotency-Key")
	if idem == "" {
		status, v, err := h()
		if err != nil {
			return err
		}
		WriteJSON(w, status, v)
		return nil
	}
	if len(idem) > 255 {
		return invalid("Idempotency-Key", "must be at most 255 bytes")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	client := Client(r)
	key := idemKey(client, idem)
	reqHash := sha256.Sum256(body)
	ctx := r.Context()

	pending, _ := json.Marshal(storedResponse{Pending: true, RequestHash: reqHash[:]})
	won, err := a.svc.rdb.SetNX(ctx, key, pending, idempotencyLock).Result()
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	if !won {
		return a.replay(w, r, key, idem, reqHash[:])
	}
	status, v, err := h()
	if err != nil {
		a.svc.rdb.Del(ctx, key)
		return err
	}
	plain, err := json.Marshal(v)
	if err != nil {
		a.svc.rdb.Del(ctx, key)
		return fmt.Errorf("encode response: %w", err)
	}
	sealed, err := a.seal(client, idem, plain)
	if err != nil {
		a.svc.rdb.Del(ctx, key)
		return err
	}
	var sid string
	if c, ok := v.(*Created); ok {
		sid = c.ID
	}
	stored, _ := json.Marshal(storedResponse{RequestHash: reqHash[:], Status: status, Sealed: sealed, SessionID: sid})
	if err := a.svc.rdb.Set(ctx, key, stored, a.cfg.IdempotencyTTL).Err(); err != nil {
		// The work is done; only the replay is lost. Say so, answer anyway.
		a.log.Warn("idempotency: keep response", "err", err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(plain, '\n'))
	return nil
}

// replay answers a retry from the stored first response.
func (a *API) replay(w http.ResponseWriter, r *http.Request, key, idem string, reqHash []byte) error {
	raw, err := a.svc.rdb.Get(r.Context(), key).Bytes()
	if errors.Is(err, redis.Nil) {
		return errIdempotencyInProgress
	}
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	var st storedResponse
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("idempotency: decode: %w", err)
	}
	if !hmac.Equal(st.RequestHash, reqHash) {
		return invalid("Idempotency-Key", "was already used with a different request")
	}
	if st.Pending {
		return errIdempotencyInProgress
	}
	plain, err := a.open(Client(r), idem, st.Sealed)
	if err != nil {
		return err
	}
	if st.SessionID != "" {
		if plain, err = a.withoutErasedData(r.Context(), st.SessionID, plain); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(st.Status)
	_, _ = w.Write(append(plain, '\n'))
	return nil
}

// withoutErasedData drops person and metadata from a stored create
// response when its session has since been redacted or deleted: personal
// data removed from the session must not come back through a replay.
func (a *API) withoutErasedData(ctx context.Context, id string, plain []byte) ([]byte, error) {
	raw, err := a.svc.rdb.Get(ctx, sessionKey(id)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("idempotency: read session: %w", err)
	}
	if err == nil {
		rec, err := decodeRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("idempotency: %w", err)
		}
		if rec.RedactedAt == nil && rec.DeletedAt == nil {
			return plain, nil
		}
	}
	var c Created
	if err := json.Unmarshal(plain, &c); err != nil {
		return nil, fmt.Errorf("idempotency: decode stored response: %w", err)
	}
	if c.Person == nil && c.Metadata == nil {
		return plain, nil
	}
	c.Person, c.Metadata = nil, nil
	out, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("idempotency: encode response: %w", err)
	}
	return out, nil
}

func (a *API) aead(client, idem string) (cipher.AEAD, error) {
	mac := hmac.New(sha256.New, []byte(a.cfg.Clients[client]))
	mac.Write([]byte("sessiond idempotency\x00" + idem))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("idempotency cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

func (a *API) seal(client, idem string, plain []byte) ([]byte, error) {
	g, err := a.aead(client, idem)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("idempotency nonce: %w", err)
	}
	return g.Seal(nonce, nonce, plain, nil), nil
}

func (a *API) open(client, idem string, sealed []byte) ([]byte, error) {
	g, err := a.aead(client, idem)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, errors.New("idempotency: stored response is malformed")
	}
	plain, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], nil)
	if err != nil {
		return nil, fmt.Errorf("idempotency: open stored response: %w", err)
	}
	return plain, nil
}
