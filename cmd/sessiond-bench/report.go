package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
)

// benchResult is everything the load tool measured; --json prints it.
type benchResult struct {
	Machine machine        `json:"machine"`
	Config  map[string]any `json:"config"`
	Figures []figure       `json:"figures"`

	CreateOpen  loadResult    `json:"create_open_loop"`
	CreateSat   loadResult    `json:"create_saturation"`
	WebhookSat  webhookResult `json:"webhook_saturation"`
	WebhookHalf webhookResult `json:"webhook_half_rate"`
	Expiry      expiryResult  `json:"expiry"`
	MemCreated  float64       `json:"memory_per_created_session_bytes"`
	MemDecided  float64       `json:"memory_per_decided_session_bytes"`
	MemSessions int           `json:"memory_sessions"`
	FeedEvents  int           `json:"feed_events"`
	Delivered   int           `json:"webhooks_delivered"`
	Duplicates  int           `json:"webhook_duplicates"`

	RawSet      rawOps       `json:"ceiling_raw_set"`
	RawGet      rawOps       `json:"ceiling_raw_get"`
	Asynq       asynqCeiling `json:"ceiling_asynq"`
	KeyMem      float64      `json:"ceiling_memory_per_plain_key_bytes"`
	KeyMemValue int          `json:"ceiling_memory_plain_value_bytes"`

	Notes []string `json:"notes,omitempty"`
}

type loadResult struct {
	Offered float64   `json:"offered_per_sec,omitempty"`
	Workers int       `json:"workers,omitempty"`
	Calls   int       `json:"calls"`
	OK      int       `json:"ok"`
	Errors  int       `json:"errors"`
	PerSec  float64   `json:"per_sec"`
	Latency latencies `json:"latency"`
}

type webhookResult struct {
	Events      int        `json:"events"`
	Delivered   int        `json:"delivered"`
	PerSec      float64    `json:"deliveries_per_sec,omitempty"`
	Offered     float64    `json:"offered_per_sec,omitempty"`
	Latency     latencies  `json:"decision_to_2xx"`
	DecisionAPI loadResult `json:"decision_api"`
}

type expiryResult struct {
	Sessions   int       `json:"sessions"`
	Created    int       `json:"created"`
	Expired    int       `json:"expired"`
	Early      int       `json:"early"`
	TTL        string    `json:"ttl"`
	Window     string    `json:"window"`
	Lag        latencies `json:"lag"`         // expires_at -> committed (event timestamp)
	ReceiptLag latencies `json:"receipt_lag"` // expires_at -> webhook 2xx
}

// figure is one line of the table: a sessiond figure and the ceiling it
// is compared with. Ratio is Value / Ceiling: for rates the share of the
// ceiling reached, for latencies and sizes how many times the ceiling.
type figure struct {
	Name         string  `json:"name"`
	Value        float64 `json:"value"`
	Unit         string  `json:"unit"`
	Ceiling      string  `json:"ceiling,omitempty"`
	CeilingValue float64 `json:"ceiling_value,omitempty"`
	Ratio        float64 `json:"ratio,omitempty"`
}

type machine struct {
	CPU   string `json:"cpu"`
	CPUs  int    `json:"cpus"`
	OS    string `json:"os"`
	Go    string `json:"go"`
	Redis string `json:"redis"`
	Note  string `json:"note"`
}

func machineInfo(ctx context.Context, rdb *redis.Client) machine {
	m := machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version(),
		Note: "sessiond, Redis, the receiver and the load generator share these CPUs"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
		f.Close()
	}
	if rdb != nil {
		m.Redis = redisVersion(ctx, rdb)
	}
	return m
}

