package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/lifecycle"
)

// Metrics are sessiond's own instruments. All of them live in a private
// registry (never prometheus.DefaultRegisterer), so two daemons in one
// process, as in the tests, do not collide.
//
// The scheduler and the dispatcher cannot import package main: each declares
// the small interface it needs in its Config, and *Metrics satisfies it:
//
//	dispatcher: ObserveAttempt(endpoint, outcome string, sinceEvent time.Duration)
//	            SetCircuit(endpoint string, open bool)
//	            ForgetEndpoint(endpoint string)
//
// lifecycle.Config.Observer takes *Metrics as it is (Transitioned and
// ObserveExpiryLag: the lifecycle sees every expiry commit, whichever path
// of the scheduler ran it).
// Its methods are safe for concurrent use and never block on I/O; a nil
// *Metrics is valid and records nothing.
type Metrics struct {
	transitions     *prometheus.CounterVec
	webhookAttempts *prometheus.CounterVec
	webhookDelivery *prometheus.HistogramVec
	expiryLag       prometheus.Histogram
	circuitOpen     *prometheus.GaugeVec
	httpDuration    *prometheus.HistogramVec
}

// The outcomes of a webhook attempt, the values of the outcome label of
// sessiond_webhook_attempts_total. The set is closed: ObserveAttempt counts
// any other value as OutcomeError so the label cannot grow without bound.
const (
	OutcomeSuccess = "success" // the receiver answered 2xx
	OutcomeFailure = "failure" // the receiver answered something else (not 410)
	OutcomeTimeout = "timeout" // no answer within SESSIOND_WEBHOOK_TIMEOUT
	OutcomeError   = "error"   // connection error, refused at dial time, or anything else
	OutcomeGone    = "gone"    // 410: the endpoint was disabled
)

var webhookOutcomes = []string{OutcomeSuccess, OutcomeFailure, OutcomeTimeout, OutcomeError, OutcomeGone}

// transitionFromNone is the from label of a session's first status.
const transitionFromNone = "none"

// metricsScrapeTimeout bounds the Redis work of one scrape.
const metricsScrapeTimeout = 3 * time.Second

// Histogram buckets, in seconds.
var (
	// Webhook delivery spans a fast receiver (tens of ms) up to the end of
	// the retry schedule (hours).
	deliveryBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 36000}
	// Expiry lag: the target is well under a second; the sweep catches up
	// within SESSIOND_SWEEP_EVERY (default 1m).
	expiryLagBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// newMetrics creates sessiond's instruments and registers them in reg.
// endpoints are the configured webhook endpoint ids: their series start at
// zero, so rate() and alerts work before the first attempt.
func newMetrics(reg prometheus.Registerer, endpoints []string) *Metrics {
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessiond_session_transitions_total",
			Help: `Committed session status changes, by status before ("none" for a new session) and after.`,
		}, []string{"from", "to"}),
		webhookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessiond_webhook_attempts_total",
			Help: "Webhook delivery attempts, by endpoint id and outcome (success, failure, timeout, error, gone).",
		}, []string{"endpoint", "outcome"}),
		webhookDelivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessiond_webhook_delivery_seconds",
			Help:    "Time from an event (e.g. a decision) to its receiver's 2xx, retries included, by endpoint id.",
			Buckets: deliveryBuckets,
		}, []string{"endpoint"}),
		expiryLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sessiond_expiry_lag_seconds",
			Help:    "Time from a session's expires_at to the expiry the scheduler committed.",
			Buckets: expiryLagBuckets,
		}),
		circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sessiond_webhook_circuit_open",
			Help: "1 while the endpoint's circuit breaker defers its deliveries, else 0.",
		}, []string{"endpoint"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessiond_http_request_duration_seconds",
			Help:    "Admin port requests, by route pattern and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "code"}),
	}
	reg.MustRegister(m.transitions, m.webhookAttempts, m.webhookDelivery, m.expiryLag, m.circuitOpen, m.httpDuration)
	for _, ep := range endpoints {
		for _, o := range webhookOutcomes {
			m.webhookAttempts.WithLabelValues(ep, o)
		}
		m.webhookDelivery.WithLabelValues(ep)
		m.circuitOpen.WithLabelValues(ep).Set(0)
	}
	return m
}

