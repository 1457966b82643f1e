package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// routes is every route of the admin port on one screen. configs/openapi.yaml
// documents them; openapi_test.go keeps the two in step.
func routes(logger *slog.Logger, m *Metrics, api, ui, metrics http.Handler, rdb redis.UniversalClient, draining *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", api) // lifecycle.API: its own routes, auth and JSON errors
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.Handle("GET /readyz", handleReady(rdb, draining))
	mux.Handle("GET /metrics", metrics)
	mux.Handle(uiRoot+"/", ui) // GET /ui redirects here
	return instrument(mux, logger, m)
}

// handleReady is 200 while Redis answers and the daemon is not draining.
func handleReady(rdb redis.UniversalClient, draining *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			writeStatus(w, http.StatusServiceUnavailable, "draining")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			writeStatus(w, http.StatusServiceUnavailable, "redis unreachable")
			return
		}
		writeStatus(w, http.StatusOK, "ready")
	})
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(`{"status":"` + status + `"}` + "\n"))
}
