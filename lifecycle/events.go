package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Event is one entry of the outbox: a change of a session, as webhooks and
// the events feed carry it.
type Event struct {
	// ID is stable for the event's life; it is the webhook-id.
	ID string `json:"id"`
	// Cursor is the event's position in the outbox (its stream id).
	Cursor    string `json:"cursor,omitempty"`
	Type      string `json:"type"`
	Timestamp Time   `json:"timestamp"`
	SessionID string `json:"session_id"`
	Sequence  int64  `json:"sequence"`
	// Body is the webhook payload: {"type", "timestamp", "data"}.
	Body json.RawMessage `json:"-"`
}

// EventData is the data of an event: the session without its personal
// fields, and the event's sequence number within the session. Personal data
// never enters the outbox, so a redaction leaves none behind in it.
type EventData struct {
	Session
	Sequence int64 `json:"sequence"`
}

type eventBody struct {
	Type      string    `json:"type"`
	Timestamp Time      `json:"timestamp"`
	Data      EventData `json:"data"`
}

func newEvent(typ string, r *record, now time.Time) (*Event, error) {
	data := EventData{Session: r.Session, Sequence: r.Seq}
	data.Person, data.Metadata = nil, nil
	data.Tags = append([]string{}, r.Tags...)
	ev := &Event{
		ID:        "evt_" + hexUUID(),
		Type:      typ,
		Timestamp: At(now),
		SessionID: r.ID,
		Sequence:  r.Seq,
	}
	body, err := json.Marshal(eventBody{Type: typ, Timestamp: ev.Timestamp, Data: data})
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", typ, err)
	}
	ev.Body = body
	return ev, nil
}

func hexUUID() string {
	u := uuid.New()
	return fmt.Sprintf("%x", u[:])
}

// Stream field names of an outbox entry.
const (
	fieldID        = "id"
	fieldType      = "type"
	fieldSessionID = "session_id"
	fieldSequence  = "sequence"
	fieldTimestamp = "timestamp"
	fieldBody      = "body"
)

func (e *Event) streamValues() []any {
	return []any{
		fieldID, e.ID,
		fieldType, e.Type,
		fieldSessionID, e.SessionID,
		fieldSequence, strconv.FormatInt(e.Sequence, 10),
		fieldTimestamp, e.Timestamp.UnixMilli(),
		fieldBody, string(e.Body),
	}
}

// ParseEvent decodes an outbox stream entry.
func ParseEvent(m redis.XMessage) (*Event, error) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	ev := &Event{
		ID:        str(fieldID),
		Cursor:    m.ID,
		Type:      str(fieldType),
		SessionID: str(fieldSessionID),
		Body:      json.RawMessage(str(fieldBody)),
	}
	seq, err1 := strconv.ParseInt(str(fieldSequence), 10, 64)
	ms, err2 := strconv.ParseInt(str(fieldTimestamp), 10, 64)
	if ev.ID == "" || ev.Type == "" || len(ev.Body) == 0 || errors.Join(err1, err2) != nil {
		return nil, fmt.Errorf("outbox entry %s is malformed", m.ID)
	}
	ev.Sequence = seq
	ev.Timestamp = At(time.UnixMilli(ms))
	return ev, nil
}

// FeedEvent is an event as the events feed lists it.
type FeedEvent struct {
	ID        string          `json:"id"`
	Cursor    string          `json:"cursor"`
	Type      string          `json:"type"`
	Timestamp Time            `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// Feed is one page of the events feed.
type Feed struct {
	Events     []FeedEvent `json:"events"`
	NextCursor string      `json:"next_cursor"`
}

// validCursor reports whether after is a stream id Redis accepts: one or
// two unsigned 64-bit decimal numbers, joined by "-".
func validCursor(after string) bool {
	ms, seq, two := strings.Cut(after, "-")
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if two {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// Events lists up to limit events (100 when limit <= 0) after the cursor
// (exclusive; "" starts from the oldest kept), oldest first. NextCursor is
// where the next call continues; it equals after when there is nothing new.
func (s *Service) Events(ctx context.Context, after string, limit int) (*Feed, error) {
	if limit <= 0 {
		limit = 100
	}
	start := "-"
	if after != "" {
		if !validCursor(after) {
			return nil, invalid("cursor", "must be an event cursor from a previous page")
		}
		start = "(" + after
	}
	msgs, err := s.rdb.XRangeN(ctx, OutboxKey, start, "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	feed := &Feed{Events: make([]FeedEvent, 0, len(msgs)), NextCursor: after}
	for _, m := range msgs {
		ev, err := ParseEvent(m)
		if err != nil {
			return nil, err
		}
		var body struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(ev.Body, &body); err != nil {
			return nil, fmt.Errorf("outbox entry %s: %w", m.ID, err)
		}
		feed.Events = append(feed.Events, FeedEvent{ID: ev.ID, Cursor: m.ID, Type: ev.Type, Timestamp: ev.Timestamp, Data: body.Data})
		feed.NextCursor = m.ID
	}
	return feed, nil
}
