package dispatcher

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/signing"
)

// Config configures a Dispatcher. Zero values mean the documented defaults.
type Config struct {
	// Endpoints are the webhook receivers.
	Endpoints []Endpoint
	// APIKey is sent as X-AUTH-CLIENT on every webhook; empty sends none.
	APIKey string

	// Timeout bounds one attempt: connect, TLS, request and response body;
	// default 15s.
	Timeout time.Duration
	// RetrySchedule is the delay before each retry; its length is the number
	// of retries after the first attempt. Default 5s,5m,30m,2h,5h,10h,10h.
	RetrySchedule []time.Duration
	// Jitter spreads each scheduled delay by ±Jitter of itself; default
	// 0.1, negative means none.
	Jitter float64
	// AllowNetworks lists the special-purpose networks (loopback, private,
	// link-local, ...) that webhooks may still reach.
	AllowNetworks []netip.Prefix

	// Concurrency is the number of workers that make first attempts;
	// default 100.
	Concurrency int
	// RetryConcurrency is the number of retries, deferred attempts and
	// replays in flight (Asynq's workers); default Concurrency/4.
	RetryConcurrency int
	// EndpointConcurrency caps one endpoint's deliveries in flight per
	// process; default Concurrency/2 (at least 1), however many endpoints
	// are configured: endpoints added through the admin API get the same
	// cap, so no single slow endpoint can hold every worker.
	EndpointConcurrency int
	// BreakerThreshold and BreakerPeriod: an endpoint's circuit breaker
	// opens once every attempt has been unhealthy (no answer, 5xx or 429)
	// for BreakerPeriod, at least BreakerThreshold of them; defaults 10
	// attempts and 10s. A flaky endpoint that still succeeds now and then
	// is left to the retries.
	BreakerThreshold int
	BreakerPeriod    time.Duration
	// BreakerCooldown is how long an open breaker defers deliveries before
	// it lets one probe through; it doubles while probes fail, up to
	// 10 × BreakerCooldown. Default 30s.
	BreakerCooldown time.Duration

	// Namespace prefixes every key and queue; default "sessiond".
	Namespace string
	// TaskCheckInterval is how long an idle Asynq server waits between
	// polls of its queues (±50%); default 1s. Only tasks whose due time
	// has come are polled (retries, deferrals, replays): a replay waits
	// about this long.
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often the server moves retried and
	// deferred tasks that are due to their queue; default 2s (Asynq keeps
	// their due times in whole seconds anyway).
	DelayedTaskCheckInterval time.Duration
	// Retention is how long delivery records are kept after their event;
	// default 168h, the events retention.
	Retention time.Duration
	// OrphanAfter is how long a task's Asynq lease may go without renewal
	// before the task is given back to the queue (its worker died); default
	// 15s, at least 10s.
	OrphanAfter time.Duration
	// ClaimIdle is how long an outbox entry may stay read but not
	// acknowledged, and not kept fresh by a live replica, before another
	// replica takes it over; default 5s, at least 100ms. Under 4s the
	// maintenance loop runs every ClaimIdle/4 instead of every second.
	ClaimIdle time.Duration
	// RelayBatch is the most outbox entries the relay reads at once;
	// default 256.
	RelayBatch int
	// ResponseBodyLimit is how much of a receiver's answer an attempt
	// record keeps, in bytes; default 4096.
	ResponseBodyLimit int

	// QueueRedis is a second client of the same Redis for Asynq's client
	// and servers, with a pool of their own; nil lets Asynq share the
	// dispatcher's client. The caller closes it.
	QueueRedis redis.UniversalClient

	// Metrics hears of every attempt and of the circuit breakers' state;
	// nil records nothing.
	Metrics Metrics
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Endpoint is one webhook receiver.
type Endpoint struct {
	// ID names the endpoint in delivery ids: 1 to 64 of [a-z0-9_-].
	ID string
	// URL is an absolute http or https URL.
	URL string
	// Secrets are whsec_ HMAC secrets (one v1 signature each, the first
	// also keys X-HMAC-SIGNATURE) and whsk_ ed25519 keys (one v1a each).
	// List the current secret first during a rotation.
	Secrets []string
	// Events filters event types; empty means all.
	Events []string
	// Disabled endpoints get no deliveries.
	Disabled bool
}

// Defaults.
const (
	defaultTimeout           = 15 * time.Second
	defaultJitter            = 0.1
	defaultConcurrency       = 100
	defaultBreakerThreshold  = 10
	defaultBreakerPeriod     = 10 * time.Second
	defaultBreakerCooldown   = 30 * time.Second
	defaultTaskCheck         = time.Second
	defaultDelayedTaskCheck  = 2 * time.Second
	defaultRetention         = 168 * time.Hour
	defaultOrphanAfter       = 15 * time.Second
	minOrphanAfter           = 10 * time.Second
	defaultClaimIdle         = 5 * time.Second
	minClaimIdle             = 100 * time.Millisecond
	defaultRelayBatch        = 256
	defaultResponseBodyLimit = 4096
)

// DefaultRetrySchedule is the retry schedule when Config.RetrySchedule is empty.
var DefaultRetrySchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

func (c *Config) setDefaults() {
	dur := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	num := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	dur(&c.Timeout, defaultTimeout)
	if len(c.RetrySchedule) == 0 {
		c.RetrySchedule = DefaultRetrySchedule
	}
	c.RetrySchedule = slices.Clone(c.RetrySchedule)
	switch {
	case c.Jitter == 0:
		c.Jitter = defaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter > 1:
		c.Jitter = 1
	}
	num(&c.Concurrency, defaultConcurrency)
	num(&c.RetryConcurrency, max(1, c.Concurrency/4))
	num(&c.EndpointConcurrency, max(1, c.Concurrency/2))
	num(&c.BreakerThreshold, defaultBreakerThreshold)
	dur(&c.BreakerPeriod, defaultBreakerPeriod)
	dur(&c.BreakerCooldown, defaultBreakerCooldown)
	dur(&c.TaskCheckInterval, defaultTaskCheck)
	dur(&c.DelayedTaskCheckInterval, defaultDelayedTaskCheck)
	dur(&c.Retention, defaultRetention)
	dur(&c.OrphanAfter, defaultOrphanAfter)
	c.OrphanAfter = max(c.OrphanAfter, minOrphanAfter)
	dur(&c.ClaimIdle, defaultClaimIdle)
	c.ClaimIdle = max(c.ClaimIdle, minClaimIdle)
	num(&c.RelayBatch, defaultRelayBatch)
	num(&c.ResponseBodyLimit, defaultResponseBodyLimit)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// lineCap is how many first attempts may wait in an endpoint's line: as
// many as it has slots, the relays' pause threshold (limiter.saturated),
// plus what the relays may read at once when they find it just under
// that (RelayBatch per shard, whether one relay reads every shard or each
// has its own), so that a read does not overflow it into deferrals.
func (c *Config) lineCap() int {
	return c.EndpointConcurrency + keyspace.Shards*c.RelayBatch
}

// endpoint is a configured Endpoint ready to deliver: its signer, filter,
// breaker and concurrency limit.
// Metrics is what the dispatcher reports for monitoring.
type Metrics interface {
	// ObserveAttempt hears of one HTTP attempt: its outcome is "success"
	// (2xx), "failure" (another status), "timeout", "error" (no answer) or
	// "gone" (410); sinceEvent is the time from the event to the attempt's
	// end.
	ObserveAttempt(endpoint, outcome string, sinceEvent time.Duration)
	// SetCircuit hears whether an endpoint's circuit breaker is open.
	SetCircuit(endpoint string, open bool)
	// ForgetEndpoint hears that an endpoint was deleted: its series may go.
	ForgetEndpoint(endpoint string)
}

type noMetrics struct{}

func (noMetrics) ObserveAttempt(string, string, time.Duration) {}
func (noMetrics) SetCircuit(string, bool)                      {}
func (noMetrics) ForgetEndpoint(string)                        {}

type endpoint struct {
	endpointOptions
	id       string
	url      string
	shownURL string // url without its password, for records and logs
	urlHash  string // hex sha256 of url: the disabled mark's key
	events   map[string]bool
	disabled bool        // by configuration
	marked   atomic.Bool // disabled after a 410 answer (shared through Redis)
	signer   *signing.Signer
	breaker  *breaker
	limit    *limiter
}

// disabledNow reports whether the endpoint gets no deliveries.
func (e *endpoint) disabledNow() bool { return e.disabled || e.marked.Load() }

// wants reports whether the endpoint subscribes to an event type.
func (e *endpoint) wants(typ string) bool {
	return len(e.events) == 0 || e.events[typ]
}

// newEndpoint checks ep and builds its delivery state. Errors name the
// endpoint but never quote its URL or secrets.
func newEndpoint(ep Endpoint, cfg *Config) (*endpoint, error) {
	if !validEndpointID(ep.ID) {
		return nil, fmt.Errorf("endpoint %q: id must be 1 to 64 of [a-z0-9_-]", ep.ID)
	}
	u, ok := parseEndpointURL(ep.URL)
	if !ok {
		return nil, fmt.Errorf("endpoint %s: url must be an absolute http or https URL with a host name and a port from 1 to 65535 if any", ep.ID)
	}
	if len(ep.Secrets) == 0 {
		return nil, fmt.Errorf("endpoint %s: no secrets", ep.ID)
	}
	keys := make([]signing.Key, len(ep.Secrets))
	var err error
	for i, s := range ep.Secrets {
		if keys[i], err = signing.ParseKey(s); err != nil {
			return nil, fmt.Errorf("endpoint %s: secret %d: %w", ep.ID, i+1, err)
		}
	}
	signer, err := signing.NewSigner(cfg.APIKey, keys...)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", ep.ID, err)
	}
	sum := sha256.Sum256([]byte(ep.URL))
	e := &endpoint{
		id:              ep.ID,
		url:             ep.URL,
		shownURL:        u.Redacted(),
		urlHash:         hex.EncodeToString(sum[:]),
		disabled:        ep.Disabled,
		signer:          signer,
		endpointOptions: endpointOptions{source: SourceConfig},
		breaker:         newBreaker(cfg.BreakerThreshold, cfg.BreakerPeriod, cfg.BreakerCooldown),
		limit:           newLimiter(cfg.EndpointConcurrency, cfg.lineCap()),
	}
	if len(ep.Events) > 0 {
		e.events = make(map[string]bool, len(ep.Events))
		for _, ev := range ep.Events {
			e.events[ev] = true
		}
	}
	return e, nil
}

// parseEndpointURL parses an endpoint's URL, from the configuration or the
// admin API: an absolute http or https URL with a host name, a port from
// 1 to 65535 if it has one, and a user name if it has user information.
// Callers' errors never quote it: it may hold a password.
func parseEndpointURL(raw string) (*url.URL, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.Hostname() == "" {
		return nil, false
	}
	if strings.HasSuffix(u.Host, ":") { // a colon without a port
		return nil, false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, false
		}
	}
	if u.User != nil && u.User.Username() == "" { // "http://@host/", "http://:pw@host/"
		return nil, false
	}
	return u, true
}

// validEndpointID reports whether id is 1 to 64 of [a-z0-9_-].
func validEndpointID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}
