package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestCreateKeys checks the exact keys one create writes, and that they
// agree with each other.
func TestCreateKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.createWith(CreateRequest{RefID: "ref-1", Person: json.RawMessage(`{"name":"A"}`)})
	sum := sha256.Sum256([]byte(c.Token))
	want := []string{
		allIndexKey,
		ExpireDueKey,
		PurgeDueKey,
		refIndexKey("ref-1"),
		statusIndexKey(StatusCreated),
		OutboxKey,
		refKey("ref-1"),
		tokenKey(hex.EncodeToString(sum[:])),
		piiKey(c.ID),
		sessionKey(c.ID),
	}
	slices.Sort(want)
	if got := e.keys("*"); !slices.Equal(got, want) {
		t.Errorf("keys after create:\n got %v\nwant %v", got, want)
	}
	if !c.New || c.Status != StatusCreated {
		t.Errorf("create: new=%v status=%s", c.New, c.Status)
	}
	if c.ExpiresAt == nil || !c.ExpiresAt.Equal(testStart.Add(testSessionTTL)) {
		t.Errorf("expires_at %v, want %v", c.ExpiresAt, testStart.Add(testSessionTTL))
	}
	if !c.TokenExpiresAt.Equal(testStart.Add(testTokenTTL)) {
		t.Errorf("token_expires_at %v, want %v", c.TokenExpiresAt, testStart.Add(testTokenTTL))
	}
	e.checkSession(c.ID)
}

// txProbe is a go-redis hook that checks every write of the service goes
// through MULTI/EXEC, and can make Redis abort every EXEC.
type txProbe struct {
	mu      sync.Mutex
	abort   bool
	outside []string // write commands sent outside a transaction
}

var writeCommands = map[string]bool{
	"set": true, "setnx": true, "del": true, "unlink": true, "zadd": true, "zrem": true,
	"zremrangebyscore": true, "xadd": true, "xtrim": true, "pexpire": true, "pexpireat": true,
	"expire": true, "expireat": true, "evalsha": true, "eval": true, "hset": true, "incr": true,
}

func (p *txProbe) DialHook(next redis.DialHook) redis.DialHook { return next }

func (p *txProbe) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		p.note(cmd)
		return next(ctx, cmd)
	}
}

func (p *txProbe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 1 && cmds[0].Name() == "multi" {
			p.mu.Lock()
			abort := p.abort
			p.mu.Unlock()
			if abort {
				// A command Redis refuses to queue makes it discard the
				// whole transaction at EXEC (EXECABORT).
				bad := redis.NewCmd(ctx, "no-such-command")
				cmds = append(slices.Clone(cmds[:len(cmds)-1]), bad, cmds[len(cmds)-1])
			}
			return next(ctx, cmds)
		}
		for _, c := range cmds {
			p.note(c)
		}
		return next(ctx, cmds)
	}
}

func (p *txProbe) note(cmd redis.Cmder) {
	if writeCommands[cmd.Name()] {
		p.mu.Lock()
		p.outside = append(p.outside, cmd.String())
		p.mu.Unlock()
	}
}

