package lifecycle

import (
	"context"
	"net/http"
	"strconv"
)

func (a *API) handleCreate(w http.ResponseWriter, r *http.Request) error {
	return a.idempotent(w, r, func() (int, any, error) {
		var req CreateRequest
		if err := DecodeJSON(r, &req); err != nil {
			return 0, nil, err
		}
		c, err := a.svc.Create(r.Context(), req)
		if err != nil {
			return 0, nil, err
		}
		if c.New {
			return http.StatusCreated, c, nil
		}
		return http.StatusOK, c, nil
	})
}

func (a *API) handleGet(w http.ResponseWriter, r *http.Request) error {
	s, err := a.svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, s)
	return nil
}

func (a *API) handleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit")
	if err != nil {
		return err
	}
	page, err := a.svc.List(r.Context(), ListQuery{
		RefID:  q.Get("ref_id"),
		Status: Status(q.Get("status")),
		Limit:  limit,
		Cursor: q.Get("cursor"),
	})
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, page)
	return nil
}

func (a *API) handleUpdate(w http.ResponseWriter, r *http.Request) error {
	var req UpdateRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Update(ctx, id, req) })
}

func (a *API) handleProgress(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Status Status `json:"status"`
	}
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Progress(ctx, id, req.Status) })
}

func (a *API) handleDecision(w http.ResponseWriter, r *http.Request) error {
	var req DecisionRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Decide(ctx, id, req) })
}

func (a *API) handleCancel(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Cancel(ctx, id) })
}

func (a *API) handleExpire(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Expire(ctx, id) })
}

func (a *API) handleResume(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Resume(ctx, id) })
}

func (a *API) handleRedact(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string) (any, error) { return a.svc.Redact(ctx, id) })
}

func (a *API) handleDelete(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := a.allow(r.Context(), "delete", Client(r), a.cfg.DeleteLimit); err != nil {
		return err
	}
	if err := a.svc.Delete(r.Context(), id); err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "success", "id": id})
	return nil
}

func (a *API) handleEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit")
	if err != nil {
		return err
	}
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return invalid("limit", "must be between 1 and 1000")
	}
	feed, err := a.svc.Events(r.Context(), q.Get("after"), limit)
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, feed)
	return nil
}

// respond runs op on the request's {id} and writes its result as 200.
func (a *API) respond(w http.ResponseWriter, r *http.Request, op func(ctx context.Context, id string) (any, error)) error {
	v, err := op(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	WriteJSON(w, http.StatusOK, v)
	return nil
}

func queryInt(v, field string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalid(field, "must be an integer")
	}
	return n, nil
}
