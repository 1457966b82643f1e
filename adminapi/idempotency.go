package adminapi

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/lifecycle"
)

// idempotencyLock is how long a first request holds its Idempotency-Key
// before a retry may run again (it crashed, say).
const idempotencyLock = 10 * time.Second

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

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
	// SessionID names the session the response shows.
	SessionID string `json:"sid,omitempty"`
}

// result is what an idempotent operation answers: a status and a value
// to encode, and the session it concerns ("" for none).
type result struct {
	status    int
	value     any
	sessionID string
}

// errErasedResponse answers a retry whose first response held a session's
// personal data, since erased.
var errErasedResponse = &Error{Status: http.StatusConflict, Code: CodeConflict,
	Message: "Idempotency-Key: the first response was erased with its session's personal data."}

// idempotent runs op once per Idempotency-Key: a retry with the same key
// and body gets the first response again; with another body it is refused.
// Without the header op simply runs. Only successes are kept; a failed
// request may be retried with the same key. op gets the key where the
// response will be kept ("" without the header), to link it to the
// session, whose erasure then erases it.
func (a *API) idempotent(w http.ResponseWriter, r *http.Request, op func(link string) (result, error)) error {
	idem := r.Header.Get("Idempotency-Key")
	if idem == "" {
		res, err := op("")
		if err != nil {
			return err
		}
		writeJSON(w, res.status, res.value)
		return nil
	}
	if len(idem) > maxIdempotencyKey {
		return badRequest(fmt.Sprintf("Idempotency-Key: must be at most %d bytes", maxIdempotencyKey))
	}
	// A replay of this very request must not read the stored response.
	if err := a.spendNow(r); err != nil {
		return err
	}
	c := clientOf(r)
	key := a.keys.Idempotency(c.key, idem)
	reqHash := sha256.Sum256(bodyOf(r))
	ctx := r.Context()

	pending, _ := json.Marshal(storedResponse{Pending: true, RequestHash: reqHash[:]})
	won, err := a.rdb.SetNX(ctx, key, pending, idempotencyLock).Result()
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	if !won {
		return a.replay(w, r, key, idem, reqHash[:])
	}
	bg := context.WithoutCancel(ctx)
	release := func() { a.rdb.Del(bg, key) }
	res, err := op(key)
	if err != nil {
		release()
		return err
	}
	plain, err := json.Marshal(res.value)
	if err != nil {
		release()
		return fmt.Errorf("encode response: %w", err)
	}
	sealed, err := seal(c.secrets[0], idem, plain)
	if err != nil {
		release()
		return err
	}
	stored, _ := json.Marshal(storedResponse{RequestHash: reqHash[:], Status: res.status, Sealed: sealed, SessionID: res.sessionID})
	if err := a.rdb.Set(bg, key, stored, a.cfg.IdempotencyTTL).Err(); err != nil {
		// The work is done; only the replay is lost. Say so, answer anyway.
		a.log.Warn("idempotency: keep response", "err", err.Error())
	} else if erased, err := a.svc.Erased(bg, res.sessionID); err == nil && erased {
		// The session was redacted or deleted while the response was being
		// kept: the erasure may have missed it.
		a.rdb.SetArgs(bg, key, lifecycle.ErasedResponse, redis.SetArgs{Mode: "XX", KeepTTL: true})
	}
	writeRaw(w, res.status, plain)
	return nil
}

// replay answers a retry from the stored first response.
func (a *API) replay(w http.ResponseWriter, r *http.Request, key, idem string, reqHash []byte) error {
	raw, err := a.rdb.Get(r.Context(), key).Bytes()
	if errors.Is(err, redis.Nil) {
		return errIdempotencyInProgress
	}
	if err != nil {
		return fmt.Errorf("idempotency: %w", err)
	}
	if string(raw) == lifecycle.ErasedResponse {
		return errErasedResponse
	}
	var st storedResponse
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("idempotency: decode: %w", err)
	}
	if !hmac.Equal(st.RequestHash, reqHash) {
		return badRequest("Idempotency-Key: was already used with a different request")
	}
	if st.Pending {
		return errIdempotencyInProgress
	}
	plain, err := open(clientOf(r).secrets, idem, st.Sealed)
	if err != nil {
		return err
	}
	w.Header().Set("Idempotent-Replayed", "true")
	writeRaw(w, st.Status, plain)
	return nil
}

// aead is the cipher of one client secret and Idempotency-Key.
func aead(secret []byte, idem string) (cipher.AEAD, error) {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("sessiond idempotency\x00" + idem))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("idempotency cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

func seal(secret []byte, idem string, plain []byte) ([]byte, error) {
	g, err := aead(secret, idem)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	rand.Read(nonce) // never fails since Go 1.24
	return g.Seal(nonce, nonce, plain, nil), nil
}

// open unseals a stored response with whichever of the client's secrets
// sealed it (the secrets may have rotated since).
func open(secrets [][]byte, idem string, sealed []byte) ([]byte, error) {
	for _, s := range secrets {
		g, err := aead(s, idem)
		if err != nil {
			return nil, err
		}
		if len(sealed) < g.NonceSize() {
			return nil, errors.New("idempotency: stored response is malformed")
		}
		if plain, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], nil); err == nil {
			return plain, nil
		}
	}
	return nil, &Error{Status: http.StatusConflict, Code: CodeInvalidRequest,
		Message: "Idempotency-Key: the first response was sealed with a secret this client no longer has."}
}
