package adminapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
	"github.com/sessiond/sessiond/signing"
)

// Scheme is how an API client signs its requests.
type Scheme string

// The signing schemes (DESIGN.md, "Admin HTTP contract").
const (
	// SchemeV2 signs the method, the request target, the body's hash, a
	// timestamp and a nonce: a request can be neither replayed nor moved.
	SchemeV2 Scheme = "v2"
	// SchemeLegacy is Veriff's: the raw body on routes that take one,
	// else the {id} of the path, else the raw query. It can be replayed.
	SchemeLegacy Scheme = "legacy"
)

// Client is one API client: its key and secrets (any of them verifies, so
// secrets can be rotated) and its scheme ("" is SchemeV2).
type Client struct {
	Key     string
	Secrets []string
	Scheme  Scheme
}

// Authentication windows.
const (
	// TimestampWindow is how far X-TIMESTAMP may be from the server's clock.
	TimestampWindow = 300 * time.Second
	// NonceWindow is how long a nonce is remembered: longer than the two
	// timestamp windows a replay could fall in.
	NonceWindow = 600 * time.Second
)

// client is a configured Client ready to verify.
type client struct {
	key     string
	secrets [][]byte
	legacy  bool
}

// dummySecrets stand in for an unknown key's, so that a signature is
// always computed.
var dummySecrets = [][]byte{[]byte("sessiond: no such API client")}

var (
	errMissingKey = &Error{Status: http.StatusUnauthorized, Code: CodeMissingAuth, Message: "Mandatory X-AUTH-CLIENT header missing."}
	// errAuthFailed is the one answer for an unknown key and a missing or
	// wrong signature, so that keys cannot be probed.
	errAuthFailed = &Error{Status: http.StatusUnauthorized, Code: CodeAuthFailed, Message: "Authentication failed."}
	errTimestamp  = &Error{Status: http.StatusUnauthorized, Code: CodeTimestamp,
		Message: "X-TIMESTAMP is missing or more than 300 seconds from the server's clock."}
	errReplayed = &Error{Status: http.StatusUnauthorized, Code: CodeReplayed, Message: "Request replayed: this X-NONCE was already used."}
	// errV2Only refuses a legacy-signed request on a route that takes only
	// v2. It is the answer for any key, so keys cannot be probed with it.
	errV2Only = &Error{Status: http.StatusUnauthorized, Code: CodeAuthFailed,
		Message: "The endpoint and recovery routes need the v2 signature scheme: a legacy signature could be moved from one route to another."}
)

type ctxKey int

const (
	clientCtxKey ctxKey = iota
	bodyCtxKey
	nonceCtxKey
)

// clientOf returns the API key that authenticated r.
func clientOf(r *http.Request) *client {
	c, _ := r.Context().Value(clientCtxKey).(*client)
	return c
}

// bodyOf returns the body authentication read.
func bodyOf(r *http.Request) []byte {
	b, _ := r.Context().Value(bodyCtxKey).([]byte)
	return b
}

// authenticate checks a /v1 request's credentials and reads its body; it
// returns r with the client and the body in its context. The key and the
// headers' shape are checked before the body is read, so an unknown key
// costs no body. The scheme follows the request's shape (a v2 request
// carries X-TIMESTAMP), not the key, so that the answer for an unknown
// key is the same as for a known one with a bad signature; a route that
// takes only v2 refuses a legacy-shaped request before the key is looked
// up, for the same reason.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request, rt *route) (*http.Request, error) {
	key := r.Header.Get(signing.HeaderAuthClient)
	if key == "" {
		return nil, errMissingKey
	}
	v2 := r.Header.Get(signing.HeaderRequestTimestamp) != ""
	if !v2 && rt.v2Only {
		return nil, errV2Only
	}
	c := a.clients[key]
	var (
		body []byte
		err  error
	)
	nonce := ""
	if v2 {
		body, nonce, err = a.verifyV2(w, r, c, rt)
	} else {
		body, err = a.verifyLegacy(w, r, c, rt)
	}
	if err != nil {
		return nil, err
	}
	ctx := context.WithValue(context.WithValue(r.Context(), clientCtxKey, c), bodyCtxKey, body)
	if nonce != "" {
		if rt.nonce == nonceDirect {
			if err := a.spendNonce(ctx, keyspace.ClientShard(c.key), c.key, nonce); err != nil {
				return nil, err
			}
		} else {
			ctx = context.WithValue(ctx, nonceCtxKey, nonce)
		}
	}
	return r.WithContext(ctx), nil
}

// How a route spends a v2 request's nonce.
const (
	// nonceDirect: before the handler runs, in the client's shard.
	nonceDirect = iota
	// nonceInOp: in the first read of the lifecycle operation the handler
	// runs, in the session's shard (one round trip less); the handler
	// passes a.once to the operation.
	nonceInOp
)