// TestTransactionsAreAtomic checks that every operation writes only inside
// one MULTI/EXEC: with Redis aborting the EXEC, the operation fails and
// Redis is exactly as before; then the same operation succeeds.
func TestTransactionsAreAtomic(t *testing.T) {
	t.Parallel()
	type prep func(e *env) string // returns the session id to work on
	created := func(e *env) string {
		return e.createWith(CreateRequest{RefID: "r", Person: json.RawMessage(`{"n":1}`)}).ID
	}
	inStatus := func(steps ...string) prep {
		return func(e *env) string {
			id := created(e)
			for _, s := range steps {
				if err := machineOp(s).do(e.ctx, e.svc, id); err != nil {
					e.t.Fatalf("setup %s: %v", s, err)
				}
			}
			return id
		}
	}
	overdue := func(e *env) string { id := created(e); e.clock.Advance(testSessionTTL); return id }
	cases := []struct {
		name string
		prep prep
		do   func(ctx context.Context, s *Service, id string) error
	}{
		{"create", func(e *env) string { return "" }, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r", Metadata: json.RawMessage(`{"m":1}`)})
			return err
		}},
		{"create_existing", created, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r"})
			return err
		}},
		{"create_forced", created, func(ctx context.Context, s *Service, _ string) error {
			_, err := s.Create(ctx, CreateRequest{RefID: "r", ForceCreation: true})
			return err
		}},
		{"progress", created, machineOp("progress_started").do},
		{"decide", inStatus("progress_submitted"), machineOp("decide_approved").do},
		{"cancel", created, machineOp("cancel").do},
		{"expire", inStatus("progress_started"), machineOp("expire").do},
		{"resume", inStatus("expire"), machineOp("resume").do},
		{"delete", created, machineOp("delete").do},
		{"redact", created, machineOp("redact").do},
		{"update", created, func(ctx context.Context, s *Service, id string) error {
			_, err := s.Update(ctx, id, UpdateRequest{Metadata: json.RawMessage(`{"k":"v"}`), Tags: &[]string{"t"}})
			return err
		}},
		{"lazy_expiry", overdue, func(ctx context.Context, s *Service, id string) error { _, err := s.Get(ctx, id); return err }},
		{"expire_due", overdue, func(ctx context.Context, s *Service, id string) error {
			_, err := s.Run(ctx, WorkExpire, id)
			return err
		}},
		{"redact_due", func(e *env) string {
			id := inStatus("cancel")(e)
			e.clock.Advance(testRetention)
			return id
		}, func(ctx context.Context, s *Service, id string) error {
			_, err := s.Run(ctx, WorkRedact, id)
			return err
		}},
		{"purge", func(e *env) string {
			id := inStatus("delete")(e)
			e.clock.Advance(testPurgeAfter)
			return id
		}, func(ctx context.Context, s *Service, id string) error {
			_, err := s.Run(ctx, WorkPurge, id)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			id := tc.prep(e)

			probe := &txProbe{abort: true}
			rdb := redis.NewClient(&redis.Options{Addr: e.srv.Addr})
			t.Cleanup(func() { _ = rdb.Close() })
			rdb.AddHook(probe)
			cfg := e.svc.Config()
			svc := New(rdb, cfg)

			before := e.snapshot()
			if err := tc.do(e.ctx, svc, id); err == nil {
				t.Fatalf("%s succeeded with every EXEC aborted", tc.name)
			}
			assertSameSnapshot(t, before, e.snapshot())

			probe.mu.Lock()
			probe.abort = false
			probe.mu.Unlock()
			if err := tc.do(e.ctx, svc, id); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			probe.mu.Lock()
			defer probe.mu.Unlock()
			if len(probe.outside) > 0 {
				t.Errorf("%s wrote outside MULTI/EXEC: %v", tc.name, probe.outside)
			}
			for _, k := range e.keys(keyPrefix + "{*}:session") {
				e.checkSession(strings.TrimSuffix(strings.TrimPrefix(k, keyPrefix+"{"), "}:session"))
			}
		})
	}
}