// Transitioned implements lifecycle.Observer.
func (m *Metrics) Transitioned(from, to lifecycle.Status) {
	if m == nil {
		return
	}
	f := string(from)
	if f == "" {
		f = transitionFromNone
	}
	m.transitions.WithLabelValues(f, string(to)).Inc()
}

// ObserveAttempt counts one webhook attempt to endpoint (its configured id)
// with one of the Outcome* values. sinceEvent is the time from the event's
// timestamp to the end of this attempt; on OutcomeSuccess it is the
// delivery latency and goes into sessiond_webhook_delivery_seconds.
func (m *Metrics) ObserveAttempt(endpoint, outcome string, sinceEvent time.Duration) {
	if m == nil {
		return
	}
	known := false
	for _, o := range webhookOutcomes {
		known = known || o == outcome
	}
	if !known {
		outcome = OutcomeError
	}
	m.webhookAttempts.WithLabelValues(endpoint, outcome).Inc()
	if outcome == OutcomeSuccess {
		m.webhookDelivery.WithLabelValues(endpoint).Observe(sinceEvent.Seconds())
	}
}

// ObserveExpiryLag records how late an expiry was committed: now minus
// the session's expires_at (negative values count as 0).
func (m *Metrics) ObserveExpiryLag(d time.Duration) {
	if m == nil {
		return
	}
	m.expiryLag.Observe(max(d, 0).Seconds())
}

// SetCircuit records whether endpoint's circuit breaker is open.
func (m *Metrics) SetCircuit(endpoint string, open bool) {
	if m == nil {
		return
	}
	v := 0.0
	if open {
		v = 1
	}
	m.circuitOpen.WithLabelValues(endpoint).Set(v)
}

// ForgetEndpoint drops the series of an endpoint deleted through the admin
// API, so a deleted endpoint does not linger in every scrape. Every replica
// calls it when its endpoint registry loses the endpoint, not only the one
// that served the delete.
func (m *Metrics) ForgetEndpoint(endpoint string) {
	if m == nil {
		return
	}
	for _, o := range webhookOutcomes {
		m.webhookAttempts.DeleteLabelValues(endpoint, o)
	}
	m.webhookDelivery.DeleteLabelValues(endpoint)
	m.circuitOpen.DeleteLabelValues(endpoint)
}

// ObserveRequest implements adminapi.Observer: one admin port request.
// route is the matched ServeMux pattern (or "unmatched"), so the label set
// stays small.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.httpDuration.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// newRegistry returns the daemon's private registry with the Go runtime,
// process and build collectors, sessiond's Redis-backed gauges and Asynq's
// queue metrics. scrape is a Redis client reserved for scrapes (short
// timeouts, so a dead Redis makes a scrape fast, not slow).
func newRegistry(scrape redis.UniversalClient, keys keyspace.Space, logger *slog.Logger) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	inspector := asynq.NewInspectorFromRedisClient(scrape)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		&redisCollector{rdb: scrape, keys: keys, logger: logger},
		&queueCollector{
			inspector: inspector,
			upstream:  asynqmetrics.NewQueueMetricsCollector(inspector),
			logger:    logger,
		},
	)
	return reg
}

// metricsPool is the Redis pool of scrapes: small, short timeouts, no
// retries, so a dead Redis makes a scrape fast, not slow.
var metricsPool = redisconn.Pool{Name: "sessiond-metrics", Size: 2, ReadTimeout: 2 * time.Second, NoRetries: true}

// handleMetrics serves reg in the Prometheus exposition format. A failing
// collector drops its own series, never the whole page.
func handleMetrics(reg *prometheus.Registry, logger *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            promLogger{logger},
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// promLogger adapts slog to promhttp.Logger.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) {
	p.l.Warn("metrics scrape", "err", strings.TrimSpace(fmt.Sprintln(v...)))
}

var (
	redisUpDesc = prometheus.NewDesc("sessiond_redis_up",
		"1 if the last scrape reached Redis, else 0.", nil, nil)
	outboxBacklogDesc = prometheus.NewDesc("sessiond_outbox_backlog",
		"Outbox events not yet turned into deliveries, over the shards' outbox streams: each one's largest lag plus pending of its consumer groups (the dispatcher's relay), or its length while it has none.",
		nil, nil)
)

