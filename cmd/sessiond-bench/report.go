package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
)

// benchResult is everything the load tool measured; --json prints it.
type benchResult struct {
	Machine     machine        `json:"machine"`
	Config      map[string]any `json:"config"`
	Topology    string         `json:"topology"`
	MinReplicas int            `json:"min_replicas"`
	Figures     []figure       `json:"figures"`

	Idle idleResult `json:"idle"`
	Cost costResult `json:"cost"`

	CreateOpen     loadResult    `json:"create_open_loop"`
	CreateSat      loadResult    `json:"create_saturation"`
	WebhookSat     webhookResult `json:"webhook_saturation"`
	WebhookHalf    webhookResult `json:"webhook_half_rate"`
	WebhookBacklog backlogResult `json:"webhook_backlog"`
	Expiry         expiryResult  `json:"expiry"`
	MemCreated     float64       `json:"memory_per_created_session_bytes"`
	MemDecided     float64       `json:"memory_per_decided_session_bytes"`
	MemSessions    int           `json:"memory_sessions"`
	FeedEvents     int           `json:"feed_events"`
	Delivered      int           `json:"webhooks_delivered"`
	Duplicates     int           `json:"webhook_duplicates"`

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

// backlogResult is the backlog phase: decisions made while the receiver
// held every delivery, then delivered at once.
type backlogResult struct {
	Events    int     `json:"events"`
	Delivered int     `json:"delivered"`
	HeldFor   float64 `json:"held_seconds"`
	InAsynq   int     `json:"asynq_tasks_at_release"` // tasks added to Asynq while held: deferred by the daemon (-1: unknown)
	PerSec    float64 `json:"deliveries_per_sec"`     // from the release to the last delivery
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

// idleResult is the idle phase: the daemon up, no traffic.
type idleResult struct {
	Seconds      float64 `json:"seconds"`
	CommandsPS   float64 `json:"redis_commands_per_sec"`            // every master, those in scripts included
	BackgroundPS float64 `json:"redis_background_commands_per_sec"` // the same with no daemon (replication, sentinels)
	DaemonPS     float64 `json:"redis_commands_per_sec_by_daemon"`  // CommandsPS - BackgroundPS
	ReadsPS      float64 `json:"redis_reads_per_sec"`
	DaemonCores  float64 `json:"daemon_cores"`
	Masters      masters `json:"masters"`
}

// costResult is the cost phase: what one decided session (create,
// started, submitted, approved, 4 webhooks delivered) costs.
type costResult struct {
	Sessions    int          `json:"sessions"`
	Seconds     float64      `json:"seconds"`
	PerSec      float64      `json:"sessions_per_sec"`
	RoundTrips  float64      `json:"round_trips_per_session"` // total_reads_processed
	Commands    float64      `json:"commands_per_session"`    // total_commands_processed
	ScriptRuns  float64      `json:"script_runs_per_session"` // EVAL/EVALSHA/FCALL calls
	RedisCPUus  float64      `json:"redis_cpu_us_per_session"`
	DaemonCPUus float64      `json:"daemon_cpu_us_per_session"`
	PerMaster   []masterCost `json:"per_master"`
	// ByCommand is the commands Redis ran most per session, by name
	// (commandstats, those inside scripts included): where the commands
	// and round trips go.
	ByCommand []commandCost `json:"by_command"`
}

type commandCost struct {
	Name       string  `json:"name"`
	PerSession float64 `json:"per_session"`
}

// byCommand is calls (by command name) divided by sessions, most first,
// at most top of them.
func byCommand(calls map[string]int64, sessions float64, top int) []commandCost {
	out := make([]commandCost, 0, len(calls))
	for name, n := range calls {
		out = append(out, commandCost{Name: name, PerSession: round(float64(n)/sessions, 2)})
	}
	slices.SortFunc(out, func(a, b commandCost) int {
		if c := cmp.Compare(b.PerSession, a.PerSession); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out[:min(top, len(out))]
}

type masterCost struct {
	Addr       string  `json:"addr"`
	CPUus      float64 `json:"cpu_us_per_session"`
	Commands   float64 `json:"commands_per_session"`
	RoundTrips float64 `json:"round_trips_per_session"`
}

// figure is one line of the table: a sessiond figure, the target it must
// meet, what main measured before the performance work, and the ceiling
// it is compared with. Ratio is Value / Ceiling: for rates the share of
// the ceiling reached, for latencies and sizes how many times the ceiling.
type figure struct {
	Name         string  `json:"name"`
	Value        float64 `json:"value"`
	Unit         string  `json:"unit"`
	Target       string  `json:"target,omitempty"`
	Met          *bool   `json:"met,omitempty"` // nil: no target
	Before       string  `json:"before,omitempty"`
	Ceiling      string  `json:"ceiling,omitempty"`
	CeilingValue float64 `json:"ceiling_value,omitempty"`
	Ratio        float64 `json:"ratio,omitempty"`
}

// goal is a target a figure must meet.
type goal struct {
	text string // as the table shows it, e.g. "≤ 10"
	ok   func(f figure) bool
}

// atMost, below, atLeastRatio and exactly are the kinds of target.
func atMost(limit float64, text string) *goal {
	return &goal{text: "≤ " + text, ok: func(f figure) bool { return f.Value <= limit }}
}

func below(limit float64, text string) *goal {
	return &goal{text: "< " + text, ok: func(f figure) bool { return f.Value < limit }}
}

func atLeastRatio(limit float64) *goal {
	return &goal{text: fmt.Sprintf("≥ %g × ceiling", limit), ok: func(f figure) bool { return f.CeilingValue > 0 && f.Ratio >= limit }}
}

func exactly(v float64) *goal {
	return &goal{text: fmt.Sprintf("= %g", v), ok: func(f figure) bool { return f.Value == v }}
}

// Targets and what main measured before the change (issue 12, on this
// 2-core machine): the "before" column.
const (
	beforeDeliveries = "0.20–0.23 × ceiling"
	beforeHalfP99    = "38 ms"
	beforeRoundTrips = "26"
	beforeCommands   = "87"
	beforeIdleCmds   = "2,400 /s"
	beforeIdleCores  = "0.28"
	beforeMemCreated = "7.3 KB"
	beforeMemDecided = "18 KB"
	beforeExpiryP99  = "6 ms"
	beforeEarly      = "0"
)

// missed lists the figures with a target they did not meet.
func (r *benchResult) missed() []string {
	var out []string
	for _, f := range r.Figures {
		if f.Met != nil && !*f.Met {
			out = append(out, fmt.Sprintf("%s: %s %s, target %s", f.Name, human(f.Value), f.Unit, f.Target))
		}
	}
	return out
}

type machine struct {
	CPU   string `json:"cpu"`
	CPUs  int    `json:"cpus"`
	OS    string `json:"os"`
	Go    string `json:"go"`
	Redis string `json:"redis"`
	Note  string `json:"note"`
}

func machineInfo(ctx context.Context, rdb redis.UniversalClient) machine {
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
	add := func(name string, v float64, unit, ceiling string, cv float64, g *goal, before string) {
		f := figure{Name: name, Value: v, Unit: unit, Ceiling: ceiling, CeilingValue: cv, Ratio: ratio(v, cv), Before: before}
		if g != nil {
			met := g.ok(f)
			f.Target, f.Met = g.text, &met
		}
		r.Figures = append(r.Figures, f)
	}
	set, asy := r.RawSet, r.Asynq
	setName := "raw SET (" + set.Tool + ", " + fmt.Sprint(set.Clients) + " clients)"
	if i := r.Idle; i.Seconds > 0 {
		add(fmt.Sprintf("idle %.0f s: Redis commands/s, all masters, in scripts included", i.Seconds), i.CommandsPS, "/s", "", 0, nil, "")
		add("idle: of which the deployment's own with no daemon (replication, sentinels)", i.BackgroundPS, "/s", "", 0, nil, "")
		add("idle: Redis commands/s the daemon causes", i.DaemonPS, "/s", "", 0, atMost(100, "100 /s"), beforeIdleCmds)
		add("idle: Redis reads/s (round trips)", i.ReadsPS, "/s", "", 0, nil, "")
		add("idle: daemon CPU", i.DaemonCores, "cores", "", 0, atMost(0.03, "0.03"), beforeIdleCores)
	}
	if c := r.Cost; c.Sessions > 0 {
		name := fmt.Sprintf("cost, %d decided sessions (4 webhooks each)", c.Sessions)
		add(name+": sessions/s driven", c.PerSec, "/s", "", 0, nil, "")
		add("cost: Redis round trips per session (total_reads_processed)", c.RoundTrips, "", "", 0, atMost(10, "10"), beforeRoundTrips)
		add("cost: Redis commands per session (total_commands_processed)", c.Commands, "", "", 0, nil, beforeCommands)
		add("cost: Lua script runs per session (EVAL/EVALSHA)", c.ScriptRuns, "", "", 0, nil, "")
		add("cost: daemon CPU per session", c.DaemonCPUus, "µs", "", 0, nil, "")
		add("cost: Redis CPU per session, all masters", c.RedisCPUus, "µs", "", 0, nil, "")
		if len(c.PerMaster) > 1 {
			for _, m := range c.PerMaster {
				add(fmt.Sprintf("cost: Redis CPU per session on master %s (%.1f commands, %.1f round trips)", m.Addr, m.Commands, m.RoundTrips), m.CPUus, "µs", "", 0, nil, "")
			}
		}
	}
	if o := r.CreateOpen; o.OK > 0 {
		add(fmt.Sprintf("create, open loop at %.0f/s: throughput", o.Offered), o.PerSec, "/s", "offered rate", o.Offered, nil, "")
		add("create, open loop: p50", o.Latency.P50, "ms", setName+" p50", set.P50, nil, "")
		add("create, open loop: p99", o.Latency.P99, "ms", setName+" p99", set.P99, nil, "")
	}
	if s := r.CreateSat; s.OK > 0 {
		add(fmt.Sprintf("create, saturation (%d workers): throughput", s.Workers), s.PerSec, "/s", setName, set.PerSec, nil, "")
		add("create, saturation: p50", s.Latency.P50, "ms", setName+" p50", set.P50, nil, "")
		add("create, saturation: p99", s.Latency.P99, "ms", setName+" p99", set.P99, nil, "")
	}
	if w := r.WebhookSat; w.Delivered > 0 {
		add(fmt.Sprintf("webhooks, %d decisions at saturation: deliveries", w.Events), w.PerSec, "/s", "bare Asynq no-op tasks processed", asy.ProcessPS, atLeastRatio(0.5), beforeDeliveries)
		add("webhooks at saturation: decisions accepted by the API", w.DecisionAPI.PerSec, "/s", "", 0, nil, "")
		add(fmt.Sprintf("webhooks at saturation: decision API p50 (min replicas %d)", r.MinReplicas), w.DecisionAPI.Latency.P50, "ms", "", 0, nil, "")
		add(fmt.Sprintf("webhooks at saturation: decision API p99 (min replicas %d)", r.MinReplicas), w.DecisionAPI.Latency.P99, "ms", "", 0, nil, "")
		add("webhooks at saturation: decision → 2xx p50", w.Latency.P50, "ms", "", 0, nil, "")
		add("webhooks at saturation: decision → 2xx p99", w.Latency.P99, "ms", "", 0, nil, "")
	}
	if w := r.WebhookBacklog; w.Delivered > 0 {
		inAsynq := "tasks added to Asynq unknown"
		if w.InAsynq >= 0 {
			inAsynq = fmt.Sprintf("%d added to Asynq by the release", w.InAsynq)
		}
		add(fmt.Sprintf("webhooks from a backlog of %d decisions (made while the receiver held deliveries for %.1f s; %s): deliveries", w.Events, w.HeldFor, inAsynq),
			w.PerSec, "/s", "bare Asynq no-op tasks processed", asy.ProcessPS, atLeastRatio(0.5), "")
	}
	if w := r.WebhookHalf; w.Delivered > 0 {
		at := fmt.Sprintf(" at %.0f/s", w.Offered)
		add("webhooks"+at+" (half): decision → 2xx p50", w.Latency.P50, "ms", "bare Asynq enqueue → handler p50"+at, asy.Latency.P50, nil, "")
		add("webhooks"+at+" (half): decision → 2xx p99", w.Latency.P99, "ms", "bare Asynq enqueue → handler p99"+at, asy.Latency.P99, below(50, "50 ms"), beforeHalfP99)
		add(fmt.Sprintf("webhooks%s (half): decision API p50 (min replicas %d)", at, r.MinReplicas), w.DecisionAPI.Latency.P50, "ms", "", 0, nil, "")
		add(fmt.Sprintf("webhooks%s (half): decision API p99 (min replicas %d)", at, r.MinReplicas), w.DecisionAPI.Latency.P99, "ms", "", 0, nil, "")
	}
	if e := r.Expiry; e.Expired > 0 {
		name := fmt.Sprintf("expiry lag, %d due over %s", e.Expired, e.Window)
		add(name+": p50", e.Lag.P50, "ms", "bare Asynq ProcessAt lag p50", asy.SchedLag.P50, nil, "")
		add(name+": p99", e.Lag.P99, "ms", "bare Asynq ProcessAt lag p99", asy.SchedLag.P99, below(250, "250 ms"), beforeExpiryP99)
		add(name+": max", e.Lag.Max, "ms", "bare Asynq ProcessAt lag max", asy.SchedLag.Max, nil, "")
		f := figure{Name: "expiries before expires_at", Value: float64(e.Early), Ceiling: "bare Asynq early", CeilingValue: float64(asy.SchedEarly), Before: beforeEarly}
		g := exactly(0)
		met := g.ok(f)
		f.Target, f.Met = g.text, &met
		r.Figures = append(r.Figures, f)
		add("expiry: expires_at → session.expired 2xx p99", e.ReceiptLag.P99, "ms", "", 0, nil, "")
	}
	keyMem := "" // the ceiling of the memory figures, when measured
	if r.KeyMem > 0 {
		keyMem = fmt.Sprintf("plain key holding the session JSON (%d B)", r.KeyMemValue)
	}
	if r.MemCreated != 0 {
		add("Redis memory per created session (all masters)", r.MemCreated, "B", keyMem, r.KeyMem, atMost(3*1024, "3 KiB"), beforeMemCreated)
	}
	if r.MemDecided != 0 {
		add("Redis memory per decided session, 4 events delivered (all masters)", r.MemDecided, "B", keyMem, r.KeyMem, atMost(6*1024, "6 KiB"), beforeMemDecided)
	}
	if set.PerSec > 0 {
		add("ceiling: raw SET", set.PerSec, "/s", "", 0, nil, "")
		add("ceiling: raw GET", r.RawGet.PerSec, "/s", "", 0, nil, "")
	}
	if asy.ProcessPS > 0 {
		add("ceiling: bare Asynq no-op processed", asy.ProcessPS, "/s", "", 0, nil, "")
		add("ceiling: bare Asynq enqueue", asy.EnqueuePS, "/s", "", 0, nil, "")
	}
}

func (r *benchResult) writeTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\nsessiond-bench on %s, %d CPUs, %s, %s, Redis %s (%s)\n", m.CPU, m.CPUs, m.OS, m.Go, m.Redis, m.Note)
	fmt.Fprintf(w, "topology %s, SESSIOND_REDIS_MIN_REPLICAS=%d; \"before\" is what main measured before the performance work (issue 12)\n\n", r.Topology, r.MinReplicas)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\ttarget\tmet\tbefore\tceiling\tratio")
	fmt.Fprintln(tw, "------\t-----\t------\t---\t------\t-------\t-----")
	for _, f := range r.Figures {
		ceiling, rat := "", ""
		if f.Ceiling != "" {
			ceiling = f.Ceiling + " = " + human(f.CeilingValue) + " " + f.Unit
			if f.CeilingValue > 0 {
				rat = fmt.Sprintf("%.3g", f.Ratio)
			}
		}
		value := strings.TrimSpace(human(f.Value) + " " + f.Unit)
		if f.Unit == "" && f.Value == float64(int64(f.Value)) {
			value = fmt.Sprintf("%.0f", f.Value)
		}
		if f.Unit == "" && f.Ceiling != "" {
			ceiling = fmt.Sprintf("%s = %.0f", f.Ceiling, f.CeilingValue)
		}
		met := ""
		if f.Met != nil {
			met = "yes"
			if !*f.Met {
				met = "MISSED"
			}
		}
		before := f.Before
		if before == "" {
			before = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, value, f.Target, met, before, ceiling, rat)
	}
	tw.Flush()
	if r.FeedEvents > 0 {
		fmt.Fprintf(w, "\nevents in the feed %d, webhooks delivered %d, duplicate deliveries %d\n", r.FeedEvents, r.Delivered, r.Duplicates)
	}
	if c := r.Cost; len(c.ByCommand) > 0 {
		fmt.Fprintf(w, "cost phase, commands per session by name (inside scripts included):")
		for _, x := range c.ByCommand {
			fmt.Fprintf(w, " %s %.2f", x.Name, x.PerSession)
		}
		fmt.Fprintln(w)
	}
	if c := r.Cost; len(c.PerMaster) > 0 {
		fmt.Fprintf(w, "cost phase per master (µs of Redis CPU / commands / round trips per session):")
		for _, m := range c.PerMaster {
			fmt.Fprintf(w, "  %s %.1f / %.1f / %.1f", m.Addr, m.CPUus, m.Commands, m.RoundTrips)
		}
		fmt.Fprintln(w)
	}
	if missed := r.missed(); len(missed) > 0 {
		fmt.Fprintf(w, "\ntargets missed (%d):\n", len(missed))
		for _, s := range missed {
			fmt.Fprintf(w, "  %s\n", s)
		}
	} else if len(r.Figures) > 0 {
		fmt.Fprintln(w, "\nevery figure with a target met it")
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
