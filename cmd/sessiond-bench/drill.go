package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sessiond/sessiond/internal/redistest"
	"github.com/sessiond/sessiond/signing"
)

// drillConfig is the drill's settings (flags).
type drillConfig struct {
	JSON bool

	Topology       string        // single, sentinel or cluster
	MinReplicas    int           // SESSIOND_REDIS_MIN_REPLICAS
	LoadFor        time.Duration // how long the load and the chaos run
	Workers        int           // load goroutines, each driving one session at a time
	KillMin        time.Duration // a replica is SIGKILLed every KillMin..KillMax
	KillMax        time.Duration
	RedisAt        float64       // the Redis chaos (see chaosRedis) happens once, at this fraction of LoadFor
	TTL            time.Duration // SESSIOND_SESSION_TTL
	WebhookTimeout time.Duration // SESSIOND_WEBHOOK_TIMEOUT
	RetrySchedule  string        // SESSIOND_WEBHOOK_RETRY_SCHEDULE
	Settle         time.Duration // longest wait for deliveries after the load
	BadRate        float64       // share of sessions that also get a bad request
	P500, P429     float64       // receiver: share of 500s and 429s
	PTimeout       float64       // receiver: share held past the webhook timeout

	DaemonBin string
	Keep      bool
}

func parseDrillFlags(args []string, stderr io.Writer) (drillConfig, error) {
	var c drillConfig
	fs := flag.NewFlagSet("sessiond-bench drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&c.Topology, "topology", topologySingle, "Redis deployment: single (SIGKILL and restart, AOF always), sentinel (SIGKILL the master, failover, the old master back as a replica) or cluster (SIGKILL a master, restart it with its AOF)")
	fs.IntVar(&c.MinReplicas, "min-replicas", -1, "SESSIOND_REDIS_MIN_REPLICAS of the replicas (default 1 on sentinel, else 0)")
	fs.DurationVar(&c.LoadFor, "load-for", 75*time.Second, "duration of the load and the chaos")
	fs.IntVar(&c.Workers, "workers", 4, "load workers")
	fs.DurationVar(&c.KillMin, "kill-min", 5*time.Second, "shortest time between replica SIGKILLs")
	fs.DurationVar(&c.KillMax, "kill-max", 8*time.Second, "longest time between replica SIGKILLs")
	fs.Float64Var(&c.RedisAt, "redis-restart-at", 0.45, "when the Redis chaos happens (see --topology), as a fraction of --load-for (negative: never)")
	fs.DurationVar(&c.TTL, "ttl", 10*time.Second, "SESSIOND_SESSION_TTL")
	fs.DurationVar(&c.WebhookTimeout, "webhook-timeout", 500*time.Millisecond, "SESSIOND_WEBHOOK_TIMEOUT")
	fs.StringVar(&c.RetrySchedule, "retry-schedule", "200ms,500ms,1s,1s,2s,2s,2s,2s,2s,2s", "SESSIOND_WEBHOOK_RETRY_SCHEDULE")
	fs.DurationVar(&c.Settle, "settle", 60*time.Second, "longest wait for deliveries after the load")
	fs.Float64Var(&c.BadRate, "bad-rate", 0.3, "share of sessions that also get an unauthorised or malformed request")
	fs.Float64Var(&c.P500, "p500", 0.08, "receiver: share of deliveries answered 500")
	fs.Float64Var(&c.P429, "p429", 0.04, "receiver: share answered 429 with Retry-After: 1")
	fs.Float64Var(&c.PTimeout, "ptimeout", 0.04, "receiver: share held past the webhook timeout")
	fs.StringVar(&c.DaemonBin, "daemon-bin", "", "prebuilt sessiond binary (default: go build ./cmd/sessiond)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the work directory (logs, AOF) even when the drill passes")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Workers <= 0 || c.LoadFor <= 0 || c.KillMin <= 0 || c.KillMax < c.KillMin {
		return c, errors.New("--workers, --load-for and --kill-min must be positive, --kill-max at least --kill-min")
	}
	if c.MinReplicas < 0 {
		c.MinReplicas = defaultMinReplicas(c.Topology)
	}
	if err := checkTopology(c.Topology, c.MinReplicas); err != nil {
		return c, err
	}
	return c, nil
}

// drillReport is the drill's result. The must-be-0 figures decide Failed.
type drillReport struct {
	Topology      string           `json:"topology"`
	MinReplicas   int              `json:"min_replicas"`
	Chaos         []chaosEvent     `json:"chaos"`
	FirstWrite    string           `json:"sigkill_to_first_accepted_write,omitempty"` // sentinel: SIGKILL of the master -> first create answered 2xx
	NotDurable    int64            `json:"answers_not_durable"`                       // 503: made but not on enough replicas
	Duration      string           `json:"duration"`
	Sessions      int              `json:"sessions"`
	RequestsOK    int64            `json:"requests_ok"`
	Retries       int64            `json:"retries"`
	RetryCauses   map[string]int64 `json:"retries_by_cause"`
	Ambiguous     int64            `json:"ambiguous_resolved"`
	IdemLocked    int64            `json:"idempotency_key_locked"`
	ExpiredInLoad int64            `json:"expired_under_load"`
	GaveUp        int64            `json:"steps_given_up"`
	ReplicaKills  int              `json:"replica_kills"`
	RedisRestarts int              `json:"redis_restarts"` // Redis chaos rounds (restart, failover)

	LostAcked       int    `json:"acknowledged_changes_lost"`       // a later read shows an acknowledged change undone
	AckedMissing    int    `json:"acknowledged_events_not_in_feed"` // an acknowledged change's event is not in the feed
	RedisCrashes    int    `json:"redis_unexpected_exits"`
	EventsProduced  int    `json:"events_produced"`
	EventsDelivered int    `json:"events_delivered"`
	Lost            int    `json:"lost"`
	Duplicates      int64  `json:"duplicates"`
	Phantom         int    `json:"delivered_not_in_feed"`
	SequenceGaps    int    `json:"sequence_gaps"`
	MissingStatus   int    `json:"final_status_without_event"`
	WrongStatus     int    `json:"wrong_final_status"`
	Unchecked       int    `json:"sessions_unchecked"`
	BadSent         int64  `json:"bad_requests_sent"`
	BadAccepted     int64  `json:"bad_requests_accepted"`
	BadSignatures   int64  `json:"webhooks_bad_signature"`
	Refused         int64  `json:"valid_requests_refused"`
	CrashExits      int    `json:"unexpected_exits"`
	Unclean         int    `json:"unclean_shutdowns"`
	SettledIn       string `json:"settled_in"`
	ExpiryLagMax    string `json:"expiry_lag_max"` // sessions left to expire: expires_at -> session.expired/abandoned
	ExpiryEarly     int    `json:"expired_early"`

	Receiver struct {
		OK, Failed500, Throttled429, TimedOut int64
	} `json:"receiver"`
	BadByKind map[string][2]int64 `json:"bad_requests_by_kind"` // sent, accepted

	Failed   bool     `json:"failed"`
	Failures []string `json:"failures,omitempty"`
	Losses   []string `json:"losses_reported,omitempty"` // see lossesAllowed: reported, not failed
	Evidence []string `json:"evidence,omitempty"`
	WorkDir  string   `json:"work_dir,omitempty"`
}

// tracked is a session the load drove, and the status it drove it to.
type tracked struct {
	id        string
	scenario  string
	expected  string
	expiresAt time.Time // latest known; zero once not pending
	leave     bool      // left to expire: expected holds only after expiresAt
	uncertain bool      // a step was given up: the status is not known
	acked     []string  // event types of the changes the API acknowledged, in order
}

// chaosEvent is one thing the chaos did, At from the start of the load.
type chaosEvent struct {
	At   string `json:"at"`
	What string `json:"what"`
}

type drill struct {
	cfg      drillConfig
	logf     func(format string, args ...any)
	dir      string
	api      *apiClient
	rcv      *receiver
	dep      *deployment
	replicas []*daemon
	next     atomic.Uint32
	runID    string

	mu         sync.Mutex
	sessions   []*tracked
	causes     map[string]int64 // retries by cause
	evidence   []string
	loadStart  time.Time
	chaosLog   []chaosEvent
	firstWrite time.Duration // sentinel: SIGKILL of the master -> first accepted create; 0: none measured
	lostAcked  int

	requestsOK, retries, ambiguous, expiredInLoad, gaveUp, refused atomic.Int64
	idemLocked, notDurable                                         atomic.Int64
	badSent, badAccepted                                           atomic.Int64
	badMu                                                          sync.Mutex
	badByKind                                                      map[string][2]int64
	kills, redisRestarts                                           int
}

// runDrill runs the drill and returns its report; the error is for a
// drill that could not run at all.
func runDrill(ctx context.Context, cfg drillConfig, stderr io.Writer) (rep *drillReport, err error) {
	start := time.Now()
	d := &drill{cfg: cfg, runID: randomHex(4), badByKind: map[string][2]int64{}, causes: map[string]int64{}}
	var logMu sync.Mutex
	d.logf = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	d.dir, err = os.MkdirTemp("", "sessiond-drill-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if cfg.Keep || err != nil || (rep != nil && rep.Failed) {
			d.logf("work directory kept: %s (redis.log, sessiond-*.log, AOF)", d.dir)
			if rep != nil {
				rep.WorkDir = d.dir
			}
			return
		}
		os.RemoveAll(d.dir)
	}()

	bin := cfg.DaemonBin
	if bin == "" {
		d.logf("building sessiond")
		if bin, err = buildDaemon(ctx, d.dir); err != nil {
			return nil, err
		}
	}
	// AOF with appendfsync always where a node restarts with its data
	// (single, cluster); a Sentinel set's old master comes back as a
	// replica and takes the new master's data instead.
	opts := redistest.Options{AppendOnly: cfg.Topology != topologySentinel}
	if d.dep, err = startDeployment(ctx, cfg.Topology, d.dir, opts); err != nil {
		return nil, err
	}
	defer d.dep.close() // closing twice is fine: the end of the drill closes it and checks

	key, secret, whsec := "drill", randomHex(24), signing.GenerateSecret()
	d.api = newAPIClient(key, secret, 64)
	d.api.hc.Timeout = 5 * time.Second
	flaky := &flakiness{p500: cfg.P500, p429: cfg.P429, pTimeout: cfg.PTimeout, hold: 2*cfg.WebhookTimeout + time.Second, maxStreak: 3}
	if d.rcv, err = startReceiver("127.0.0.1:0", whsec, flaky, nil); err != nil {
		return nil, err
	}
	defer d.rcv.close()

	for i := range 2 {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("sessiond-%d", i+1)
		d.replicas = append(d.replicas, newDaemon(bin, name, filepath.Join(d.dir, name+".log"), map[string]string{
			"SESSIOND_REDIS_URL":              d.dep.url(),
			"SESSIOND_REDIS_MIN_REPLICAS":     strconv.Itoa(cfg.MinReplicas),
			"SESSIOND_ADMIN_ADDR":             addr,
			"SESSIOND_API_KEY":                key,
			"SESSIOND_API_SECRET":             secret,
			"SESSIOND_WEBHOOK_URL":            d.rcv.url(),
			"SESSIOND_WEBHOOK_SECRET":         whsec,
			"SESSIOND_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
			"SESSIOND_WEBHOOK_TIMEOUT":        cfg.WebhookTimeout.String(),
			"SESSIOND_WEBHOOK_RETRY_SCHEDULE": cfg.RetrySchedule,
			"SESSIOND_SESSION_TTL":            cfg.TTL.String(),
			"SESSIOND_SWEEP_EVERY":            "5s",
			"SESSIOND_SHUTDOWN_TIMEOUT":       "3s",
			"SESSIOND_LOG_LEVEL":              "warn",
		}))
	}
	for _, r := range d.replicas {
		if err := r.startReady(ctx, 30*time.Second); err != nil {
			return nil, err
		}
		defer r.kill()
	}
	d.logf("%s (AOF %v), SESSIOND_REDIS_MIN_REPLICAS=%d, replicas %s and %s, flaky receiver %s",
		d.dep.describe(), opts.AppendOnly, cfg.MinReplicas, d.replicas[0].addr, d.replicas[1].addr, d.rcv.addr)

	// Load and chaos.
	d.logf("load and chaos for %s: %d workers, a replica SIGKILLed every %s-%s, and once: %s", cfg.LoadFor, cfg.Workers, cfg.KillMin, cfg.KillMax, chaosRedisText[cfg.Topology])
	d.loadStart = time.Now()
	loadEnd := d.loadStart.Add(cfg.LoadFor)
	var wg sync.WaitGroup
	for w := range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(loadEnd) && ctx.Err() == nil; i++ {
				d.scenario(ctx, fmt.Sprintf("drill-%s-%d-%d", d.runID, w, i))
			}
		}()
	}
	chaosDone := make(chan error, 1)
	go func() { chaosDone <- d.chaos(ctx, loadEnd) }()
	wg.Wait()
	chaosErr := <-chaosDone
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if chaosErr != nil {
		return nil, chaosErr
	}
	d.logf("load stopped: %d sessions, %d requests answered, %d retries", len(d.sessions), d.requestsOK.Load(), d.retries.Load())

	rep = &drillReport{Topology: cfg.Topology, MinReplicas: cfg.MinReplicas}
	// Sessions left to expire must be past their time before they are read.
	var lastDue time.Time
	for _, s := range d.sessions {
		if s.leave && s.expiresAt.After(lastDue) {
			lastDue = s.expiresAt
		}
	}
	if wait := time.Until(lastDue.Add(2 * time.Second)); wait > 0 {
		d.logf("waiting %s for the last sessions left to expire", wait.Round(time.Millisecond))
		time.Sleep(wait)
	}
	d.checkStatuses(ctx, rep)

	// Settle: every event in the feed must reach the receiver.
	settleStart := time.Now()
	feed := map[string]feedEvent{}
	cursor := ""
	missing := -1
	for {
		err := readFeedFrom(ctx, d.api, d.base, &cursor, func(p *feedPage) {
			for _, e := range p.Events {
				feed[e.ID] = feedEvent{typ: e.Type, session: e.Data.ID, seq: e.Data.Sequence, at: e.Timestamp}
			}
		})
		if err != nil {
			d.logf("read events feed: %v", err)
		} else {
			missing = 0
			for id := range feed {
				if !d.rcv.has(id) {
					missing++
				}
			}
			if missing == 0 {
				break
			}
		}
		if time.Since(settleStart) > cfg.Settle || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rep.SettledIn = time.Since(settleStart).Round(time.Millisecond).String()
	if missing != 0 {
		rep.SettledIn = "not within " + cfg.Settle.String()
	}
	d.logf("settle: %d events in the feed, %d not delivered after %s", len(feed), missing, time.Since(settleStart).Round(time.Millisecond))

	d.analyse(rep, feed)
	if rep.Lost > 0 {
		d.lostEvidence(ctx, feed)
	}
	for _, r := range d.replicas {
		if err := r.term(10 * time.Second); err != nil {
			rep.Unclean++
			d.note("%s on SIGTERM: %v; its log ends:\n%s", r.name, err, r.logTail(12))
		}
	}
	for _, r := range d.replicas {
		for _, e := range r.exits() {
			rep.CrashExits++
			d.note("%s\n%s", e, r.logTail(15))
		}
	}
	if err := d.dep.close(); err != nil {
		rep.RedisCrashes++
		d.note("redis: %v", err)
	}
	rep.Duration = time.Since(start).Round(time.Second).String()
	rep.verdict()
	rep.Evidence = d.evidence
	return rep, nil
}

