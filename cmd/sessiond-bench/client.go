package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// apiClient calls the admin API of one or more replicas, signing every
// request with scheme v2 (DESIGN.md): the method, the request target, the
// body's hash, the time and a fresh nonce.
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
	key        string // X-AUTH-CLIENT; "" means the client's key
	sig        string // X-HMAC-SIGNATURE; "" means the correct one
	noSig      bool   // send no X-HMAC-SIGNATURE
	noKey      bool   // send no X-AUTH-CLIENT
	secret     string // sign with this secret instead of the client's
	signTarget string // sign this request target instead of the one sent
	signBody   string // sign this body instead of the one sent
	nonce      string // X-NONCE; "" means a fresh one
	age        time.Duration
	idem       string // Idempotency-Key
}

// do sends one request to base (http://host:port). path may carry a raw
// query.
func (c *apiClient) do(ctx context.Context, base, method, path string, body []byte, a auth) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	secret, target, signed := c.secret, req.URL.RequestURI(), body
	if a.secret != "" {
		secret = a.secret
	}
	if a.signTarget != "" {
		target = a.signTarget
	}
	if a.signBody != "" {
		signed = []byte(a.signBody)
	}
	signing.SetRequestHeaders(req.Header, c.key, []byte(secret), method, target, signed, time.Now().Add(-a.age))
	if a.nonce != "" {
		ts, _ := signing.ParseRequestTimestamp(req.Header.Get(signing.HeaderRequestTimestamp))
		req.Header.Set(signing.HeaderNonce, a.nonce)
		req.Header.Set(signing.HeaderHMACSignature, signing.SignRequest([]byte(secret), method, target, signed, ts, a.nonce))
	}
	switch {
	case a.noKey:
		req.Header.Del(signing.HeaderAuthClient)
	case a.key != "":
		req.Header.Set(signing.HeaderAuthClient, a.key)
	}
	switch {
	case a.noSig:
		req.Header.Del(signing.HeaderHMACSignature)
	case a.sig != "":
		req.Header.Set(signing.HeaderHMACSignature, a.sig)
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
