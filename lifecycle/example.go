package lifecycle

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// TestEventPrefix starts the id of a test event (POST
// /v1/endpoints/{id}/test): a receiver, and the dispatcher, tell them from
// real events by it and by "test":true in the body.
const TestEventPrefix = "evt_test_"

// NewTestEvent returns a test event of type typ at time at: a fresh event
// id with TestEventPrefix and a fresh session id that no session has, so
// that nothing a receiver does with it touches a real session.
func NewTestEvent(typ string, at time.Time) (*Event, error) {
	u := uuid.New()
	sh := keyspace.Shard(u[0] % byte(keyspace.Shards))
	return TestEvent(TestEventPrefix+hex.EncodeToString(u[:]), newSessionID(sh), typ, at)
}

// TestEvent is the test event id of type typ about the example session
// sessionID at time at, as NewTestEvent made it: a retry or a replay puts
// it together again from these.
func TestEvent(id, sessionID, typ string, at time.Time) (*Event, error) {
	if !slices.Contains(EventTypes, typ) {
		return nil, fmt.Errorf("unknown event type %q", typ)
	}
	sh, ok := ShardOfSession(sessionID)
	if !ok || !IsTestEvent(id) {
		return nil, fmt.Errorf("test event %s: malformed ids", id)
	}
	return &Event{
		ID:        id,
		Shard:     sh,
		Type:      typ,
		SessionID: sessionID,
		Status:    exampleStatus(typ),
		Sequence:  1,
		Timestamp: At(at),
	}, nil
}

// IsTestEvent reports whether eventID is a test event's.
func IsTestEvent(eventID string) bool {
	return len(eventID) > len(TestEventPrefix) && eventID[:len(TestEventPrefix)] == TestEventPrefix
}

// exampleStatus is the status a session has after an event of type typ.
func exampleStatus(typ string) Status {
	for _, s := range Statuses {
		if s.EventType() == typ {
			return s
		}
	}
	if typ == EventResumed {
		return StatusStarted
	}
	return StatusApproved // deleted, redacted: after a decision
}

// TestWebhookBody is the webhook body of a test event: the shape of a real
// one, about an example session, with "test":true.
func (e *Event) TestWebhookBody() ([]byte, error) {
	at := e.Timestamp
	data := EventData{
		ID:        e.SessionID,
		RefID:     "test",
		Status:    e.Status,
		CreatedAt: &at,
		UpdatedAt: &at,
		Sequence:  e.Sequence,
	}
	switch {
	case e.Status.Pending():
		exp := At(at.Add(24 * time.Hour))
		data.ExpiresAt = &exp
	case e.Status == StatusApproved || e.Status == StatusDeclined || e.Status == StatusResubmissionRequested:
		data.Decision = &Decision{Status: e.Status, DecidedAt: at}
	}
	if e.Type == EventRedacted {
		data.RedactedAt = &at
	}
	b, err := json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp Time      `json:"timestamp"`
		Data      EventData `json:"data"`
		Test      bool      `json:"test"`
	}{e.Type, e.Timestamp, data, true})
	if err != nil {
		return nil, fmt.Errorf("encode test webhook body: %w", err)
	}
	return b, nil
}