type feedEvent struct {
	typ, session string
	seq          int64
	at           time.Time
}

// base picks the next replica's base URL, round robin.
func (d *drill) base() string {
	r := d.replicas[int(d.next.Add(1))%len(d.replicas)]
	return "http://" + r.addr
}

// retryCause counts why a request was retried.
func (d *drill) retryCause(resp response, err error) {
	cause := "connection error"
	switch {
	case resp.status != 0:
		cause = fmt.Sprintf("HTTP %d", resp.status)
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(resp.body, &e) == nil && e.Message != "" {
			cause += " " + e.Message
		}
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout"):
		cause = "client timeout"
	}
	d.mu.Lock()
	d.causes[cause]++
	d.mu.Unlock()
}

// note keeps a line of evidence for the report (at most 30).
func (d *drill) note(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.evidence) < 30 {
		d.evidence = append(d.evidence, fmt.Sprintf(format, args...))
	}
}

// stepLimit bounds the retries of one request through the chaos.
const stepLimit = 20 * time.Second

// notDurable reports whether resp is the API's answer to a change that was
// made but is not yet on SESSIOND_REDIS_MIN_REPLICAS replicas (503, "Read
// the session before you retry"): an ambiguous answer, like a lost
// connection. Its code (1000) is shared with other 503s that changed
// nothing, so the message tells them apart.
func notDurable(resp response) bool {
	return resp.status == http.StatusServiceUnavailable && bytes.Contains(resp.body, []byte("not yet on enough Redis replicas"))
}

