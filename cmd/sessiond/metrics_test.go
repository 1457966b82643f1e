package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/dispatcher"
	"github.com/sessiond/sessiond/internal/keyspace"
	"github.com/sessiond/sessiond/internal/redisconn"
	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/lifecycle"
)

// TestMetricsMove runs the daemon and checks that its own metrics and
// Asynq's queue metrics follow the work it does.
func TestMetricsMove(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, nil, nil)

	created := `sessiond_session_transitions_total{from="none",to="created"}`
	started := `sessiond_session_transitions_total{from="created",to="started"}`
	before := d.metrics()
	id, _ := d.createSession("metrics-user", nil)
	if code, b := d.call(http.MethodPost, "/v1/sessions/"+id+"/status", "", map[string]string{"status": "started"}); code != http.StatusOK {
		t.Fatalf("progress: %d %s", code, b)
	}
	d.waitMetric(created, func(v float64) bool { return v >= before[created]+1 }, "one more after a create")
	d.waitMetric(started, func(v float64) bool { return v >= before[started]+1 }, "one more after started")

	// Every request is timed by route pattern and code.
	d.waitMetric(`sessiond_http_request_duration_seconds_count{code="201",route="POST /v1/sessions"}`,
		func(v float64) bool { return v >= 1 }, "at least 1 after a create")

	// The outbox holds the two events; the gauge counts what the relay has
	// not handled (all of it while no relay group exists).
	m := d.metrics()
	if m["sessiond_redis_up"] != 1 {
		t.Errorf("sessiond_redis_up = %v, want 1", m["sessiond_redis_up"])
	}
	if _, ok := m["sessiond_outbox_backlog"]; !ok {
		t.Errorf("sessiond_outbox_backlog missing from /metrics")
	}

	// A queue with a task shows up in Asynq's metrics.
	client := asynq.NewClientFromRedisClient(d.Redis.Client())
	const queue = "metrics-probe"
	if _, err := client.Enqueue(asynq.NewTask("probe", nil), asynq.Queue(queue), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	d.waitMetric(`asynq_queue_size{queue="`+queue+`"}`, func(v float64) bool { return v == 1 }, "1")
	d.waitMetric(`asynq_tasks_enqueued_total{queue="`+queue+`",state="scheduled"}`, func(v float64) bool { return v == 1 }, "1")

	// Process-level collectors are there too.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
}