// TestIdempotentCreate checks that a create for a ref_id with an active
// session returns it with a later expires_at and a fresh token, and
// revokes the old token.
func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"A"}`)})
	e.clock.Advance(10 * time.Minute)
	again, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"B"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if again.New || again.ID != first.ID {
		t.Fatalf("second create: new=%v id=%s, want the first session %s", again.New, again.ID, first.ID)
	}
	wantExp := testStart.Add(10*time.Minute + testSessionTTL)
	if again.ExpiresAt == nil || !again.ExpiresAt.Equal(wantExp) {
		t.Errorf("expires_at %v, want extended to %v", again.ExpiresAt, wantExp)
	}
	if !again.TokenExpiresAt.Equal(testStart.Add(10*time.Minute + testTokenTTL)) {
		t.Errorf("token_expires_at %v", again.TokenExpiresAt)
	}
	if again.Token == "" || again.Token == first.Token {
		t.Errorf("token not reissued: %q", again.Token)
	}
	if _, err := e.svc.SessionForToken(e.ctx, first.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("old token: %v, want ErrNotFound", err)
	}
	s, err := e.svc.SessionForToken(e.ctx, again.Token)
	if err != nil || s.ID != first.ID {
		t.Errorf("new token: %v, %v", s, err)
	}
	if string(again.Person) != `{"name":"A"}` {
		t.Errorf("person %s: an idempotent create must not overwrite the session", again.Person)
	}
	if got := e.eventTypes(first.ID); !slices.Equal(got, []string{"session.created"}) {
		t.Errorf("events %v, want only session.created", got)
	}
	if got := len(e.keys(keyPrefix + "token:*")); got != 1 {
		t.Errorf("%d token keys, want 1", got)
	}
	e.checkSession(first.ID)

	// Past its time limit the session is not active any more: a create
	// makes a new one and the old one expires with its event.
	e.clock.Advance(testSessionTTL)
	third := e.create("ref")
	if !third.New || third.ID == first.ID {
		t.Fatalf("create after expiry: new=%v id=%s", third.New, third.ID)
	}
	if got := e.eventTypes(first.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
		t.Errorf("old session events %v", got)
	}
	e.checkSession(first.ID)
	e.checkSession(third.ID)
}

// TestForceCreation checks that force_creation makes a new session and
// cancels the active one, with its event.
func TestForceCreation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old := e.create("ref")
	if _, err := e.svc.Progress(e.ctx, old.ID, StatusSubmitted); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Second)
	c, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", ForceCreation: true})
	if err != nil {
		t.Fatal(err)
	}
	if !c.New || c.ID == old.ID {
		t.Fatalf("forced create: new=%v id=%s", c.New, c.ID)
	}
	if s := e.get(old.ID); s.Status != StatusCanceled {
		t.Errorf("old session %s, want canceled", s.Status)
	}
	if got := e.eventTypes(old.ID); !slices.Equal(got, []string{"session.created", "session.submitted", "session.canceled"}) {
		t.Errorf("old session events %v", got)
	}
	if _, err := e.svc.SessionForToken(e.ctx, old.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("old token still works: %v", err)
	}
	if owner := e.rdb.Get(e.ctx, refKey("ref")).Val(); owner != c.ID {
		t.Errorf("ref key -> %s, want %s", owner, c.ID)
	}
	page, err := e.svc.List(e.ctx, ListQuery{RefID: "ref"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Sessions) != 2 || page.Sessions[0].ID != c.ID || page.Sessions[1].ID != old.ID {
		t.Errorf("list by ref: %+v", page.Sessions)
	}
	e.checkSession(old.ID)
	e.checkSession(c.ID)

	// With no active session, force_creation is a plain create.
	if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	d, err := e.svc.Create(e.ctx, CreateRequest{RefID: "ref", ForceCreation: true})
	if err != nil || !d.New {
		t.Fatalf("forced create without active session: %+v, %v", d, err)
	}
	if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.canceled"}) {
		t.Errorf("canceled session got events %v", got)
	}
}

// TestConcurrentCreates races 50 creates for one ref_id against a real
// Redis: exactly one active session must remain.
func TestConcurrentCreates(t *testing.T) {
	t.Parallel()
	for _, force := range []bool{false, true} {
		name := "idempotent"
		if force {
			name = "forced"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			const n = 50
			var wg sync.WaitGroup
			results := make([]*Created, n)
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					results[i], errs[i] = e.svc.Create(e.ctx, CreateRequest{RefID: "race", ForceCreation: force})
				})
			}
			close(start)
			wg.Wait()
			news := 0
			ids := map[string]bool{}
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("create %d: %v", i, errs[i])
				}
				ids[results[i].ID] = true
				if results[i].New {
					news++
				}
			}
			members := e.rdb.ZRange(e.ctx, refIndexKey("race"), 0, -1).Val()
			active := 0
			var activeID string
			for _, m := range members {
				s := e.get(memberID(m))
				if s.Status.Active() {
					active++
					activeID = s.ID
				}
				e.checkSession(s.ID)
			}
			if active != 1 {
				t.Fatalf("%d active sessions for the ref_id, want 1", active)
			}
			if owner := e.rdb.Get(e.ctx, refKey("race")).Val(); owner != activeID {
				t.Errorf("ref key -> %s, active session %s", owner, activeID)
			}
			if got := len(e.keys(keyPrefix + "token:*")); got != 1 {
				t.Errorf("%d live tokens, want 1", got)
			}
			if force {
				if news != n || len(ids) != n || len(members) != n {
					t.Errorf("forced: %d new, %d ids, %d indexed; want %d each", news, len(ids), len(members), n)
				}
			} else if news != 1 || len(ids) != 1 || len(members) != 1 {
				t.Errorf("idempotent: %d new, %d ids, %d indexed; want 1 each", news, len(ids), len(members))
			}
		})
	}
}

// TestTokenStorage checks that a token is kept only as its SHA-256 under a
// key with the token lifetime, and lives by the injected clock.
func TestTokenStorage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create("ref")
	if !strings.HasPrefix(c.Token, "vst_") || len(c.Token) < 40 {
		t.Fatalf("token %q does not look opaque and random", c.Token)
	}
	if strings.Contains(e.contents(), c.Token) {
		t.Fatalf("the plaintext token is in Redis")
	}
	sum := sha256.Sum256([]byte(c.Token))
	key := keyPrefix + "token:" + hex.EncodeToString(sum[:])
	if ttl := e.rdb.PTTL(e.ctx, key).Val(); ttl <= testTokenTTL-10*time.Second || ttl > testTokenTTL {
		t.Errorf("PTTL(%s) = %v, want about %v", key, ttl, testTokenTTL)
	}
	if got := e.record(c.ID).TokenHash; got != hex.EncodeToString(sum[:]) {
		t.Errorf("record holds token hash %q, want the hash", got)
	}
	if s, err := e.svc.SessionForToken(e.ctx, c.Token); err != nil || s.ID != c.ID {
		t.Fatalf("SessionForToken: %v, %v", s, err)
	}
	if _, err := e.svc.SessionForToken(e.ctx, c.Token+"x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SessionForToken(wrong): %v", err)
	}

	// The token's lifetime runs on the injected clock, like everything else.
	e.clock.Advance(testTokenTTL - time.Millisecond)
	if _, err := e.svc.SessionForToken(e.ctx, c.Token); err != nil {
		t.Errorf("token before its lifetime ends: %v", err)
	}
	e.clock.Advance(time.Millisecond)
	if _, err := e.svc.SessionForToken(e.ctx, c.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("token past its lifetime: %v, want ErrNotFound", err)
	}

	// Resume issues a fresh token; leaving the active statuses revokes it.
	d := e.create("ref2")
	if _, err := e.svc.Cancel(e.ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SessionForToken(e.ctx, d.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("token of a canceled session: %v", err)
	}
	if got := e.keys(keyPrefix + "token:*"); len(got) != 1 {
		t.Errorf("token keys %v, want only the first session's", got)
	}
}

// TestLazyExpiry checks that a read past expires_at shows the session
// expired (or abandoned) and emits exactly one event, and never earlier.
func TestLazyExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	created := e.create("a")
	started := e.create("b")
	if _, err := e.svc.Progress(e.ctx, started.ID, StatusStarted); err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(testSessionTTL - time.Millisecond)
	for _, id := range []string{created.ID, started.ID} {
		if s := e.get(id); !s.Status.Pending() {
			t.Errorf("%s before expires_at: %s", id, s.Status)
		}
		if ok, err := e.svc.ExpireDue(e.ctx, id); ok || err != nil {
			t.Errorf("ExpireDue before expires_at = %v, %v", ok, err)
		}
	}
	if ids, _ := e.svc.Due(e.ctx, WorkExpire, e.clock.Now(), 10); len(ids) != 0 {
		t.Errorf("due before expires_at: %v", ids)
	}
	e.clock.Advance(time.Millisecond)

	// Many readers at once: one expiry, one event.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if s, err := e.svc.Get(e.ctx, created.ID); err != nil || s.Status != StatusExpired {
				t.Errorf("Get past expires_at: %v, %v", s, err)
			}
		})
	}
	wg.Wait()
	if got := e.eventTypes(created.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
		t.Errorf("events %v", got)
	}
	if s := e.get(started.ID); s.Status != StatusAbandoned || s.ExpiresAt != nil {
		t.Errorf("started past expires_at: %s expires_at=%v, want abandoned", s.Status, s.ExpiresAt)
	}
	e.get(started.ID)
	if got := e.eventTypes(started.ID); !slices.Equal(got, []string{"session.created", "session.started", "session.abandoned"}) {
		t.Errorf("events %v", got)
	}
	if _, err := e.svc.SessionForToken(e.ctx, created.Token); !errors.Is(err, ErrNotFound) {
		t.Errorf("token of an expired session: %v", err)
	}
	e.checkSession(created.ID)
	e.checkSession(started.ID)

	// An operation on an overdue session acts on the expired one.
	late := e.create("c")
	e.clock.Advance(testSessionTTL)
	if _, err := e.svc.Progress(e.ctx, late.ID, StatusStarted); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("progress of an overdue session: %v, want ErrInvalidTransition", err)
	}
	if got := e.eventTypes(late.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
		t.Errorf("events %v", got)
	}
	e.checkSession(late.ID)
}

// TestExpiryNeverEarly checks that the time limit is never shorter than
// SessionTTL, with a clock that does not sit on whole milliseconds.
func TestExpiryNeverEarly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.clock.Advance(500 * time.Microsecond)
	c := e.create("ref")
	deadline := e.clock.Now().Add(testSessionTTL)
	if c.ExpiresAt.Before(deadline) {
		t.Errorf("expires_at %v is before created + SessionTTL %v", c.ExpiresAt.Time, deadline)
	}
	e.clock.Advance(testSessionTTL - time.Nanosecond)
	if s := e.get(c.ID); s.Status != StatusCreated {
		t.Errorf("status %s before SessionTTL passed", s.Status)
	}
	e.clock.Advance(time.Millisecond)
	if s := e.get(c.ID); s.Status != StatusExpired {
		t.Errorf("status %s past expires_at", s.Status)
	}
}

// TestResume checks that resume returns a session to the status it
// expired from, with a new token and time limit, keeping its progress.
func TestResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.createWith(CreateRequest{RefID: "ref", FlowID: "flow", Person: json.RawMessage(`{"name":"P"}`), Metadata: json.RawMessage(`{"m":1}`)})
	if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"vip"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testSessionTTL)
	if s := e.get(c.ID); s.Status != StatusAbandoned {
		t.Fatalf("status %s, want abandoned", s.Status)
	}
	e.clock.Advance(time.Minute)
	r, err := e.svc.Resume(e.ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	if r.Status != StatusStarted {
		t.Errorf("resumed to %s, want started", r.Status)
	}
	if r.ExpiresAt == nil || !r.ExpiresAt.Equal(now.Add(testSessionTTL)) {
		t.Errorf("expires_at %v, want %v", r.ExpiresAt, now.Add(testSessionTTL))
	}
	if r.Token == "" || r.Token == c.Token || !r.TokenExpiresAt.Equal(now.Add(testTokenTTL)) {
		t.Errorf("token %q expiring %v", r.Token, r.TokenExpiresAt)
	}
	if s, err := e.svc.SessionForToken(e.ctx, r.Token); err != nil || s.ID != c.ID {
		t.Errorf("new token: %v, %v", s, err)
	}
	s := e.get(c.ID)
	if string(s.Person) != `{"name":"P"}` || string(s.Metadata) != `{"m":1}` || !slices.Equal(s.Tags, []string{"vip"}) || s.FlowID != "flow" {
		t.Errorf("progress lost: %+v", s)
	}
	if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.started", "session.abandoned", "session.resumed"}) {
		t.Errorf("events %v", got)
	}
	e.checkSession(c.ID)

	// A resumed session may expire again, and resume again.
	if _, err := e.svc.Expire(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Resume(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	e.checkSession(c.ID)
}

// TestResumeWithAnotherActive checks that a ref_id keeps at most one active
// session across a resume, and that a session already past its time limit
// does not count as active.
func TestResumeWithAnotherActive(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.create("ref")
	if _, err := e.svc.Expire(e.ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	b := e.create("ref")
	if !b.New {
		t.Fatal("create after expiry returned the expired session")
	}
	if _, err := e.svc.Resume(e.ctx, a.ID); !errors.Is(err, ErrRefBusy) {
		t.Fatalf("resume beside an active session: %v, want ErrRefBusy", err)
	}
	if s := e.get(a.ID); s.Status != StatusExpired {
		t.Errorf("refused resume changed status to %s", s.Status)
	}

	// b runs out of time; it is expired, so a may resume.
	e.clock.Advance(testSessionTTL)
	r, err := e.svc.Resume(e.ctx, a.ID)
	if err != nil {
		t.Fatalf("resume once the other session is past its time: %v", err)
	}
	if r.Status != StatusCreated {
		t.Errorf("resumed to %s", r.Status)
	}
	if s := e.get(b.ID); s.Status != StatusExpired {
		t.Errorf("other session %s, want expired", s.Status)
	}
	if got := e.eventTypes(b.ID); !slices.Equal(got, []string{"session.created", "session.expired"}) {
		t.Errorf("other session events %v", got)
	}
	if owner := e.rdb.Get(e.ctx, refKey("ref")).Val(); owner != a.ID {
		t.Errorf("ref key -> %s, want the resumed session", owner)
	}
	e.checkSession(a.ID)
	e.checkSession(b.ID)
}

// TestRedact checks that a redaction removes person and metadata from
// every key in Redis, outbox included, at once and for good.
func TestRedact(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const name, note, meta2 = "Zanzibar Quixote", "Xylophone-Secret", "Quokka-Private"
	c := e.createWith(CreateRequest{
		RefID:    "ref",
		Person:   json.RawMessage(`{"name":"` + name + `","dob":"1970-01-01"}`),
		Metadata: json.RawMessage(`{"note":"` + note + `"}`),
	})
	if _, err := e.svc.Progress(e.ctx, c.ID, StatusStarted); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`{"note":"` + meta2 + `"}`)}); err != nil {
		t.Fatal(err)
	}
	e.create("other") // a neighbour whose data stays
	if all := e.contents(); !strings.Contains(all, name) || !strings.Contains(all, meta2) {
		t.Fatalf("personal data not stored where the test looks")
	}
	if strings.Contains(e.outboxText(), name) {
		t.Errorf("personal data in the outbox")
	}

	e.clock.Advance(time.Second)
	s, err := e.svc.Redact(e.ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Person != nil || s.Metadata != nil || s.RedactedAt == nil || !s.RedactedAt.Equal(e.clock.Now()) {
		t.Errorf("redacted session %+v", s)
	}
	if s.Status != StatusStarted || s.ID != c.ID {
		t.Errorf("redaction changed id or status: %+v", s)
	}
	all := e.contents()
	for _, secret := range []string{name, note, meta2, "1970-01-01"} {
		if strings.Contains(all, secret) {
			t.Errorf("%q still in Redis after redaction", secret)
		}
	}
	if got := e.get(c.ID); got.Person != nil || got.Metadata != nil {
		t.Errorf("Get after redact: %+v", got)
	}

	// A second redaction changes nothing; personal data cannot come back.
	n := len(e.events(c.ID))
	if _, err := e.svc.Redact(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if len(e.events(c.ID)) != n {
		t.Errorf("second redaction emitted an event")
	}
	var ve *ValidationError
	if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`{"x":1}`)}); !errors.As(err, &ve) {
		t.Errorf("metadata onto a redacted session: %v, want a ValidationError", err)
	}
	if _, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"ok"}}); err != nil {
		t.Errorf("tags onto a redacted session: %v", err)
	}
	e.checkSession(c.ID)
}

// TestRedactDue checks retention: a terminal session is redacted by
// Run(WorkRedact) once Retention has passed, not before.
func TestRedactDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"R"}`)})
	active := e.createWith(CreateRequest{RefID: "ref2", Person: json.RawMessage(`{"name":"S"}`)})
	if _, err := e.svc.Progress(e.ctx, active.ID, StatusSubmitted); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	due := e.clock.Now().Add(testRetention)
	if at, ok, err := e.svc.NextDue(e.ctx, WorkRedact); err != nil || !ok || !at.Equal(due) {
		t.Errorf("NextDue(redact) = %v, %v, %v; want %v", at, ok, err, due)
	}
	e.clock.Advance(testRetention - time.Millisecond)
	if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); ok || err != nil {
		t.Errorf("redact before retention ends = %v, %v", ok, err)
	}
	e.clock.Advance(time.Millisecond)
	if ids, _ := e.svc.Due(e.ctx, WorkRedact, e.clock.Now(), 10); !slices.Equal(ids, []string{c.ID}) {
		t.Errorf("due redactions %v", ids)
	}
	if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); !ok || err != nil {
		t.Errorf("redact when due = %v, %v", ok, err)
	}
	if ok, err := e.svc.Run(e.ctx, WorkRedact, c.ID); ok || err != nil {
		t.Errorf("redact again = %v, %v", ok, err)
	}
	if ok, err := e.svc.Run(e.ctx, WorkRedact, active.ID); ok || err != nil {
		t.Errorf("redact of an active session = %v, %v", ok, err)
	}
	if s := e.get(c.ID); s.Person != nil || s.RedactedAt == nil {
		t.Errorf("after retention: %+v", s)
	}
	if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created", "session.canceled", "session.redacted"}) {
		t.Errorf("events %v", got)
	}
	e.checkSession(c.ID)
	e.checkSession(active.ID)
}

