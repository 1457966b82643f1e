package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Session is the session object. It never holds a token.
type Session struct {
	ID         string          `json:"id"`
	RefID      string          `json:"ref_id"`
	FlowID     string          `json:"flow_id,omitempty"`
	Status     string          `json:"status"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	ExpiresAt  *time.Time      `json:"expires_at,omitempty"` // while pending
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Tags       []string        `json:"tags"`
	Person     json.RawMessage `json:"person,omitempty"` // personal data
	Decision   *Decision       `json:"decision,omitempty"`
	RedactedAt *time.Time      `json:"redacted_at,omitempty"`
}

// Decision is a session's verification decision.
type Decision struct {
	Status     string    `json:"status"` // approved, declined or resubmission_requested
	Reason     string    `json:"reason,omitempty"`
	ReasonCode *int      `json:"reason_code,omitempty"`
	DecidedAt  time.Time `json:"decided_at"`
}

// SessionWithToken is a session with the token the user's flow presents;
// the token is shown only in the answers of create and resume.
type SessionWithToken struct {
	Session
	Token          string    `json:"token"`
	TokenExpiresAt time.Time `json:"token_expires_at"`
}

// CreatedSession is the answer of CreateSession.
type CreatedSession struct {
	SessionWithToken
	// New is true when the session was made (201), false when the ref_id's
	// active session was returned with a fresh token (200).
	New bool `json:"-"`
}

// CreateSessionRequest is the body of POST /v1/sessions.
type CreateSessionRequest struct {
	RefID         string          `json:"ref_id"`
	FlowID        string          `json:"flow_id,omitempty"`
	Person        json.RawMessage `json:"person,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	ForceCreation bool            `json:"force_creation,omitempty"` // cancel the active one and make a new one
}

// UpdateSessionRequest is the body of PATCH /v1/sessions/{id}; a nil field
// is left as it is.
type UpdateSessionRequest struct {
	Metadata json.RawMessage `json:"metadata,omitempty"`
	Tags     *[]string       `json:"tags,omitempty"`
}

// DecideRequest is the body of POST /v1/sessions/{id}/decision.
type DecideRequest struct {
	Status     string `json:"status"` // approved, declined or resubmission_requested
	Reason     string `json:"reason,omitempty"`
	ReasonCode *int   `json:"reason_code,omitempty"`
}

// ListSessionsOptions filters and pages GET /v1/sessions; zero fields are
// not sent.
type ListSessionsOptions struct {
	RefID  string
	Status string
	Limit  int
	Cursor string // NextCursor of the previous page
}

// SessionPage is one page of sessions, newest first.
type SessionPage struct {
	Sessions   []Session `json:"sessions"`
	NextCursor *string   `json:"next_cursor"` // nil on the last page
}

// CreateSession creates a session, or returns the ref_id's active one with
// a fresh token. With WithIdempotencyKey an exact repeat returns the first
// answer, and the call is retried like a GET.
func (c *Client) CreateSession(ctx context.Context, r CreateSessionRequest, opts ...CallOption) (*CreatedSession, error) {
	var s CreatedSession
	resp, err := c.call(ctx, "create session", http.MethodPost, escape("sessions"), nil, r, &s, opts)
	if err != nil {
		return nil, err
	}
	s.New = resp.StatusCode == http.StatusCreated
	return &s, nil
}

// GetSession reads a session.
func (c *Client) GetSession(ctx context.Context, id string, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "get session", http.MethodGet, escape("sessions", id), nil, opts)
}

// ListSessions lists sessions, newest first.
func (c *Client) ListSessions(ctx context.Context, o ListSessionsOptions, opts ...CallOption) (*SessionPage, error) {
	q := url.Values{}
	set(q, "ref_id", o.RefID)
	set(q, "status", o.Status)
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	set(q, "cursor", o.Cursor)
	var p SessionPage
	if _, err := c.call(ctx, "list sessions", http.MethodGet, escape("sessions"), q, nil, &p, opts); err != nil {
		return nil, err
	}
	return &p, nil
}

// UpdateSession replaces a session's metadata and/or tags.
func (c *Client) UpdateSession(ctx context.Context, id string, r UpdateSessionRequest, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "update session", http.MethodPatch, escape("sessions", id), r, opts)
}

// SetStatus reports the user's progress: started, submitted or review.
func (c *Client) SetStatus(ctx context.Context, id, status string, opts ...CallOption) (*Session, error) {
	body := struct {
		Status string `json:"status"`
	}{status}
	return c.session(ctx, "set session status", http.MethodPost, escape("sessions", id, "status"), body, opts)
}

// Decide records the verification decision.
func (c *Client) Decide(ctx context.Context, id string, r DecideRequest, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "decide session", http.MethodPost, escape("sessions", id, "decision"), r, opts)
}

// CancelSession cancels an active session.
func (c *Client) CancelSession(ctx context.Context, id string, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "cancel session", http.MethodPost, escape("sessions", id, "cancel"), nil, opts)
}

// ExpireSession forces a session's expiry now.
func (c *Client) ExpireSession(ctx context.Context, id string, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "expire session", http.MethodPost, escape("sessions", id, "expire"), nil, opts)
}

// ResumeSession brings an expired or abandoned session back, with a new
// token and time limit.
func (c *Client) ResumeSession(ctx context.Context, id string, opts ...CallOption) (*SessionWithToken, error) {
	var s SessionWithToken
	if _, err := c.call(ctx, "resume session", http.MethodPost, escape("sessions", id, "resume"), nil, nil, &s, opts); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeleteSession deletes a session. Deletes are rate limited per API key:
// past the limit the answer is a 429 (IsRateLimited) with a RetryAfter
// that can be an hour, which the client does not wait out.
func (c *Client) DeleteSession(ctx context.Context, id string, opts ...CallOption) error {
	_, err := c.call(ctx, "delete session", http.MethodDelete, escape("sessions", id), nil, nil, nil, opts)
	return err
}

// RedactSession removes a session's personal data for good.
func (c *Client) RedactSession(ctx context.Context, id string, opts ...CallOption) (*Session, error) {
	return c.session(ctx, "redact session", http.MethodPost, escape("sessions", id, "redact"), nil, opts)
}

func (c *Client) session(ctx context.Context, op, method, path string, in any, opts []CallOption) (*Session, error) {
	var s Session
	if _, err := c.call(ctx, op, method, path, nil, in, &s, opts); err != nil {
		return nil, err
	}
	return &s, nil
}

// set sets q's key to v unless v is empty.
func set(q url.Values, key, v string) {
	if v != "" {
		q.Set(key, v)
	}
}
