package adminapi

import (
	"net/http"
	"time"

	"github.com/sessiond/sessiond/dispatcher"
)

// endpointList is the answer of GET /v1/endpoints.
type endpointList struct {
	Endpoints []dispatcher.EndpointInfo `json:"endpoints"`
}

func (a *API) handleEndpoints(w http.ResponseWriter, r *http.Request) error {
	eps, err := a.disp.Endpoints(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, endpointList{Endpoints: eps})
	return nil
}

func (a *API) handleEndpoint(w http.ResponseWriter, r *http.Request) error {
	ep, err := a.disp.Endpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ep)
	return nil
}

func (a *API) handleCreateEndpoint(w http.ResponseWriter, r *http.Request) error {
	var req dispatcher.EndpointSpec
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ep, err := a.disp.CreateEndpoint(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, ep)
	return nil
}

func (a *API) handleUpdateEndpoint(w http.ResponseWriter, r *http.Request) error {
	var req dispatcher.EndpointPatch
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ep, err := a.disp.UpdateEndpoint(r.Context(), r.PathValue("id"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ep)
	return nil
}

func (a *API) handleDeleteEndpoint(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := a.disp.DeleteEndpoint(r.Context(), id); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success", "id": id})
	return nil
}

// decodeOptionalJSON decodes a body that a route may leave out: an empty
// body leaves v as it is.
func decodeOptionalJSON(r *http.Request, v any) error {
	if len(bodyOf(r)) == 0 {
		return nil
	}
	return decodeJSON(r, v)
}

func (a *API) handleRotateSecret(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Overlap string `json:"overlap"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	overlap, err := dispatcher.ParseOverlap(req.Overlap) // "" is the default, 24h
	if err != nil {
		return err
	}
	ep, err := a.disp.RotateEndpointSecret(r.Context(), r.PathValue("id"), overlap)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ep)
	return nil
}

func (a *API) handleTestEndpoint(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Type string `json:"type"`
	}
	if err := decodeOptionalJSON(r, &req); err != nil {
		return err
	}
	d, err := a.disp.TestEndpoint(r.Context(), r.PathValue("id"), req.Type)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, d)
	return nil
}

func (a *API) handleRecover(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Since string `json:"since"`
		Until string `json:"until"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	since, err := time.Parse(time.RFC3339Nano, req.Since)
	if err != nil {
		return badRequest("since: want an RFC 3339 time")
	}
	var until time.Time
	if req.Until != "" {
		if until, err = time.Parse(time.RFC3339Nano, req.Until); err != nil {
			return badRequest("until: want an RFC 3339 time")
		}
	}
	rec, err := a.disp.Recover(r.Context(), r.PathValue("id"), since, until)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, rec)
	return nil
}

func (a *API) handleRecovery(w http.ResponseWriter, r *http.Request) error {
	rec, err := a.disp.Recovery(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}