// TestPurge checks that Run(WorkPurge) removes every key of a deleted
// session once PurgeAfter has passed, and not before.
func TestPurge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.createWith(CreateRequest{RefID: "ref", Person: json.RawMessage(`{"name":"X"}`), Metadata: json.RawMessage(`{"a":1}`)})
	keep := e.create("keep")
	if err := e.svc.Delete(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.keys("*" + c.ID + "*"); !slices.Equal(got, []string{sessionKey(c.ID)}) {
		t.Errorf("keys of a deleted session: %v, want only its record until the purge", got)
	}
	e.checkSession(c.ID)

	e.clock.Advance(testPurgeAfter - time.Millisecond)
	if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
		t.Errorf("purge before PurgeAfter = %v, %v", ok, err)
	}
	if e.record(c.ID) == nil {
		t.Fatal("purged early")
	}
	e.clock.Advance(time.Millisecond)
	if ids, _ := e.svc.Due(e.ctx, WorkPurge, e.clock.Now(), 10); !slices.Equal(ids, []string{c.ID}) {
		t.Errorf("due purges %v", ids)
	}
	if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); !ok || err != nil {
		t.Errorf("purge when due = %v, %v", ok, err)
	}
	if got := e.keys("*" + c.ID + "*"); len(got) != 0 {
		t.Errorf("keys left after purge: %v", got)
	}
	if got := e.keys("*ref*"); slices.ContainsFunc(got, func(k string) bool { return !strings.Contains(k, "keep") }) {
		t.Errorf("ref keys left after purge: %v", got)
	}
	if strings.Contains(e.contents(OutboxKey), c.ID) {
		t.Errorf("session id left outside the outbox:\n%s", e.contents(OutboxKey))
	}
	for _, k := range []string{ExpireDueKey, RedactDueKey, PurgeDueKey, allIndexKey} {
		for _, m := range e.rdb.ZRange(e.ctx, k, 0, -1).Val() {
			if strings.Contains(m, c.ID) {
				t.Errorf("%s still holds %s", k, m)
			}
		}
	}
	if ok, err := e.svc.Run(e.ctx, WorkPurge, c.ID); ok || err != nil {
		t.Errorf("purge again = %v, %v", ok, err)
	}
	e.checkSession(c.ID)
	e.checkSession(keep.ID)
	if s := e.get(keep.ID); s.ID != keep.ID {
		t.Errorf("neighbour lost: %+v", s)
	}
}

