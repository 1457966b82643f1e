package dispatcher

import (
	"context"
	"errors"
	"fmt"

	"github.com/sessiond/sessiond/lifecycle"
)

// ErrDeliveryNotFound is returned by Replay for an unknown or expired
// delivery, or one of a purged session.
var ErrDeliveryNotFound = errors.New("delivery not found")

// ErrEndpointGone is returned by Replay when the delivery's endpoint is no
// longer configured.
var ErrEndpointGone = errors.New("endpoint no longer configured")

// Deliveries returns a session's deliveries with their attempts, oldest
// first; an unknown session has none.
func (d *Dispatcher) Deliveries(ctx context.Context, sessionID string) ([]Delivery, error) {
	sh, ok := lifecycle.ShardOfSession(sessionID)
	if !ok {
		return []Delivery{}, nil
	}
	ds, _, err := d.store.list(ctx, sh, sessionID)
	if err != nil {
		return nil, err
	}
	for i := range ds {
		ds[i].URL = d.shownURL(ds[i].EndpointID)
	}
	return ds, nil
}

// shownURL is an endpoint's URL without its password, "" when it is gone.
func (d *Dispatcher) shownURL(id string) string {
	if ep := d.endpoints().endpoint(id); ep != nil {
		return ep.shownURL
	}
	return ""
}

// Replay enqueues a fresh attempt of a delivery, whatever its status, with
// a full retry schedule; its webhook-id is the event id as before, its
// webhook-attempt follows the last one. A replay to an endpoint disabled
// by a 410 is sent, and a 2xx answer enables the endpoint again. It returns
// the delivery, now pending. A purged session's deliveries are gone:
// ErrDeliveryNotFound.
func (d *Dispatcher) Replay(ctx context.Context, id string) (*Delivery, error) {
	sid, eid, epID, ok := parseDeliveryID(id)
	if !ok {
		return nil, ErrDeliveryNotFound
	}
	sh, ok := lifecycle.ShardOfSession(sid)
	if !ok {
		return nil, ErrDeliveryNotFound
	}
	dl, sum, found, err := d.store.get(ctx, sh, sid, eid, epID)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrDeliveryNotFound
	}
	if d.endpoints().endpoint(epID) == nil {
		return nil, fmt.Errorf("replay %s: %w", id, ErrEndpointGone)
	}
	// The event must still be there: a purged session's is reduced, and
	// its deliveries are not sent.
	test := lifecycle.IsTestEvent(eid)
	testType := ""
	if test {
		testType = sum.Type
	}
	ev, _, err := d.deliveryEvent(ctx, sh, sid, eid, testType, sum.Cursor)
	if errors.Is(err, errEventGone) {
		return nil, ErrDeliveryNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	n, previous, _, err := d.store.replay(ctx, sh, sid, eid, epID)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrDeliveryNotFound
	}
	err = d.enqueue(ctx, ev, replayTaskID(id, n), &taskPayload{Delivery: id, Cursor: sum.Cursor, Base: dl.lastAttempt(), Replay: true, Test: testType},
		0, d.schedule.retries()+1)
	if err != nil {
		w := &write{shard: sh, sessionID: sid, eventID: eid, endpointID: epID, cursor: sum.Cursor, eventType: sum.Type, status: previous, err: sum.Error, test: test}
		if serr := d.store.record(context.WithoutCancel(ctx), w); serr != nil {
			d.log.Warn("restore delivery status", "delivery_id", id, "err", serr.Error())
		}
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	d.log.Info("webhook delivery replayed", "delivery_id", id, "endpoint_id", epID, "replay", n)
	dl, _, found, err = d.store.get(ctx, sh, sid, eid, epID)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrDeliveryNotFound
	}
	dl.URL = d.shownURL(epID)
	return &dl, nil
}
