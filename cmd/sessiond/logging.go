package main

import (
	"log/slog"
	"net/http"
	"time"
)

// instrument records every admin port request in
// sessiond_http_request_duration_seconds and, at debug level, as one
// "http request" log line. It logs what routing needs and nothing a client
// sent in a header, the query string or the body: those may carry
// signatures, basic auth, ref_ids or personal data.
//
// The route is r.Pattern, which each ServeMux sets on the request it
// serves, so after the inner /v1 mux it is e.g. "POST /v1/sessions".
func instrument(h http.Handler, logger *slog.Logger, m *Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		d := time.Since(start)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		m.observeRequest(r.Pattern, status, d)
		if logger.Enabled(r.Context(), slog.LevelDebug) {
			logger.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("method", r.Method),
				slog.String("route", r.Pattern),
				slog.String("path", r.URL.Path),
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
