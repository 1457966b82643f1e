package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/redistest"
)

// testStart is where every fake clock starts: a fixed instant well before
// the wall clock. A TTL set as an absolute instant from the injected clock
// would already be in Redis's past and the key would vanish at once, so the
// store must set TTLs relative to its own clock.
var testStart = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// Short durations for the fake clock to jump over.
const (
	testSessionTTL = time.Hour
	testTokenTTL   = 10 * time.Minute
	testPurgeAfter = 2 * time.Hour
	testRetention  = 48 * time.Hour
)

// recTimer records the timed work the service schedules.
type recTimer struct {
	mu    sync.Mutex
	works []Work
}

func (r *recTimer) Schedule(_ context.Context, w Work) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.works = append(r.works, w)
}

func (r *recTimer) of(id string) []Work {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Work
	for _, w := range r.works {
		if w.SessionID == id {
			out = append(out, w)
		}
	}
	return out
}

// recObserver records the status changes the service reports.
type recObserver struct {
	mu    sync.Mutex
	moves []string
	lags  []time.Duration
}

func (r *recObserver) ObserveExpiryLag(lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lags = append(r.lags, lag)
}

func (r *recObserver) Transitioned(from, to Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.moves = append(r.moves, string(from)+">"+string(to))
}

func (r *recObserver) expiryLags() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lags)
}

func (r *recObserver) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.moves)
}

// env is one test's world: its own redis-server, a client, a fake clock and
// a Service over them.
type env struct {
	t     testing.TB
	ctx   context.Context
	srv   *redistest.Server
	rdb   *redis.Client
	clock *clocktest.Clock
	svc   *Service
	timer *recTimer
	obs   *recObserver
}

// newEnv starts a private redis-server and a Service with the test
// durations; mods adjust the Config.
func newEnv(t testing.TB, mods ...func(*Config)) *env {
	t.Helper()
	srv := redistest.Start(t)
	e := &env{
		t:     t,
		ctx:   t.Context(),
		srv:   srv,
		rdb:   srv.Client(),
		clock: clocktest.New(testStart),
		timer: &recTimer{},
		obs:   &recObserver{},
	}
	cfg := Config{
		SessionTTL: testSessionTTL,
		TokenTTL:   testTokenTTL,
		PurgeAfter: testPurgeAfter,
		Retention:  testRetention,
		Now:        e.clock.Now,
		Timer:      e.timer,
		Observer:   e.obs,
	}
	for _, m := range mods {
		m(&cfg)
	}
	e.svc = New(e.rdb, cfg)
	return e
}

// with returns a copy of e that reports to t (a subtest) and uses its
// context.
func (e *env) with(t testing.TB) *env {
	c := *e
	c.t, c.ctx = t, t.Context()
	return &c
}

// create makes a session for ref and fails the test on error.
func (e *env) create(ref string) *Created {
	e.t.Helper()
	c, err := e.svc.Create(e.ctx, CreateRequest{RefID: ref})
	if err != nil {
		e.t.Fatalf("Create(%q): %v", ref, err)
	}
	return c
}

// createWith makes a session from req and fails the test on error.
func (e *env) createWith(req CreateRequest) *Created {
	e.t.Helper()
	c, err := e.svc.Create(e.ctx, req)
	if err != nil {
		e.t.Fatalf("Create(%+v): %v", req, err)
	}
	return c
}

// get reads session id and fails the test on error.
func (e *env) get(id string) *Session {
	e.t.Helper()
	s, err := e.svc.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

// record reads the stored record of id straight from Redis; nil when there
// is none.
func (e *env) record(id string) *record {
	e.t.Helper()
	raw, err := e.rdb.Get(e.ctx, sessionKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read record %s: %v", id, err)
	}
	r, err := decodeRecord(raw)
	if err != nil {
		e.t.Fatalf("decode record %s: %v", id, err)
	}
	return r
}

// allEvents reads the whole outbox stream.
func (e *env) allEvents() []*Event {
	e.t.Helper()
	msgs, err := e.rdb.XRange(e.ctx, OutboxKey, "-", "+").Result()
	if err != nil {
		e.t.Fatalf("read outbox: %v", err)
	}
	out := make([]*Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := ParseEvent(m)
		if err != nil {
			e.t.Fatalf("outbox entry: %v", err)
		}
		out = append(out, ev)
	}
	return out
}

// events returns the outbox events of session id, in stream order.
func (e *env) events(id string) []*Event {
	e.t.Helper()
	var out []*Event
	for _, ev := range e.allEvents() {
		if ev.SessionID == id {
			out = append(out, ev)
		}
	}
	return out
}

// eventTypes returns the types of session id's outbox events, in order.
func (e *env) eventTypes(id string) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.events(id) {
		out = append(out, ev.Type)
	}
	return out
}

