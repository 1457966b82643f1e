package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/sessiond/sessiond/lifecycle"
)

// decodeJSON decodes the authenticated body, which must be one JSON object
// whose fields are all known (checkJSON has checked its shape).
func decodeJSON(r *http.Request, v any) error {
	body := bodyOf(r)
	if len(body) == 0 {
		return badRequest("body: a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("body: a JSON object is required")
		}
		return badRequest("body: malformed JSON: " + err.Error())
	}
	return nil
}

func (a *API) handleCreate(w http.ResponseWriter, r *http.Request) error {
	var req lifecycle.CreateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return a.idempotent(w, r, func(link string) (result, error) {
		req.Link = link
		var opts []lifecycle.Option
		if link == "" { // with a link, idempotent spent the nonce
			opts = a.once(r, lifecycle.ShardOfRef(req.RefID))
		}
		c, err := a.svc.Create(r.Context(), req, opts...)
		if err != nil {
			return result{}, err
		}
		status := http.StatusOK
		if c.New {
			status = http.StatusCreated
		}
		return result{status: status, value: c, sessionID: c.ID}, nil
	})
}

func (a *API) handleGet(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Get(ctx, id, o...)
	})
}

func (a *API) handleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit")
	if err != nil {
		return err
	}
	page, err := a.svc.List(r.Context(), lifecycle.ListQuery{
		RefID:  q.Get("ref_id"),
		Status: lifecycle.Status(q.Get("status")),
		Limit:  limit,
		Cursor: q.Get("cursor"),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (a *API) handleUpdate(w http.ResponseWriter, r *http.Request) error {
	var req lifecycle.UpdateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Update(ctx, id, req, o...)
	})
}

func (a *API) handleProgress(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Status lifecycle.Status `json:"status"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Progress(ctx, id, req.Status, o...)
	})
}

func (a *API) handleDecision(w http.ResponseWriter, r *http.Request) error {
	var req lifecycle.DecisionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Decide(ctx, id, req, o...)
	})
}

func (a *API) handleCancel(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Cancel(ctx, id, o...)
	})
}

func (a *API) handleExpire(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Expire(ctx, id, o...)
	})
}

func (a *API) handleResume(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Resume(ctx, id, o...)
	})
}

func (a *API) handleRedact(w http.ResponseWriter, r *http.Request) error {
	return a.respond(w, r, func(ctx context.Context, id string, o []lifecycle.Option) (any, error) {
		return a.svc.Redact(ctx, id, o...)
	})
}

// handleDelete deletes a session. Only a delete that succeeds uses up the
// client's delete quota.
func (a *API) handleDelete(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	release, err := a.reserve(r.Context(), "delete", clientOf(r).key, a.cfg.DeleteLimit)
	if err != nil {
		return err
	}
	if err := a.svc.Delete(r.Context(), id, a.onSession(r, id)...); err != nil {
		release()
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "success", "id": id})
	return nil
}

// Limits of the events feed's page.
const (
	defaultEventsLimit = 100
	maxEventsLimit     = 1000
)

func (a *API) handleEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit")
	if err != nil {
		return err
	}
	switch {
	case limit == 0:
		limit = defaultEventsLimit
	case limit < 0 || limit > maxEventsLimit:
		return badRequest("limit: must be between 1 and " + strconv.Itoa(maxEventsLimit))
	}
	feed, err := a.svc.Events(r.Context(), q.Get("after"), limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, feed)
	return nil
}

// introspection is the answer of POST /v1/tokens/introspect (RFC 7662
// style: an unknown token is not an error, just inactive).
type introspection struct {
	Active         bool               `json:"active"`
	Session        *lifecycle.Session `json:"session,omitempty"`
	TokenExpiresAt *lifecycle.Time    `json:"token_expires_at,omitempty"`
}

// maxTokenLen bounds an introspected token; sessiond's are 47 characters.
const maxTokenLen = 256

func (a *API) handleIntrospect(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Token string `json:"token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Token == "" || len(req.Token) > maxTokenLen {
		return badRequest("token: must be 1 to " + strconv.Itoa(maxTokenLen) + " bytes")
	}
	var opts []lifecycle.Option
	if sh, ok := lifecycle.TokenShard(req.Token); ok {
		opts = a.once(r, sh)
	} else if err := a.spendNow(r); err != nil {
		return err
	}
	s, exp, err := a.svc.Introspect(r.Context(), req.Token, opts...)
	switch {
	case errors.Is(err, lifecycle.ErrNotFound):
		writeJSON(w, http.StatusOK, introspection{})
	case err != nil:
		return err
	default:
		writeJSON(w, http.StatusOK, introspection{Active: true, Session: s, TokenExpiresAt: &exp})
	}
	return nil
}

// respond runs op on the request's {id}, spending its nonce, and writes
// its result as 200.
func (a *API) respond(w http.ResponseWriter, r *http.Request, op func(ctx context.Context, id string, o []lifecycle.Option) (any, error)) error {
	id := r.PathValue("id")
	v, err := op(r.Context(), id, a.onSession(r, id))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func queryInt(v, field string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, badRequest(field + ": must be an integer")
	}
	return n, nil
}
