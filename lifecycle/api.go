package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// APIConfig configures the admin HTTP API. Zero values mean the defaults.
type APIConfig struct {
	// Clients maps each API key to its secret.
	Clients map[string]string
	// DeleteLimit is the per-API-key delete rate limit; default 5/1h,10/24h.
	DeleteLimit []RateWindow
	// MaxBodyBytes caps request bodies (413 past it); default 1 MiB.
	MaxBodyBytes int64
	// IdempotencyTTL is how long an Idempotency-Key's first response is
	// kept; default 24h.
	IdempotencyTTL time.Duration
	Logger         *slog.Logger
}

// RateWindow allows Limit requests in any Window.
type RateWindow struct {
	Limit  int
	Window time.Duration
}

// API is the admin HTTP API: the /v1 routes with authentication, the
// contract's JSON errors, and room for other packages' routes (Handle).
type API struct {
	svc *Service
	cfg APIConfig
	log *slog.Logger
	mux *http.ServeMux
}

// NewAPI returns the admin API over svc with the session routes registered.
func NewAPI(svc *Service, cfg APIConfig) *API {
	if cfg.DeleteLimit == nil {
		cfg.DeleteLimit = []RateWindow{{5, time.Hour}, {10, 24 * time.Hour}}
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{svc: svc, cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	a.routes()
	return a
}

// HandlerFunc is an API handler: it writes a success itself and returns an
// error for everything else, which the API turns into the contract's JSON.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Error is an error with the contract's HTTP status, code and message. The
// client sees Message; the log sees Err.
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

// The contract's error codes.
const (
	CodeInvalidRequest    = 1001
	CodeTooManyRequests   = 1004
	CodeMissingAuth       = 1101
	CodeBadSignature      = 1102
	CodeNotFound          = 1104
	CodeNotCompleted      = 1305
	CodeSessionInProgress = 1306
	CodeInvalidTransition = 1401
	codeInternal          = 1000
)

// Handle registers an authenticated route; pattern is a net/http pattern
// with a method, e.g. "GET /v1/sessions/{id}/deliveries".
func (a *API) Handle(pattern string, h HandlerFunc) {
	a.mux.Handle(pattern, a.authenticated(h))
}

// ServeHTTP serves the /v1 routes. Unknown paths and wrong methods get the
// contract's JSON error too.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern != "" {
		a.mux.ServeHTTP(w, r)
		return
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := a.mux.Handler(probe); p != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		a.writeError(w, r, &Error{Status: http.StatusMethodNotAllowed, Code: CodeInvalidRequest, Message: "Method not allowed."})
		return
	}
	a.writeError(w, r, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Not found."})
}

type clientKey struct{}

// Client returns the API key that authenticated r.
func Client(r *http.Request) string {
	c, _ := r.Context().Value(clientKey{}).(string)
	return c
}

// authenticated checks X-AUTH-CLIENT and X-HMAC-SIGNATURE, then runs h. The
// signature covers the raw body when there is one, else the {id} path
// value, else the raw query string.
func (a *API) authenticated(h HandlerFunc) http.Handler {
	return a.serve(func(w http.ResponseWriter, r *http.Request) error {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeInvalidRequest,
					Message: "Request body too large (limit " + strconv.FormatInt(a.cfg.MaxBodyBytes, 10) + " bytes)."}
			}
			return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "Could not read request body.", Err: err}
		}
		key := r.Header.Get("X-AUTH-CLIENT")
		if key == "" {
			return &Error{Status: http.StatusUnauthorized, Code: CodeMissingAuth, Message: "Mandatory X-AUTH-CLIENT header missing."}
		}
		secret, known := a.cfg.Clients[key]
		msg := body
		if len(msg) == 0 {
			if id := r.PathValue("id"); id != "" {
				msg = []byte(id)
			} else {
				msg = []byte(r.URL.RawQuery)
			}
		}
		// Verify even for an unknown key, so timing does not tell keys apart.
		ok := signing.VerifyHexHMAC([]byte(secret), msg, r.Header.Get("X-HMAC-SIGNATURE"))
		if !known {
			return &Error{Status: http.StatusUnauthorized, Code: CodeMissingAuth, Message: "Unknown X-AUTH-CLIENT."}
		}
		if !ok {
			return &Error{Status: http.StatusUnauthorized, Code: CodeBadSignature, Message: "Signature is not valid."}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), clientKey{}, key))
		return h(w, r)
	})
}

// serve turns a HandlerFunc into an http.Handler that writes errors in the
// contract's shape and logs each failed request once.
func (a *API) serve(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// errorFor maps an error to the contract's status, code and message.
func errorFor(err error) *Error {
	var e *Error
	var v *ValidationError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &v):
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: v.Error()}
	case errors.Is(err, ErrNotFound):
		return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "Session not found."}
	case errors.Is(err, ErrSessionInProgress):
		return &Error{Status: http.StatusBadRequest, Code: CodeSessionInProgress, Message: "Session in progress."}
	case errors.Is(err, ErrNotCompleted):
		return &Error{Status: http.StatusBadRequest, Code: CodeNotCompleted, Message: "Session is not in a completed status."}
	case errors.Is(err, ErrInvalidTransition), errors.Is(err, ErrRefBusy):
		return &Error{Status: http.StatusConflict, Code: CodeInvalidTransition, Message: err.Error()}
	case errors.Is(err, ErrBusy):
		return &Error{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests, Message: "Session is busy, retry.", RetryAfter: time.Second, Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Code: codeInternal, Message: "Internal error.", Err: err}
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := errorFor(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status_code", e.Status, "code", e.Code}
	if e.Err != nil {
		attrs = append(attrs, "err", e.Err.Error())
	}
	a.log.Log(r.Context(), level, "request failed", attrs...)
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	WriteJSON(w, e.Status, errorBody{Status: "fail", Code: e.Code, Message: e.Message})
}

// errorBody is the contract's error shape.
type errorBody struct {
	Status  string `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// DecodeJSON decodes a request body that must be one JSON object whose
// fields are all known.
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return invalid("body", "a JSON object is required")
		}
		return invalid("body", "malformed JSON: "+err.Error())
	}
	// Anything but white space after the value is refused; dec.More alone
	// would let a stray '}' or ']' through.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("body", "malformed JSON: data after the object")
	}
	return nil
}
