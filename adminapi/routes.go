package adminapi

import "net/http"

// Request bodies: the routes that take a JSON body, and those that take
// none. (How each route spends a v2 nonce: auth.go.)
const (
	withBody = true
	noBody   = false
)

// Signing schemes: the routes that take the legacy scheme too, and those
// that take only v2. A legacy signature covers the body, else the {id},
// else the query: on the endpoint and recovery routes it could be moved
// from one route to another (a GET's to a DELETE), so they refuse it.
const (
	anyScheme = false
	v2Only    = true
)

// routes is every route of the admin port on one screen; configs/openapi.yaml
// documents them and openapi_test.go keeps the two in step. Every /v1 route
// is authenticated (auth.go) and answers errors in the contract's JSON.
func (a *API) routes() http.Handler {
	a.handle("POST /v1/sessions", withBody, nonceInOp, anyScheme, a.handleCreate)
	a.handle("GET /v1/sessions", noBody, nonceDirect, anyScheme, a.handleList)
	a.handle("GET /v1/sessions/{id}", noBody, nonceInOp, anyScheme, a.handleGet)
	a.handle("PATCH /v1/sessions/{id}", withBody, nonceInOp, anyScheme, a.handleUpdate)
	a.handle("DELETE /v1/sessions/{id}", noBody, nonceInOp, anyScheme, a.handleDelete)
	a.handle("POST /v1/sessions/{id}/status", withBody, nonceInOp, anyScheme, a.handleProgress)
	a.handle("POST /v1/sessions/{id}/decision", withBody, nonceInOp, anyScheme, a.handleDecision)
	a.handle("POST /v1/sessions/{id}/cancel", noBody, nonceInOp, anyScheme, a.handleCancel)
	a.handle("POST /v1/sessions/{id}/expire", noBody, nonceInOp, anyScheme, a.handleExpire)
	a.handle("POST /v1/sessions/{id}/resume", noBody, nonceInOp, anyScheme, a.handleResume)
	a.handle("POST /v1/sessions/{id}/redact", noBody, nonceInOp, anyScheme, a.handleRedact)
	a.handle("GET /v1/sessions/{id}/deliveries", noBody, nonceDirect, anyScheme, a.handleDeliveries)
	a.handle("POST /v1/deliveries/{id}/replay", noBody, nonceDirect, anyScheme, a.handleReplay)
	a.handle("GET /v1/events", noBody, nonceDirect, anyScheme, a.handleEvents)
	a.handle("POST /v1/tokens/introspect", withBody, nonceInOp, anyScheme, a.handleIntrospect)
	a.handle("GET /v1/endpoints", noBody, nonceDirect, v2Only, a.handleEndpoints)
	a.handle("POST /v1/endpoints", withBody, nonceDirect, v2Only, a.handleCreateEndpoint)
	a.handle("GET /v1/endpoints/{id}", noBody, nonceDirect, v2Only, a.handleEndpoint)
	a.handle("PATCH /v1/endpoints/{id}", withBody, nonceDirect, v2Only, a.handleUpdateEndpoint)
	a.handle("DELETE /v1/endpoints/{id}", noBody, nonceDirect, v2Only, a.handleDeleteEndpoint)
	a.handle("POST /v1/endpoints/{id}/rotate-secret", withBody, nonceDirect, v2Only, a.handleRotateSecret)
	a.handle("POST /v1/endpoints/{id}/test", withBody, nonceDirect, v2Only, a.handleTestEndpoint)
	a.handle("POST /v1/endpoints/{id}/recover", withBody, nonceDirect, v2Only, a.handleRecover)
	a.handle("GET /v1/recoveries/{id}", noBody, nonceDirect, v2Only, a.handleRecovery)

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
