package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// apiClient calls the admin API of one or more replicas, signing every
// request the way DESIGN.md says: X-AUTH-CLIENT is the key, X-HMAC-SIGNATURE
// the lowercase hex HMAC-SHA256 of the raw body, else of the {id} path
// value, else of the raw query string.
type apiClient struct {
	key, secret string
	hc          *http.Client
}

func newAPIClient(key, secret string, conns int) *apiClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &apiClient{key: key, secret: secret, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// response is an admin API answer.
type response struct {
	status int
	body   []byte
}

// auth says how a request is authenticated; the zero value signs it
// correctly.
type auth struct {
	key     string // X-AUTH-CLIENT; "" means the client's key
	sig     string // X-HMAC-SIGNATURE; "" means the correct one
	noSig   bool   // send no X-HMAC-SIGNATURE
	noKey   bool   // send no X-AUTH-CLIENT
	signMsg string // what to sign instead of the contract's message (with sig == "")
	secret  string // sign with this secret instead of the client's
	idem    string // Idempotency-Key
}

// do sends one request to base (http://host:port). path may carry a raw
// query. id is the {id} path value, if any, for the signature.
func (c *apiClient) do(ctx context.Context, base, method, path, id string, body []byte, a auth) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	msg := signedMessage(path, id, body)
	if a.signMsg != "" {
		msg = a.signMsg
	}
	switch {
	case a.noKey:
	case a.key != "":
		req.Header.Set("X-AUTH-CLIENT", a.key)
	default:
		req.Header.Set("X-AUTH-CLIENT", c.key)
	}
	switch {
	case a.noSig:
	case a.sig != "":
		req.Header.Set("X-HMAC-SIGNATURE", a.sig)
	case a.secret != "":
		req.Header.Set("X-HMAC-SIGNATURE", signing.HexHMAC([]byte(a.secret), []byte(msg)))
	default:
		req.Header.Set("X-HMAC-SIGNATURE", signing.HexHMAC([]byte(c.secret), []byte(msg)))
	}
	if a.idem != "" {
		req.Header.Set("Idempotency-Key", a.idem)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, body: b}, nil
}

// signedMessage is what X-HMAC-SIGNATURE covers: the body when there is
// one, else the {id} path value, else the raw query string.
func signedMessage(path, id string, body []byte) string {
	if len(body) > 0 {
		return string(body)
	}
	if id != "" {
		return id
	}
	if _, q, ok := strings.Cut(path, "?"); ok {
		return q
	}
	return ""
}

// session is the part of a session object the tools read.
type session struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	ExpiresAt *time.Time `json:"expires_at"`
	UpdatedAt time.Time  `json:"updated_at"`
}

func decodeSession(b []byte) (session, error) {
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("decode session: %w", err)
	}
	if s.ID == "" {
		return s, fmt.Errorf("decode session: no id in %.200s", b)
	}
	return s, nil
}

// feedPage is one page of GET /v1/events.
type feedPage struct {
	Events []struct {
		ID        string    `json:"id"`
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      struct {
			ID       string `json:"id"`
			Sequence int64  `json:"sequence"`
		} `json:"data"`
	} `json:"events"`
	NextCursor string `json:"next_cursor"`
}