// TestDue checks Due and NextDue on the expiry index.
func TestDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, ok, err := e.svc.NextDue(e.ctx, WorkExpire); ok || err != nil {
		t.Errorf("NextDue on nothing = %v, %v", ok, err)
	}
	var ids []string
	for i := range 3 {
		ids = append(ids, e.create("ref"+string(rune('a'+i))).ID)
		e.clock.Advance(time.Minute)
	}
	at, ok, err := e.svc.NextDue(e.ctx, WorkExpire)
	if err != nil || !ok || !at.Equal(testStart.Add(testSessionTTL)) || at.Location() != time.UTC {
		t.Errorf("NextDue = %v, %v, %v; want %v UTC", at, ok, err, testStart.Add(testSessionTTL))
	}
	due := func(now time.Time, limit int64) []string {
		t.Helper()
		got, err := e.svc.Due(e.ctx, WorkExpire, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := due(testStart.Add(testSessionTTL-time.Millisecond), 10); len(got) != 0 {
		t.Errorf("due before the first deadline: %v", got)
	}
	if got := due(testStart.Add(testSessionTTL), 10); !slices.Equal(got, ids[:1]) {
		t.Errorf("due at the first deadline: %v, want %v", got, ids[:1])
	}
	if got := due(testStart.Add(testSessionTTL+time.Hour), 10); !slices.Equal(got, ids) {
		t.Errorf("due later: %v, want %v (earliest first)", got, ids)
	}
	if got := due(testStart.Add(testSessionTTL+time.Hour), 2); !slices.Equal(got, ids[:2]) {
		t.Errorf("due with limit 2: %v", got)
	}
	if _, err := e.svc.Due(e.ctx, WorkKind("nope"), e.clock.Now(), 1); err == nil {
		t.Error("Due(unknown kind) succeeded")
	}
	if _, _, err := e.svc.NextDue(e.ctx, WorkKind("nope")); err == nil {
		t.Error("NextDue(unknown kind) succeeded")
	}
	if _, err := e.svc.Run(e.ctx, WorkKind("nope"), ids[0]); err == nil {
		t.Error("Run(unknown kind) succeeded")
	}

	// The scheduler's path: run whatever is due.
	e.clock.Advance(testSessionTTL)
	for _, id := range due(e.clock.Now(), 10) {
		if ok, err := e.svc.Run(e.ctx, WorkExpire, id); !ok || err != nil {
			t.Errorf("Run(expire, %s) = %v, %v", id, ok, err)
		}
	}
	if got := due(e.clock.Now(), 10); len(got) != 0 {
		t.Errorf("still due after running: %v", got)
	}
	for _, id := range ids {
		e.checkSession(id)
	}
}

// TestTimer checks the fast-path hook hears of each kind of timed work.
func TestTimer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create("ref")
	rec := e.record(c.ID)
	want := []Work{{Kind: WorkExpire, SessionID: c.ID, Version: rec.Version, At: testStart.Add(testSessionTTL)}}
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after create: %+v, want %+v", got, want)
	}
	if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	rec = e.record(c.ID)
	want = append(want, Work{Kind: WorkRedact, SessionID: c.ID, Version: rec.Version, At: testStart.Add(testRetention)})
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after cancel: %+v, want %+v", got, want)
	}
	e.clock.Advance(time.Minute)
	if err := e.svc.Delete(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	rec = e.record(c.ID)
	want = append(want, Work{Kind: WorkPurge, SessionID: c.ID, Version: rec.Version, At: e.clock.Now().Add(testPurgeAfter)})
	if got := e.timer.of(c.ID); !slices.EqualFunc(got, want, sameWork) {
		t.Errorf("after delete: %+v, want %+v", got, want)
	}
}

