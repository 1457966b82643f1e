package adminapi

import (
	"net/http"

	"github.com/sessiond/sessiond/dispatcher"
)

// deliveryList is the answer of GET /v1/sessions/{id}/deliveries.
type deliveryList struct {
	Deliveries []dispatcher.Delivery `json:"deliveries"`
}

// handleDeliveries lists a session's webhook deliveries. A session without
// deliveries must exist (404 otherwise); a deleted one keeps its
// deliveries until they expire.
func (a *API) handleDeliveries(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ds, err := a.disp.Deliveries(r.Context(), id)
	if err != nil {
		return err
	}
	if len(ds) == 0 {
		if _, err := a.svc.Get(r.Context(), id); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, deliveryList{Deliveries: ds})
	return nil
}

// handleReplay sends a delivery again, also a dead one.
func (a *API) handleReplay(w http.ResponseWriter, r *http.Request) error {
	d, err := a.disp.Replay(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, d)
	return nil
}
