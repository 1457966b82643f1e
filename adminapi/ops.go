package adminapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// readyTimeout bounds /readyz's check, so that it answers in time whatever
// Redis does.
const readyTimeout = time.Second

// handleHealth is 200 while the process serves HTTP (liveness).
func handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeRaw(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

// handleReady is 200 while Config.Ready says so (Redis answers, no
// shutdown under way), else 503 with the reason.
func (a *API) handleReady(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := a.cfg.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": err.Error()})
			return
		}
	}
	writeRaw(w, http.StatusOK, []byte(`{"status":"ready"}`))
}

// instrument reports every request to the Observer and, at debug level,
// as one "http request" log line: the route pattern and a cut path, never
// what a client sent in headers, the query string or the body (they may
// carry signatures, basic auth, ref_ids or personal data).
func (a *API) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		d := time.Since(start)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		route := r.Pattern
		if route == "" || route == "/v1/" {
			route = "unmatched"
		}
		if a.cfg.Observer != nil {
			a.cfg.Observer.ObserveRequest(route, status, d)
		}
		if a.log.Enabled(r.Context(), slog.LevelDebug) {
			a.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.String("path", loggedPath(r)),
				slog.Int("status_code", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("duration_ms", float64(d.Microseconds())/1000),
				slog.String("remote_addr", r.RemoteAddr),
			)
		}
	})
}

// statusRecorder remembers the status code and body size of a response.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 { // not an informational 1xx
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