// figures fills Figures from the measurements.
func (r *benchResult) figures() {
	add := func(name string, v float64, unit, ceiling string, cv float64) {
		if v == 0 && cv == 0 {
			return
		}
		r.Figures = append(r.Figures, figure{Name: name, Value: v, Unit: unit, Ceiling: ceiling, CeilingValue: cv, Ratio: ratio(v, cv)})
	}
	set, asy := r.RawSet, r.Asynq
	setName := "raw SET (" + set.Tool + ", " + fmt.Sprint(set.Clients) + " clients)"
	if o := r.CreateOpen; o.OK > 0 {
		add(fmt.Sprintf("create, open loop at %.0f/s: throughput", o.Offered), o.PerSec, "/s", "offered rate", o.Offered)
		add("create, open loop: p50", o.Latency.P50, "ms", setName+" p50", set.P50)
		add("create, open loop: p99", o.Latency.P99, "ms", setName+" p99", set.P99)
	}
	if s := r.CreateSat; s.OK > 0 {
		add(fmt.Sprintf("create, saturation (%d workers): throughput", s.Workers), s.PerSec, "/s", setName, set.PerSec)
		add("create, saturation: p50", s.Latency.P50, "ms", setName+" p50", set.P50)
		add("create, saturation: p99", s.Latency.P99, "ms", setName+" p99", set.P99)
	}
	if w := r.WebhookSat; w.Delivered > 0 {
		add(fmt.Sprintf("webhooks, %d decisions at saturation: deliveries", w.Events), w.PerSec, "/s", "bare Asynq no-op tasks processed", asy.ProcessPS)
		add("webhooks at saturation: decisions accepted by the API", w.DecisionAPI.PerSec, "/s", "", 0)
		add("webhooks at saturation: decision → 2xx p50", w.Latency.P50, "ms", "", 0)
		add("webhooks at saturation: decision → 2xx p99", w.Latency.P99, "ms", "", 0)
	}
	if w := r.WebhookHalf; w.Delivered > 0 {
		at := fmt.Sprintf(" at %.0f/s", w.Offered)
		add("webhooks"+at+" (half): decision → 2xx p50", w.Latency.P50, "ms", "bare Asynq enqueue → handler p50"+at, asy.Latency.P50)
		add("webhooks"+at+" (half): decision → 2xx p99", w.Latency.P99, "ms", "bare Asynq enqueue → handler p99"+at, asy.Latency.P99)
	}
	if e := r.Expiry; e.Expired > 0 {
		name := fmt.Sprintf("expiry lag, %d due over %s", e.Expired, e.Window)
		add(name+": p50", e.Lag.P50, "ms", "bare Asynq ProcessAt lag p50", asy.SchedLag.P50)
		add(name+": p99", e.Lag.P99, "ms", "bare Asynq ProcessAt lag p99", asy.SchedLag.P99)
		add(name+": max", e.Lag.Max, "ms", "bare Asynq ProcessAt lag max", asy.SchedLag.Max)
		r.Figures = append(r.Figures, figure{Name: "expiries before expires_at (must be 0)", Value: float64(e.Early), Unit: "", Ceiling: "bare Asynq early", CeilingValue: float64(asy.SchedEarly)})
		add("expiry: expires_at → session.expired 2xx p99", e.ReceiptLag.P99, "ms", "", 0)
	}
	if r.MemCreated > 0 {
		add("Redis memory per created session", r.MemCreated, "B", fmt.Sprintf("plain key holding the session JSON (%d B)", r.KeyMemValue), r.KeyMem)
	}
	if r.MemDecided > 0 {
		add("Redis memory per decided session (4 events delivered)", r.MemDecided, "B", fmt.Sprintf("plain key holding the session JSON (%d B)", r.KeyMemValue), r.KeyMem)
	}
	if set.PerSec > 0 {
		add("ceiling: raw SET", set.PerSec, "/s", "", 0)
		add("ceiling: raw GET", r.RawGet.PerSec, "/s", "", 0)
	}
	if asy.ProcessPS > 0 {
		add("ceiling: bare Asynq no-op processed", asy.ProcessPS, "/s", "", 0)
		add("ceiling: bare Asynq enqueue", asy.EnqueuePS, "/s", "", 0)
	}
}

func (r *benchResult) writeTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\nsessiond-bench on %s, %d CPUs, %s, %s, Redis %s (%s)\n\n", m.CPU, m.CPUs, m.OS, m.Go, m.Redis, m.Note)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tceiling\tratio")
	fmt.Fprintln(tw, "------\t-----\t-------\t-----")
	for _, f := range r.Figures {
		ceiling, rat := "", ""
		if f.Ceiling != "" {
			ceiling = f.Ceiling + " = " + human(f.CeilingValue) + " " + f.Unit
			if f.CeilingValue > 0 {
				rat = fmt.Sprintf("%.3g", f.Ratio)
			}
		}
		value := human(f.Value) + " " + f.Unit
		if f.Unit == "" {
			value = fmt.Sprintf("%.0f", f.Value)
			ceiling = fmt.Sprintf("%s = %.0f", f.Ceiling, f.CeilingValue)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, value, ceiling, rat)
	}
	tw.Flush()
	if r.FeedEvents > 0 {
		fmt.Fprintf(w, "\nevents in the feed %d, webhooks delivered %d, duplicate deliveries %d\n", r.FeedEvents, r.Delivered, r.Duplicates)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
