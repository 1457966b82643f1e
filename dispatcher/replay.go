package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"github.com/sessiond/sessiond/lifecycle"
)

// Deliveries returns a session's deliveries with their attempts, oldest
// first; an unknown session has none.
func (d *Dispatcher) Deliveries(ctx context.Context, sessionID string) ([]Delivery, error) {
	if !idPart(sessionID) {
		return []Delivery{}, nil
	}
	return d.store.list(ctx, sessionID)
}

// ErrDeliveryNotFound is returned by Replay for an unknown or expired delivery.
var ErrDeliveryNotFound = errors.New("delivery not found")

// ErrEndpointGone is returned by Replay when the delivery's endpoint is no
// longer configured.
var ErrEndpointGone = errors.New("endpoint no longer configured")

// Replay enqueues a fresh attempt of a delivery, whatever its status, with
// a full retry schedule; its webhook-id is the event id as before, its
// webhook-attempt follows the last one. A replay to an endpoint disabled
// by a 410 is sent, and a 2xx answer enables the endpoint again. It returns
// the delivery, now pending.
func (d *Dispatcher) Replay(ctx context.Context, id string) (*Delivery, error) {
	sid, _, epID, ok := parseDeliveryID(id)
	if !ok {
		return nil, ErrDeliveryNotFound
	}
	rec, err := d.store.get(ctx, sid, id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, ErrDeliveryNotFound
	}
	if d.eps[epID] == nil {
		return nil, fmt.Errorf("replay %s: %w", id, ErrEndpointGone)
	}
	// The body is the outbox's: the record expires with the event, so
	// the event is still there.
	msgs, err := d.rdb.XRangeN(ctx, lifecycle.OutboxKey, rec["cursor"], rec["cursor"], 1).Result()
	if err != nil {
		return nil, fmt.Errorf("replay %s: read event: %w", id, err)
	}
	if len(msgs) == 0 {
		return nil, ErrDeliveryNotFound
	}
	ev, err := lifecycle.ParseEvent(msgs[0])
	if err != nil || ev.ID != rec["event_id"] {
		return nil, fmt.Errorf("replay %s: outbox entry %s is not its event", id, rec["cursor"])
	}
	n, previous, err := d.store.replay(ctx, sid, id)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrDeliveryNotFound
	}
	err = d.enqueue(ctx, enqueueJob{taskID: replayTaskID(id, n), payload: &taskPayload{
		Delivery: id, Session: sid, Event: ev.ID, Type: ev.Type, Endpoint: epID,
		Base: rec.lastAttempt(), Replay: true, Body: ev.Body,
	}})
	if err != nil {
		if serr := d.store.setStatus(context.WithoutCancel(ctx), sid, id, previous); serr != nil {
			d.log.Warn("restore delivery status", "delivery_id", id, "err", serr.Error())
		}
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	d.log.Info("webhook delivery replayed", "delivery_id", id, "endpoint_id", epID, "replay", n)
	dl, err := d.store.delivery(ctx, sid, id)
	if err != nil {
		return nil, err
	}
	if dl == nil {
		return nil, ErrDeliveryNotFound
	}
	return dl, nil
}
