package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
)

// uiRoot is where the Asynq web UI (asynqmon) is mounted on the admin port.
const uiRoot = "/ui"

// newUI returns the Asynq web UI for the queues in the Redis of conn,
// rooted at /ui/. With a password it asks for HTTP basic auth (user, password);
// without one it is open, like the rest of the admin port outside /v1.
// Cross-origin unsafe requests (a page elsewhere making the operator's
// browser delete a queue) are refused either way. close releases the UI's
// Redis connections; call it after the admin server has stopped.
func newUI(conn asynq.RedisConnOpt, user, password string) (h http.Handler, close func() error) {
	mon := asynqmon.New(asynqmon.Options{RootPath: uiRoot, RedisConnOpt: conn})
	h = http.NewCrossOriginProtection().Handler(uiHeaders(mon))
	if password != "" {
		h = basicAuth(h, "sessiond queues", user, password)
	}
	return h, mon.Close
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