// TestMetricsInstruments checks the instruments the scheduler and the
// dispatcher report into.
func TestMetricsInstruments(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, []string{"crm"})

	// Configured endpoints start at zero.
	if got := gather(t, reg, "sessiond_webhook_attempts_total", "endpoint=crm,outcome=success"); got == nil || got.GetCounter().GetValue() != 0 {
		t.Errorf("attempts{crm,success} before any attempt = %v, want a 0 series", got)
	}
	if got := gather(t, reg, "sessiond_webhook_circuit_open", "endpoint=crm"); got == nil || got.GetGauge().GetValue() != 0 {
		t.Errorf("circuit_open{crm} before any attempt = %v, want a 0 series", got)
	}

	m.ObserveAttempt("crm", OutcomeFailure, 2*time.Second)
	m.ObserveAttempt("crm", OutcomeSuccess, 3*time.Second)
	m.ObserveAttempt("crm", "something new", time.Second) // counted as error
	m.ObserveExpiryLag(250 * time.Millisecond)
	m.ObserveExpiryLag(-time.Second) // early clocks count as 0
	m.SetCircuit("crm", true)
	m.Transitioned("", lifecycle.StatusCreated)
	m.Transitioned(lifecycle.StatusCreated, lifecycle.StatusExpired)

	for _, tc := range []struct {
		name, labels string
		want         float64
		value        func(*dto.Metric) float64
	}{
		{"sessiond_webhook_attempts_total", "endpoint=crm,outcome=failure", 1, counter},
		{"sessiond_webhook_attempts_total", "endpoint=crm,outcome=success", 1, counter},
		{"sessiond_webhook_attempts_total", "endpoint=crm,outcome=error", 1, counter},
		{"sessiond_webhook_delivery_seconds", "endpoint=crm", 1, histCount},
		{"sessiond_webhook_delivery_seconds", "endpoint=crm", 3, histSum},
		{"sessiond_expiry_lag_seconds", "", 2, histCount},
		{"sessiond_expiry_lag_seconds", "", 0.25, histSum},
		{"sessiond_webhook_circuit_open", "endpoint=crm", 1, gauge},
		{"sessiond_session_transitions_total", "from=none,to=created", 1, counter},
		{"sessiond_session_transitions_total", "from=created,to=expired", 1, counter},
	} {
		got := gather(t, reg, tc.name, tc.labels)
		if got == nil {
			t.Errorf("%s{%s} missing", tc.name, tc.labels)
			continue
		}
		if v := tc.value(got); v != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}
	m.SetCircuit("crm", false)
	if v := gather(t, reg, "sessiond_webhook_circuit_open", "endpoint=crm").GetGauge().GetValue(); v != 0 {
		t.Errorf("circuit_open{crm} after close = %v, want 0", v)
	}

	// A forgotten endpoint has no series left.
	m.ForgetEndpoint("crm")
	for _, tc := range []struct{ name, labels string }{
		{"sessiond_webhook_attempts_total", "endpoint=crm,outcome=success"},
		{"sessiond_webhook_attempts_total", "endpoint=crm,outcome=error"},
		{"sessiond_webhook_delivery_seconds", "endpoint=crm"},
		{"sessiond_webhook_circuit_open", "endpoint=crm"},
	} {
		if got := gather(t, reg, tc.name, tc.labels); got != nil {
			t.Errorf("%s{%s} after ForgetEndpoint = %v, want no series", tc.name, tc.labels, got)
		}
	}

	// A nil *Metrics records nothing and does not panic.
	var none *Metrics
	none.ObserveAttempt("x", OutcomeSuccess, time.Second)
	none.ObserveExpiryLag(time.Second)
	none.SetCircuit("x", true)
	none.ForgetEndpoint("x")
	none.Transitioned("", lifecycle.StatusCreated)
}

// The interfaces the scheduler and dispatcher are to declare; *Metrics
// must keep satisfying them.
var (
	_ dispatcher.Metrics                             = (*Metrics)(nil)
	_ interface{ ObserveExpiryLag(d time.Duration) } = (*Metrics)(nil)
	_ lifecycle.Observer                             = (*Metrics)(nil)
)

// TestMetricNames holds every metric sessiond defines to the Prometheus
// naming conventions.
func TestMetricNames(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	newMetrics(reg, []string{"crm"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "sessiond_") {
			t.Errorf("%s: want the sessiond_ prefix", name)
		}
		isTotal := strings.HasSuffix(name, "_total")
		if (mf.GetType() == dto.MetricType_COUNTER) != isTotal {
			t.Errorf("%s (%v): _total is for counters, and counters only", name, mf.GetType())
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("%s: histograms here measure time, want base unit _seconds", name)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s: no help text", name)
		}
	}
}

// TestOutboxBacklog checks the backlog gauge's arithmetic on real
// streams: one shard's, and another shard's added to it.
func TestOutboxBacklog(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	ctx := t.Context()
	keys := keyspace.New("")
	outbox := keys.Outbox(3)
	backlog := func(want int64, when string) {
		t.Helper()
		got, err := outboxBacklog(ctx, rdb, keys)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if got != want {
			t.Errorf("%s: backlog = %d, want %d", when, got, want)
		}
	}
	backlog(0, "no stream")
	var ids []string
	for range 5 {
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: outbox, Values: []any{"k", "v"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	backlog(5, "no group: XLEN")
	const group = "dispatcher"
	if err := rdb.XGroupCreate(ctx, outbox, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	backlog(5, "group, nothing read")
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c", Streams: []string{outbox, ">"}, Count: 2}).Err(); err != nil {
		t.Fatal(err)
	}
	backlog(5, "2 read, not acked: lag 3 + pending 2")
	if err := rdb.XAck(ctx, outbox, group, ids[0], ids[1]).Err(); err != nil {
		t.Fatal(err)
	}
	backlog(3, "2 acked")
	if err := rdb.XGroupCreate(ctx, outbox, "caught-up", "$").Err(); err != nil {
		t.Fatal(err)
	}
	backlog(3, "a second, caught-up group: the largest backlog")
	// A deletion inside the unread part makes Redis's lag unknown; the
	// gauge then counts the entries after the last delivered one.
	if err := rdb.XDel(ctx, outbox, ids[3]).Err(); err != nil {
		t.Fatal(err)
	}
	backlog(2, "after XDEL")
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Outbox(7), Values: []any{"k", "v"}}).Err(); err != nil {
		t.Fatal(err)
	}
	backlog(3, "another shard's stream, no group: its XLEN added")
}

