package client

import (
	"context"
	"net/http"
	"time"
)

// Introspection is the answer of Introspect: Active is false for an
// unknown, expired, replaced or purged token, and the rest is then empty.
type Introspection struct {
	Active         bool       `json:"active"`
	Session        *Session   `json:"session,omitempty"`
	TokenExpiresAt *time.Time `json:"token_expires_at,omitempty"`
}

// Introspect tells whether a session token is active and whose it is. The
// token travels in the body, never in the URL.
func (c *Client) Introspect(ctx context.Context, token string, opts ...CallOption) (*Introspection, error) {
	body := struct {
		Token string `json:"token"`
	}{token}
	var in Introspection
	if _, err := c.call(ctx, "introspect token", http.MethodPost, escape("tokens", "introspect"), nil, body, &in, opts); err != nil {
		return nil, err
	}
	return &in, nil
}
