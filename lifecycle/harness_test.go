package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessiond/sessiond/internal/clocktest"
	"github.com/sessiond/sessiond/internal/keyspace"
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
	// testRecordRetention keeps records past the personal data.
	testRecordRetention = 96 * time.Hour
)

// recTimer records the timed work the service schedules.
type recTimer struct {
	mu    sync.Mutex
	works []Work
}

func (r *recTimer) Due(w Work) {
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

// env is one test's world: a Redis (a server of its own, or the shared
// cluster under a namespace of its own), a fake clock and a Service over
// them.
type env struct {
	t     testing.TB
	ctx   context.Context
	rdb   redis.UniversalClient
	tg    redistest.Target
	ks    keyspace.Space
	clock *clocktest.Clock
	svc   *Service
	timer *recTimer
	obs   *recObserver
}

// newEnv returns an env on a redis-server of its own with the test
// durations; mods adjust the Config.
func newEnv(t testing.TB, mods ...func(*Config)) *env {
	t.Helper()
	return newEnvOn(t, redistest.Open(t, "single"), mods...)
}

// newEnvOn returns an env on tg.
func newEnvOn(t testing.TB, tg redistest.Target, mods ...func(*Config)) *env {
	t.Helper()
	e := &env{
		t:     t,
		ctx:   t.Context(),
		rdb:   tg.Client,
		tg:    tg,
		ks:    keyspace.New(tg.Namespace),
		clock: clocktest.New(testStart),
		timer: &recTimer{},
		obs:   &recObserver{},
	}
	cfg := Config{
		SessionTTL:      testSessionTTL,
		TokenTTL:        testTokenTTL,
		PurgeAfter:      testPurgeAfter,
		Retention:       testRetention,
		RecordRetention: testRecordRetention,
		Namespace:       tg.Namespace,
		Now:             e.clock.Now,
		Timer:           e.timer,
		Observer:        e.obs,
	}
	for _, m := range mods {
		m(&cfg)
	}
	e.svc = New(e.rdb, cfg)
	return e
}

// forEachTopology runs f on a fresh env on every topology.
func forEachTopology(t *testing.T, f func(t *testing.T, e *env), mods ...func(*Config)) {
	t.Helper()
	redistest.ForEachTopology(t, func(t *testing.T, tg redistest.Target) {
		f(t, newEnvOn(t, tg, mods...))
	})
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

// shardOf is a session's shard.
func (e *env) shardOf(id string) keyspace.Shard {
	e.t.Helper()
	sh, ok := ShardOfSession(id)
	if !ok {
		e.t.Fatalf("session id %q names no shard", id)
	}
	return sh
}

// record reads the stored record of id straight from Redis; nil when there
// is none.
func (e *env) record(id string) *record {
	e.t.Helper()
	val, err := e.rdb.Get(e.ctx, e.ks.Session(e.shardOf(id), id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read record %s: %v", id, err)
	}
	// The stored form, parsed here apart from the store's own code:
	// "<version> <json>".
	vs, raw, _ := strings.Cut(val, " ")
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil || v <= 0 {
		e.t.Fatalf("record %s: version %q", id, vs)
	}
	r, err := decodeRecord(id, raw, v)
	if err != nil {
		e.t.Fatalf("decode record %s: %v", id, err)
	}
	return r
}

// allEvents reads every shard's outbox stream, in feed order.
func (e *env) allEvents() []*Event {
	e.t.Helper()
	var out []*Event
	for sh := range keyspace.Shards {
		out = append(out, e.shardEvents(keyspace.Shard(sh))...)
	}
	slices.SortStableFunc(out, func(a, b *Event) int {
		x, _ := parseStreamID(a.Cursor)
		y, _ := parseStreamID(b.Cursor)
		return x.compare(y)
	})
	return out
}

// events returns the outbox events of session id, in stream order (its
// shard's stream only: a session's events are all there).
func (e *env) events(id string) []*Event {
	e.t.Helper()
	var out []*Event
	for _, ev := range e.shardEvents(e.shardOf(id)) {
		if ev.SessionID == id && ev.Type != EventPurged {
			out = append(out, ev)
		}
	}
	return out
}

// shardEvents reads one shard's outbox stream, purge entries included.
func (e *env) shardEvents(sh keyspace.Shard) []*Event {
	e.t.Helper()
	msgs, err := e.rdb.XRange(e.ctx, e.ks.Outbox(sh), "-", "+").Result()
	if err != nil {
		e.t.Fatalf("read outbox: %v", err)
	}
	out := make([]*Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := ParseEvent(sh, m)
		if err != nil {
			e.t.Fatalf("outbox entry: %v", err)
		}
		out = append(out, ev)
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

// eventData is the data of session id's events as the feed and webhooks
// show them, in order.
func (e *env) eventData(id string) []EventData {
	e.t.Helper()
	evs := e.events(id)
	data, _, err := e.svc.EventDetails(e.ctx, evs)
	if err != nil {
		e.t.Fatal(err)
	}
	return data
}

// keys returns every key of the env's namespace that matches pattern
// (which must start with "*" or the namespace).
func (e *env) keys(pattern string) []string {
	e.t.Helper()
	ks, err := redistest.Keys(e.ctx, e.rdb, e.ks.Prefix()+strings.TrimPrefix(pattern, e.ks.Prefix()))
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

// snapshot is every key of the env's namespace and its serialized value
// (DUMP): equal snapshots mean Redis holds the same data. Keys whose names
// contain one of skip are left out.
func (e *env) snapshot(skip ...string) map[string]string {
	e.t.Helper()
	snap, err := redistest.Snapshot(e.ctx, e.rdb, e.ks.Prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	for k := range snap {
		for _, p := range skip {
			if strings.Contains(k, p) {
				delete(snap, k)
			}
		}
	}
	return snap
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
	sh := e.shardOf(id)
	rec, _ := e.rdb.Get(e.ctx, e.ks.Session(sh, id)).Result()
	pii, _ := e.rdb.Get(e.ctx, e.ks.Personal(sh, id)).Result()
	det, _ := e.rdb.HGetAll(e.ctx, e.ks.EventDetails(sh, id)).Result()
	return fmt.Sprintf("%v|%s|%v|events=%d", rec, pii, det, len(e.events(id)))
}

// checkSession checks, straight from Redis, that everything the store
// keeps about session id agrees with its record: the list indexes, the due
// indexes, the ref key, the token keys, the personal data key, the outbox
// sequence and details, and the TTL of every key of the session.
func (e *env) checkSession(id string) {
	e.t.Helper()
	t, ctx, cfg := e.t, e.ctx, e.svc.Config()
	k, sh := e.ks, e.shardOf(id)
	rec := e.record(id)
	if rec == nil {
		if ks := e.keys("*" + id + "*"); len(ks) > 0 {
			t.Errorf("session %s has no record but keys %v remain", id, ks)
		}
		for _, kind := range WorkKinds {
			if err := e.rdb.ZScore(ctx, k.Due(sh, string(kind)), id).Err(); !errors.Is(err, redis.Nil) {
				t.Errorf("session %s has no record but is in due:%s (%v)", id, kind, err)
			}
		}
		return
	}
	if rec.Person != nil || rec.Metadata != nil {
		t.Errorf("session %s: the record holds personal data", id)
	}
	member := indexMember(&rec.Session)
	p := e.rdb.Pipeline()
	all := p.ZScore(ctx, k.IndexAll(sh), member)
	ref := p.ZScore(ctx, k.IndexRef(sh, rec.RefID), member)
	byStatus := map[Status]*redis.FloatCmd{}
	for _, s := range Statuses {
		byStatus[s] = p.ZScore(ctx, k.IndexStatus(sh, string(s)), member)
	}
	expireDue := p.ZScore(ctx, k.Due(sh, string(WorkExpire)), id)
	redactDue := p.ZScore(ctx, k.Due(sh, string(WorkRedact)), id)
	purgeDue := p.ZScore(ctx, k.Due(sh, string(WorkPurge)), id)
	refOwner := p.Get(ctx, k.Ref(sh, rec.RefID))
	pii := p.Exists(ctx, k.Personal(sh, id))
	_, _ = p.Exec(ctx)
	in := func(c *redis.FloatCmd) bool { return c.Err() == nil }
	ms := func(tm time.Time) float64 { return float64(tm.UnixMilli()) }

	live := rec.DeletedAt == nil
	if in(all) != live || in(ref) != live {
		t.Errorf("session %s (deleted=%v): in idx:all=%v, in idx:ref=%v", id, !live, in(all), in(ref))
	}
	for s, c := range byStatus {
		if want := live && s == rec.Status; in(c) != want {
			t.Errorf("session %s in %s: in idx:st:%s = %v, want %v", id, rec.Status, s, in(c), want)
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
	wantPurge := rec.RetainFrom.Add(cfg.RecordRetention)
	if !live {
		wantPurge = rec.DeletedAt.Add(cfg.PurgeAfter)
	}
	// The purge falls due PurgeLead before the record's TTL ends.
	wantPurge = wantPurge.Add(-cfg.PurgeLead)
	switch {
	case live && rec.Status.Pending() && rec.ExpiresAt != nil:
		// Its expiry adds the entry; one left from before falls due
		// earlier and is put back by the purge.
		if in(purgeDue) && purgeDue.Val() > ms(wantPurge) {
			t.Errorf("session %s (pending): due:purge score %v later than %v", id, purgeDue.Val(), wantPurge)
		}
	case !in(purgeDue) || purgeDue.Val() != ms(wantPurge):
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
		owner, err := e.rdb.Get(ctx, k.Token(sh, hash)).Result()
		if err != nil || owner != id {
			t.Errorf("session %s: token key of its token hash holds %q (%v)", id, owner, err)
		}
	}

	// The outbox holds the session's events numbered 1..seq, in order,
	// each with its details.
	evs := e.events(id)
	if int64(len(evs)) != rec.Seq {
		t.Errorf("session %s: %d events in the outbox, record seq %d", id, len(evs), rec.Seq)
	}
	_, full, err := e.svc.EventDetails(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		if ev.Sequence != int64(i+1) {
			t.Errorf("session %s: event %d (%s) has sequence %d", id, i, ev.Type, ev.Sequence)
		}
		if !full[i] {
			t.Errorf("session %s: event %d (%s) has no details", id, i, ev.Type)
		}
	}

	// Every key of the session carries a TTL.
	for _, key := range e.keys("*" + id + "*") {
		if ttl := e.rdb.PTTL(ctx, key).Val(); ttl <= 0 {
			t.Errorf("key %s has PTTL %v, want a TTL", key, ttl)
		}
	}
}

// contents renders every key of the env's namespace with its value as
// text, to search for data that must not be there.
func (e *env) contents() string {
	e.t.Helper()
	s, err := redistest.Contents(e.ctx, e.rdb, e.ks.Prefix()+"*")
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// outboxText renders every shard's outbox stream as text.
func (e *env) outboxText() string {
	e.t.Helper()
	var b strings.Builder
	for sh := range keyspace.Shards {
		for _, m := range e.rdb.XRange(e.ctx, e.ks.Outbox(keyspace.Shard(sh)), "-", "+").Val() {
			fmt.Fprintf(&b, "%s %v\n", m.ID, m.Values)
		}
	}
	return b.String()
}

// dueNow returns the ids due for kind at the clock's now in every shard,
// earliest first.
func (e *env) dueNow(kind WorkKind) []string {
	e.t.Helper()
	type due struct {
		id string
		at float64
	}
	var all []due
	for sh := range keyspace.Shards {
		zs, err := e.rdb.ZRangeArgsWithScores(e.ctx, redis.ZRangeArgs{
			Key: e.svc.DueKey(keyspace.Shard(sh), kind), Start: "-inf", Stop: e.clock.Now().UnixMilli(), ByScore: true,
		}).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, z := range zs {
			all = append(all, due{z.Member.(string), z.Score})
		}
	}
	slices.SortStableFunc(all, func(a, b due) int { return cmp.Compare(a.at, b.at) })
	out := []string{}
	for _, d := range all {
		out = append(out, d.id)
	}
	return out
}

// dueAt returns when id is due for kind; ok is false when it is not in the
// index.
func (e *env) dueAt(kind WorkKind, id string) (at time.Time, ok bool) {
	e.t.Helper()
	score, err := e.rdb.ZScore(e.ctx, e.svc.DueKey(e.shardOf(id), kind), id).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return time.UnixMilli(int64(score)).UTC(), true
}

// ids returns the sessions' ids, in order.
func ids(ss []Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}
