package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/lifecycle"
)

// The contract's error codes.
const (
	CodeInvalidRequest    = 1001
	CodeTooManyRequests   = 1004
	CodeMissingAuth       = 1101
	CodeAuthFailed        = 1102
	CodeTimestamp         = 1103
	CodeNotFound          = 1104
	CodeReplayed          = 1105
	CodeNotCompleted      = 1305
	CodeSessionInProgress = 1306
	CodeInvalidTransition = 1401
	CodeConflict          = 1409
	codeInternal          = 1000
)

// Error is an answer other than success: the contract's HTTP status, code
// and message. The client sees Message; the log sees Err.
type Error struct {
	Status     int
	Code       int
	Message    string
	RetryAfter time.Duration // sets Retry-After when positive
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// badRequest is a 400 with code 1001.
func badRequest(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: msg}
}

// errorFor maps an error to the contract's status, code and message.
func errorFor(err error) *Error {
	var (
		e  *Error
		v  *lifecycle.ValidationError
		ie *dispatcher.InvalidEndpointError
	)
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &v):
		return badRequest(v.Error())
	case errors.Is(err, lifecycle.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Session not found."}
	case errors.Is(err, dispatcher.ErrDeliveryNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Delivery not found."}
	case errors.Is(err, dispatcher.ErrEndpointGone):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "The delivery's endpoint is no longer configured.", Err: err}
	case errors.As(err, &ie):
		return badRequest(ie.Error())
	case errors.Is(err, dispatcher.ErrEndpointNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Endpoint not found."}
	case errors.Is(err, dispatcher.ErrRecoveryNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Recovery not found."}
	case errors.Is(err, dispatcher.ErrEndpointFromConfig):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: "The endpoint comes from the configuration: change it there."}
	case errors.Is(err, dispatcher.ErrEndpointDisabled):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: "The endpoint is disabled: enable it first."}
	case errors.Is(err, dispatcher.ErrTooManyEndpoints):
		return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: "Too many endpoints: " + err.Error() + "."}
	case errors.Is(err, dispatcher.ErrEndpointsBusy):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeInternal, RetryAfter: time.Second, Err: err,
			Message: "Endpoints are busy with other changes, retry."}
	case errors.Is(err, lifecycle.ErrSessionInProgress):
		return &Error{Status: http.StatusBadRequest, Code: CodeSessionInProgress, Message: "Session in progress."}
	case errors.Is(err, lifecycle.ErrNotCompleted):
		return &Error{Status: http.StatusBadRequest, Code: CodeNotCompleted, Message: "Session is not in a completed status."}
	case errors.Is(err, lifecycle.ErrInvalidTransition), errors.Is(err, lifecycle.ErrRefBusy):
		return &Error{Status: http.StatusConflict, Code: CodeInvalidTransition, Message: err.Error()}
	case errors.Is(err, lifecycle.ErrReplayed):
		return errReplayed
	case errors.Is(err, lifecycle.ErrNotDurable):
		return &Error{Status: http.StatusServiceUnavailable, Code: codeInternal, RetryAfter: time.Second, Err: err,
			Message: "The change was made but is not yet on enough Redis replicas: a failover now could lose it. Read the session before you retry."}
	case errors.Is(err, lifecycle.ErrBusy):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: "Session is busy, retry.", RetryAfter: time.Second, Err: err}
	}
	if redisUnavailable(err) {
		return &Error{Status: http.StatusServiceUnavailable, Code: codeInternal, RetryAfter: time.Second, Err: err,
			Message: "Redis is unavailable (a restart or a failover): retry; after a change, read the session first."}
	}
	return &Error{Status: http.StatusInternalServerError, Code: codeInternal, Message: "Internal error.", Err: err}
}

// redisUnavailable reports whether err says Redis could not be reached or
// cannot take writes just now: a restart, a failover, a resharding.
func redisUnavailable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, redis.ErrClosed) {
		return true
	}
	for _, prefix := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}

// maxLoggedPath bounds the path a log line carries.
const maxLoggedPath = 256

// loggedPath is r's path, cut to maxLoggedPath bytes.
func loggedPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if len(p) > maxLoggedPath {
		return p[:maxLoggedPath] + "…"
	}
	return p
}

// writeError writes err in the contract's shape and logs it once: the
// route pattern and a cut path, never the query, headers or body.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	e := errorFor(err)
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	if a.log.Enabled(r.Context(), level) {
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("route", r.Pattern), slog.String("path", loggedPath(r)),
			slog.Int("status_code", e.Status), slog.Int("code", e.Code),
		}
		if e.Err != nil {
			attrs = append(attrs, slog.String("err", e.Err.Error()))
		}
		a.log.LogAttrs(r.Context(), level, "request failed", attrs...)
	}
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	writeJSON(w, e.Status, errorBody{Status: "fail", Code: e.Code, Message: e.Message})
}

// errorBody is the contract's error shape.
type errorBody struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"status":"fail","code":1000,"message":"Internal error."}`)
	}
	writeRaw(w, status, b)
}

// writeRaw writes an encoded JSON body.
func writeRaw(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
