package adminapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/lifecycle"
)

// Config configures the admin port. Zero values mean the documented
// defaults.
type Config struct {
	// Clients are the API clients; each key must be unique.
	Clients []Client
	// DeleteLimit is the per-API-key delete rate limit; default 5/1h,10/24h.
	DeleteLimit []RateWindow
	// MaxBodyBytes caps request bodies (413 past it); default 1 MiB.
	MaxBodyBytes int64
	// MaxInFlight caps the /v1 requests served at once; past it the answer
	// is 503 with Retry-After, so memory stays bounded under a flood.
	// Default 64.
	MaxInFlight int
	// IdempotencyTTL is how long an Idempotency-Key's first response is
	// kept; default 24h.
	IdempotencyTTL time.Duration
	// Namespace prefixes the API's Redis keys; default "sessiond".
	Namespace string

	// Ready reports whether the daemon can serve (GET /readyz); nil is
	// always ready.
	Ready func(ctx context.Context) error
	// Metrics serves GET /metrics; nil mounts nothing.
	Metrics http.Handler
	// UI serves /ui/ (the queue UI); nil mounts nothing.
	UI http.Handler
	// Debug serves /debug/pprof/ (profiles); nil mounts nothing.
	Debug http.Handler
	// Observer hears of every request served; nil is allowed.
	Observer Observer

	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Observer hears of each request the admin port served, by route pattern.
type Observer interface {
	ObserveRequest(route string, code int, d time.Duration)
}

// Defaults.
const (
	defaultMaxBodyBytes   = 1 << 20
	defaultMaxInFlight    = 64
	defaultIdempotencyTTL = 24 * time.Hour
)

// DefaultDeleteLimit is the delete limit when Config.DeleteLimit is nil.
var DefaultDeleteLimit = []RateWindow{{5, time.Hour}, {10, 24 * time.Hour}}

func (c *Config) setDefaults() {
	if c.DeleteLimit == nil {
		c.DeleteLimit = DefaultDeleteLimit
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = defaultMaxBodyBytes
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = defaultMaxInFlight
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = defaultIdempotencyTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// API is the admin HTTP port. It holds no state of its own: sessions are
// the lifecycle's, deliveries the dispatcher's, and its own records
// (nonces, Idempotency-Key responses, rate-limit logs) live in Redis.
type API struct {
	cfg      Config
	svc      *lifecycle.Service
	disp     *dispatcher.Dispatcher
	rdb      redis.UniversalClient
	keys     keyspace.Space
	log      *slog.Logger
	clients  map[string]*client
	inflight chan struct{}
	v1       *http.ServeMux // the authenticated routes
	patterns []string       // v1's patterns, in registration order
	handler  http.Handler
}

// New returns the admin port over svc and disp, keeping its own records in
// rdb. It fails on a client without a secret or a duplicate key.
func New(cfg Config, svc *lifecycle.Service, disp *dispatcher.Dispatcher, rdb redis.UniversalClient) (*API, error) {
	cfg.setDefaults()
	a := &API{
		cfg:      cfg,
		svc:      svc,
		disp:     disp,
		rdb:      rdb,
		keys:     keyspace.New(cfg.Namespace),
		log:      cfg.Logger,
		clients:  make(map[string]*client, len(cfg.Clients)),
		inflight: make(chan struct{}, cfg.MaxInFlight),
		v1:       http.NewServeMux(),
	}
	for _, c := range cfg.Clients {
		if c.Key == "" || len(c.Secrets) == 0 {
			return nil, errors.New("adminapi: a client needs a key and at least one secret")
		}
		if a.clients[c.Key] != nil {
			return nil, errors.New("adminapi: duplicate client key")
		}
		if c.Scheme != "" && c.Scheme != SchemeV2 && c.Scheme != SchemeLegacy {
			return nil, errors.New("adminapi: unknown signature scheme " + string(c.Scheme))
		}
		cl := &client{key: c.Key, legacy: c.Scheme == SchemeLegacy}
		for _, s := range c.Secrets {
			cl.secrets = append(cl.secrets, []byte(s))
		}
		a.clients[c.Key] = cl
	}
	a.handler = a.routes()
	return a, nil
}

// ServeHTTP serves the admin port.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

func (a *API) now() time.Time { return a.cfg.Now() }

// handlerFunc is a /v1 handler: it writes a success itself and returns an
// error for everything else, which serve turns into the contract's JSON.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route is one authenticated /v1 route.
type route struct {
	pattern string
	body    bool // the route takes a JSON request body
	nonce   int  // how its nonce is spent: nonceDirect or nonceInOp
	v2Only  bool // the route refuses the legacy scheme
	h       handlerFunc
}

// handle registers an authenticated /v1 route.
func (a *API) handle(pattern string, body bool, nonce int, v2only bool, h handlerFunc) {
	rt := &route{pattern: pattern, body: body, nonce: nonce, v2Only: v2only, h: h}
	a.patterns = append(a.patterns, pattern)
	a.v1.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ar, err := a.authenticate(w, r, rt)
		if err == nil {
			err = rt.h(w, ar)
		}
		if err != nil {
			a.writeError(w, r, err)
		}
	}))
}

// serveV1 serves the /v1 routes under the in-flight cap; unknown paths and
// wrong methods get the contract's JSON error too.
func (a *API) serveV1(w http.ResponseWriter, r *http.Request) {
	select {
	case a.inflight <- struct{}{}:
		defer func() { <-a.inflight }()
	default:
		a.writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Code: CodeTooManyRequests,
			Message: "Too many requests in flight; retry.", RetryAfter: time.Second})
		return
	}
	if _, pattern := a.v1.Handler(r); pattern != "" {
		a.v1.ServeHTTP(w, r)
		return
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := a.v1.Handler(probe); p != "" {
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

// Patterns lists every /v1 route pattern, e.g. "GET /v1/sessions/{id}".
func (a *API) Patterns() []string { return append([]string(nil), a.patterns...) }
