package main

import (
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
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/sessiond/sessiond/signing"
)

// drillConfig is the drill's settings (flags).
type drillConfig struct {
	JSON bool

	LoadFor        time.Duration // how long the load and the chaos run
	Workers        int           // load goroutines, each driving one session at a time
	KillMin        time.Duration // a replica is SIGKILLed every KillMin..KillMax
	KillMax        time.Duration
	RedisAt        float64       // Redis is SIGKILLed and restarted once, at this fraction of LoadFor
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
	fs.DurationVar(&c.LoadFor, "load-for", 75*time.Second, "duration of the load and the chaos")
	fs.IntVar(&c.Workers, "workers", 4, "load workers")
	fs.DurationVar(&c.KillMin, "kill-min", 5*time.Second, "shortest time between replica SIGKILLs")
	fs.DurationVar(&c.KillMax, "kill-max", 8*time.Second, "longest time between replica SIGKILLs")
	fs.Float64Var(&c.RedisAt, "redis-restart-at", 0.45, "when Redis is killed and restarted, as a fraction of --load-for (negative: never)")
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
	return c, nil
}

// drillReport is the drill's result. The must-be-0 figures decide Failed.
type drillReport struct {
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
	RedisRestarts int              `json:"redis_restarts"`

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
}

type drill struct {
	cfg      drillConfig
	logf     func(format string, args ...any)
	dir      string
	api      *apiClient
	rcv      *receiver
	redis    *redisServer
	replicas []*daemon
	next     atomic.Uint32
	runID    string

	mu       sync.Mutex
	sessions []*tracked
	causes   map[string]int64 // retries by cause
	evidence []string

	requestsOK, retries, ambiguous, expiredInLoad, gaveUp, refused atomic.Int64
	idemLocked                                                     atomic.Int64
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
	if d.redis, err = startRedis(ctx, d.dir, "always"); err != nil {
		return nil, err
	}
	defer d.redis.kill()

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
			"SESSIOND_REDIS_URL":              d.redis.url(),
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
	d.logf("redis %s (AOF, appendfsync always), replicas %s and %s, flaky receiver %s",
		d.redis.addr, d.replicas[0].addr, d.replicas[1].addr, d.rcv.addr)

	// Load and chaos.
	d.logf("load and chaos for %s: %d workers, a replica SIGKILLed every %s-%s, Redis restarted once", cfg.LoadFor, cfg.Workers, cfg.KillMin, cfg.KillMax)
	loadEnd := time.Now().Add(cfg.LoadFor)
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

	rep = &drillReport{}
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
			d.note("%s on SIGTERM: %v", r.name, err)
		}
	}
	for _, r := range d.replicas {
		for _, e := range r.exits() {
			rep.CrashExits++
			d.note("%s\n%s", e, r.logTail(15))
		}
	}
	for _, e := range d.redis.exits() {
		d.note("%s", e)
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

// reliable sends a correctly signed request, moving to the other replica
// and retrying on connection errors, 5xx and 429 until stepLimit. It
// returns the first other answer.
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
	t := &tracked{id: s.ID, scenario: name, expected: s.Status, leave: leave}
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

// transition sends one step and records the status it leaves the session
// in. It reports whether the scenario may go on.
func (d *drill) transition(ctx context.Context, t *tracked, st step) bool {
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
		return false
	}
	switch resp.status {
	case http.StatusOK:
		s, err := decodeSession(resp.body)
		if err != nil || s.Status != st.target {
			d.refused.Add(1)
			d.note("session %s (%s) step %s→%s answered 200 with status %q (%v)", t.id, t.scenario, t.expected, st.target, s.Status, err)
			t.uncertain = true
			return false
		}
		t.expected = st.target
		t.expiresAt = time.Time{}
		if s.ExpiresAt != nil {
			t.expiresAt = *s.ExpiresAt
		}
		return true
	case http.StatusConflict:
		// An earlier attempt that got no answer may have committed, or
		// the session ran out of time: the session says which.
		g, err := d.reliable(ctx, http.MethodGet, "/v1/sessions/"+t.id, t.id, nil, "")
		if err != nil || g.status != http.StatusOK {
			d.gaveUp.Add(1)
			t.uncertain = true
			d.note("session %s: read after 409: %v %d", t.id, err, g.status)
			return false
		}
		s, err := decodeSession(g.body)
		if err != nil {
			t.uncertain = true
			return false
		}
		switch {
		case s.Status == st.target:
			d.ambiguous.Add(1)
			t.expected = st.target
			t.expiresAt = time.Time{}
			if s.ExpiresAt != nil {
				t.expiresAt = *s.ExpiresAt
			}
			return true
		case (s.Status == "expired" || s.Status == "abandoned") && !t.expiresAt.IsZero() && !time.Now().Before(t.expiresAt):
			d.expiredInLoad.Add(1)
			t.expected = s.Status
			return false
		}
		d.refused.Add(1)
		d.note("session %s (%s) step %s→%s refused: %d %.200s; the session is %q", t.id, t.scenario, t.expected, st.target, resp.status, resp.body, s.Status)
		return false
	}
	d.refused.Add(1)
	d.note("session %s (%s) step %s→%s: %d %.200s", t.id, t.scenario, t.expected, st.target, resp.status, resp.body)
	return false
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

// chaos SIGKILLs a replica (alternating) every KillMin..KillMax and starts
// it again at once, and once kills and restarts Redis on the same port and
// directory. It returns at loadEnd with both replicas running and ready.
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
			d.logf("chaos: SIGKILL redis-server, restart on %s", d.redis.addr)
			d.redis.kill()
			time.Sleep(300 * time.Millisecond)
			if err := d.redis.restartNow(ctx); err != nil {
				return fmt.Errorf("chaos: restart redis: %w", err)
			}
			d.redisRestarts++
			redisAt = time.Time{}
			continue
		}
		r := d.replicas[victim]
		victim = (victim + 1) % len(d.replicas)
		d.logf("chaos: SIGKILL %s", r.name)
		r.kill()
		d.kills++
		time.Sleep(200 * time.Millisecond)
		if err := r.startReady(ctx, 30*time.Second); err != nil {
			return fmt.Errorf("chaos: restart %s: %w", r.name, err)
		}
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

