package client

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Endpoint is a webhook endpoint.
type Endpoint struct {
	ID          string            `json:"id"`
	URL         string            `json:"url"`
	Events      []string          `json:"events,omitempty"` // none: every event
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Disabled    bool              `json:"disabled"`
	Source      string            `json:"source"` // "api", or "config" for one the API cannot change
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
	// Secret (whsec_...) is in the answers of create and rotation only.
	// Store it; never log it.
	Secret string `json:"secret,omitempty"`
}

// CreateEndpointRequest is the body of POST /v1/endpoints.
type CreateEndpointRequest struct {
	URL         string            `json:"url"`
	Events      []string          `json:"events,omitempty"`
	Description string            `json:"description,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
}

// UpdateEndpointRequest is the body of PATCH /v1/endpoints/{id}; a nil
// field is left as it is.
type UpdateEndpointRequest struct {
	URL         *string            `json:"url,omitempty"`
	Events      *[]string          `json:"events,omitempty"`
	Description *string            `json:"description,omitempty"`
	Headers     *map[string]string `json:"headers,omitempty"`
	Disabled    *bool              `json:"disabled,omitempty"`
}

// Recovery is the progress of an endpoint's recovery: the re-sending of
// every event in [Since, Until] that it subscribes to and did not get with
// a 2xx.
type Recovery struct {
	ID         string    `json:"id"`
	EndpointID string    `json:"endpoint_id"`
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	Status     string    `json:"status"`
	Scanned    int64     `json:"scanned"`   // events looked at
	Scheduled  int64     `json:"scheduled"` // deliveries queued
	Done       int64     `json:"done"`      // deliveries finished
}

// ListEndpoints lists the webhook endpoints, the configuration's included.
func (c *Client) ListEndpoints(ctx context.Context, opts ...CallOption) ([]Endpoint, error) {
	var l struct {
		Endpoints []Endpoint `json:"endpoints"`
	}
	if _, err := c.call(ctx, "list endpoints", http.MethodGet, escape("endpoints"), nil, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Endpoints, nil
}

// GetEndpoint reads an endpoint.
func (c *Client) GetEndpoint(ctx context.Context, id string, opts ...CallOption) (*Endpoint, error) {
	return c.endpoint(ctx, "get endpoint", http.MethodGet, escape("endpoints", id), nil, opts)
}

// CreateEndpoint adds an endpoint; the answer holds its Secret.
func (c *Client) CreateEndpoint(ctx context.Context, r CreateEndpointRequest, opts ...CallOption) (*Endpoint, error) {
	return c.endpoint(ctx, "create endpoint", http.MethodPost, escape("endpoints"), r, opts)
}

// UpdateEndpoint changes the fields of r that are not nil.
func (c *Client) UpdateEndpoint(ctx context.Context, id string, r UpdateEndpointRequest, opts ...CallOption) (*Endpoint, error) {
	return c.endpoint(ctx, "update endpoint", http.MethodPatch, escape("endpoints", id), r, opts)
}

// DeleteEndpoint deletes an endpoint; deliveries pending to it are dropped.
func (c *Client) DeleteEndpoint(ctx context.Context, id string, opts ...CallOption) error {
	_, err := c.call(ctx, "delete endpoint", http.MethodDelete, escape("endpoints", id), nil, nil, nil, opts)
	return err
}

// RotateEndpointSecret gives an endpoint a new secret (in the answer's
// Secret); the old one keeps signing beside it for overlap (0: the
// daemon's default).
func (c *Client) RotateEndpointSecret(ctx context.Context, id string, overlap time.Duration, opts ...CallOption) (*Endpoint, error) {
	body := struct {
		Overlap string `json:"overlap,omitempty"`
	}{}
	if overlap != 0 {
		body.Overlap = formatDuration(overlap)
	}
	return c.endpoint(ctx, "rotate endpoint secret", http.MethodPost, escape("endpoints", id, "rotate-secret"), body, opts)
}

// TestEndpoint sends a signed example event of eventType ("" for the
// daemon's default) with "test":true to an endpoint, and returns its
// delivery.
func (c *Client) TestEndpoint(ctx context.Context, id, eventType string, opts ...CallOption) (*Delivery, error) {
	body := struct {
		Type string `json:"type,omitempty"`
	}{eventType}
	var d Delivery
	if _, err := c.call(ctx, "test endpoint", http.MethodPost, escape("endpoints", id, "test"), nil, body, &d, opts); err != nil {
		return nil, err
	}
	return &d, nil
}

// RecoverEndpoint re-sends to an endpoint every event since since (until
// until; zero for now) that it did not receive with a 2xx, and returns the
// recovery to follow with GetRecovery.
func (c *Client) RecoverEndpoint(ctx context.Context, id string, since, until time.Time, opts ...CallOption) (*Recovery, error) {
	body := struct {
		Since string `json:"since"`
		Until string `json:"until,omitempty"`
	}{Since: formatTime(since)}
	if !until.IsZero() {
		body.Until = formatTime(until)
	}
	var r Recovery
	if _, err := c.call(ctx, "recover endpoint", http.MethodPost, escape("endpoints", id, "recover"), nil, body, &r, opts); err != nil {
		return nil, err
	}
	return &r, nil
}

// GetRecovery reads a recovery's progress.
func (c *Client) GetRecovery(ctx context.Context, id string, opts ...CallOption) (*Recovery, error) {
	var r Recovery
	if _, err := c.call(ctx, "get recovery", http.MethodGet, escape("recoveries", id), nil, nil, &r, opts); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) endpoint(ctx context.Context, op, method, path string, in any, opts []CallOption) (*Endpoint, error) {
	var e Endpoint
	if _, err := c.call(ctx, op, method, path, nil, in, &e, opts); err != nil {
		return nil, err
	}
	return &e, nil
}

// formatTime writes t as the contract's times: RFC 3339, milliseconds, UTC.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// formatDuration writes d as time.ParseDuration reads it, without zero
// units: 24h, 1h30m, 90s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