func sameWork(a, b Work) bool {
	return a.Kind == b.Kind && a.SessionID == b.SessionID && a.Version == b.Version && a.At.Equal(b.At)
}

// TestUpdate checks metadata and tags updates and their validation.
func TestUpdate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.createWith(CreateRequest{RefID: "ref", Metadata: json.RawMessage(`{"a":1}`)})
	e.clock.Advance(time.Second)
	s, err := e.svc.Update(e.ctx, c.ID, UpdateRequest{Tags: &[]string{"x", "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Metadata) != `{"a":1}` || !slices.Equal(s.Tags, []string{"x", "y"}) || !s.UpdatedAt.Equal(e.clock.Now()) {
		t.Errorf("after tags update: %+v", s)
	}
	s, err = e.svc.Update(e.ctx, c.ID, UpdateRequest{Metadata: json.RawMessage(`null`)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Metadata != nil || !slices.Equal(s.Tags, []string{"x", "y"}) {
		t.Errorf("after clearing metadata: %+v", s)
	}
	if len(e.keys(piiKey(c.ID))) != 0 {
		t.Errorf("personal data key left with nothing in it")
	}
	var ve *ValidationError
	for _, bad := range []UpdateRequest{
		{},
		{Metadata: json.RawMessage(`[1]`)},
		{Tags: &[]string{""}},
		{Tags: &[]string{"a\x00"}},
		{Tags: new(make([]string, 51))},
	} {
		before := e.sessionState(c.ID)
		if _, err := e.svc.Update(e.ctx, c.ID, bad); !errors.As(err, &ve) {
			t.Errorf("Update(%+v): %v, want a ValidationError", bad, err)
		}
		if e.sessionState(c.ID) != before {
			t.Errorf("a refused update changed the session")
		}
	}
	if got := e.eventTypes(c.ID); !slices.Equal(got, []string{"session.created"}) {
		t.Errorf("updates emitted events: %v", got)
	}
	e.checkSession(c.ID)
}

// TestEventsFeed checks the events feed: every event, oldest first, with
// a cursor that continues where a page ended.
func TestEventsFeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.create("a")
	d := e.create("b")
	if _, err := e.svc.Cancel(e.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	var got []string
	after := ""
	for range 10 {
		feed, err := e.svc.Events(e.ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(feed.Events) == 0 {
			if feed.NextCursor != after {
				t.Errorf("empty page moved the cursor")
			}
			break
		}
		for _, ev := range feed.Events {
			var data EventData
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatal(err)
			}
			got = append(got, data.ID[:4]+":"+ev.Type+":"+strconv.FormatInt(data.Sequence, 10))
		}
		after = feed.NextCursor
	}
	want := []string{c.ID[:4] + ":session.created:1", d.ID[:4] + ":session.created:1", c.ID[:4] + ":session.canceled:2"}
	if !slices.Equal(got, want) {
		t.Errorf("feed %v, want %v", got, want)
	}
	var ve *ValidationError
	if _, err := e.svc.Events(e.ctx, "nope", 10); !errors.As(err, &ve) {
		t.Errorf("bad cursor: %v", err)
	}
}
