package lifecycle

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is a session's place in the state machine.
type Status string

// The statuses of the session model (see DESIGN.md, "Session model").
const (
	StatusCreated               Status = "created"
	StatusStarted               Status = "started"
	StatusSubmitted             Status = "submitted"
	StatusReview                Status = "review"
	StatusResubmissionRequested Status = "resubmission_requested"
	StatusApproved              Status = "approved"
	StatusDeclined              Status = "declined"
	StatusExpired               Status = "expired"
	StatusAbandoned             Status = "abandoned"
	StatusCanceled              Status = "canceled"
)

// Statuses lists every status, in the order of the model's table.
var Statuses = []Status{
	StatusCreated, StatusStarted, StatusSubmitted, StatusReview,
	StatusResubmissionRequested, StatusApproved, StatusDeclined,
	StatusExpired, StatusAbandoned, StatusCanceled,
}

// Valid reports whether s is one of the model's statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Active reports whether a session in s is still in progress: a create for
// its ref_id returns it instead of making a new one.
func (s Status) Active() bool {
	switch s {
	case StatusCreated, StatusStarted, StatusSubmitted, StatusReview, StatusResubmissionRequested:
		return true
	}
	return false
}

// Pending reports whether a session in s waits on the user and so has a
// time limit (expires_at).
func (s Status) Pending() bool {
	switch s {
	case StatusCreated, StatusStarted, StatusResubmissionRequested:
		return true
	}
	return false
}

// Terminal reports whether s is final (retention runs from it).
func (s Status) Terminal() bool { return s.Valid() && !s.Active() }

// EventType is the webhook event that announces a session entering s.
func (s Status) EventType() string { return "session." + string(s) }

// Event types that do not name a status.
const (
	EventResumed  = "session.resumed"
	EventDeleted  = "session.deleted"
	EventRedacted = "session.redacted"
)

// EventTypes lists every event type sessiond emits.
var EventTypes = []string{
	"session.created", "session.started", "session.submitted", "session.review",
	"session.approved", "session.declined", "session.resubmission_requested",
	"session.expired", "session.abandoned", "session.canceled",
	EventResumed, EventDeleted, EventRedacted,
}

// Session is the public session object of the contract. It never holds the
// token.
type Session struct {
	ID         string          `json:"id"`
	RefID      string          `json:"ref_id"`
	FlowID     string          `json:"flow_id,omitempty"`
	Status     Status          `json:"status"`
	CreatedAt  Time            `json:"created_at"`
	UpdatedAt  Time            `json:"updated_at"`
	ExpiresAt  *Time           `json:"expires_at,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Tags       []string        `json:"tags"`
	Person     json.RawMessage `json:"person,omitempty"`
	Decision   *Decision       `json:"decision,omitempty"`
	RedactedAt *Time           `json:"redacted_at,omitempty"`
}

// Decision is the verification outcome recorded on a session.
type Decision struct {
	Status     Status `json:"status"`
	Reason     string `json:"reason,omitempty"`
	ReasonCode *int   `json:"reason_code,omitempty"`
	DecidedAt  Time   `json:"decided_at"`
}

// TimeLayout is the contract's time format: RFC 3339, milliseconds, UTC.
const TimeLayout = "2006-01-02T15:04:05.000Z07:00"

// Time is a UTC instant that marshals in the contract's format.
type Time struct{ time.Time }

// At makes a Time from t, truncated to milliseconds.
func At(t time.Time) Time { return Time{t.UTC().Truncate(time.Millisecond)} }

// deadline makes a Time from the end of a time limit, rounded up to the
// millisecond, so that a limit is never shorter than its duration.
func deadline(t time.Time) Time { return At(t.Add(time.Millisecond - 1)) }

// Ptr returns a pointer to a copy of t.
func (t Time) Ptr() *Time { return &t }

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(TimeLayout) + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	*t = At(v)
	return nil
}

// Created is a create's result: the session and its fresh token.
type Created struct {
	Session
	Token          string `json:"token"`
	TokenExpiresAt Time   `json:"token_expires_at"`
	// New is true when the create made a session (201), false when it
	// returned the active one for the ref_id (200).
	New bool `json:"-"`
}