// TestMetricsRedisDown checks that a scrape with Redis gone is fast and
// says so, instead of failing the page.
func TestMetricsRedisDown(t *testing.T) {
	t.Parallel()
	conn, err := redisconn.Parse("redis://127.0.0.1:1/0", redisconn.Options{}) // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	scrape := conn.Client(metricsPool)
	defer scrape.Close()
	reg := newRegistry(scrape, keyspace.New(""), slog.New(slog.DiscardHandler))
	start := time.Now()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if d := time.Since(start); d > metricsScrapeTimeout {
		t.Errorf("scrape with Redis down took %v, want under %v", d, metricsScrapeTimeout)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "sessiond_redis_up" {
			found = true
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 0 {
				t.Errorf("sessiond_redis_up = %v, want 0", v)
			}
		}
		if mf.GetName() == "sessiond_outbox_backlog" {
			t.Errorf("sessiond_outbox_backlog reported without Redis")
		}
	}
	if !found {
		t.Errorf("sessiond_redis_up missing")
	}
}

// gather returns the metric of family name whose labels are exactly
// labels ("k=v,k=v", sorted by name), or nil.
func gather(t *testing.T, reg *prometheus.Registry, name, labels string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			if strings.Join(ls, ",") == labels {
				return m
			}
		}
	}
	return nil
}

func counter(m *dto.Metric) float64   { return m.GetCounter().GetValue() }
func gauge(m *dto.Metric) float64     { return m.GetGauge().GetValue() }
func histCount(m *dto.Metric) float64 { return float64(m.GetHistogram().GetSampleCount()) }
func histSum(m *dto.Metric) float64   { return m.GetHistogram().GetSampleSum() }

// TestWebhookAndExpiryMetricsMove checks that the dispatcher and the expiry
// path report into /metrics: a delivered webhook counts as a successful
// attempt with its latency, a failing endpoint's attempts count as failures,
// and a session that runs out of time shows in the expiry-lag histogram.
func TestWebhookAndExpiryMetricsMove(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	d := startDaemon(t, nil, map[string]string{
		"SESSIOND_WEBHOOK_URL":            recv.URL,
		"SESSIOND_WEBHOOK_SECRET":         "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
		"SESSIOND_WEBHOOK_RETRY_SCHEDULE": "1h",
		"SESSIOND_SESSION_TTL":            "1s",
	})

	d.createSession("metrics-webhook", nil)
	d.waitMetric(`sessiond_webhook_attempts_total{endpoint="default",outcome="success"}`,
		func(v float64) bool { return v >= 1 }, "at least 1 after a delivered session.created")
	d.waitMetric(`sessiond_webhook_delivery_seconds_count{endpoint="default"}`,
		func(v float64) bool { return v >= 1 }, "at least 1 after a delivered webhook")
	d.waitMetric(`sessiond_expiry_lag_seconds_count`,
		func(v float64) bool { return v >= 1 }, "at least 1 after a session ran out of time")

	fail.Store(true)
	d.createSession("metrics-webhook-2", nil)
	d.waitMetric(`sessiond_webhook_attempts_total{endpoint="default",outcome="failure"}`,
		func(v float64) bool { return v >= 1 }, "at least 1 after a 500")
	if v := d.metrics()[`sessiond_webhook_circuit_open{endpoint="default"}`]; v != 0 {
		t.Errorf("circuit open = %v after one failure, want 0", v)
	}
}
