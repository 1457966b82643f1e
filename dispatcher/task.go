package dispatcher

import (
	"encoding/json"
	"errors"
	"fmt"
)

// taskType is the Asynq task type of a delivery's retry, deferral or
// replay.
const taskType = "sessiond:webhook"

// taskPayload is what a delivery task carries: identifiers only, never the
// webhook body (it is put together from the outbox and the session's event
// details at each attempt, so Asynq's tasks hold no personal data and a
// redaction or purge reaches pending retries too).
type taskPayload struct {
	Delivery string `json:"d"`
	// Cursor is the event's outbox entry id.
	Cursor string `json:"c"`
	// Base is the number of attempts made before this task's first run:
	// its first attempt is Base+1 (webhook-attempt counts across retries
	// and replays).
	Base int `json:"n,omitempty"`
	// Failed is how many attempts of the current run of the retry schedule
	// failed before this task: 1 for the retry of a failed first attempt,
	// 0 for a deferral or a replay (which gets the whole schedule again).
	Failed int  `json:"f,omitempty"`
	Replay bool `json:"r,omitempty"`
	// Test is the event type of a test event's delivery (its event is
	// in no outbox; see TestEndpoint).
	Test string `json:"t,omitempty"`
	// Recovery is the id of the recovery that scheduled this delivery,
	// which counts it done when it ends.
	Recovery string `json:"v,omitempty"`
}

func (p *taskPayload) encode() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode delivery task: %w", err)
	}
	return b, nil
}

var errBadPayload = errors.New("malformed delivery task payload")

// decodePayload is the inverse of encode.
func decodePayload(b []byte) (*taskPayload, error) {
	var p taskPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadPayload, err)
	}
	if _, _, _, ok := parseDeliveryID(p.Delivery); !ok || p.Base < 0 || p.Failed < 0 {
		return nil, errBadPayload
	}
	if _, ok := parseCursor(p.Cursor); !ok {
		return nil, errBadPayload
	}
	return &p, nil
}