// keys returns every key matching pattern (SCAN, never KEYS).
func (e *env) keys(pattern string) []string {
	e.t.Helper()
	var out []string
	iter := e.rdb.Scan(e.ctx, 0, pattern, 1000).Iterator()
	for iter.Next(e.ctx) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		e.t.Fatalf("scan %s: %v", pattern, err)
	}
	slices.Sort(out)
	return out
}

// snapshot is every key and its serialized value (DUMP): equal snapshots
// mean Redis holds the same data. Keys whose names start with one of skip
// are left out.
func (e *env) snapshot(skip ...string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
next:
	for _, k := range e.keys("*") {
		for _, p := range skip {
			if strings.HasPrefix(k, p) {
				continue next
			}
		}
		v, err := e.rdb.Dump(e.ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			e.t.Fatalf("dump %s: %v", k, err)
		}
		out[k] = v
	}
	return out
}

// assertSameSnapshot fails when before and after differ, naming the keys.
func assertSameSnapshot(t testing.TB, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if w, ok := after[k]; !ok {
			t.Errorf("key %s disappeared", k)
		} else if w != v {
			t.Errorf("key %s changed", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("key %s appeared", k)
		}
	}
}

// sessionState is everything Redis holds about one session that an
// operation could change: its keys' values and its outbox events.
func (e *env) sessionState(id string) string {
	e.t.Helper()
	vals, err := e.rdb.MGet(e.ctx, sessionKey(id), piiKey(id)).Result()
	if err != nil {
		e.t.Fatalf("read session %s: %v", id, err)
	}
	return fmt.Sprintf("%v|events=%d", vals, len(e.events(id)))
}