// verdict sets Failed and Failures from the must-be-0 figures.
func (r *drillReport) verdict() {
	check := func(n int64, what string) {
		if n != 0 {
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %d (must be 0)", what, n))
		}
	}
	check(int64(r.Lost), "events lost")
	check(int64(r.SequenceGaps), "sessions with a gap in their event sequence")
	check(int64(r.MissingStatus), "final statuses without their event")
	check(int64(r.WrongStatus), "sessions in the wrong final status")
	check(r.BadAccepted, "unauthorised or malformed requests that succeeded")
	check(r.BadSignatures, "webhooks with a bad signature or body")
	check(r.Refused, "valid requests refused")
	check(int64(r.CrashExits), "replicas that exited by themselves")
	check(int64(r.Phantom), "deliveries of events not in the feed")
	check(int64(r.ExpiryEarly), "sessions expired before their expires_at")
	if r.EventsProduced == 0 {
		r.Failures = append(r.Failures, "no events produced: the load did not run")
	}
	r.Failed = len(r.Failures) > 0
}

func (r *drillReport) writeTable(w io.Writer) {
	fmt.Fprintf(w, "\nsessiond drill: %s, %d sessions, %d requests answered (%d retried), %d replica SIGKILLs, %d Redis restarts\n\n",
		r.Duration, r.Sessions, r.RequestsOK, r.Retries, r.ReplicaKills, r.RedisRestarts)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, v any, must bool) {
		m := ""
		if must {
			m = "must be 0"
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\n", name, v, m)
	}
	row("events produced (events feed)", r.EventsProduced, false)
	row("events delivered (unique webhook-id, valid signature)", r.EventsDelivered, false)
	row("lost (in the feed, never delivered)", r.Lost, true)
	row("duplicates (2xx deliveries beyond the first)", r.Duplicates, false)
	row("sessions in the wrong final status", r.WrongStatus, true)
	row("unauthorised or malformed requests that succeeded", fmt.Sprintf("%d of %d", r.BadAccepted, r.BadSent), true)
	row("sessions with a gap in data.sequence", r.SequenceGaps, true)
	row("final statuses without their event in the feed", r.MissingStatus, true)
	row("webhooks with a bad signature", r.BadSignatures, true)
	row("valid requests refused (unexpected 4xx)", r.Refused, true)
	row("replicas that exited by themselves", r.CrashExits, true)
	row("deliveries of events not in the feed", r.Phantom, true)
	row("sessions expired before their expires_at", r.ExpiryEarly, true)
	row("latest expiry of a session left to expire (after expires_at)", r.ExpiryLagMax, false)
	row("ambiguous writes resolved by a read", r.Ambiguous, false)
	row("creates whose Idempotency-Key a killed request left locked (409)", r.IdemLocked, false)
	row("sessions that expired before the load finished them", r.ExpiredInLoad, false)
	row("steps given up after 20 s of retries (not checked)", fmt.Sprintf("%d (%d sessions)", r.GaveUp, r.Unchecked), false)
	row("receiver answers: 2xx / 500 / 429 / held past timeout", fmt.Sprintf("%d / %d / %d / %d", r.Receiver.OK, r.Receiver.Failed500, r.Receiver.Throttled429, r.Receiver.TimedOut), false)
	row("deliveries settled after the load in", r.SettledIn, false)
	causes := make([]string, 0, len(r.RetryCauses))
	for c, n := range r.RetryCauses {
		causes = append(causes, fmt.Sprintf("%d × %s", n, c))
	}
	slices.Sort(causes)
	row("admin requests retried, by cause", strings.Join(causes, "; "), false)
	row("unclean SIGTERM shutdowns at the end", r.Unclean, false)
	tw.Flush()
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
