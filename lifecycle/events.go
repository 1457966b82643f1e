package lifecycle

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
)

// Events are kept in two parts. The outbox stream of the session's shard
// holds each event reduced to what may outlive the session: its id, type,
// session id, status, sequence and time. The session's event details hash
// holds the rest of each event's data (the ref_id, tags, decision, ...),
// so that a redaction can rewrite it and a purge remove it; a webhook body
// or a feed entry is the two put together.

// EventPurged is the outbox entry a purge leaves: it tells the
// dispatcher to drop the session's deliveries. It is not a webhook event
// and the events feed leaves it out.
const EventPurged = "session.purged"

// Event is one outbox entry: a change of a session.
type Event struct {
	// ID is stable for the event's life; it is the webhook-id.
	ID string
	// Cursor is the entry's id in its shard's stream.
	Cursor    string
	Shard     keyspace.Shard
	Type      string
	SessionID string
	Status    Status
	Sequence  int64
	Timestamp Time
}

// Stream field names of an outbox entry.
const (
	fieldID        = "i"
	fieldType      = "t"
	fieldSessionID = "s"
	fieldStatus    = "st"
	fieldSequence  = "q"
	fieldTimestamp = "ts"
)

// detailsConstant is the field of the event details hash that holds what
// never changes in a session's events.
const detailsConstant = "_"

func newEvent(typ string, r *record, now time.Time) *Event {
	return &Event{
		ID:        newEventID(),
		Type:      typ,
		SessionID: r.ID,
		Status:    r.Status,
		Sequence:  r.Seq,
		Timestamp: At(now),
	}
}

func newEventID() string {
	u := uuid.New()
	return "evt_" + hex.EncodeToString(u[:])
}

// streamArgs are the arguments of the event's XADD after the key.
func (e *Event) streamArgs(minID string) []any {
	return []any{"MINID", "~", minID, "*",
		fieldID, e.ID,
		fieldType, e.Type,
		fieldSessionID, e.SessionID,
		fieldStatus, string(e.Status),
		fieldSequence, e.Sequence,
		fieldTimestamp, e.Timestamp.UnixMilli(),
	}
}

// ParseEvent decodes an outbox entry of shard sh.
func ParseEvent(sh keyspace.Shard, m redis.XMessage) (*Event, error) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	ev := &Event{
		ID:        str(fieldID),
		Cursor:    m.ID,
		Shard:     sh,
		Type:      str(fieldType),
		SessionID: str(fieldSessionID),
		Status:    Status(str(fieldStatus)),
	}
	seq, err1 := strconv.ParseInt(str(fieldSequence), 10, 64)
	ms, err2 := strconv.ParseInt(str(fieldTimestamp), 10, 64)
	if ev.ID == "" || ev.Type == "" || ev.SessionID == "" || errors.Join(err1, err2) != nil {
		return nil, fmt.Errorf("outbox entry %s is malformed", m.ID)
	}
	ev.Sequence = seq
	ev.Timestamp = At(time.UnixMilli(ms))
	return ev, nil
}

// The details hash keeps short names and unix milliseconds, so that the
// usual values (a created session's, a decision without a reason) stay
// within Redis's compact hash encoding (hash-max-listpack-value, 64 bytes
// by default) and the hash costs a third of what a long form would.

// details is the part of an event's data that the outbox leaves out, as
// the details hash keeps it.
type details struct {
	RefID      string          `json:"r,omitempty"`
	FlowID     string          `json:"f,omitempty"`
	CreatedAt  int64           `json:"c,omitempty"`
	UpdatedAt  int64           `json:"u,omitempty"`
	ExpiresAt  int64           `json:"x,omitempty"`
	Tags       []string        `json:"t,omitempty"`
	Decision   *storedDecision `json:"d,omitempty"`
	RedactedAt int64           `json:"rd,omitempty"`
}

// storedDecision is a Decision in the details hash.
type storedDecision struct {
	Status     Status `json:"s"`
	Reason     string `json:"r,omitempty"`
	ReasonCode *int   `json:"c,omitempty"`
	DecidedAt  int64  `json:"a"`
}

// unixMS is t in unix milliseconds, 0 for nil.
func unixMS(t *Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixMilli()
}