// spendNonce remembers a request's nonce for NonceWindow, or refuses the
// request as a replay.
func (a *API) spendNonce(ctx context.Context, sh keyspace.Shard, client, nonce string) error {
	fresh, err := a.rdb.SetNX(ctx, a.keys.Nonce(sh, client, nonce), 1, NonceWindow).Result()
	if err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Code: codeInternal, Message: "Cannot check the nonce; retry.", RetryAfter: time.Second, Err: err}
	}
	if !fresh {
		return errReplayed
	}
	return nil
}

// once is the option that makes a lifecycle operation on shard sh spend
// the request's nonce in its first read; none for a legacy request.
func (a *API) once(r *http.Request, sh keyspace.Shard) []lifecycle.Option {
	nonce, _ := r.Context().Value(nonceCtxKey).(string)
	if nonce == "" {
		return nil
	}
	return []lifecycle.Option{lifecycle.Once(a.keys.Nonce(sh, clientOf(r).key, nonce), NonceWindow)}
}

// onSession is once for an operation on session id (none for an id that
// names no shard: the operation answers 404 without reading).
func (a *API) onSession(r *http.Request, id string) []lifecycle.Option {
	sh, ok := lifecycle.ShardOfSession(id)
	if !ok {
		return nil
	}
	return a.once(r, sh)
}

// spendNow spends a nonceInOp request's nonce before its handler does
// anything else (a create replaying a stored response reads no session).
func (a *API) spendNow(r *http.Request) error {
	nonce, _ := r.Context().Value(nonceCtxKey).(string)
	if nonce == "" {
		return nil
	}
	return a.spendNonce(r.Context(), keyspace.ClientShard(clientOf(r).key), clientOf(r).key, nonce)
}

// verifyV2 checks a scheme v2 request; c is nil for an unknown key. It
// returns the body and the nonce, which the caller spends.
func (a *API) verifyV2(w http.ResponseWriter, r *http.Request, c *client, rt *route) ([]byte, string, error) {
	ts, ok := signing.ParseRequestTimestamp(r.Header.Get(signing.HeaderRequestTimestamp))
	if !ok || absDuration(a.now().Sub(time.Unix(ts, 0))) > TimestampWindow {
		return nil, "", errTimestamp
	}
	nonce := r.Header.Get(signing.HeaderNonce)
	mac, macOK := signing.ParseRequestSignature(r.Header.Get(signing.HeaderHMACSignature))
	if !macOK || !signing.ValidNonce(nonce) || c == nil || c.legacy {
		return nil, "", errAuthFailed
	}
	body, err := a.readBody(w, r)
	if err != nil {
		return nil, "", err
	}
	target := r.RequestURI
	if target == "" { // a request built in-process, not read from the wire
		target = r.URL.RequestURI()
	}
	canonical := signing.CanonicalRequest(r.Method, target, sha256.Sum256(body), ts, nonce)
	if !signing.VerifyRequest(c.secrets, canonical, mac) {
		return nil, "", errAuthFailed
	}
	if rt.body {
		if err := checkJSON(body); err != nil {
			return nil, "", err
		}
	}
	// Only a verified request spends its nonce: nobody else can use one
	// up. A refused request spends it too, so that a captured request
	// refused now cannot succeed later.
	return body, nonce, nil
}

// verifyLegacy checks a legacy (Veriff) request; c is nil for an unknown key.
func (a *API) verifyLegacy(w http.ResponseWriter, r *http.Request, c *client, rt *route) ([]byte, error) {
	if c == nil || !c.legacy {
		// Compute a signature anyway, so that timing does not tell keys apart.
		signing.VerifyHexHMAC(dummySecrets[0], nil, r.Header.Get(signing.HeaderHMACSignature))
		return nil, errAuthFailed
	}
	if !rt.body && (r.ContentLength > 0 || len(r.TransferEncoding) > 0) {
		// A legacy signature covers the body, else the id, else the query:
		// a body here could carry another route's signed input.
		return nil, badRequest("This route takes no request body.")
	}
	body, err := a.readBody(w, r)
	if err != nil {
		return nil, err
	}
	if !rt.body && len(body) > 0 {
		return nil, badRequest("This route takes no request body.")
	}
	msg := body
	if len(msg) == 0 {
		if id := r.PathValue("id"); id != "" {
			msg = []byte(id)
		} else {
			msg = []byte(r.URL.RawQuery)
		}
	}
	sig := r.Header.Get(signing.HeaderHMACSignature)
	ok := false
	for _, s := range c.secrets {
		if signing.VerifyHexHMAC(s, msg, sig) {
			ok = true
		}
	}
	if !ok {
		return nil, errAuthFailed
	}
	if rt.body {
		if err := checkJSON(body); err != nil {
			return nil, err
		}
	}
	return body, nil
}

// readBody reads the request body up to MaxBodyBytes (413 past it).
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > a.cfg.MaxBodyBytes {
		return nil, a.tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, a.tooLarge()
		}
		return nil, &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "Could not read the request body.", Err: err}
	}
	return body, nil
}

func (a *API) tooLarge() error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeInvalidRequest,
		Message: "Request body too large (limit " + strconv.FormatInt(a.cfg.MaxBodyBytes, 10) + " bytes)."}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
