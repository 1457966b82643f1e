package client

import (
	"context"
	"net/http"
	"time"
)

// Delivery is one event's delivery to one endpoint, with its attempts.
type Delivery struct {
	ID         string    `json:"id"`
	EventID    string    `json:"event_id"` // the webhook-id header, stable across retries
	EventType  string    `json:"event_type"`
	SessionID  string    `json:"session_id"`
	EndpointID string    `json:"endpoint_id"`
	URL        string    `json:"url"`    // without its password
	Status     string    `json:"status"` // pending, succeeded, failed or dead
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Attempts   []Attempt `json:"attempts"`
}

// Attempt is one HTTP attempt of a delivery.
type Attempt struct {
	Attempt           int       `json:"attempt"` // the webhook-attempt header
	At                time.Time `json:"at"`
	StatusCode        int       `json:"status_code"` // 0 when no HTTP answer came
	LatencyMS         float64   `json:"latency_ms"`
	Error             string    `json:"error,omitempty"`
	ResponseBody      string    `json:"response_body,omitempty"` // the start of the receiver's answer
	ResponseTruncated bool      `json:"response_truncated,omitempty"`
}

// ListDeliveries returns a session's webhook deliveries with their attempts.
func (c *Client) ListDeliveries(ctx context.Context, sessionID string, opts ...CallOption) ([]Delivery, error) {
	var l struct {
		Deliveries []Delivery `json:"deliveries"`
	}
	if _, err := c.call(ctx, "list deliveries", http.MethodGet, escape("sessions", sessionID, "deliveries"), nil, nil, &l, opts); err != nil {
		return nil, err
	}
	return l.Deliveries, nil
}

// ReplayDelivery sends a delivery again (also a dead one) and returns it,
// now pending.
func (c *Client) ReplayDelivery(ctx context.Context, deliveryID string, opts ...CallOption) (*Delivery, error) {
	var d Delivery
	if _, err := c.call(ctx, "replay delivery", http.MethodPost, escape("deliveries", deliveryID, "replay"), nil, nil, &d, opts); err != nil {
		return nil, err
	}
	return &d, nil
}
