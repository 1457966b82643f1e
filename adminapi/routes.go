package adminapi

import "net/http"

// Request bodies: the routes that take a JSON body, and those that take
// none. (How each route spends a v2 nonce: auth.go.)
const (
	withBody = true
	noBody   = false
)

// routes is every route of the admin port on one screen; configs/openapi.yaml
// documents them and openapi_test.go keeps the two in step. Every /v1 route
// is authenticated (auth.go) and answers errors in the contract's JSON.
func (a *API) routes() http.Handler {
	a.handle("POST /v1/sessions", withBody, nonceInOp, a.handleCreate)
	a.handle("GET /v1/sessions", noBody, nonceDirect, a.handleList)
	a.handle("GET /v1/sessions/{id}", noBody, nonceInOp, a.handleGet)
	a.handle("PATCH /v1/sessions/{id}", withBody, nonceInOp, a.handleUpdate)
	a.handle("DELETE /v1/sessions/{id}", noBody, nonceInOp, a.handleDelete)
	a.handle("POST /v1/sessions/{id}/status", withBody, nonceInOp, a.handleProgress)
	a.handle("POST /v1/sessions/{id}/decision", withBody, nonceInOp, a.handleDecision)
	a.handle("POST /v1/sessions/{id}/cancel", noBody, nonceInOp, a.handleCancel)
	a.handle("POST /v1/sessions/{id}/expire", noBody, nonceInOp, a.handleExpire)
	a.handle("POST /v1/sessions/{id}/resume", noBody, nonceInOp, a.handleResume)
	a.handle("POST /v1/sessions/{id}/redact", noBody, nonceInOp, a.handleRedact)
	a.handle("GET /v1/sessions/{id}/deliveries", noBody, nonceDirect, a.handleDeliveries)
	a.handle("POST /v1/deliveries/{id}/replay", noBody, nonceDirect, a.handleReplay)
	a.handle("GET /v1/events", noBody, nonceDirect, a.handleEvents)
	a.handle("POST /v1/tokens/introspect", withBody, nonceInOp, a.handleIntrospect)
	a.handle("GET /v1/endpoints", noBody, nonceDirect, a.handleEndpoints)
	a.handle("POST /v1/endpoints", withBody, nonceDirect, a.handleCreateEndpoint)
	a.handle("GET /v1/endpoints/{id}", noBody, nonceDirect, a.handleEndpoint)
	a.handle("PATCH /v1/endpoints/{id}", withBody, nonceDirect, a.handleUpdateEndpoint)
	a.handle("DELETE /v1/endpoints/{id}", noBody, nonceDirect, a.handleDeleteEndpoint)
	a.handle("POST /v1/endpoints/{id}/rotate-secret", withBody, nonceDirect, a.handleRotateSecret)
	a.handle("POST /v1/endpoints/{id}/test", withBody, nonceDirect, a.handleTestEndpoint)
	a.handle("POST /v1/endpoints/{id}/recover", withBody, nonceDirect, a.handleRecover)
	a.handle("GET /v1/recoveries/{id}", noBody, nonceDirect, a.handleRecovery)

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/", a.serveV1)
	mux.HandleFunc("GET /healthz", handleHealth)
	mux.HandleFunc("GET /readyz", a.handleReady)
	if a.cfg.Metrics != nil {
		mux.Handle("GET /metrics", a.cfg.Metrics)
	}
	if a.cfg.UI != nil {
		mux.Handle("/ui/", a.cfg.UI)
	}
	if a.cfg.Debug != nil {
		mux.Handle("/debug/pprof/", a.cfg.Debug)
	}
	return a.instrument(mux)
}