// redisCollector reports sessiond_redis_up and sessiond_outbox_backlog with
// one pipelined round trip per scrape (XLEN and XINFO GROUPS).
type redisCollector struct {
	rdb    redis.UniversalClient
	keys   keyspace.Space
	logger *slog.Logger
}

func (c *redisCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- redisUpDesc
	ch <- outboxBacklogDesc
}

func (c *redisCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsScrapeTimeout)
	defer cancel()
	backlog, err := outboxBacklog(ctx, c.rdb, c.keys)
	if err != nil {
		c.logger.Debug("metrics: outbox backlog", "err", err.Error())
		ch <- prometheus.MustNewConstMetric(redisUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(redisUpDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(outboxBacklogDesc, prometheus.GaugeValue, float64(backlog))
}

// backlogScanLimit caps the entries counted when Redis cannot tell a
// group's lag (after deletions inside the stream); the gauge then
// saturates at this value, which is plenty to alert on.
const backlogScanLimit = 1000

// outboxBacklog returns how many outbox events the relay has not yet
// handled, summed over the shards' streams: in each, its consumer group's
// lag (entries not yet read) plus its pending entries (read, not
// acknowledged), or XLEN while the stream has no group. It takes every
// group of a stream and counts the largest backlog, so it needs no group
// name. One pipelined round trip (one per master on a cluster).
func outboxBacklog(ctx context.Context, rdb redis.UniversalClient, keys keyspace.Space) (int64, error) {
	pipe := rdb.Pipeline()
	xlens := make([]*redis.IntCmd, keyspace.Shards)
	groups := make([]*redis.XInfoGroupsCmd, keyspace.Shards)
	for i := range keyspace.Shards {
		stream := keys.Outbox(keyspace.Shard(i))
		xlens[i] = pipe.XLen(ctx, stream)
		groups[i] = pipe.XInfoGroups(ctx, stream)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	var total int64
	for i := range keyspace.Shards {
		stream := keys.Outbox(keyspace.Shard(i))
		n, err := xlens[i].Result()
		if err != nil {
			return 0, fmt.Errorf("xlen outbox: %w", err)
		}
		gs, err := groups[i].Result()
		if err != nil {
			if n == 0 && strings.Contains(err.Error(), "no such key") {
				continue // no outbox stream yet
			}
			return 0, fmt.Errorf("xinfo groups outbox: %w", err)
		}
		if len(gs) == 0 {
			total += n
			continue
		}
		var most int64
		for _, g := range gs {
			lag := g.Lag
			if lag < 0 {
				// Unknown lag: count what follows the last delivered id, up
				// to backlogScanLimit.
				msgs, err := rdb.XRangeN(ctx, stream, "("+g.LastDeliveredID, "+", backlogScanLimit).Result()
				if err != nil {
					return 0, fmt.Errorf("xrange outbox: %w", err)
				}
				lag = int64(len(msgs))
			}
			most = max(most, lag+g.Pending)
		}
		total += most
	}
	return total, nil
}

// queueCollector is Asynq's own queue collector (asynq/x/metrics: metric
// names asynq_*, which asynqmon's charts and Asynq's Grafana dashboards
// query) behind a cheap reachability check: the upstream collector reports
// a failure through the standard library's log package, which would break
// the JSON log stream.
type queueCollector struct {
	inspector *asynq.Inspector
	upstream  prometheus.Collector
	logger    *slog.Logger
}

// Describe sends nothing: queueCollector is an unchecked collector. The
// upstream Describe runs a whole collection, which would query Redis at
// registration.
func (c *queueCollector) Describe(chan<- *prometheus.Desc) {}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	if _, err := c.inspector.Queues(); err != nil {
		if !errors.Is(err, context.Canceled) {
			c.logger.Debug("metrics: asynq queues", "err", err.Error())
		}
		return
	}
	c.upstream.Collect(ch)
}

// endpointIDs lists the ids of the configured webhook endpoints.
func endpointIDs(eps []Endpoint) []string {
	ids := make([]string, len(eps))
	for i, ep := range eps {
		ids[i] = ep.ID
	}
	return ids
}