// checkSession checks, straight from Redis, that everything the store
// keeps about session id agrees with its record: the list indexes, the due
// indexes, the ref key, the token keys, the personal data key, the outbox
// sequence and the TTL of every key of the session.
func (e *env) checkSession(id string) {
	e.t.Helper()
	t, ctx, cfg := e.t, e.ctx, e.svc.Config()
	rec := e.record(id)
	if rec == nil {
		if ks := e.keys("*" + id + "*"); len(ks) > 0 {
			t.Errorf("session %s has no record but keys %v remain", id, ks)
		}
		for _, k := range []string{ExpireDueKey, RedactDueKey, PurgeDueKey} {
			if err := e.rdb.ZScore(ctx, k, id).Err(); !errors.Is(err, redis.Nil) {
				t.Errorf("session %s has no record but is in %s (%v)", id, k, err)
			}
		}
		return
	}
	if rec.Person != nil || rec.Metadata != nil {
		t.Errorf("session %s: the record holds personal data", id)
	}
	member := indexMember(&rec.Session)
	p := e.rdb.Pipeline()
	all := p.ZScore(ctx, allIndexKey, member)
	ref := p.ZScore(ctx, refIndexKey(rec.RefID), member)
	byStatus := map[Status]*redis.FloatCmd{}
	for _, s := range Statuses {
		byStatus[s] = p.ZScore(ctx, statusIndexKey(s), member)
	}
	expireDue := p.ZScore(ctx, ExpireDueKey, id)
	redactDue := p.ZScore(ctx, RedactDueKey, id)
	purgeDue := p.ZScore(ctx, PurgeDueKey, id)
	refOwner := p.Get(ctx, refKey(rec.RefID))
	pii := p.Exists(ctx, piiKey(id))
	_, _ = p.Exec(ctx)
	in := func(c *redis.FloatCmd) bool { return c.Err() == nil }
	ms := func(tm time.Time) float64 { return float64(tm.UnixMilli()) }

	live := rec.DeletedAt == nil
	if in(all) != live || in(ref) != live {
		t.Errorf("session %s (deleted=%v): in idx:all=%v, in idx:ref=%v", id, !live, in(all), in(ref))
	}
	for s, c := range byStatus {
		if want := live && s == rec.Status; in(c) != want {
			t.Errorf("session %s in %s: in idx:status:%s = %v, want %v", id, rec.Status, s, in(c), want)
		}
	}
	if want := live && rec.Status.Pending(); in(expireDue) != want {
		t.Errorf("session %s in %s: in due:expire = %v, want %v", id, rec.Status, in(expireDue), want)
	} else if want && (rec.ExpiresAt == nil || expireDue.Val() != ms(rec.ExpiresAt.Time)) {
		t.Errorf("session %s: due:expire score %v, expires_at %v", id, expireDue.Val(), rec.ExpiresAt)
	}
	if !rec.Status.Pending() && rec.ExpiresAt != nil {
		t.Errorf("session %s in %s has expires_at %v", id, rec.Status, rec.ExpiresAt)
	}
	if want := live && rec.Status.Terminal() && rec.RedactedAt == nil; in(redactDue) != want {
		t.Errorf("session %s in %s: in due:redact = %v, want %v", id, rec.Status, in(redactDue), want)
	} else if want && redactDue.Val() != ms(rec.RetainFrom.Add(cfg.Retention)) {
		t.Errorf("session %s: due:redact score %v, want retain_from+retention", id, redactDue.Val())
	}
	wantPurge := rec.RetainFrom.Add(cfg.Retention + cfg.PurgeAfter)
	if !live {
		wantPurge = rec.DeletedAt.Add(cfg.PurgeAfter)
	}
	if !in(purgeDue) || purgeDue.Val() != ms(wantPurge) {
		t.Errorf("session %s: due:purge score %v (%v), want %v", id, purgeDue.Val(), purgeDue.Err(), wantPurge)
	}
	if owns := refOwner.Val() == id; owns != (live && rec.Status.Active()) {
		t.Errorf("session %s in %s (deleted=%v): ref key points at it = %v", id, rec.Status, !live, owns)
	}
	if (rec.RedactedAt != nil || !live) && pii.Val() != 0 {
		t.Errorf("session %s (redacted or deleted) still has personal data", id)
	}
	if hash := rec.TokenHash; hash != "" {
		if !live || !rec.Status.Active() {
			t.Errorf("session %s in %s (deleted=%v) still has a token", id, rec.Status, !live)
		}
		owner, err := e.rdb.Get(ctx, tokenKey(hash)).Result()
		if err != nil || !strings.HasPrefix(owner, id) {
			t.Errorf("session %s: token key of its token hash holds %q (%v)", id, owner, err)
		}
	}

	// The outbox holds the session's events numbered 1..seq, in order.
	evs := e.events(id)
	if int64(len(evs)) != rec.Seq {
		t.Errorf("session %s: %d events in the outbox, record seq %d", id, len(evs), rec.Seq)
	}
	for i, ev := range evs {
		if ev.Sequence != int64(i+1) {
			t.Errorf("session %s: event %d (%s) has sequence %d", id, i, ev.Type, ev.Sequence)
		}
	}

	// Every key of the session carries a TTL.
	for _, k := range e.keys("*" + id + "*") {
		if ttl := e.rdb.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has PTTL %v, want a TTL", k, ttl)
		}
	}
}

// contents renders every key in Redis with its value as text, to search
// for data that must not be there; keys named in skip are left out.
func (e *env) contents(skip ...string) string {
	e.t.Helper()
	ctx := e.ctx
	var b strings.Builder
	for _, k := range e.keys("*") {
		if slices.Contains(skip, k) {
			continue
		}
		fmt.Fprintf(&b, "%s =", k)
		switch typ := e.rdb.Type(ctx, k).Val(); typ {
		case "string":
			fmt.Fprintf(&b, " %s", e.rdb.Get(ctx, k).Val())
		case "zset":
			for _, z := range e.rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				fmt.Fprintf(&b, " %v:%v", z.Member, z.Score)
			}
		case "stream":
			for _, m := range e.rdb.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprintf(&b, " %s:%v", m.ID, m.Values)
			}
		case "set":
			fmt.Fprintf(&b, " %v", e.rdb.SMembers(ctx, k).Val())
		case "hash":
			fmt.Fprintf(&b, " %v", e.rdb.HGetAll(ctx, k).Val())
		case "list":
			fmt.Fprintf(&b, " %v", e.rdb.LRange(ctx, k, 0, -1).Val())
		case "none":
		default:
			e.t.Fatalf("key %s has unexpected type %s", k, typ)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// outboxText renders the outbox stream as text.
func (e *env) outboxText() string {
	e.t.Helper()
	var b strings.Builder
	for _, m := range e.rdb.XRange(e.ctx, OutboxKey, "-", "+").Val() {
		fmt.Fprintf(&b, "%s:%v\n", m.ID, m.Values)
	}
	return b.String()
}
