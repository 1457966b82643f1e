package lifecycle

// routes registers every session route of the admin API. The delivery
// routes belong to the dispatcher and are added through Handle.
func (a *API) routes() {
	a.Handle("POST /v1/sessions", a.handleCreate)
	a.Handle("GET /v1/sessions", a.handleList)
	a.Handle("GET /v1/sessions/{id}", a.handleGet)
	a.Handle("PATCH /v1/sessions/{id}", a.handleUpdate)
	a.Handle("DELETE /v1/sessions/{id}", a.handleDelete)
	a.Handle("POST /v1/sessions/{id}/status", a.handleProgress)
	a.Handle("POST /v1/sessions/{id}/decision", a.handleDecision)
	a.Handle("POST /v1/sessions/{id}/cancel", a.handleCancel)
	a.Handle("POST /v1/sessions/{id}/expire", a.handleExpire)
	a.Handle("POST /v1/sessions/{id}/resume", a.handleResume)
	a.Handle("POST /v1/sessions/{id}/redact", a.handleRedact)
	a.Handle("GET /v1/events", a.handleEvents)
}
