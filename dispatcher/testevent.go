package dispatcher

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// DefaultTestEvent is the type of a test event when the request names none.
const DefaultTestEvent = "session.approved"

// TestEndpoint sends endpoint id a signed example event of type typ ("" for
// DefaultTestEvent) with "test":true in its body, and returns its
// delivery, pending. The event is about an example session that does not
// exist and is in no feed; its delivery takes the normal path (Asynq task,
// retries, record, metrics) and can be replayed like any other.
func (d *Dispatcher) TestEndpoint(ctx context.Context, id, typ string) (*Delivery, error) {
	if typ == "" {
		typ = DefaultTestEvent
	}
	if !slices.Contains(lifecycle.EventTypes, typ) {
		return nil, invalidf("type: want one of %s", strings.Join(lifecycle.EventTypes, ", "))
	}
	ep, err := d.enabledEndpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	ev, err := lifecycle.NewTestEvent(typ, d.now())
	if err != nil {
		return nil, err
	}
	cursor := testCursor(ev.Timestamp.Time)
	did := deliveryID(ev.SessionID, ev.ID, id)
	w := &write{shard: ev.Shard, sessionID: ev.SessionID, eventID: ev.ID, endpointID: id, cursor: cursor,
		eventType: typ, status: StatusPending, test: true}
	if err := d.store.record(ctx, w); err != nil {
		return nil, err
	}
	p := &taskPayload{Delivery: did, Cursor: cursor, Test: typ}
	if err := d.enqueue(ctx, ev, did, p, 0, d.schedule.retries()+1); err != nil {
		return nil, fmt.Errorf("test endpoint %s: %w", id, err)
	}
	d.log.Info("webhook test event queued", "delivery_id", did, "endpoint_id", id, "event_type", typ)
	dl, _, found, err := d.store.get(ctx, ev.Shard, ev.SessionID, ev.ID, id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrDeliveryNotFound
	}
	dl.URL = ep.shownURL
	return &dl, nil
}

// testCursor is where a test event's record keeps its time: in the form of
// an outbox entry id, at, unix ms.
func testCursor(at time.Time) string { return strconv.FormatInt(at.UnixMilli(), 10) + "-0" }

// deliveryEvent reads a delivery's event and puts its webhook body
// together. A test event, in no outbox, is made again from its ids, its
// type and the time its cursor keeps.
func (d *Dispatcher) deliveryEvent(ctx context.Context, sh keyspace.Shard, sessionID, eventID, testType, cursor string) (*lifecycle.Event, []byte, error) {
	if !lifecycle.IsTestEvent(eventID) {
		return d.loadEvent(ctx, sh, cursor, eventID)
	}
	ms, _, _ := strings.Cut(cursor, "-")
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return nil, nil, fmt.Errorf("test event %s: cursor %q", eventID, cursor)
	}
	ev, err := lifecycle.TestEvent(eventID, sessionID, testType, time.UnixMilli(n))
	if err != nil {
		return nil, nil, err
	}
	body, err := ev.TestWebhookBody()
	return ev, body, err
}

// enabledEndpoint returns endpoint id as Redis holds it now, for a test or
// a recovery, which an unknown or disabled endpoint cannot take.
func (d *Dispatcher) enabledEndpoint(ctx context.Context, id string) (*endpoint, error) {
	if err := d.reloadEndpoints(ctx, false); err != nil {
		return nil, err
	}
	ep := d.endpoints().endpoint(id)
	switch {
	case ep == nil:
		return nil, ErrEndpointNotFound
	case ep.disabledNow():
		return nil, ErrEndpointDisabled
	}
	return ep, nil
}