// reliable sends a correctly signed request, moving to the other replica
// and retrying on connection errors, 5xx and 429 until stepLimit. It
// returns the first other answer, or a not-durable 503 (notDurable),
// which the caller resolves by reading the session.
func (d *drill) reliable(ctx context.Context, method, path, id string, body []byte, idem string) (response, error) {
	deadline := time.Now().Add(stepLimit)
	backoff := 20 * time.Millisecond
	var first time.Time
	slow := false
	for attempt := 0; ; attempt++ {
		resp, err := d.api.do(ctx, d.base(), method, path, body, auth{idem: idem})
		if err == nil && resp.status < 500 && resp.status != http.StatusTooManyRequests {
			d.requestsOK.Add(1)
			return resp, nil
		}
		if err == nil && notDurable(resp) {
			d.notDurable.Add(1)
			return resp, nil
		}
		if err == nil {
			err = fmt.Errorf("%d %.200s", resp.status, resp.body)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return resp, fmt.Errorf("%s %s: gave up after %d attempts: %w", method, path, attempt+1, err)
		}
		d.retries.Add(1)
		d.retryCause(resp, err)
		if attempt == 0 {
			first = time.Now()
		} else if time.Since(first) > 5*time.Second && !slow {
			slow = true
			d.note("%s %s still failing after %s: %v", method, path, time.Since(first).Round(time.Millisecond), err)
		}
		time.Sleep(backoff + rand.N(backoff))
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

var personJSON = `{"first_name":"Ada","last_name":"Lovelace","date_of_birth":"1815-12-10"}`

// step is one request of a scenario: a transition to target.
type step struct {
	sub    string // status, decision, cancel, expire, resume
	body   string // "" for none
	target string
}

func progress(status string) step {
	return step{sub: "status", body: `{"status":"` + status + `"}`, target: status}
}

func decide(status string) step {
	return step{sub: "decision", body: `{"status":"` + status + `","reason":"drill"}`, target: status}
}

// scenario creates one session and drives it along a random path.
func (d *drill) scenario(ctx context.Context, ref string) {
	r := rand.Float64()
	var name string
	var steps []step
	leave := false
	verdict := []string{"approved", "declined"}[rand.N(2)]
	switch {
	case r < 0.33:
		name, steps = "decide", []step{progress("started"), progress("submitted"), decide(verdict)}
	case r < 0.43:
		name, steps = "review", []step{progress("started"), progress("submitted"), progress("review"), decide(verdict)}
	case r < 0.53:
		name, steps = "resubmit", []step{progress("started"), progress("submitted"), decide("resubmission_requested"),
			progress("started"), progress("submitted"), decide("approved")}
	case r < 0.63:
		name = "cancel"
		if rand.N(2) == 0 {
			steps = append(steps, progress("started"))
		}
		steps = append(steps, step{sub: "cancel", target: "canceled"})
	case r < 0.73:
		name, steps = "expire-resume", []step{{sub: "expire", target: "expired"}, {sub: "resume", target: "created"},
			progress("started"), progress("submitted"), decide("approved")}
	case r < 0.87:
		name, leave = "leave-created", true
	default:
		name, steps, leave = "leave-started", []step{progress("started")}, true
	}

	body := []byte(`{"ref_id":"` + ref + `","person":` + personJSON + `}`)
	var s session
	// The first tries carry an Idempotency-Key. A try cut off by a SIGKILL
	// leaves the key locked ("in progress", 409) for the daemon's lock
	// time (30 s); the retry then goes without it: a create for a ref_id
	// with an active session returns that session, so it is safe anyway.
	idem := ref
	undurable := 0
	for {
		resp, err := d.reliable(ctx, http.MethodPost, "/v1/sessions", "", body, idem)
		if err != nil {
			d.gaveUp.Add(1)
			d.note("create %s: %v", ref, err)
			return
		}
		if resp.status == http.StatusConflict && idem != "" {
			d.idemLocked.Add(1)
			idem = ""
			continue
		}
		if notDurable(resp) {
			// Made, maybe not kept: the create again says which (the
			// ref_id's session, 200, if it is there; else a new one).
			d.ambiguous.Add(1)
			if undurable++; undurable > 20 {
				d.gaveUp.Add(1)
				d.note("create %s: not durable after %d tries", ref, undurable)
				return
			}
			continue
		}
		if resp.status != http.StatusCreated && resp.status != http.StatusOK {
			d.refused.Add(1)
			d.note("create %s: %d %.200s", ref, resp.status, resp.body)
			return
		}
		if s, err = decodeSession(resp.body); err != nil {
			d.refused.Add(1)
			d.note("create %s: %v", ref, err)
			return
		}
		break
	}
	t := &tracked{id: s.ID, scenario: name, expected: s.Status, leave: leave, acked: []string{"session.created"}}
	if s.ExpiresAt != nil {
		t.expiresAt = *s.ExpiresAt
	}
	d.mu.Lock()
	d.sessions = append(d.sessions, t)
	d.mu.Unlock()
	if s.Status != "created" {
		d.refused.Add(1)
		d.note("create %s: new session %s has status %q", ref, s.ID, s.Status)
	}

	if rand.Float64() < d.cfg.BadRate {
		d.badRequest(ctx, s.ID, ref)
	}
	for _, st := range steps {
		if !d.transition(ctx, t, st) {
			break
		}
	}
	if leave {
		switch t.expected {
		case "created":
			t.expected = "expired"
		case "started":
			t.expected = "abandoned"
		}
	}
}

// eventOf is the event type of a step's change.
func eventOf(st step) string {
	switch st.sub {
	case "resume":
		return "session.resumed"
	}
	return "session." + st.target
}

// transition sends one step and records the status it leaves the session
// in. It reports whether the scenario may go on.
func (d *drill) transition(ctx context.Context, t *tracked, st step) bool {
	for try := 0; ; try++ {
		ok, again := d.transitionOnce(ctx, t, st)
		if !again {
			if ok {
				t.acked = append(t.acked, eventOf(st))
			}
			return ok
		}
		if try == 5 {
			d.gaveUp.Add(1)
			t.uncertain = true
			d.note("session %s (%s) step %s→%s: not durable after %d tries", t.id, t.scenario, t.expected, st.target, try+1)
			return false
		}
	}
}

// lost records an acknowledged change that a later read shows undone (a
// failover without SESSIOND_REDIS_MIN_REPLICAS): the session's status is
// no longer known, and it is not checked further.
func (d *drill) lost(t *tracked, format string, args ...any) {
	d.mu.Lock()
	d.lostAcked++
	d.mu.Unlock()
	t.uncertain = true
	d.note("acknowledged change lost: session %s (%s): %s", t.id, t.scenario, fmt.Sprintf(format, args...))
}

// readBack reads session t after an answer that leaves step st in
// doubt (why). read is false when the read failed: t's status is then
// no longer known, and t is marked uncertain. took reports that the
// session shows st done: t then records it, as an ambiguous write.
func (d *drill) readBack(ctx context.Context, t *tracked, st step, why string) (s session, read, took bool) {
	g, err := d.reliable(ctx, http.MethodGet, "/v1/sessions/"+t.id, t.id, nil, "")
	if err != nil || g.status != http.StatusOK {
		d.gaveUp.Add(1)
		t.uncertain = true
		d.note("session %s: read after %s: %v %d", t.id, why, err, g.status)
		return s, false, false
	}
	if s, err = decodeSession(g.body); err != nil {
		t.uncertain = true
		return s, false, false
	}
	if s.Status != st.target {
		return s, true, false
	}
	d.ambiguous.Add(1)
	t.reach(s)
	return s, true, true
}

// reach records that t is now in s's status, with s's time limit.
func (t *tracked) reach(s session) {
	t.expected = s.Status
	t.expiresAt = time.Time{}
	if s.ExpiresAt != nil {
		t.expiresAt = *s.ExpiresAt
	}
}

// transitionOnce sends the step once (with reliable's retries). again
// asks for another try: the API made the change but said it may not be
// durable, and a read showed it undone.
func (d *drill) transitionOnce(ctx context.Context, t *tracked, st step) (ok, again bool) {
	path := "/v1/sessions/" + t.id + "/" + st.sub
	var body []byte
	if st.body != "" {
		body = []byte(st.body)
	}
	resp, err := d.reliable(ctx, http.MethodPost, path, t.id, body, "")
	if err != nil {
		d.gaveUp.Add(1)
		t.uncertain = true
		d.note("session %s (%s) step %s→%s: %v", t.id, t.scenario, t.expected, st.target, err)
		return false, false
	}
	if notDurable(resp) {
		// Made, maybe not kept: the session says which.
		s, read, took := d.readBack(ctx, t, st, "a not-durable answer")
		switch {
		case !read || took:
			return took, false
		case s.Status == t.expected:
			return false, true // not kept: not acknowledged either, so try again
		}
		d.refused.Add(1)
		d.note("session %s (%s) step %s→%s answered not durable; the session is %q", t.id, t.scenario, t.expected, st.target, s.Status)
		t.uncertain = true
		return false, false
	}
	switch resp.status {
	case http.StatusNotFound:
		d.lost(t, "step %s→%s answered 404: the session is gone", t.expected, st.target)
		return false, false
	case http.StatusOK:
		s, err := decodeSession(resp.body)
		if err != nil || s.Status != st.target {
			d.refused.Add(1)
			d.note("session %s (%s) step %s→%s answered 200 with status %q (%v)", t.id, t.scenario, t.expected, st.target, s.Status, err)
			t.uncertain = true
			return false, false
		}
		t.reach(s)
		return true, false
	case http.StatusConflict:
		// An earlier attempt that got no answer may have committed, or
		// the session ran out of time: the session says which.
		s, read, took := d.readBack(ctx, t, st, "409")
		switch {
		case !read || took:
			return took, false
		case (s.Status == "expired" || s.Status == "abandoned") && !t.expiresAt.IsZero() && !time.Now().Before(t.expiresAt):
			d.expiredInLoad.Add(1)
			t.expected = s.Status
			return false, false
		case s.Status != t.expected:
			d.lost(t, "step %s→%s answered 409; the session is %q, not the %q acknowledged", t.expected, st.target, s.Status, t.expected)
			return false, false
		}
		d.refused.Add(1)
		d.note("session %s (%s) step %s→%s refused: %d %.200s; the session is %q", t.id, t.scenario, t.expected, st.target, resp.status, resp.body, s.Status)
		return false, false
	}
	d.refused.Add(1)
	d.note("session %s (%s) step %s→%s: %d %.200s", t.id, t.scenario, t.expected, st.target, resp.status, resp.body)
	return false, false
}

// badRequest sends one request that must be refused, against session id
// (just created, so a cancel or a decision would succeed if the request
// were accepted), and counts a 2xx answer.
func (d *drill) badRequest(ctx context.Context, id, ref string) {
	type bad struct {
		kind, method, path, body string
		a                        auth
		replay                   bool // send it once first: the counted one is a replay
	}
	p := "/v1/sessions/" + id
	kinds := []bad{
		{"unsigned", http.MethodPost, p + "/cancel", "", auth{noSig: true}, false},
		{"no key", http.MethodPost, p + "/cancel", "", auth{noKey: true}, false},
		{"unknown key", http.MethodPost, p + "/cancel", "", auth{key: "intruder-" + d.runID}, false},
		{"moved signature", http.MethodPost, p + "/cancel", "", auth{signTarget: "/v1/sessions/00000000-0000-4000-8000-000000000000/cancel"}, false},
		{"moved to another route", http.MethodPost, p + "/expire", "", auth{signTarget: p + "/cancel"}, false},
		{"wrong secret", http.MethodPost, p + "/decision", `{"status":"approved"}`, auth{secret: "not-the-secret-" + d.runID}, false},
		{"tampered body", http.MethodPost, p + "/decision", `{"status":"approved"}`, auth{signBody: `{"status":"declined"}`}, false},
		{"stale timestamp", http.MethodPost, p + "/cancel", "", auth{age: 400 * time.Second}, false},
		{"garbage signature", http.MethodPost, p + "/expire", "", auth{sig: strings.Repeat("zz", 32)}, false},
		{"unsigned read", http.MethodGet, p, "", auth{noSig: true}, false},
		{"replayed read", http.MethodGet, p, "", auth{nonce: "drill-" + randomHex(12)}, true},
		{"replayed decision", http.MethodPost, p + "/decision", `{"status":"declined"}`, auth{nonce: "drill-" + randomHex(12)}, true},
		{"malformed JSON", http.MethodPost, p + "/decision", `{"status":`, auth{}, false},
		{"bad status value", http.MethodPost, p + "/status", `{"status":"approved"}`, auth{}, false},
		{"unknown field", http.MethodPost, "/v1/sessions", `{"ref_id":"` + ref + `-x","hacker":true}`, auth{}, false},
	}
	b := kinds[rand.N(len(kinds))]
	var body []byte
	if b.body != "" {
		body = []byte(b.body)
	}
	if b.replay {
		// The original: a decision is refused by the state machine (the
		// session is in created), so only the replay is counted.
		if _, err := d.api.do(ctx, d.base(), b.method, b.path, body, b.a); err != nil {
			return
		}
	}
	resp, err := d.api.do(ctx, d.base(), b.method, b.path, body, b.a)
	if err != nil {
		return // the replica is down: nothing was sent that counts
	}
	d.badSent.Add(1)
	accepted := resp.status >= 200 && resp.status < 300
	d.badMu.Lock()
	c := d.badByKind[b.kind]
	c[0]++
	if accepted {
		c[1]++
	}
	d.badByKind[b.kind] = c
	d.badMu.Unlock()
	if accepted {
		d.badAccepted.Add(1)
		d.note("bad request %q %s %s was accepted: %d %.200s", b.kind, b.method, b.path, resp.status, resp.body)
	}
}

// chaosRedisText says what chaosRedis does on each topology.
var chaosRedisText = map[string]string{
	topologySingle:   "redis-server SIGKILLed and restarted with its AOF",
	topologySentinel: "the master SIGKILLed, a replica promoted, the old master back as a replica",
	topologyCluster:  "a master SIGKILLed and restarted with its AOF and nodes.conf",
}

// event records what the chaos did, with its time from the load's start.
func (d *drill) event(format string, args ...any) {
	e := chaosEvent{At: fmt.Sprintf("+%.3fs", time.Since(d.loadStart).Seconds()), What: fmt.Sprintf(format, args...)}
	d.logf("chaos %s: %s", e.At, e.What)
	d.mu.Lock()
	d.chaosLog = append(d.chaosLog, e)
	d.mu.Unlock()
}

// chaos SIGKILLs a replica (alternating) every KillMin..KillMax and starts
// it again at once, and once does the topology's Redis chaos
// (chaosRedis). It returns at loadEnd with both replicas running and
// ready.
func (d *drill) chaos(ctx context.Context, loadEnd time.Time) error {
	redisAt := time.Time{}
	if d.cfg.RedisAt >= 0 {
		redisAt = loadEnd.Add(-d.cfg.LoadFor).Add(time.Duration(d.cfg.RedisAt * float64(d.cfg.LoadFor)))
	}
	victim := 0
	for {
		wait := d.cfg.KillMin + rand.N(d.cfg.KillMax-d.cfg.KillMin+1)
		next := time.Now().Add(wait)
		doRedis := !redisAt.IsZero() && !redisAt.After(next)
		if doRedis {
			next = redisAt
		}
		if next.After(loadEnd) {
			next = loadEnd
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
		if !time.Now().Before(loadEnd) {
			break
		}
		if doRedis {
			if err := d.chaosRedis(ctx); err != nil {
				return fmt.Errorf("chaos: %w", err)
			}
			d.redisRestarts++
			redisAt = time.Time{}
			continue
		}
		r := d.replicas[victim]
		victim = (victim + 1) % len(d.replicas)
		r.kill()
		killed := time.Now()
		d.kills++
		time.Sleep(200 * time.Millisecond)
		if err := r.startReady(ctx, 30*time.Second); err != nil {
			return fmt.Errorf("chaos: restart %s: %w", r.name, err)
		}
		d.event("SIGKILL %s; ready again after %s", r.name, time.Since(killed).Round(time.Millisecond))
	}
	// Leave both replicas up for the settle, whatever happened to them.
	for _, r := range d.replicas {
		if !r.running() {
			if err := r.startReady(ctx, 30*time.Second); err != nil {
				return fmt.Errorf("restart %s: %w", r.name, err)
			}
		}
		if err := r.waitReady(ctx, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// chaosRedis is the topology's Redis chaos:
//
//   - single: SIGKILL redis-server and restart it on the same port with
//     its AOF (appendfsync always);
//   - sentinel: SIGKILL the master, measure the time to the first write
//     the admin API accepts (probe), wait for the failover, then start the
//     old master again: it rejoins as a replica;
//   - cluster: SIGKILL one master and restart it on the same ports with its
//     AOF and nodes.conf.
func (d *drill) chaosRedis(ctx context.Context) error {
	switch {
	case d.dep.single != nil:
		srv := d.dep.single
		srv.Kill()
		killed := time.Now()
		d.event("SIGKILL redis-server %s", srv.Addr)
		time.Sleep(300 * time.Millisecond)
		if err := srv.RestartContext(ctx); err != nil {
			return err
		}
		d.event("redis-server %s restarted with its AOF, answering after %s", srv.Addr, time.Since(killed).Round(time.Millisecond))
	case d.dep.cluster != nil:
		i := rand.N(len(d.dep.cluster.Nodes()))
		n := d.dep.cluster.Nodes()[i]
		n.Kill()
		killed := time.Now()
		d.event("SIGKILL cluster master %d (%s)", i, n.Addr)
		time.Sleep(300 * time.Millisecond)
		if err := d.dep.cluster.RestartNode(ctx, i); err != nil {
			return err
		}
		d.event("cluster master %d (%s) restarted with its AOF and nodes.conf, cluster healthy after %s", i, n.Addr, time.Since(killed).Round(time.Millisecond))
	case d.dep.sentinel != nil:
		set := d.dep.sentinel
		old, err := set.KillMaster(ctx)
		if err != nil {
			return err
		}
		killed := time.Now()
		d.event("SIGKILL master %s", old)
		probed := make(chan string, 1)
		go func() { probed <- d.probe(ctx, killed) }()
		master, err := set.WaitFailover(ctx, old)
		if err != nil {
			return err
		}
		d.event("failover: %s promoted, the set settled after %s", master, time.Since(killed).Round(time.Millisecond))
		d.event("%s", <-probed)
		if err := set.RestartNode(ctx, old); err != nil {
			return err
		}
		d.event("old master %s back as a replica of %s after %s", old, master, time.Since(killed).Round(time.Millisecond))
	}
	return nil
}

// probeLimit bounds how long the probe tries to get a write accepted.
const probeLimit = 60 * time.Second

// probe tries a create every 20 ms (each on its own, with a fresh ref_id,
// round robin over the replicas) from the master's SIGKILL at killed until
// one is accepted (201 or 200), and records the time from killed to that
// answer. Every accepted probe session is tracked like a session left to
// expire, so the checks include it. It returns a line for the report.
func (d *drill) probe(ctx context.Context, killed time.Time) string {
	var (
		mu       sync.Mutex
		first    time.Time
		answers  = map[string]int{}
		attempts int
	)
	accepted := make(chan struct{})
	var once sync.Once
	sem := make(chan struct{}, 100)
	var wg sync.WaitGroup
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := killed.Add(probeLimit)
loop:
	for k := 0; time.Now().Before(deadline); k++ {
		select {
		case <-accepted:
			break loop
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // 100 in flight: skip a tick
		}
		attempts++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ref := fmt.Sprintf("drill-%s-probe-%d", d.runID, k)
			body := []byte(`{"ref_id":"` + ref + `","person":` + personJSON + `}`)
			resp, err := d.api.do(ctx, d.base(), http.MethodPost, "/v1/sessions", body, auth{})
			at := time.Now()
			answer := "connection error"
			switch {
			case err != nil && (errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Timeout")):
				answer = "client timeout"
			case err != nil:
			case notDurable(resp):
				answer = "503 not durable"
			default:
				answer = strconv.Itoa(resp.status)
			}
			mu.Lock()
			answers[answer]++
			mu.Unlock()
			if err != nil || (resp.status != http.StatusCreated && resp.status != http.StatusOK) {
				return
			}
			s, err := decodeSession(resp.body)
			if err != nil {
				return
			}
			t := &tracked{id: s.ID, scenario: "probe", expected: "expired", leave: true, acked: []string{"session.created"}}
			if s.ExpiresAt != nil {
				t.expiresAt = *s.ExpiresAt
			}
			mu.Lock()
			if first.IsZero() || at.Before(first) {
				first = at
			}
			mu.Unlock()
			d.mu.Lock()
			d.sessions = append(d.sessions, t)
			d.mu.Unlock()
			once.Do(func() { close(accepted) })
		}()
	}
	wg.Wait()
	var parts []string
	for a, n := range answers {
		parts = append(parts, fmt.Sprintf("%d × %s", n, a))
	}
	slices.Sort(parts)
	if first.IsZero() {
		d.note("probe: no write accepted within %s of the master's SIGKILL (%s)", probeLimit, strings.Join(parts, ", "))
		return fmt.Sprintf("probe: NO write accepted within %s of the SIGKILL; %d attempts: %s", probeLimit, attempts, strings.Join(parts, ", "))
	}
	took := first.Sub(killed)
	d.mu.Lock()
	d.firstWrite = took
	d.mu.Unlock()
	return fmt.Sprintf("probe: first write accepted %s after the SIGKILL; %d attempts: %s", took.Round(time.Millisecond), attempts, strings.Join(parts, ", "))
}

// checkStatuses reads every session and compares its status with the one
// the load drove it to.
func (d *drill) checkStatuses(ctx context.Context, rep *drillReport) {
	d.logf("checking the final status of %d sessions", len(d.sessions))
	var wrong, unchecked atomic.Int64
	closedLoop(ctx, 8, len(d.sessions), time.Time{}, func(i int) {
		t := d.sessions[i]
		if t.uncertain {
			unchecked.Add(1)
			return
		}
		resp, err := d.reliable(ctx, http.MethodGet, "/v1/sessions/"+t.id, t.id, nil, "")
		if err == nil && resp.status == http.StatusNotFound {
			// The drill deletes nothing: the acknowledged create is gone.
			d.lost(t, "final read answered 404: the session is gone")
			return
		}
		if err != nil || resp.status != http.StatusOK {
			wrong.Add(1)
			d.note("session %s (%s): final read %v %d %.200s", t.id, t.scenario, err, resp.status, resp.body)
			return
		}
		s, err := decodeSession(resp.body)
		if err != nil || s.Status != t.expected {
			wrong.Add(1)
			d.note("session %s (%s): final status %q, want %q", t.id, t.scenario, s.Status, t.expected)
		}
	})
	rep.WrongStatus = int(wrong.Load())
	rep.Unchecked = int(unchecked.Load())
}

// analyse fills the report from the feed, the receiver and the counters.
func (d *drill) analyse(rep *drillReport, feed map[string]feedEvent) {
	rep.Sessions = len(d.sessions)
	rep.RequestsOK = d.requestsOK.Load()
	rep.Retries = d.retries.Load()
	rep.Ambiguous = d.ambiguous.Load()
	rep.IdemLocked = d.idemLocked.Load()
	rep.ExpiredInLoad = d.expiredInLoad.Load()
	rep.GaveUp = d.gaveUp.Load()
	rep.Refused = d.refused.Load()
	rep.RetryCauses = d.causes
	rep.ReplicaKills = d.kills
	rep.RedisRestarts = d.redisRestarts
	rep.NotDurable = d.notDurable.Load()
	rep.LostAcked = d.lostAcked
	rep.Chaos = d.chaosLog
	if d.firstWrite > 0 {
		rep.FirstWrite = d.firstWrite.Round(time.Millisecond).String()
	}
	rep.BadSent = d.badSent.Load()
	rep.BadAccepted = d.badAccepted.Load()
	rep.BadByKind = d.badByKind
	rep.BadSignatures = d.rcv.badSig.Load() + d.rcv.badBody.Load()
	rep.Duplicates = d.rcv.oks.Load() - d.rcv.unique.Load()
	rep.Receiver.OK = d.rcv.oks.Load()
	rep.Receiver.Failed500 = d.rcv.failed.Load()
	rep.Receiver.Throttled429 = d.rcv.throttled.Load()
	rep.Receiver.TimedOut = d.rcv.timedOut.Load()

	delivered := d.rcv.ids()
	rep.EventsProduced = len(feed)
	bySession := map[string][]int64{}
	types := map[string]map[string]bool{}
	expiredAt := map[string]time.Time{}
	for id, e := range feed {
		if e.typ == "session.expired" || e.typ == "session.abandoned" {
			expiredAt[e.session] = e.at
		}
		if _, ok := delivered[id]; ok {
			rep.EventsDelivered++
		} else {
			rep.Lost++
			if rep.Lost <= 5 {
				d.note("event %s (%s, session %s, sequence %d) never delivered", id, e.typ, e.session, e.seq)
			}
		}
		bySession[e.session] = append(bySession[e.session], e.seq)
		if types[e.session] == nil {
			types[e.session] = map[string]bool{}
		}
		types[e.session][e.typ] = true
	}
	for id, dl := range delivered {
		if _, ok := feed[id]; !ok {
			rep.Phantom++
			if rep.Phantom <= 3 {
				d.note("delivered %s (%s, session %s) is not in the events feed", id, dl.Type, dl.SessionID)
			}
		}
	}
	for sid, seqs := range bySession {
		slices.Sort(seqs)
		for i, s := range seqs {
			if s != int64(i+1) {
				rep.SequenceGaps++
				d.note("session %s: event sequences %v are not 1..%d", sid, seqs, len(seqs))
				break
			}
		}
	}
	var lagMax time.Duration
	for _, t := range d.sessions {
		if t.leave && !t.uncertain && !t.expiresAt.IsZero() {
			if at, ok := expiredAt[t.id]; ok {
				lag := at.Sub(t.expiresAt)
				if lag < 0 {
					rep.ExpiryEarly++
					d.note("session %s expired at %s, before its expires_at %s", t.id, at.Format(time.RFC3339Nano), t.expiresAt.Format(time.RFC3339Nano))
				}
				lagMax = max(lagMax, lag)
			}
		}
	}
	rep.ExpiryLagMax = lagMax.String()
	// Every change the API acknowledged must have its event in the feed
	// (as many of each type as were acknowledged).
	counts := map[string]map[string]int{}
	for _, e := range feed {
		if counts[e.session] == nil {
			counts[e.session] = map[string]int{}
		}
		counts[e.session][e.typ]++
	}
	for _, t := range d.sessions {
		want := map[string]int{}
		for _, typ := range t.acked {
			want[typ]++
		}
		for typ, n := range want {
			if got := counts[t.id][typ]; got < n {
				rep.AckedMissing += n - got
				if rep.AckedMissing <= 5 {
					d.note("session %s (%s): %d acknowledged %s, %d in the feed", t.id, t.scenario, n, typ, got)
				}
			}
		}
	}
	for _, t := range d.sessions {
		if t.uncertain {
			continue
		}
		if !types[t.id]["session."+t.expected] {
			rep.MissingStatus++
			if rep.MissingStatus <= 5 {
				d.note("session %s (%s) is %s but the feed has no session.%s event", t.id, t.scenario, t.expected, t.expected)
			}
		}
	}
}

// lostEvidence records, for a few undelivered events, what sessiond says
// of their deliveries, and the replicas' delivery metrics.
func (d *drill) lostEvidence(ctx context.Context, feed map[string]feedEvent) {
	n := 0
	for id, e := range feed {
		if d.rcv.has(id) {
			continue
		}
		if n++; n > 3 {
			break
		}
		resp, err := d.reliable(ctx, http.MethodGet, "/v1/sessions/"+e.session+"/deliveries", e.session, nil, "")
		if err != nil {
			d.note("deliveries of session %s: %v", e.session, err)
			continue
		}
		d.note("deliveries of session %s (lost %s %s): %d %.1500s", e.session, id, e.typ, resp.status, resp.body)
	}
	for _, r := range d.replicas {
		resp, err := d.api.do(ctx, "http://"+r.addr, http.MethodGet, "/metrics", nil, auth{})
		if err != nil {
			continue
		}
		var keep []string
		for _, line := range strings.Split(string(resp.body), "\n") {
			if strings.HasPrefix(line, "sessiond_webhook_attempts_total") || strings.HasPrefix(line, "sessiond_webhook_circuit_open") ||
				strings.HasPrefix(line, "sessiond_outbox_backlog") || strings.HasPrefix(line, "asynq_queue_size") ||
				strings.HasPrefix(line, "asynq_tasks_enqueued_total") {
				keep = append(keep, line)
			}
		}
		d.note("%s metrics at the end:\n    %s", r.name, strings.Join(keep, "\n    "))
	}
}

// lossesAllowed reports whether the deployment may lose acknowledged
// changes by design: a Sentinel set with SESSIOND_REDIS_MIN_REPLICAS=0
// replicates asynchronously, so a failover loses what the old master had
// not yet sent to the promoted replica. The drill then reports such
// losses (Losses) instead of failing on them.
func (r *drillReport) lossesAllowed() bool {
	return r.Topology == topologySentinel && r.MinReplicas == 0
}

// verdict sets Failed and Failures from the must-be-0 figures. On a
// deployment that may lose acknowledged changes (lossesAllowed) the
// figures such a loss explains go to Losses instead; an event in the
// feed that was never delivered is a failure on every deployment.
func (r *drillReport) verdict() {
	check := func(n int64, what string) {
		if n != 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %d (must be 0)", what, n))
		}
	}
	loss := func(n int64, what string) {
		switch {
		case n == 0:
		case r.lossesAllowed():
			r.Losses = append(r.Losses, fmt.Sprintf("%s: %d", what, n))
		default:
			check(n, what)
		}
	}
	check(int64(r.Lost), "events lost")
	loss(int64(r.LostAcked), "acknowledged changes lost (a later read shows them undone)")
	loss(int64(r.AckedMissing), "acknowledged changes whose event is not in the events feed")
	check(int64(r.RedisCrashes), "Redis processes that exited by themselves")
	check(int64(r.SequenceGaps), "sessions with a gap in their event sequence")
	loss(int64(r.MissingStatus), "final statuses without their event")
	loss(int64(r.WrongStatus), "sessions in the wrong final status")
	check(r.BadAccepted, "unauthorised or malformed requests that succeeded")
	check(r.BadSignatures, "webhooks with a bad signature or body")
	check(r.Refused, "valid requests refused")
	check(int64(r.CrashExits), "replicas that exited by themselves")
	check(int64(r.Phantom), "deliveries of events not in the feed")
	check(int64(r.ExpiryEarly), "sessions expired before their expires_at")
	if r.EventsProduced == 0 {
		r.Failures = append(r.Failures, "no events produced: the load did not run")
	}
	if r.Topology == topologySentinel && r.RedisRestarts > 0 && r.FirstWrite == "" {
		r.Failures = append(r.Failures, "no write accepted after the master's SIGKILL")
	}
	r.Failed = len(r.Failures) > 0
}

func (r *drillReport) writeTable(w io.Writer) {
	fmt.Fprintf(w, "\nsessiond drill on %s, SESSIOND_REDIS_MIN_REPLICAS=%d: %s, %d sessions, %d requests answered (%d retried), %d replica SIGKILLs, %d Redis chaos rounds (%s)\n",
		r.Topology, r.MinReplicas, r.Duration, r.Sessions, r.RequestsOK, r.Retries, r.ReplicaKills, r.RedisRestarts, chaosRedisText[r.Topology])
	if r.FirstWrite != "" {
		fmt.Fprintf(w, "master SIGKILL → first write accepted by the admin API: %s\n", r.FirstWrite)
	}
	fmt.Fprintln(w, "\nchaos:")
	for _, e := range r.Chaos {
		fmt.Fprintf(w, "  %-10s %s\n", e.At, e.What)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	const must = "must be 0"
	lossMust := must // for what an asynchronous failover may lose
	if r.lossesAllowed() {
		lossMust = "reported, not failed (min replicas 0)"
	}
	row := func(name string, v any, note string) {
		fmt.Fprintf(tw, "%s\t%v\t%s\n", name, v, note)
	}
	row("events produced (events feed)", r.EventsProduced, "")
	row("events delivered (unique webhook-id, valid signature)", r.EventsDelivered, "")
	row("lost (in the feed, never delivered)", r.Lost, must)
	row("acknowledged changes lost (a later read shows them undone)", r.LostAcked, lossMust)
	row("acknowledged changes whose event is not in the feed", r.AckedMissing, lossMust)
	row("duplicates (2xx deliveries beyond the first)", r.Duplicates, "")
	row("sessions in the wrong final status", r.WrongStatus, lossMust)
	row("unauthorised or malformed requests that succeeded", fmt.Sprintf("%d of %d", r.BadAccepted, r.BadSent), must)
	row("sessions with a gap in data.sequence", r.SequenceGaps, must)
	row("final statuses without their event in the feed", r.MissingStatus, lossMust)
	row("webhooks with a bad signature", r.BadSignatures, must)
	row("valid requests refused (unexpected 4xx)", r.Refused, must)
	row("replicas that exited by themselves", r.CrashExits, must)
	row("Redis processes that exited by themselves", r.RedisCrashes, must)
	row("deliveries of events not in the feed", r.Phantom, must)
	row("sessions expired before their expires_at", r.ExpiryEarly, must)
	row("latest expiry of a session left to expire (after expires_at)", r.ExpiryLagMax, "")
	row("ambiguous writes resolved by a read", r.Ambiguous, "")
	row("503 answers \"made, not yet on enough replicas\" (resolved by a read)", r.NotDurable, "")
	row("creates whose Idempotency-Key a killed request left locked (409)", r.IdemLocked, "")
	row("sessions that expired before the load finished them", r.ExpiredInLoad, "")
	row("steps given up after 20 s of retries (not checked)", fmt.Sprintf("%d (%d sessions)", r.GaveUp, r.Unchecked), "")
	row("receiver answers: 2xx / 500 / 429 / held past timeout", fmt.Sprintf("%d / %d / %d / %d", r.Receiver.OK, r.Receiver.Failed500, r.Receiver.Throttled429, r.Receiver.TimedOut), "")
	row("deliveries settled after the load in", r.SettledIn, "")
	causes := make([]string, 0, len(r.RetryCauses))
	for c, n := range r.RetryCauses {
		causes = append(causes, fmt.Sprintf("%d × %s", n, c))
	}
	slices.Sort(causes)
	row("admin requests retried, by cause", strings.Join(causes, "; "), "")
	row("unclean SIGTERM shutdowns at the end", r.Unclean, "")
	tw.Flush()
	if len(r.Losses) > 0 {
		fmt.Fprintf(w, "\nlosses reported, not failed (SESSIOND_REDIS_MIN_REPLICAS=%d on %s: a failover loses what was not yet replicated):\n", r.MinReplicas, r.Topology)
		for _, l := range r.Losses {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if r.Failed {
		fmt.Fprintln(w, "\nFAILED:")
		for _, f := range r.Failures {
			fmt.Fprintln(w, "  "+f)
		}
	} else {
		fmt.Fprintln(w, "\nPASSED")
	}
	if len(r.Evidence) > 0 {
		fmt.Fprintln(w, "\nevidence:")
		for _, e := range r.Evidence {
			fmt.Fprintln(w, "  "+e)
		}
	}
	if r.WorkDir != "" {
		fmt.Fprintln(w, "work directory:", r.WorkDir)
	}
}
