package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/http/pprof"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// uiRoot is where the Asynq web UI (asynqmon) is mounted on the admin port.
const uiRoot = "/ui"

// uiConfig is how the queue UI is offered.
type uiConfig struct {
	User, Password string // HTTP basic auth; no password, no UI
	ReadOnly       bool   // asynqmon's read-only mode: every write is refused
}

// newUI returns the Asynq web UI for the queues in the Redis of conn,
// rooted at /ui/, behind HTTP basic auth. Without a password there is no UI
// (h is nil): the queues hold session ids and the UI can delete or replay
// their tasks, so it is never open to whoever reaches the port. Read-only,
// asynqmon refuses every request but GET. Cross-origin unsafe requests (a
// page elsewhere making the operator's browser delete a queue) are refused
// either way. close releases the UI's Redis connections; call it after the
// admin server has stopped.
func newUI(conn asynq.RedisConnOpt, cfg uiConfig) (h http.Handler, close func() error) {
	if cfg.Password == "" {
		return nil, func() error { return nil }
	}
	mon := asynqmon.New(asynqmon.Options{RootPath: uiRoot, RedisConnOpt: conn, ReadOnly: cfg.ReadOnly})
	h = http.NewCrossOriginProtection().Handler(uiHeaders(mon))
	return basicAuth(h, "sessiond queues", cfg.User, cfg.Password), mon.Close
}

// mode is the start-up log's word for how the UI is offered.
func (c uiConfig) mode() string {
	switch {
	case c.Password == "":
		return "off (set SESSIOND_UI_PASSWORD to mount it)"
	case c.ReadOnly:
		return "read-only"
	default:
		return "read-write"
	}
}

// uiHeaders sets headers that keep the UI out of other sites' frames.
func uiHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// basicAuth serves h only to requests with the right basic auth
// credentials. Both are compared in constant time, through their SHA-256
// so that neither length shows; the answer never says which one was wrong.
func basicAuth(h http.Handler, realm, user, password string) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	challenge := `Basic realm="` + realm + `", charset="UTF-8"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || userOK&passOK != 1 {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "Unauthorized.", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// newPprof returns net/http/pprof's handlers under /debug/pprof/, behind
// the UI's basic auth when it has a password. Profiles show code paths and
// sizes, not values, but a goroutine dump can show arguments: keep the
// admin port private, as the README says.
func newPprof(cfg uiConfig) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if cfg.Password == "" {
		return mux
	}
	return basicAuth(mux, "sessiond profiles", cfg.User, cfg.Password)
}
