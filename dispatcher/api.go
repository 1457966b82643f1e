package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/sessiond/sessiond/lifecycle"
)

// RegisterRoutes adds the delivery routes to the admin API:
//
//	GET  /v1/sessions/{id}/deliveries  a session's deliveries with their attempts
//	POST /v1/deliveries/{id}/replay    send a delivery again, also a dead one
//
// svc, when not nil, tells an unknown session (404) from a session without
// deliveries (an empty list).
func (d *Dispatcher) RegisterRoutes(api *lifecycle.API, svc *lifecycle.Service) {
	api.Handle("GET /v1/sessions/{id}/deliveries", d.handleList(svc))
	api.Handle("POST /v1/deliveries/{id}/replay", d.handleReplay())
}

// DeliveryList is the answer of GET /v1/sessions/{id}/deliveries.
type DeliveryList struct {
	Deliveries []Delivery `json:"deliveries"`
}

func (d *Dispatcher) handleList(svc *lifecycle.Service) lifecycle.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if !idPart(id) {
			return lifecycle.ErrNotFound
		}
		ds, err := d.store.list(r.Context(), id)
		if err != nil {
			return err
		}
		if len(ds) == 0 && svc != nil {
			// A deleted session keeps its deliveries until they expire; a
			// session that never had any must exist.
			if _, err := svc.Get(r.Context(), id); err != nil {
				return err
			}
		}
		lifecycle.WriteJSON(w, http.StatusOK, DeliveryList{Deliveries: ds})
		return nil
	}
}

var errDeliveryNotFound = &lifecycle.Error{Status: http.StatusNotFound, Code: lifecycle.CodeNotFound, Message: "Delivery not found."}

func (d *Dispatcher) handleReplay() lifecycle.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		dl, err := d.Replay(r.Context(), r.PathValue("id"))
		switch {
		case errors.Is(err, ErrDeliveryNotFound):
			return errDeliveryNotFound
		case errors.Is(err, errEndpointGone):
			return &lifecycle.Error{Status: http.StatusBadRequest, Code: lifecycle.CodeInvalidRequest,
				Message: "The delivery's endpoint is no longer configured.", Err: err}
		case err != nil:
			return err
		}
		lifecycle.WriteJSON(w, http.StatusAccepted, dl)
		return nil
	}
}

// ErrDeliveryNotFound is returned by Replay for an unknown or expired delivery.
var ErrDeliveryNotFound = errors.New("delivery not found")

var errEndpointGone = errors.New("endpoint no longer configured")

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
		return nil, fmt.Errorf("replay %s: %w", id, errEndpointGone)
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