// fromMS is the Time of unix milliseconds ms, nil for 0.
func fromMS(ms int64) *Time {
	if ms == 0 {
		return nil
	}
	return At(time.UnixMilli(ms)).Ptr()
}

// constantDetails is what the events of session r share.
func constantDetails(r *record) string {
	b, _ := json.Marshal(details{RefID: r.RefID, FlowID: r.FlowID, CreatedAt: r.CreatedAt.UnixMilli()})
	return string(b)
}

// eventDetails is what an event of session r (as it is now) keeps in the
// details hash.
func eventDetails(r *record) (string, error) {
	d := details{
		UpdatedAt:  r.UpdatedAt.UnixMilli(),
		ExpiresAt:  unixMS(r.ExpiresAt),
		Tags:       r.Tags,
		RedactedAt: unixMS(r.RedactedAt),
	}
	if dec := r.Decision; dec != nil {
		d.Decision = &storedDecision{Status: dec.Status, Reason: dec.Reason, ReasonCode: dec.ReasonCode, DecidedAt: dec.DecidedAt.UnixMilli()}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encode event details: %w", err)
	}
	return string(b), nil
}

// redactDetails returns an event's details without what a redaction
// removes (tags, the decision's reason).
func redactDetails(raw string, redactedAt Time) (string, error) {
	var d details
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		return "", fmt.Errorf("decode event details: %w", err)
	}
	d.Tags = nil
	if d.Decision != nil {
		d.Decision.Reason = ""
	}
	if d.RedactedAt == 0 {
		d.RedactedAt = redactedAt.UnixMilli()
	}
	b, err := json.Marshal(d)
	return string(b), err
}

// EventData is the data of a webhook or a feed entry: the session (never
// its token, person or metadata) as the event left it, and the event's
// sequence number within the session.
type EventData struct {
	ID         string    `json:"id"`
	RefID      string    `json:"ref_id,omitempty"`
	FlowID     string    `json:"flow_id,omitempty"`
	Status     Status    `json:"status"`
	CreatedAt  *Time     `json:"created_at,omitempty"`
	UpdatedAt  *Time     `json:"updated_at,omitempty"`
	ExpiresAt  *Time     `json:"expires_at,omitempty"`
	Tags       *[]string `json:"tags,omitempty"`
	Decision   *Decision `json:"decision,omitempty"`
	RedactedAt *Time     `json:"redacted_at,omitempty"`
	Sequence   int64     `json:"sequence"`
}

// Data puts an event's data together from its outbox entry and, from the
// session's event details hash, the constant part and the event's own
// ("" when gone). Without them (the session was purged) the data is
// reduced to the session id, status and sequence; full is false then.
func (e *Event) Data(constant, own string) (data EventData, full bool, err error) {
	data = EventData{ID: e.SessionID, Status: e.Status, Sequence: e.Sequence}
	if constant == "" || own == "" {
		return data, false, nil
	}
	var c, d details
	if err := json.Unmarshal([]byte(constant), &c); err != nil {
		return data, false, fmt.Errorf("event %s: decode details: %w", e.ID, err)
	}
	if err := json.Unmarshal([]byte(own), &d); err != nil {
		return data, false, fmt.Errorf("event %s: decode details: %w", e.ID, err)
	}
	if d.Tags == nil {
		d.Tags = []string{}
	}
	data.RefID, data.FlowID, data.CreatedAt = c.RefID, c.FlowID, fromMS(c.CreatedAt)
	data.UpdatedAt, data.ExpiresAt, data.Tags, data.RedactedAt = fromMS(d.UpdatedAt), fromMS(d.ExpiresAt), &d.Tags, fromMS(d.RedactedAt)
	if dec := d.Decision; dec != nil {
		data.Decision = &Decision{Status: dec.Status, Reason: dec.Reason, ReasonCode: dec.ReasonCode, DecidedAt: At(time.UnixMilli(dec.DecidedAt))}
	}
	return data, true, nil
}

// WebhookBody is the body of an event's webhook:
// {"type", "timestamp", "data"}.
func (e *Event) WebhookBody(data EventData) ([]byte, error) {
	b, err := json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp Time      `json:"timestamp"`
		Data      EventData `json:"data"`
	}{e.Type, e.Timestamp, data})
	if err != nil {
		return nil, fmt.Errorf("encode webhook body: %w", err)
	}
	return b, nil
}
