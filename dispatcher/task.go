package dispatcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// taskType is the Asynq task type of a delivery.
const taskType = "sessiond:webhook"

// taskPayload is what a delivery task carries: the delivery's identity and
// the exact webhook body, so an attempt needs nothing else from Redis.
type taskPayload struct {
	Delivery string `json:"delivery"`
	Session  string `json:"session"`
	Event    string `json:"event"`
	Type     string `json:"type"`
	Endpoint string `json:"endpoint"`
	// Base is the number of attempts made before this task: 0 for a
	// delivery's first task, the attempts so far for a replay.
	Base   int  `json:"base,omitempty"`
	Replay bool `json:"replay,omitempty"`

	Body []byte `json:"-"`
}

// encode returns the payload as Asynq stores it: the JSON fields, a
// newline, then the body byte for byte.
func (p *taskPayload) encode() ([]byte, error) {
	meta, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode delivery task: %w", err)
	}
	out := make([]byte, 0, len(meta)+1+len(p.Body))
	out = append(out, meta...)
	out = append(out, '\n')
	return append(out, p.Body...), nil
}

var errBadPayload = errors.New("malformed delivery task payload")

// decodePayload is the inverse of encode.
func decodePayload(b []byte) (*taskPayload, error) {
	meta, body, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, errBadPayload
	}
	var p taskPayload
	if err := json.Unmarshal(meta, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPayload, err)
	}
	sid, eid, ep, ok := parseDeliveryID(p.Delivery)
	if !ok || sid != p.Session || eid != p.Event || ep != p.Endpoint || p.Base < 0 {
		return nil, errBadPayload
	}
	p.Body = body
	return &p, nil
}
